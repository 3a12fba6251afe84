#!/usr/bin/env bash
# bench-dedup.sh: what the shared file cache (dedup) saves, measured.
#
# 20 containers made from one template each read the same 50 MiB of files;
# host page-cache growth with the cache against without, in the same run;
# scan throughput against sha1sum; a second scan of the unchanged trees.
# Writes docs/bench/dedup.md. Runs as root, under a temporary prefix, in
# well under five minutes; cleans up after itself.
#
# VZD=/path/to/vzd uses that binary instead of building ./cmd/vzd
# (VZD_REV=... says what it was built from, for the report).
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/deps.sh bench # each script runs on its own too: its peers and tools
OUT=docs/bench/dedup.md
N=${N:-20}           # containers
FILES=${FILES:-10}   # files per container
FILE_MB=${FILE_MB:-5} # MiB per file: FILES × FILE_MB = what each container reads
RUNS=${RUNS:-3}

[ "$(id -u)" = 0 ] || { echo "bench-dedup: run as root" >&2; exit 1; }
for t in mkfs.ext4 losetup fincore sha1sum; do
	command -v $t >/dev/null || { echo "bench-dedup: needs $t" >&2; exit 1; }
done

W=$(mktemp -d /tmp/bench-dedup.XXXXXX)
LOOP=""
cleanup() {
	set +e
	# Everything mounted under the scratch dir, deepest first.
	awk -v w="$W" '$5 ~ "^"w {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
		umount "$m" || umount -l "$m"
	done
	[ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT

if [ -n "${VZD:-}" ]; then
	cp "$VZD" "$W/vzd"
else
	go build -o "$W/vzd" ./cmd/vzd
fi
P="$W/node"              # the node's prefix (/vz lives under it)
CONF="$W/vz.conf"
printf 'PFCACHE=yes\nPFCACHE_SIZE=1G\nPFCACHE_MIN_CONTAINERS=2\n' >"$CONF"
vzd() { "$W/vzd" --root "$P" --global-config "$CONF" --config-dir "$W/conf" --log-level warn "$@"; }
mkdir -p "$P" "$W/conf"

# The containers' images: one ext4 file system on a direct-IO loop device
# (so the backing file is not cached a second time on the host), each
# container a directory with root/ inside, as a mounted image has.
truncate -s 3G "$W/node.img"
mkfs.ext4 -q -F "$W/node.img"
LOOP=$(losetup -f --show --direct-io=on "$W/node.img")
mount "$LOOP" "$P"
mkdir -p "$P/tmpl/usr/lib/bench" "$P/tmpl/usr/bin" "$P/tmpl/etc"
for i in $(seq 1 "$FILES"); do
	head -c $((FILE_MB << 20)) /dev/urandom >"$P/tmpl/usr/lib/bench/lib$i.so"
done
echo "bench" >"$P/tmpl/etc/hostname"
for c in $(seq 1 "$N"); do
	mkdir -p "$P/vz/private/$c/mnt"
	cp -a "$P/tmpl" "$P/vz/private/$c/mnt/root"
done
sync
TREES=()
for c in $(seq 1 "$N"); do TREES+=(--tree "$c=$P/vz/private/$c/mnt"); done
PER_CT=$((FILES * FILE_MB)) # MiB each container reads

mount_all() { # $1: extra flag (--no-dedup or nothing)
	for c in $(seq 1 "$N"); do
		vzd pfcache mount --id "$c" --fs "$P/vz/private/$c/mnt" --root-dir "$P/vz/root/$c" ${1:-}
	done
}
umount_all() {
	for c in $(seq 1 "$N"); do vzd pfcache umount --id "$c" --root-dir "$P/vz/root/$c"; done
}
# resident_mib FILES...: MiB of these files in the page cache (fincore).
resident_mib() { fincore -b -n -o RES "$@" 2>/dev/null | awk '{s+=$1} END {printf "%.1f", s/1048576}'; }
cached_kib() { awk '/^Cached:/ {print $2}' /proc/meminfo; }
base_files() { ls "$P"/vz/private/*/mnt/root/usr/lib/bench/*; }
obj_files() { find "$P/vz/pfcache/mnt/objects" -type f 2>/dev/null; }
# read_all: every container reads its files through its root; prints
# "resident-after-one resident-after-all meminfo-delta-MiB".
read_all() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
	local before one all
	before=$(cached_kib)
	cat "$P/vz/root/1"/usr/lib/bench/* >/dev/null
	one=$(resident_mib $(base_files) $(obj_files))
	for c in $(seq 2 "$N"); do cat "$P/vz/root/$c"/usr/lib/bench/* >/dev/null; done
	all=$(resident_mib $(base_files) $(obj_files))
	echo "$one $all $(( ($(cached_kib) - before) / 1024 ))"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# --- without dedup: the containers' roots are plain bind mounts
mount_all --no-dedup
grep -q " $P/vz/root/1 " /proc/self/mountinfo
for r in $(seq 1 "$RUNS"); do read_all; done >"$W/without"
umount_all

# --- sha1sum over the same bytes the scan hashes (all containers' files, warm)
cat $(base_files) >/dev/null
SHA_BYTES=$(cat $(base_files) | wc -c)
# Throughput per core = bytes / CPU seconds (user + sys) of the process:
# the machine may be shared, and wall time then measures the neighbours.
TIMEFORMAT='%R %U %S'
for r in $(seq 1 "$RUNS"); do
	{ time sha1sum $(base_files) >/dev/null; } 2>"$W/t"
	awk -v b="$SHA_BYTES" '{printf "%.0f %.0f\n", b/1048576/($2+$3), b/1048576/$1}' "$W/t"
done >"$W/sha1sum"

# --- first scan (hash everything, store the shared files, write stubs), warm;
# RUNS times, each from scratch: no digest xattrs, an empty store, no stubs.
reset_scan() {
	python3 - "$P/vz/private" <<'PY'
import os, sys
for d, _, fs in os.walk(sys.argv[1]):
    for f in fs:
        try: os.removexattr(os.path.join(d, f), "trusted.vzd.sha1", follow_symlinks=False)
        except OSError: pass
PY
	rm -rf "$P/vz/pfcache/mnt/objects"/* "$P/vz/pfcache/mnt/index.json" "$P"/vz/private/*/mnt/meta.next*
}
for r in $(seq 1 "$RUNS"); do
	reset_scan
	sync
	cat $(base_files) >/dev/null
	{ time vzd pfcache scan --json "${TREES[@]}" >"$W/scan1.json"; } 2>"$W/scan1.time"
	# process CPU (bash time: user + sys) and the scan's own phases (getrusage)
	python3 - "$W/scan1.json" $(cat "$W/scan1.time") <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); wall, user, sys_ = map(float, sys.argv[2:5])
mib = d["hashed_bytes"] / 1048576; c = d["cpu"]
print(f'{mib/(user+sys_):.0f} {mib/(c["hash_ns"]/1e9):.0f} {wall:.3f} {d["duration_ns"]/1e9:.3f} '
      f'{(user+sys_)*1000:.0f} {c["check_ns"]/1e6:.0f} {c["hash_ns"]/1e6:.0f} {c["store_ns"]/1e6:.0f} {c["stubs_ns"]/1e6:.0f} {mib/wall:.0f}')
PY
done >"$W/scan1"
# --- second scan of the unchanged trees
vzd pfcache scan --json "${TREES[@]}" >"$W/scan2.json"
jget() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
H1=$(jget "$W/scan1.json" hashed_bytes)
H2=$(jget "$W/scan2.json" hashed_bytes); D2=$(jget "$W/scan2.json" duration_ns)
ING=$(jget "$W/scan1.json" ingested_bytes); STUBS=$(jget "$W/scan1.json" stubs)
col() { awk -v c="$1" '{print $c}' "$W/scan1" | median; }
SCAN_MBS=$(col 1); HASH_MBS=$(col 2); SCAN_WALL=$(col 10)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# --- with dedup: overlay roots with the cache layers
mount_all
grep " $P/vz/root/1 " /proc/self/mountinfo | grep -q overlay
for r in $(seq 1 "$RUNS"); do read_all; done >"$W/with"
vzd pfcache stats --json >"$W/stats.json"
SAVED=$(jget "$W/stats.json" saved_bytes)
umount_all

W_ONE=$(awk '{print $1}' "$W/without" | median); W_ALL=$(awk '{print $2}' "$W/without" | median); W_MEM=$(awk '{print $3}' "$W/without" | median)
D_ONE=$(awk '{print $1}' "$W/with" | median); D_ALL=$(awk '{print $2}' "$W/with" | median); D_MEM=$(awk '{print $3}' "$W/with" | median)
SHA=$(awk '{print $1}' "$W/sha1sum" | median)
SHA_WALL=$(awk '{print $2}' "$W/sha1sum" | median)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
if grep -qw sha_ni /proc/cpuinfo; then
	HASHER="With the SHA extensions (this CPU has them) the scan hashes two files at a time on one core (dedup/sha1x2_amd64.s)."
else
	HASHER="Without the SHA extensions the scan hashes one file at a time with Go's crypto/sha1."
fi
goal() { awk -v a="$1" 'BEGIN {print (a >= 1431 ? "met" : "not met") " (" a " MiB/s)"}'; }

mkdir -p docs/bench
cat >"$OUT" <<EOF
# Dedup (shared file cache) benchmark

Generated by \`scripts/bench-dedup.sh\` on $(date -u +%Y-%m-%d), vzd ${VZD_REV:-built from the working tree at $(git rev-parse --short HEAD 2>/dev/null)} — $(nproc) cores,
kernel $(uname -r), $(awk '/^MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM,
CPU: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)$(grep -qw sha_ni /proc/cpuinfo && echo " (SHA-NI)").

Setup: $N containers made from one template (\`cp -a\`), each a directory
with \`root/\` in one ext4 file system on a direct-IO loop device (so the
image's backing file is not cached twice); the store is its own 1 GiB ext4
image (\`vzd pfcache\`'s default, \`PFCACHE_SIZE=1G\`). Each container reads
the same $FILES files of $FILE_MB MiB ($PER_CT MiB) through its root:
\`cat \$VE_ROOT/usr/lib/bench/* >/dev/null\`, after \`sync; echo 3 >
/proc/sys/vm/drop_caches\`. Page-cache figures are the medians of $RUNS runs.

## Page cache

Resident bytes are measured exactly with \`fincore -b\` over every file
that can hold the data (all containers' own copies plus the cache's objects);
the \`/proc/meminfo\` \`Cached:\` delta is shown too (it also counts the
rest of the machine, which other work shares).

| roots | after 1 container | after $N containers | × one container's | meminfo Cached delta |
|---|---:|---:|---:|---:|
| bind mounts, no dedup (\`vzd pfcache mount --no-dedup\`) | $W_ONE MiB | $W_ALL MiB | $(ratio "$W_ALL" "$W_ONE")× | $W_MEM MiB |
| overlay + cache (\`vzd pfcache mount\`) | $D_ONE MiB | $D_ALL MiB | $(ratio "$D_ALL" "$D_ONE")× | $D_MEM MiB |

With dedup, $N containers hold $(ratio "$D_ALL" "$PER_CT")× the page cache of one
container's files (goal: within 1.2×); without, $(ratio "$W_ALL" "$PER_CT")× (about $N× expected).
\`vzd pfcache stats\` while all were mounted: saved_bytes = $(awk -v b="$SAVED" 'BEGIN {printf "%.0f", b/1048576}') MiB.

## Scan

Throughput per core is bytes hashed per CPU second (user + sys of the
process, from bash's \`time\`); wall-clock rates are shown too, but the
machine is shared with other work (load average at the end of the run: $LOAD).

| what | command | hashed | wall time | MiB/s per CPU second | MiB/s wall |
|---|---|---:|---:|---:|---:|
| first scan, whole process (hash, store, stubs), warm cache (median of $RUNS) | \`vzd pfcache scan --tree ID=DIR …\` | $(awk -v b="$H1" 'BEGIN {printf "%.0f MiB", b/1048576}') | $(col 3 | awk '{printf "%.2f s", $1}') | $SCAN_MBS | $SCAN_WALL |
| first scan, walk-and-hash phase only (median of $RUNS) | same run, \`cpu.hash_ns\` of \`--json\` | $(awk -v b="$H1" 'BEGIN {printf "%.0f MiB", b/1048576}') | | $HASH_MBS | |
| sha1sum over the same files, warm cache (median of $RUNS) | \`sha1sum FILES…\` | $(awk -v b="$SHA_BYTES" 'BEGIN {printf "%.0f MiB", b/1048576}') | | $SHA | $SHA_WALL |
| second scan, trees unchanged | \`vzd pfcache scan --tree ID=DIR …\` | $H2 bytes | $(awk -v d="$D2" 'BEGIN {printf "%.3f s", d/1e9}') | — | — |

The first figure is the whole \`vzd pfcache scan\` process, CPU from bash's
\`time\` (user + sys): start-up, checking the store, walking, hashing,
storing $(awk -v b="$ING" 'BEGIN {printf "%.0f MiB", b/1048576}') of objects
(copy + fsync) and writing $STUBS stubs. The second counts only the CPU
time of the walk-and-hash phase (the process's getrusage around it, so the
Go runtime's own threads included); that phase also copies into the store
the shared files it can recognise while hashing them (see docs/DEDUP.md,
"The scan"), so the store phase after it has little left to do. Scan vs
sha1sum per CPU second: whole process $(ratio "$SCAN_MBS" "$SHA")×, walk-and-hash phase $(ratio "$HASH_MBS" "$SHA")×.
Goal (issue 8): at least 1.5 GB/s = 1431 MiB/s per CPU second: whole
process $(goal "$SCAN_MBS"), walk-and-hash phase $(goal "$HASH_MBS").
$HASHER

Each first scan, CPU milliseconds: process (\`time\`), then the scan's
phases (check store / walk and hash / store / stubs); wall seconds (\`time\`, scan's own):

| run | process CPU ms | check | walk + hash | store | stubs | wall s | scan wall s |
|---|---:|---:|---:|---:|---:|---:|---:|
$(awk '{printf "| %d | %s | %s | %s | %s | %s | %s | %s |\n", NR, $5, $6, $7, $8, $9, $3, $4}' "$W/scan1")

EOF
echo "bench-dedup: wrote $OUT"
cat "$OUT"
