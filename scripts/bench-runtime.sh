#!/bin/bash
# Benchmark of the container runtime (actuators/runtime) against crun, LXC
# and systemd-nspawn on the same busybox root, in the same run. Writes
# docs/bench/runtime.md. Root only; bounded (two to three minutes).
#
#   start: from "start" to the container's first process (/bin/true) having
#          run and exited, median of 30.
#   idle:  host memory per idle busybox container (100 started).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh bench # each script runs on its own too: its peers and tools
[ "$(id -u)" = 0 ] || { echo "bench-runtime: needs root" >&2; exit 1; }
RUNS=${RUNS:-30}
IDLE=${IDLE:-100}
out=docs/bench/runtime.md
work=$(mktemp -d /var/tmp/vzd-bench-runtime.XXXXXX)
root=$work/root
# The peers in a user namespace must be able to walk to the root.
chmod 755 "$work"
cleanup() {
	umount -l "$root" 2>/dev/null || true
	umount -d "$work/deb-vzd" "$work/deb-nspawn" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# One busybox root on a tmpfs, shared by every runtime.
mkdir -p "$root"
mount -t tmpfs -o size=32m,mode=755 tmpfs "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,proc,sys,dev,run,tmp,root}
cp /bin/busybox "$root/bin/busybox"
chroot "$root" /bin/busybox --install -s
printf 'ID=busybox\nNAME=busybox\n' >"$root/etc/os-release"
printf '::sysinit:/etc/init.d/rcS\n::respawn:/bin/sleep 2147483647\n' >"$root/etc/inittab"
printf '#!/bin/sh\n' >"$root/etc/init.d/rcS"
chmod +x "$root/etc/init.d/rcS"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"

go test -c -o "$work/runtime.test" ./actuators/runtime

# crun: an OCI bundle on the same root. crun refuses this host's hybrid
# cgroup layout unless /sys/fs/cgroup/unified is unmounted, so it runs in a
# private mount namespace (hyperfine inside it).
mkdir -p "$work/bundle" "$work/bundle-userns"
(cd "$work/bundle" && crun spec)
python3 - "$work/bundle/config.json" "$root" "$work/bundle-userns/config.json" <<'EOF2'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
c["root"] = {"path": sys.argv[2], "readonly": True}
json.dump(c, open(sys.argv[1], "w"), indent=1)
# The same with a user and a cgroup namespace, as vzd starts containers.
c["linux"]["namespaces"] += [{"type": "user"}, {"type": "cgroup"}]
c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
json.dump(c, open(sys.argv[3], "w"), indent=1)
EOF2
cat >"$work/lxc.conf" <<EOF2
lxc.rootfs.path = dir:$root
lxc.uts.name = bb
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
lxc.mount.auto = proc:mixed sys:ro
EOF2
crun_cmd="crun run -b $work/bundle vzdbench-crun"
crunu_cmd="crun run -b $work/bundle-userns vzdbench-crunu"
lxc_cmd="lxc-execute -n vzdbench -f $work/lxc.conf -P $work -- /bin/true"
# No systemd PID 1 here: no registration, no scope.
nspawn_cmd="systemd-nspawn -q -D $root --register=no --keep-unit /bin/true"

# The machine is shared: the runtimes take turns, ROUNDS rounds of
# RUNS/ROUNDS starts each, and each median is over all its starts.
ROUNDS=3
per=$(( RUNS / ROUNDS ))
: >"$work/vzd.times"
for round in $(seq $ROUNDS); do
	VZD_BENCH=start VZD_BENCH_ROOT=$root VZD_BENCH_N=$per "$work/runtime.test" 2>/dev/null |
		awk '$1=="times_ms"{for(i=2;i<=NF;i++) print $i}' >>"$work/vzd.times"
	unshare -m bash -c "umount /sys/fs/cgroup/unified && hyperfine -N --runs $per --warmup 1 --export-json $work/crun.$round.json '$crun_cmd' >/dev/null 2>>$work/err.log && hyperfine -N --runs $per --warmup 1 --export-json $work/crunu.$round.json '$crunu_cmd' >/dev/null 2>>$work/err.log" || { cat "$work/err.log" >&2; exit 1; }
	hyperfine -N --runs "$per" --warmup 1 --export-json "$work/lxc.$round.json" "$lxc_cmd" >/dev/null 2>>"$work/err.log"
	hyperfine -N -i --runs "$per" --warmup 1 --export-json "$work/nspawn.$round.json" "$nspawn_cmd" >/dev/null 2>>"$work/err.log"
done
# median NAME: over every run of every round, in ms
median() {
	python3 - "$work" "$1" <<'EOF2'
import glob, json, statistics, sys
work, name = sys.argv[1], sys.argv[2]
if name == "vzd":
    ts = [float(l) for l in open(f"{work}/vzd.times") if l.strip()]
else:
    ts = [t * 1000 for f in sorted(glob.glob(f"{work}/{name}.*.json")) for t in json.load(open(f))["results"][0]["times"]]
print("%.2f" % statistics.median(ts))
EOF2
}
vzd_ms=$(median vzd)
crun_ms=$(median crun)
crunu_ms=$(median crunu)
lxc_ms=$(median lxc)
nspawn_ms=$(median nspawn)
vzd_min=$(sort -n "$work/vzd.times" | head -1)
vzd_max=$(sort -n "$work/vzd.times" | tail -1)

# 100 idle busybox containers.
idle=$(VZD_BENCH=idle VZD_BENCH_ROOT=$root VZD_BENCH_N=$IDLE "$work/runtime.test" 2>/dev/null)
get() { awk -v k="$1" '$1==k{print $2}' <<<"$idle"; }
ratio() { python3 -c "print('%.2f' % ($1/$2))"; }

# Debian 12 (systemd) boot, vzd against systemd-nspawn -b, on copies of the
# cached Debian template (built by `make acceptance-debian`); skipped when
# there is none.
DEB_RUNS=${DEB_RUNS:-5}
deb_img=$(ls -t /var/tmp/vzd-debian-cache/vz/template/cache/debian-12-x86_64-*.img 2>/dev/null | head -1 || true)
debian_md="Not measured: no cached Debian template (run \`make acceptance-debian\` once)."
if [ -n "$deb_img" ]; then
	mkdir -p "$work/deb-vzd" "$work/deb-nspawn"
	cp --sparse=always "$deb_img" "$work/deb-vzd.img"
	cp --sparse=always "$deb_img" "$work/deb-nspawn.img"
	mount -o loop "$work/deb-vzd.img" "$work/deb-vzd"
	mount -o loop "$work/deb-nspawn.img" "$work/deb-nspawn"
	deb_vzd=$(VZD_BENCH=debian VZD_BENCH_ROOT=$work/deb-vzd/root VZD_BENCH_N=$DEB_RUNS "$work/runtime.test" 2>/dev/null | awk '/^median_ms/{print $2}')
	# nspawn: boot, poll is-system-running through nsenter, halt.
	nspawn_boot() {
		local t0 t1 pid sd="" st=""
		t0=$(date +%s%N)
		systemd-nspawn -b -q -D "$work/deb-nspawn/root" --register=no --keep-unit --console=passive >/dev/null 2>&1 &
		pid=$!
		for _ in $(seq 2000); do
			sd=$(pgrep -P "$pid" -x systemd || true)
			[ -n "$sd" ] && break
			sleep 0.01
		done
		for _ in $(seq 6000); do
			st=$(nsenter -t "$sd" -a systemctl is-system-running 2>/dev/null || true)
			case $st in running | degraded) break ;; esac
			sleep 0.02
		done
		t1=$(date +%s%N)
		kill -RTMIN+3 "$sd" 2>/dev/null || true
		wait "$pid" || true
		echo $(((t1 - t0) / 1000))
	}
	nspawn_boot >/dev/null # warm-up, as for vzd
	deb_nspawn=$(for _ in $(seq "$DEB_RUNS"); do nspawn_boot; done | sort -n | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)]/1000}')
	umount -d "$work/deb-vzd" "$work/deb-nspawn"
	debian_md="| runtime | median | vzd / peer | command |
|---|---|---|---|
| vzd (unprivileged: user ns, idmapped root) | $deb_vzd ms | 1.00× | \`VZD_BENCH=debian VZD_BENCH_ROOT=ROOT VZD_BENCH_N=$DEB_RUNS runtime.test\` (Start, then \`systemctl is-system-running\` through Exec every 20 ms) |
| systemd-nspawn -b (privileged) | $deb_nspawn ms | $(ratio "$deb_vzd" "$deb_nspawn")× | \`systemd-nspawn -b -q -D ROOT --register=no --keep-unit --console=passive\`, then \`nsenter -t PID1 -a systemctl is-system-running\` every 20 ms |

Start to \`systemctl is-system-running\` saying running or degraded, median of $DEB_RUNS after one
warm-up boot each, each runtime on its own copy of the Debian 12 template
(\`$(basename "$deb_img")\`), halted with SIGRTMIN+3 between boots."
fi

mkdir -p docs/bench
cat >"$out" <<EOF
# Runtime benchmark

Written by \`scripts/bench-runtime.sh\` on $(date -u +%Y-%m-%d) (kernel $(uname -r), $(nproc) CPUs, shared
with other work: expect noise). Same busybox root (static busybox on a tmpfs) for every runtime.

## Start to first process exited

Time from "start" to the container's init, \`/bin/true\`, having run and exited; median of $RUNS.

| runtime | median | vzd / peer | command |
|---|---|---|---|
| vzd (user ns + idmapped root, all 7 namespaces, cgroup, supervisor) | $vzd_ms ms | 1.00× | \`VZD_BENCH=start VZD_BENCH_ROOT=ROOT VZD_BENCH_N=$RUNS runtime.test\` (Runtime.Start until the supervisor recorded the exit) |
| crun (default \`crun spec\`: no user or cgroup ns) | $crun_ms ms | $(ratio "$vzd_ms" "$crun_ms")× | \`hyperfine -N --runs $RUNS 'crun run -b BUNDLE ID'\` in \`unshare -m\` with \`/sys/fs/cgroup/unified\` unmounted |
| crun (+ user ns 0→100000 and cgroup ns) | $crunu_ms ms | $(ratio "$vzd_ms" "$crunu_ms")× | same, bundle with \`user\`/\`cgroup\` namespaces and uid/gid mappings |
| LXC $(lxc-execute --version) | $lxc_ms ms | $(ratio "$vzd_ms" "$lxc_ms")× | \`hyperfine -N --runs $RUNS '$lxc_cmd'\` (privileged, no user ns) |
| systemd-nspawn $(systemd-nspawn --version | awk 'NR==1{print $2}') | $nspawn_ms ms | $(ratio "$vzd_ms" "$nspawn_ms")× | \`hyperfine -N --runs $RUNS '$nspawn_cmd'\` |

vzd's figure is measured inside a running agent (its real cost: the agent is long-running), the
peers' as a CLI process each; vzd's includes a re-execution of the vzd binary (the supervisor, run
in C before the Go runtime would start; its clone child is the init stage), the idmapped clone of
the root, moving init into every v1 hierarchy, and waiting until the supervisor has recorded the
exit.
vzd min/max: $vzd_min / $vzd_max ms. Runs: $RUNS per runtime, in $ROUNDS interleaved rounds.

## Idle busybox containers

$(get containers) containers started one after another (busybox init + rcS + one respawned \`sleep\`),
command \`VZD_BENCH=idle VZD_BENCH_ROOT=ROOT VZD_BENCH_N=$IDLE runtime.test\`.

| figure (per container) | value |
|---|---|
| time to start all $(get containers) | $(get start_all_s) s |
| supervisor RSS (C, no Go runtime; shared pages counted in full) | $(get supervisor_rss_kib) KiB |
| supervisor PSS (shared pages divided among sharers) | $(get supervisor_pss_kib) KiB |
| kernel memory (Slab + KernelStack + PageTables + Percpu growth / containers) | $(get kernel_mem_kib) KiB |
| the container's own processes (PSS) | $(get container_procs_pss_kib) KiB |
| the container's memory cgroup usage | $(get container_cgroup_kib) KiB |
| MemAvailable drop minus own processes (noisy on a shared machine) | $(get host_overhead_kib) KiB |

Host overhead beyond the container's own processes = supervisor PSS + kernel memory
= $(( $(get supervisor_pss_kib) + $(get kernel_mem_kib) )) KiB (goal: under 2048 KiB).

## Debian 12 boot

$debian_md
EOF
echo "wrote $out"
cat "$out"
