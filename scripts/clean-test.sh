#!/usr/bin/env bash
# Removes what a crashed test run left behind, and nothing else: processes,
# mounts and loop devices of Go test temp dirs (/tmp/Test*), test network
# namespaces (vzdt*) and test cgroups. It never touches the demo
# (/var/tmp/vzd-demo), the Debian template cache or anything outside these
# patterns.
set -u
[ "$(id -u)" = 0 ] || exit 0
pat='^/tmp/Test[^/]*/'
# Container processes of test roots: their private areas name them.
for d in /tmp/Test*/*/vz/private/*/; do
	[ -d "$d" ] || continue
	id=$(basename "$d")
	for c in pids memory cpu freezer; do
		f=/sys/fs/cgroup/$c/vzd/$id/cgroup.procs
		[ -f "$f" ] && xargs -r kill -9 < "$f" 2>/dev/null
	done
	pkill -9 -x -f "vzd-supervisor $id" 2>/dev/null
done
for pid in $(pgrep -f '/tmp/Test' 2>/dev/null); do
	[ "$pid" != $$ ] && kill -9 "$pid" 2>/dev/null
done
sleep 0.5
# Deepest mounts first.
awk -v p="$pat" '$2 ~ p {print $2}' /proc/self/mounts | sort -r | while read -r m; do
	umount -l "$m" 2>/dev/null
done
losetup -a 2>/dev/null | grep -E '\(/tmp/Test' | cut -d: -f1 | while read -r dev; do
	losetup -d "$dev" 2>/dev/null
done
for d in /tmp/Test*/*/vz/private/*/; do
	[ -d "$d" ] || continue
	rmdir /sys/fs/cgroup/*/vzd/"$(basename "$d")" 2>/dev/null
done
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^vzdt'); do
	ip netns delete "$ns" 2>/dev/null
done
exit 0
