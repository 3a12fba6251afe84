#!/usr/bin/env bash
# Removes what a crashed test run left behind: mounts and loop devices under
# temporary directories, test network namespaces (vzdt*) and the supervisors
# of test containers. It touches nothing outside those patterns.
set -u
[ "$(id -u)" = 0 ] || exit 0
for pid in $(pgrep -f 'vzd(\.test)? (supervise|init)' 2>/dev/null); do
	grep -qE '/tmp/|/var/tmp/' "/proc/$pid/cmdline" 2>/dev/null && kill -9 "$pid" 2>/dev/null
done
# Deepest mounts first.
awk '$2 ~ /^\/(tmp|var\/tmp)\// {print $2}' /proc/self/mounts | sort -r | while read -r m; do
	umount -l "$m" 2>/dev/null
done
losetup -a 2>/dev/null | grep -E '\((/tmp/|/var/tmp/)' | cut -d: -f1 | while read -r dev; do
	losetup -d "$dev" 2>/dev/null
done
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^vzdt'); do
	ip netns delete "$ns" 2>/dev/null
done
for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(vzt|vzdt)'); do
	ip link delete "$l" 2>/dev/null
done
exit 0
