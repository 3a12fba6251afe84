#!/usr/bin/env bash
# bench-fleet.sh: examples/ansible/site.yml converging 3 sandbox nodes x 20
# busybox containers, then the same playbook again with nothing to change,
# against the floor of plain Ansible templating the same 60 files (no
# validate, no vzd). Each node is a temporary root with its own config
# directory, network namespace (no route out) and agent, reached with
# ansible_connection=local, as in acceptance/fleet_test.go. Writes
# docs/bench/fleet.md. Run as root from the repo; removes everything it made.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh bench # each script runs on its own too: its peers and tools
[ "$(id -u)" = 0 ] || { echo "bench-fleet: needs root" >&2; exit 1; }
for t in ansible-playbook go ip mkfs.ext4 losetup; do
	command -v "$t" >/dev/null || { echo "bench-fleet: needs $t" >&2; exit 1; }
done

nodes=3
cts=20
nochange_runs=3
repo=$(pwd)
work=$(mktemp -d /var/tmp/vzd-bench-fleet.XXXXXX)
chmod 755 "$work"
tag=fb$(printf '%x' $(($$ % 65536)))
bin=$work/vzd
agents=()
netns=()

root_of() { echo "$work/n$1"; }
flags_of() {
	local r
	r=$(root_of "$1")
	echo --root "$r" --config-dir "$r/etc/vz/conf" --global-config "$r/etc/vz/vz.conf" --host-netns "/run/netns/${netns[$1]}"
}

cleanup() {
	set +e
	for pid in "${agents[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${agents[@]}"; do
		wait "$pid" 2>/dev/null
	done
	# Destroy the nodes' containers in parallel, through the real binary.
	local i dpids=()
	for ((i = 0; i < ${#netns[@]}; i++)); do
		rm -f "$(root_of "$i")"/etc/vz/conf/*
		# shellcheck disable=SC2046
		timeout 240 "$bin" destroy --yes --all $(flags_of "$i") >/dev/null 2>&1 &
		dpids+=($!)
	done
	for pid in "${dpids[@]}"; do
		wait "$pid"
	done
	# Safety net: whatever still refers to the work directory.
	local p pid
	for p in /proc/[0-9]*/cmdline; do
		pid=${p#/proc/}
		pid=${pid%/cmdline}
		if [ "$pid" != $$ ] && tr '\0' ' ' 2>/dev/null <"$p" | grep -qF "$work"; then
			kill -KILL "$pid" 2>/dev/null
		fi
	done
	awk -v w="$work" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
		umount -l "$m"
	done
	losetup -a | grep -F "$work" | cut -d: -f1 | while read -r d; do
		losetup -d "$d"
	done
	for ns in "${netns[@]}"; do
		ip netns delete "$ns"
	done
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$bin" ./cmd/vzd

# The nodes.
for ((i = 0; i < nodes; i++)); do
	r=$(root_of "$i")
	mkdir -p "$r/etc/vz/conf" "$r/plain"
	netns+=("vzdbf-$tag-$i")
	ip netns add "${netns[$i]}"
	ip -n "${netns[$i]}" link set lo up
	# shellcheck disable=SC2046
	setsid "$bin" agent $(flags_of "$i") >"$r/agent.log" 2>&1 &
	agents+=($!)
done
for ((i = 0; i < nodes; i++)); do
	# shellcheck disable=SC2046
	for ((w = 0; w < 300; w++)); do
		"$bin" status $(flags_of "$i") >/dev/null 2>&1 && break
		sleep 0.1
	done
done

# Ansible's home and temp directories, out of the way.
export HOME=$work/home ANSIBLE_LOCAL_TEMP=$work/home/local ANSIBLE_REMOTE_TEMP=$work/home/remote
export ANSIBLE_NOCOLOR=1 ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_RETRY_FILES_ENABLED=False ANSIBLE_FORKS=10
mkdir -p "$ANSIBLE_LOCAL_TEMP" "$ANSIBLE_REMOTE_TEMP"

# The inventory: 20 containers per node, busybox, per-node paths.
inv=$work/hosts.yml
{
	echo "all:"
	echo "  children:"
	echo "    vzd_nodes:"
	echo "      vars:"
	echo "        ansible_connection: local"
	echo "        ansible_python_interpreter: /usr/bin/python3"
	echo "        vzd_bin: $bin"
	echo "        vzd_wait_delay: 1"
	echo "        vzd_wait_retries: 180"
	echo "        vzd_container_defaults:"
	echo "          ostemplate: busybox"
	echo "          stop_timeout: 5s"
	echo "          memory: {ram: 128M}"
	echo "          disk: {size: 128M}"
	echo "      hosts:"
	for ((i = 0; i < nodes; i++)); do
		r=$(root_of "$i")
		echo "        n$i:"
		echo "          vzd_root_dir: $r"
		echo "          vzd_config_dir: $r/etc/vz/conf"
		echo "          vzd_global_config: $r/etc/vz/vz.conf"
		echo "          vzd_host_netns: /run/netns/${netns[$i]}"
		echo "          plain_dir: $r/plain"
		echo "          vzd_containers:"
		for ((j = 0; j < cts; j++)); do
			printf '            - name: %s-n%d-c%02d\n' "$tag" "$i" "$j"
		done
	done
} >"$inv"

# The floor: plain Ansible rendering the same template into a directory
# nobody watches, without validate, find or wait.
cat >"$work/plain.yml" <<EOF
- hosts: vzd_nodes
  gather_facts: false
  vars:
    vzd_marker: "# plain"
    vzd_destroy: []
    vzd_by_name: "{{ dict(vzd_containers | map(attribute='name') | zip(vzd_containers)) }}"
  tasks:
    - ansible.builtin.template:
        src: $repo/examples/ansible/roles/vzd_containers/templates/container.hcl.j2
        dest: "{{ plain_dir }}/{{ vzd_ct_name }}.hcl"
        mode: "0644"
      loop: "{{ vzd_containers | map(attribute='name') | list }}"
      loop_control:
        loop_var: vzd_ct_name
EOF

# timed LABEL PLAYBOOK: runs it, checks the recap, prints seconds and changed.
timed() {
	local log=$work/$1.log t0 t1 changed
	t0=$(date +%s.%N)
	if ! ansible-playbook -i "$inv" "$2" >"$log" 2>&1; then
		echo "bench-fleet: $1 failed:" >&2
		tail -40 "$log" >&2
		exit 1
	fi
	t1=$(date +%s.%N)
	changed=$(awk '/ changed=/ {sub(/.*changed=/, ""); s += $1} END {print s + 0}' "$log")
	echo "$(echo "$t1 - $t0" | bc -l) $changed"
}
median() { sort -n | awk '{a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f", m}'; }

site=examples/ansible/site.yml
read -r converge converge_changed < <(timed converge "$site")
# Every node runs its 20.
for ((i = 0; i < nodes; i++)); do
	# shellcheck disable=SC2046
	n=$("$bin" status --json $(flags_of "$i") | python3 -c 'import json,sys; print(sum(c["actual"] == "running" for c in json.load(sys.stdin)["containers"]))')
	[ "$n" = "$cts" ] || { echo "bench-fleet: node $i runs $n containers, want $cts" >&2; exit 1; }
done
steps_before=$(cat "$work"/n*/agent.log | grep -c 'msg="step applied"' || true)
nochange=() nochange_changed=0
for ((k = 0; k < nochange_runs; k++)); do
	read -r s c < <(timed "nochange$k" "$site")
	nochange+=("$s")
	nochange_changed=$((nochange_changed + c))
done
steps_after=$(cat "$work"/n*/agent.log | grep -c 'msg="step applied"' || true)

plain=() plain_nochange=()
read -r s _ < <(timed plain0 "$work/plain.yml")
plain+=("$s")
for ((k = 0; k < nochange_runs; k++)); do
	read -r s c < <(timed "plainnc$k" "$work/plain.yml")
	plain_nochange+=("$s")
done

nc_med=$(printf '%s\n' "${nochange[@]}" | median)
pnc_med=$(printf '%s\n' "${plain_nochange[@]}" | median)
ratio=$(echo "$nc_med / $pnc_med" | bc -l | xargs printf '%.1f')

out=docs/bench/fleet.md
mkdir -p docs/bench
{
	echo "# Fleet: Ansible converging vzd nodes"
	echo
	echo "Generated by \`scripts/bench-fleet.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
	echo "Machine: $(nproc) CPUs, kernel $(uname -r), $(ansible-playbook --version | head -1), Go $(go env GOVERSION);"
	echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared)."
	echo
	echo "Setup: $nodes sandbox nodes on this machine, each a temporary root with its own"
	echo "config directory, network namespace and \`vzd agent\` (4 workers, the default),"
	echo "reached with \`ansible_connection=local\` (no SSH), forks 10. $cts busybox"
	echo "containers per node (128M RAM, 128M disk), declared in the inventory and"
	echo "rendered by the \`vzd_containers\` role of \`examples/ansible\`."
	echo
	echo "| what | command | runs | seconds | tasks changed (all hosts) |"
	echo "|---|---|---|---|---|"
	echo "| converge $nodes × $cts from nothing (render, validate, install, wait until \`vzd plan\` is empty and \`vzd status\` shows all running; includes the busybox template build on each node) | \`ansible-playbook -i hosts.yml examples/ansible/site.yml\` | 1 | $(printf '%.1f' "$converge") | $converge_changed |"
	echo "| same, nothing to change (median) | same command | $nochange_runs | $nc_med | $nochange_changed |"
	echo "| floor: plain Ansible \`template\` of the same 60 files, first run | \`ansible-playbook -i hosts.yml plain.yml\` | 1 | $(printf '%.1f' "${plain[0]}") | |"
	echo "| floor: same, nothing to change (median) | same command | $nochange_runs | $pnc_med | |"
	echo
	echo "A no-change run of the role takes ${ratio}× the floor's no-change run: the"
	echo "role's extra cost is one staged file per node holding all its containers"
	echo "(rendered and compared each run; validated by \`vzd validate\` only when it"
	echo "changes), a \`find\`, and one \`vzd plan --json\` and one \`vzd status --json\`"
	echo "per node (each once when nothing is to wait for). Steps the agents applied during the"
	echo "$nochange_runs no-change runs: $((steps_after - steps_before)) (the spec hashes are unchanged, so"
	echo "nothing is planned). Run-to-run spread on this shared machine is large; the"
	echo "no-change runs were: $(printf '%.1f ' "${nochange[@]}")s; the floor's: $(printf '%.1f ' "${plain_nochange[@]}")s."
} >"$out"
echo "bench-fleet: wrote $out"
