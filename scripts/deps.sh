#!/usr/bin/env bash
# Installs the Debian packages vzd's build, tests, demo or benchmarks need,
# but only those missing, so a second run costs nothing.
# Usage: scripts/deps.sh [test|bench|run]
set -euo pipefail
want=(e2fsprogs:mkfs.ext4 busybox-static:busybox iproute2:ip util-linux:losetup procps:ps systemd:systemd-analyze)
case "${1:-test}" in
bench) want+=(crun:crun runc:runc lxc:lxc-execute systemd-container:systemd-nspawn hyperfine:hyperfine fio:fio debootstrap:debootstrap strace:strace linux-perf:perf ansible:ansible-playbook) ;;
debian) want+=(debootstrap:debootstrap) ;;
test) want+=(ansible:ansible-playbook debootstrap:debootstrap) ;;
esac
missing=()
for pair in "${want[@]}"; do
	pkg=${pair%%:*} bin=${pair#*:}
	command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || [ -x "/sbin/$bin" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
