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
	ip netns list | grep -qw "$ns" || { ip netns add "$ns"; ip -n "$ns" link set lo up; }
	echo "== building the busybox template (cached after the first run)"
	"$vzd" template build "${flags[@]}" busybox
	cat <<MSG
== running the agent on $root/etc/vz/conf (Ctrl-C stops the agent; containers keep running)
   In another terminal:
     $vzd status ${flags[*]}
     $vzd exec ${flags[*]} demo-web -- ps
     \$EDITOR $root/etc/vz/conf/web.hcl     # change memory.ram, save, watch it applied
   Remove everything with: make run-clean
MSG
	exec ip netns exec "$ns" "$vzd" agent "${flags[@]}"
	;;
clean)
	[ -d "$root" ] || exit 0
	# Undeclare everything, then destroy the orphans explicitly.
	if [ -d "$root/etc/vz/conf" ]; then
		mkdir -p "$root/etc/vz/conf.off"
		find "$root/etc/vz/conf" -maxdepth 1 -type f -exec mv -t "$root/etc/vz/conf.off" {} +
	fi
	ip netns exec "$ns" "$vzd" destroy "${flags[@]}" --yes --all || true
	ip netns delete "$ns" 2>/dev/null || true
	rm -rf "$root"
	echo "demo removed"
	;;
*) echo "usage: demo.sh run|clean ROOT" >&2; exit 2 ;;
esac
