#!/usr/bin/env bash
# Benchmarks actuators/image against the shell tools doing the same work in
# the same run, and writes docs/bench/image.md:
#   1. create + mount a 10 GiB image (median of 10) vs truncate, mkfs.ext4,
#      losetup, mount (and the bind mount of root/ that vzd also makes);
#   2. offline grow 10 -> 20 GiB (median of 10) vs truncate, e2fsck, resize2fs;
#   3. create + mount from a template image (sparse copy + offline grow) vs
#      a fresh image plus extracting the same tree from a tarball;
#   4. sequential O_DIRECT write (fio) inside an image vs the host file system.
# Runs as root; idempotent; bounded (about 2-3 minutes). Scratch lives under
# $BENCH_DIR (default /var/tmp/vzd-bench-image) and is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh bench # each script runs on its own too: its peers and tools
ROOT=$PWD
OUT=$ROOT/docs/bench/image.md
W=${BENCH_DIR:-/var/tmp/vzd-bench-image}
RUNS=${BENCH_RUNS:-10}
FIO_SIZE=${BENCH_FIO_SIZE:-1G}

[ "$(id -u)" = 0 ] || { echo "bench-image: needs root" >&2; exit 1; }
for t in go fio jq mkfs.ext4 resize2fs e2fsck losetup truncate; do
	command -v "$t" >/dev/null || { echo "bench-image: needs $t" >&2; exit 1; }
done

cleanup() {
	local -
	set +e +o pipefail
	if [ -d "$W" ]; then
		awk -v w="$W/" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		done
		losetup -a 2>/dev/null | grep -F "($W/" | cut -d: -f1 | while read -r d; do
			losetup -d "$d" 2>/dev/null || true
		done
		rm -rf "$W"
	fi
}
trap cleanup EXIT
cleanup
mkdir -p "$W" "$ROOT/docs/bench"

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
BT=$W/benchtool
GOFLAGS=-buildvcs=false go build -o "$BT" ./actuators/image/internal/benchtool
P=$W/p   # vzd's node prefix
S=$W/s   # the shell tools' directory
mkdir -p "$S"
MKFS_OPTS="-q -F -t ext4 -b 4096 -m 0 -E lazy_itable_init=1,lazy_journal_init=1"

# Helper scripts, so the command lines stay readable in the report.
cat >"$W/shell-create-mount.sh" <<EOF
set -e
truncate -s 10G $S/img
mkfs.ext4 $MKFS_OPTS $S/img
dev=\$(losetup --direct-io=on -f --show $S/img)
mkdir -p $S/mnt $S/root
mount \$dev $S/mnt
losetup -d \$dev   # autoclear: detached at the last unmount, as vzd's
mkdir -p $S/mnt/root
mount --bind $S/mnt/root $S/root
EOF
cat >"$W/shell-clean.sh" <<EOF
umount $S/root 2>/dev/null; umount $S/mnt 2>/dev/null
rm -f $S/img
exit 0
EOF
cat >"$W/shell-grow.sh" <<EOF
set -e
truncate -s 20G $S/img
e2fsck -f -p $S/img
resize2fs $S/img 20G >/dev/null 2>&1
EOF
cat >"$W/shell-fresh10.sh" <<EOF
set -e
rm -f $S/img
truncate -s 10G $S/img
mkfs.ext4 $MKFS_OPTS $S/img
EOF

mkdir -p "$W/seed/root"
cat >"$W/mkfs-d.sh" <<EOF
set -e
truncate -s 10G $S/img
mkfs.ext4 $MKFS_OPTS -d $W/seed $S/img
EOF
cat >"$W/mkfs-mount.sh" <<EOF
set -e
truncate -s 10G $S/img
mkfs.ext4 $MKFS_OPTS $S/img
mkdir -p $S/mnt
mount -o loop $S/img $S/mnt
mkdir $S/mnt/root
umount $S/mnt
EOF

# Timing: each measured command is a whole process started from this
# shell; vzd and its peer alternate round by round (after one warm-up
# round), so both see the same background load on a shared machine.
declare -A T
timed() { # name prepare command
	eval "$2" >/dev/null 2>&1 || true
	local t0=$EPOCHREALTIME
	eval "$3" >/dev/null 2>&1 || { echo "bench-image: failed: $3" >&2; exit 1; }
	local t1=$EPOCHREALTIME
	[ "$ROUND" = 0 ] || T[$1]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.6f", b - a}') "
}
pair() { # nameA prepA cmdA nameB prepB cmdB
	for ((ROUND = 0; ROUND <= RUNS; ROUND++)); do
		if ((ROUND % 2)); then
			timed "$4" "$5" "$6"; timed "$1" "$2" "$3"
		else
			timed "$1" "$2" "$3"; timed "$4" "$5" "$6"
		fi
	done
}
median() { printf '%s\n' ${T[$1]} | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ms() { awk -v s="$1" 'BEGIN {printf "%.1f", s * 1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

echo "bench-image: create + mount 10 GiB" >&2
pair vzd-create "$BT destroy -prefix $P -id ct" "$BT create-mount -prefix $P -id ct -size 10G" \
	shell-create "sh $W/shell-clean.sh" "sh $W/shell-create-mount.sh"
$BT destroy -prefix "$P" -id ct
sh "$W/shell-clean.sh"

echo "bench-image: root/ by mkfs -d or by a mount" >&2
pair mkfs-d "rm -f $S/img" "sh $W/mkfs-d.sh" mkfs-mount "rm -f $S/img" "sh $W/mkfs-mount.sh"
rm -f "$S/img"

echo "bench-image: offline grow 10 -> 20 GiB" >&2
pair vzd-grow "$BT destroy -prefix $P -id ct && $BT create -prefix $P -id ct -size 10G" \
	"$BT resize -prefix $P -id ct -size 20G" \
	shell-grow "sh $W/shell-fresh10.sh" "sh $W/shell-grow.sh"
$BT destroy -prefix "$P" -id ct
rm -f "$S/img"

echo "bench-image: template" >&2
# A template: a 1 GiB image whose root/ holds /usr/bin (a few hundred MiB).
$BT create-mount -prefix "$P" -id tmpl -size 1G
cp -a /usr/bin "$P/vz/root/tmpl/"
TREE_MB=$(du -sm "$P/vz/root/tmpl" | cut -f1)
tar -C "$P/vz/root/tmpl" -cf "$W/tree.tar" .
$BT unmount -prefix "$P" -id tmpl
TMPL=$P/vz/private/tmpl/root.hdd/root.hdd
# Checked once when built, as a template builder should: then no copy
# needs an e2fsck -f before resize2fs.
e2fsck -f -p "$TMPL" >/dev/null
COPY_METHOD=$($BT copy "$TMPL" "$W/copy-probe.img")
rm -f "$W/copy-probe.img"
# sync -f: the template path fsyncs its copy before the rename (a renamed
# image must be complete), so the tar path is timed until durable too.
pair vzd-template "$BT destroy -prefix $P -id ct" "$BT create-mount -prefix $P -id ct -size 10G -src $TMPL" \
	vzd-tar "$BT destroy -prefix $P -id ct" \
	"$BT create-mount -prefix $P -id ct -size 10G && tar -C $P/vz/root/ct -xf $W/tree.tar && sync -f $P/vz/root/ct"
RUNS_SAVED=$RUNS; RUNS=4
pair vzd-template1 "$BT destroy -prefix $P -id ct" "$BT create-mount -prefix $P -id ct -size 1G -src $TMPL" \
	vzd-tar1 "$BT destroy -prefix $P -id ct" \
	"$BT create-mount -prefix $P -id ct -size 10G && tar -C $P/vz/root/ct -xf $W/tree.tar && sync -f $P/vz/root/ct"
RUNS=$RUNS_SAVED
$BT destroy -prefix "$P" -id ct
pair vzd-copy "rm -f $W/cp.img" "$BT copy $TMPL $W/cp.img" cp-sparse "rm -f $W/cp.img" "cp --sparse=always $TMPL $W/cp.img"
rm -f "$W/cp.img"

echo "bench-image: fio" >&2
$BT create-mount -prefix "$P" -id ct -size 10G
fio_bw() { # file -> MB/s; one warm-up run allocates, three overwrite runs
	local f=$1 i bws=()
	for i in 0 1 2 3; do
		bw=$(fio --name=seq --filename="$f" --rw=write --bs=1M --size="$FIO_SIZE" --direct=1 \
			--ioengine=libaio --iodepth=16 --end_fsync=1 --output-format=json | jq '.jobs[0].write.bw_bytes')
		[ "$i" = 0 ] || bws+=("$bw")
	done
	printf '%s\n' "${bws[@]}" | sort -n | sed -n 2p | awk '{printf "%.0f", $1 / 1e6}'
}
FIO_IMG=$(fio_bw "$P/vz/root/ct/fio.dat")
FIO_HOST=$(fio_bw "$W/fio-host.dat")
rm -f "$P/vz/root/ct/fio.dat" "$W/fio-host.dat"
$BT destroy -prefix "$P" -id ct

VC=$(median vzd-create); SC=$(median shell-create)
VG=$(median vzd-grow); SG=$(median shell-grow)
VT=$(median vzd-template); VX=$(median vzd-tar)
VT1=$(median vzd-template1); VX1=$(median vzd-tar1)
MD=$(median mkfs-d); MM=$(median mkfs-mount)
CP=$(median cp-sparse); VCP=$(median vzd-copy)
HOSTFS=$(findmnt -n -o FSTYPE --target "$W")

{
	echo "# actuators/image benchmarks"
	echo
	echo "Written by \`scripts/bench-image.sh\` on $(date -u +%Y-%m-%dT%H:%MZ)."
	echo "Machine: $(nproc) CPUs, kernel $(uname -r), $(mkfs.ext4 -V 2>&1 | head -1), scratch on $HOSTFS ($W)."
	echo "Load average when it started: $LOAD (the machine is shared with other work; figures are noisy)."
	echo "Medians of $RUNS runs after one warm-up, each a whole process timed from bash (\$EPOCHREALTIME), vzd and its peer alternating run by run in the same script run."
	echo "vzd's steps are \`actuators/image/internal/benchtool\` subcommands (one Actuator call each)."
	echo
	echo "| work | vzd | peer | vzd / peer |"
	echo "|---|---|---|---|"
	echo "| create + mount a 10 GiB image | $(ms "$VC") ms | $(ms "$SC") ms (shell tools) | $(ratio "$VC" "$SC") |"
	echo "| make root/ in a fresh 10 GiB image: mkfs.ext4 -d (vzd's way) | $(ms "$MD") ms | $(ms "$MM") ms (mkfs, mount, mkdir, umount) | $(ratio "$MD" "$MM") |"
	echo "| offline grow 10 -> 20 GiB | $(ms "$VG") ms | $(ms "$SG") ms (shell tools) | $(ratio "$VG" "$SG") |"
	echo "| create + mount from a template (${TREE_MB} MiB tree) | $(ms "$VT") ms | $(ms "$VX") ms (fresh image + tar -x, vzd) | $(ratio "$VT" "$VX") |"
	echo "| create + mount from the template, same size (1 GiB: no resize2fs) | $(ms "$VT1") ms | $(ms "$VX1") ms (as above; 4 rounds) | $(ratio "$VT1" "$VX1") |"
	echo "| sparse copy of the 1 GiB template image | $(ms "$VCP") ms ($COPY_METHOD) | $(ms "$CP") ms (cp --sparse=always) | $(ratio "$VCP" "$CP") |"
	echo "| sequential O_DIRECT write, 1 MiB blocks | $FIO_IMG MB/s (in image) | $FIO_HOST MB/s (host $HOSTFS) | $(ratio "$FIO_IMG" "$FIO_HOST") |"
	echo
	echo "Goals: create + mount no slower than the shell tools (ratio <= 1); O_DIRECT write in an image at least 85% of the host's (ratio >= 0.85)."
	echo
	echo "Notes:"
	echo
	echo "- vzd's create + mount runs one external program (mkfs.ext4); attaching (LOOP_CTL_GET_FREE + LOOP_CONFIGURE) and both mounts are system calls, and it also fsyncs the image and writes its record. The shell tools start six programs."
	echo "- \`mkfs.ext4 -d\` with a seed directory holding an empty \`root/\` puts \`root/\` in without attaching or mounting anything."
	echo "- Template copies: the scratch file system is ext4, which has no FICLONE, so CopySparse copies each data extent (SEEK_DATA/SEEK_HOLE) with copy_file_range. The 10 GiB template row includes a resize2fs from 1 to 10 GiB (no e2fsck: the template was checked once); the same-size row has none but only 4 rounds, so it is the noisier figure."
	echo "- The fio figures use a loop device with direct IO (LO_FLAGS_DIRECT_IO): writes in the image go straight to the image file, not through a second page cache."
	echo
	echo "## Commands"
	echo
	echo "Create + mount (vzd: \`Create\` = truncate, \`mkfs.ext4 -d\` with an empty \`root/\`, fsync, rename, record, ve.conf link; \`Mount\` = LOOP_CONFIGURE with direct IO and autoclear, mount, private bind of \`root/\`):"
	echo
	echo '```'
	echo "$BT create-mount -prefix $P -id ct -size 10G      # prepare: $BT destroy -prefix $P -id ct"
	echo "sh shell-create-mount.sh                          # prepare: sh shell-clean.sh (umount, rm)"
	echo '```'
	echo
	echo "shell-create-mount.sh:"
	echo
	echo '```sh'
	cat "$W/shell-create-mount.sh"
	echo '```'
	echo
	echo "Offline grow (vzd: \`Resize\` on an unmounted image = e2fsck -f -p, truncate, resize2fs):"
	echo
	echo '```'
	echo "$BT resize -prefix $P -id ct -size 20G           # prepare: $BT destroy ...; $BT create -prefix $P -id ct -size 10G"
	echo "sh shell-grow.sh                                  # prepare: sh shell-fresh10.sh (truncate, mkfs.ext4)"
	echo '```'
	echo
	echo "shell-grow.sh:"
	echo
	echo '```sh'
	cat "$W/shell-grow.sh"
	echo '```'
	echo
	echo "Template (a 1 GiB image holding a copy of /usr/bin in \`root/\`, checked once with e2fsck -f after it was built; vzd: sparse copy, fsync, resize2fs to 10 GiB, rename, mount):"
	echo
	echo '```'
	echo "$BT create-mount -prefix $P -id ct -size 10G -src \$TMPL"
	echo "$BT create-mount -prefix $P -id ct -size 1G -src \$TMPL"
	echo "$BT create-mount -prefix $P -id ct -size 10G && tar -C $P/vz/root/ct -xf tree.tar && sync -f $P/vz/root/ct"
	echo "$BT copy \$TMPL cp.img                            # image.CopySparse"
	echo "cp --sparse=always \$TMPL cp.img"
	echo '```'
	echo
	echo "fio, inside an image mounted by vzd (10 GiB, loop with direct IO) and on the host file system; one warm-up run that allocates, then the median of three overwriting runs:"
	echo
	echo '```'
	echo "fio --name=seq --filename=FILE --rw=write --bs=1M --size=$FIO_SIZE --direct=1 --ioengine=libaio --iodepth=16 --end_fsync=1"
	echo '```'
} >"$OUT"
cat "$OUT"
