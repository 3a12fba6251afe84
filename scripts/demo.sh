#!/usr/bin/env bash
# The newcomer's first run. `scripts/demo.sh run ROOT` builds the busybox
# template and runs the agent in the foreground on examples/demo under the
# sandbox root ROOT, inside its own network namespace (vzd-demo: no route
# out, so nothing the containers do can leave the machine).
# `scripts/demo.sh clean ROOT` stops and removes the demo's containers.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:?usage: demo.sh run|clean ROOT} root=${2:?usage: demo.sh run|clean ROOT}
vzd="$PWD/bin/vzd"
ns=vzd-demo
flags=(--root "$root" --config-dir "$root/etc/vz/conf" --global-config "$root/etc/vz/vz.conf")
[ "$(id -u)" = 0 ] || { echo "the demo runs containers: run it as root (sudo make run)" >&2; exit 1; }

case "$cmd" in
run)
	mkdir -p "$root/etc/vz/conf"
	chmod 755 "$root" "$root/etc" "$root/etc/vz" "$root/etc/vz/conf"
	for f in examples/demo/*.hcl; do
		[ -e "$root/etc/vz/conf/$(basename "$f")" ] || install -m 644 "$f" "$root/etc/vz/conf/"
	done
	ip netns list 2>/dev/null | grep -qw "$ns" || { ip netns add "$ns"; ip -n "$ns" link set lo up; }
	echo "== building the busybox template (cached after the first run)"
	"$vzd" template "${flags[@]}" build busybox
	cat <<MSG

== running the agent on $root/etc/vz/conf (Ctrl-C stops the agent; containers keep running)
   In another terminal:
     $vzd status ${flags[*]}
     $vzd exec ${flags[*]} demo-web -- ps
     \$EDITOR $root/etc/vz/conf/web.hcl     # change memory.ram, save, watch it applied
   Remove everything with: make run-clean
MSG
	# The agent stays in the host's mount namespace (where /sys/fs/cgroup
	# is); the node side of every container link lives in the demo's
	# network namespace.
	exec "$vzd" agent "${flags[@]}" --host-netns "/run/netns/$ns"
	;;
clean)
	[ -d "$root" ] || exit 0
	# Undeclare everything, then destroy the orphans explicitly.
	if [ -d "$root/etc/vz/conf" ]; then
		mkdir -p "$root/etc/vz/conf.off"
		find "$root/etc/vz/conf" -maxdepth 1 -type f -exec mv -t "$root/etc/vz/conf.off" {} +
	fi
	"$vzd" destroy "${flags[@]}" --host-netns "/run/netns/$ns" --yes --all || true
	ip netns delete "$ns" 2>/dev/null || true
	# Never rm -rf through a mount: unmount what is left, deepest first,
	# and stop if anything stays mounted.
	awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r | xargs -r -n1 umount
	if awk -v r="$root/" 'index($2, r) == 1 {found=1} END {exit !found}' /proc/self/mounts; then
		echo "still mounted under $root; not removing it" >&2
		exit 1
	fi
	rm -rf "$root"
	echo "demo removed"
	;;
*) echo "usage: demo.sh run|clean ROOT" >&2; exit 2 ;;
esac
