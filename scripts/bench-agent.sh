#!/bin/bash
# Benchmark of the agent (`vzd agent`: the reconciler loop driving the real
# actuators) on busybox containers. Writes docs/bench/agent.md. Root only;
# bounded (about 6 minutes on an idle 2-CPU machine).
#
#   latency: a config file written (temp + rename) to its container's init
#            exec'd, and to the agent reporting it running; median of 20
#            containers one after another (template cache warm), plus the
#            first container, which builds the busybox template.
#   bulk:    200 files written at once until all 200 run: wall time, agent
#            RSS (max), supervisor RSS/PSS per container.
#   no-op:   a pass with nothing to do over every container (SIGHUP until
#            every container is synced again), `vzd plan --json` over them
#            (hyperfine), and the loop alone (go test -bench in reconciler).
#   idle:    agent CPU over one resync period (5 min) with every container running.
#   peer:    LXC: lxc-create -t busybox + lxc-start until RUNNING.
#
# Everything lives under /var/tmp/vzd-bench-agent in its own network
# namespace; everything is removed at the end, also on error.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh bench # each script runs on its own too: its peers and tools
[ "$(id -u)" = 0 ] || { echo "bench-agent: needs root" >&2; exit 1; }

N_LAT=${N_LAT:-20}
N_LAT2=${N_LAT2:-10}
N_BULK=${N_BULK:-200}
IDLE_S=${IDLE_S:-300} # one resync period (the agent's default --resync)
NOOP_RUNS=${NOOP_RUNS:-3}
LXC_RUNS=${LXC_RUNS:-10}
R=/var/tmp/vzd-bench-agent
NS=vzdb-agent
P=vzdba- # container ID prefix: what cleanup looks for
BIN=/tmp/vzd-bench
out=docs/bench/agent.md
conf=$R/etc/vz/conf
flags=(--root "$R" --config-dir "$conf" --global-config "$R/etc/vz/vz.conf" --host-netns "/run/netns/$NS")
vzd=$BIN/vzd
agent_pid=

say() { echo "bench-agent: $*" >&2; }

cleanup() {
	set +e
	if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
		kill -TERM "$agent_pid"
		for _ in $(seq 100); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$agent_pid" 2>/dev/null
	fi
	agent_pid=
	# An agent of an earlier run (same root) holds the lock: stop it too.
	if [ -s "$R/run/vzd/agent.lock" ]; then
		local old
		old=$(cat "$R/run/vzd/agent.lock")
		if [ -n "$old" ] && grep -qa -- "$R" "/proc/$old/cmdline" 2>/dev/null; then
			kill -TERM "$old"; sleep 1; kill -KILL "$old" 2>/dev/null
		fi
	fi
	if [ -d "$conf" ]; then
		mkdir -p "$R/conf.off"
		find "$conf" -maxdepth 1 -type f -exec mv -t "$R/conf.off" {} + 2>/dev/null
	fi
	if [ -x "$vzd" ] && [ -d "$R/vz" ]; then
		timeout 300 "$vzd" destroy --all --yes "${flags[@]}" >"$BIN/destroy.log" 2>&1 || { say "destroy --all failed (tail of $BIN/destroy.log below); forcing"; tail -n 5 "$BIN/destroy.log" >&2; }
	fi
	# Whatever is left: the containers' processes, supervisors, cgroups.
	local d pid
	for d in /sys/fs/cgroup/*/vzd/"$P"*; do
		[ -d "$d" ] || continue
		for pid in $(cat "$d"/cgroup.procs 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
	done
	pkill -KILL -f "^vzd-supervisor $P" 2>/dev/null
	for pid in $(grep -las -- "$R" /proc/[0-9]*/cmdline | cut -d/ -f3); do
		[ "$pid" != $$ ] && kill -KILL "$pid" 2>/dev/null
	done
	sleep 0.2
	for d in /sys/fs/cgroup/*/vzd/"$P"*; do
		[ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	awk -v r="$R" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null
	done
	losetup -a | awk -F: -v r="$R" 'index($0, r) {print $1}' | while read -r dev; do
		losetup -d "$dev" 2>/dev/null
	done
	ip netns delete "$NS" 2>/dev/null
	if grep -q -- "$R" /proc/self/mounts; then
		say "mounts left under $R: not removing it"
	else
		rm -rf "$R"
	fi
	rm -rf "$R.lxc"
	set -e
}
trap cleanup EXIT
trap 'exit 1' INT TERM
cleanup # leftovers of an interrupted run

say "build"
mkdir -p "$BIN"
go build -o "$vzd" ./cmd/vzd
go test -c -o "$BIN/reconciler.test" ./reconciler

mkdir -p "$conf"
chmod 755 "$R"
ip netns add "$NS"
ip -n "$NS" link set lo up

# ctfile ID IP prints a busybox container file.
ctfile() {
	cat <<EOF
container "$1" {
  ostemplate   = "busybox"
  stop_timeout = "5s"
  memory {
    ram = "128M"
  }
  disk {
    size = "128M"
  }
  network {
    interface "eth0" {
      ip = ["$2/32"]
    }
  }
}
EOF
}

# The helper does the timing: it writes files, polls /proc and the agent's
# control socket, and reads the agent's log.
cat >"$BIN/agentbench.py" <<'EOF'
import http.client, json, os, re, signal, socket, statistics, sys, time
from datetime import datetime

root, conf, prefix = os.environ["R"], os.environ["CONF"], os.environ["P"]
agent = int(os.environ["AGENT"])
sock = os.path.join(root, "run/vzd/vzd.sock")
hz = os.sysconf("SC_CLK_TCK")

class UnixConn(http.client.HTTPConnection):
    def __init__(self):
        super().__init__("localhost", timeout=10)
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sock)

def status():
    c = UnixConn()
    c.request("GET", "/status")
    s = json.loads(c.getresponse().read())
    c.close()
    return s

def ctfile(id, ip):
    return f'''container "{id}" {{
  ostemplate   = "busybox"
  stop_timeout = "5s"
  memory {{
    ram = "128M"
  }}
  disk {{
    size = "128M"
  }}
  network {{
    interface "eth0" {{
      ip = ["{ip}/32"]
    }}
  }}
}}
'''

def write(id, ip):
    # The temp file beside the target (most tools), or, with TMPOUT, in
    # another directory of the same file system: then the config
    # directory sees one event, the rename.
    tmp = os.path.join(os.environ.get("TMPOUT") or conf, "." + id + ".tmp")
    with open(tmp, "w") as f:
        f.write(ctfile(id, ip))
    os.rename(tmp, os.path.join(conf, id + ".hcl"))

def init_pid(id):
    """The pid of the container's init once it has exec'd busybox init:
    a process of the container's cgroup named init whose executable is
    busybox."""
    try:
        procs = open(f"/sys/fs/cgroup/pids/vzd/{id}/cgroup.procs").read().split()
    except OSError:
        return 0
    for p in procs:
        try:
            if open(f"/proc/{p}/comm").read().strip() == "init" and os.readlink(f"/proc/{p}/exe").endswith("busybox"):
                return int(p)
        except OSError:
            pass
    return 0

def running(st, id):
    for c in st["containers"] or []:
        if c["id"] == id:
            return c["actual"] == "running" and not c.get("last_error")
    return False

def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])

def rss_kb(pid, key="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0

def ts(s):
    # RFC 3339 with nanoseconds from Go: keep microseconds.
    m = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-].*)", s)
    frac = (m.group(2) or ".0")[:7]
    return datetime.fromisoformat(m.group(1) + frac + ("+00:00" if m.group(3) == "Z" else m.group(3))).timestamp()

LOG = re.compile(r'^time=(\S+) .*msg="step applied" container=(\S+) step=(\S+) .* took=(\S+)$')

def dur_ms(s):
    m = re.match(r"([\d.]+)(ms|s|µs|us|ns)$", s)
    v = float(m.group(1))
    return v * {"ms": 1, "s": 1000, "µs": 1e-3, "us": 1e-3, "ns": 1e-6}[m.group(2)]

def steps(id):
    """The agent's step log of id: [(step, start wall time, took ms)]."""
    out = []
    for line in open(os.path.join(root, "agent.log")):
        m = LOG.match(line.strip())
        if m and m.group(2) == id:
            took = dur_ms(m.group(4))
            out.append((m.group(3), ts(m.group(1)) - took / 1000, took))
    return out

def latency(id, ip, timeout=120):
    """Write id's file; return (ms to init exec'd, ms to the agent
    reporting running, ms to the first step starting, step durations)."""
    t0w = time.time()
    t0 = time.monotonic()
    write(id, ip)
    t_init = t_agent = None
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        if t_init is None and init_pid(id):
            t_init = now - t0
        if t_init is not None:
            if running(status(), id):
                t_agent = time.monotonic() - t0
                break
            time.sleep(0.005)
        else:
            time.sleep(0.001)
    if t_agent is None:
        sys.exit(f"{id}: not running after {timeout}s")
    time.sleep(0.05)  # the log line of the last step
    st = steps(id)
    settle(time.time() - (time.monotonic() - t0))
    first = (st[0][1] - t0w) * 1000 if st else float("nan")
    return t_init * 1000, t_agent * 1000, first, {s: took for s, _, took in st}

def settle(t0, timeout=60):
    """Wait until the pass started by a file written at t0 is drained:
    every container synced after t0."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        cs = status()["containers"] or []
        if all(c.get("synced") and ts(c["synced"]) >= t0 for c in cs):
            return
        time.sleep(0.05)

def cmd_latency(ids):
    rows = []
    for i, id in enumerate(ids):
        ip = os.environ["IPBASE"] + str(i + 1)
        known = len(status()["containers"] or [])
        rows.append((id,) + latency(id, ip) + (known,))
        time.sleep(0.2)
    for id, ti, ta, first, st, known in rows:
        print(id, f"{ti:.1f}", f"{ta:.1f}", f"{first:.1f}", known, json.dumps(st))

def cmd_bulk(n):
    ids = [f"{prefix}c{i:03d}" for i in range(1, n + 1)]
    rss0 = rss_kb(agent)
    cpu0 = cpu_ticks(agent)
    t0 = time.monotonic()
    for i, id in enumerate(ids):
        write(id, f"10.99.{1 + i // 250}.{1 + i % 250}")
    t_written = time.monotonic() - t0
    seen = {}
    rss_max = rss0
    t_agent = None
    deadline = t0 + 480
    while time.monotonic() < deadline:
        rss_max = max(rss_max, rss_kb(agent))
        for id in ids:
            if id not in seen and init_pid(id):
                seen[id] = time.monotonic() - t0
        if len(seen) == n:
            st = status()
            if all(running(st, id) for id in ids):
                t_agent = time.monotonic() - t0
                break
        time.sleep(0.05)
    if t_agent is None:
        sys.exit(f"bulk: {len(seen)}/{n} inits seen after 480 s")
    cpu = (cpu_ticks(agent) - cpu0) / hz
    rss_max = max(rss_max, rss_kb(agent))
    # Supervisors: the parent of each init.
    sup_rss = sup_pss = nsup = 0
    for id in ids:
        p = init_pid(id)
        ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
        if b"vzd-supervisor" in open(f"/proc/{ppid}/cmdline", "rb").read():
            nsup += 1
            sup_rss += rss_kb(ppid)
            for line in open(f"/proc/{ppid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    sup_pss += int(line.split()[1])
    print(f"n {n}")
    print(f"written_s {t_written:.3f}")
    print(f"all_init_s {max(seen.values()):.2f}")
    print(f"median_init_s {statistics.median(seen.values()):.2f}")
    print(f"all_agent_s {t_agent:.2f}")
    print(f"rss0_kb {rss0}")
    print(f"rss_max_kb {rss_max}")
    print(f"rss_hwm_kb {rss_kb(agent, 'VmHWM')}")
    print(f"agent_cpu_s {cpu:.2f}")
    print(f"supervisors {nsup}")
    print(f"sup_rss_kb {sup_rss / max(nsup, 1):.0f}")
    print(f"sup_pss_kb {sup_pss / max(nsup, 1):.0f}")

def cmd_noop(runs):
    """SIGHUP: one pass that loads every file and queues every container;
    it is over when every container has been synced after the signal."""
    res = []
    for _ in range(runs):
        time.sleep(1.5)
        st0 = status()
        nlog0 = sum(1 for _ in open(os.path.join(root, "agent.log")))
        cpu0 = cpu_ticks(agent)
        t0 = time.time()
        os.kill(agent, signal.SIGHUP)
        done = None
        while time.time() < t0 + 90:
            time.sleep(0.2)
            st = status()
            # Over when a pass loaded after the signal and every container
            # was synced after that load (a resync pass started meanwhile
            # is waited for too, and counted in the passes column).
            if st["passes"] > st0["passes"] and ts(st["last_pass"]) >= t0 and all(c.get("synced") and ts(c["synced"]) >= ts(st["last_pass"]) for c in st["containers"]):
                done = st
                break
        if done is None:
            sys.exit("no-op pass did not finish in 60 s")
        cpu = (cpu_ticks(agent) - cpu0) / hz
        last = max(ts(c["synced"]) for c in done["containers"])
        loaded = ts(done["last_pass"])
        steps = sum(1 for line in list(open(os.path.join(root, "agent.log")))[nlog0:] if 'msg="step applied"' in line)
        res.append(((last - t0) * 1000, (loaded - t0) * 1000, cpu * 1000, steps, len(done["containers"]), done["passes"] - st0["passes"]))
    for r in res:
        print("run", " ".join(f"{x:.1f}" if isinstance(x, float) else str(x) for x in r))
    print(f"median_ms {statistics.median(r[0] for r in res):.1f}")
    print(f"min_ms {min(r[0] for r in res):.1f}")
    print(f"max_ms {max(r[0] for r in res):.1f}")
    print(f"median_load_ms {statistics.median(r[1] for r in res):.1f}")
    print(f"median_cpu_ms {statistics.median(r[2] for r in res):.1f}")
    print(f"steps {sum(r[3] for r in res)}")
    print(f"containers {res[-1][4]}")

def pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]

def cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return b""

def ticks(pid):
    try:
        return cpu_ticks(pid)
    except OSError:
        return 0

def oncpu_ns(pid):
    """Time on CPU of every thread of pid, in ns (schedstat: finer than
    the 10 ms ticks of stat)."""
    n = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            n += int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0])
        except OSError:
            pass
    return n

def cmd_idle(secs):
    """Agent CPU over secs seconds with nothing changing. The window is one
    resync period by default, so it holds exactly one resync pass (the
    ticker does not move). The floor is the CPU of the seconds that
    overlap no pass; nothing polls the agent during the window."""
    st0 = status()
    sups = [p for p in pids() if cmdline(p).startswith(b"vzd-supervisor\0" + prefix.encode())]
    a0 = cpu_ticks(agent)
    s0 = sum(ticks(p) for p in sups)
    t0 = time.monotonic()
    samples = [(time.time(), oncpu_ns(agent))]
    end = t0 + secs
    while time.monotonic() < end:
        time.sleep(max(0, min(1.0, end - time.monotonic())))
        samples.append((time.time(), oncpu_ns(agent)))
    a1 = cpu_ticks(agent)
    s1 = sum(ticks(p) for p in sups)
    el = time.monotonic() - t0
    st1 = status()
    print(f"seconds {el:.1f}")
    print(f"agent_cpu_s {(a1 - a0) / hz:.2f}")
    print(f"agent_pct {100 * (a1 - a0) / hz / el:.3f}")
    print(f"agent_ns_pct {100 * (samples[-1][1] - samples[0][1]) / 1e9 / el:.4f}")
    print(f"passes {st1['passes'] - st0['passes']}")
    print(f"supervisors {len(sups)}")
    print(f"sup_cpu_s {(s1 - s0) / hz:.2f}")
    print(f"sup_pct {100 * (s1 - s0) / hz / el:.3f}")
    print(f"running {st1['running']}")
    # The last resync pass of the window: from its load to its last sync.
    lp = ts(st1["last_pass"])
    sy = [ts(c["synced"]) for c in st1["containers"] if c.get("synced")]
    busy = None
    if st1["passes"] > st0["passes"] and sy and min(sy) >= lp:
        print(f"resync_pass_ms {(max(sy) - lp) * 1000:.0f}")
        busy = (lp - 0.5, max(sy) + 2.0) # the pass and the GC after it
    else:
        print("resync_pass_ms n/a")
    # The floor: the one-second samples that overlap no pass (the
    # heartbeat, timers, the garbage collector).
    fns, fs = 0, 0.0
    pass_ns = 0
    for (ta, na), (tb, nb) in zip(samples, samples[1:]):
        if busy and tb > busy[0] and ta < busy[1]:
            pass_ns += nb - na
            continue
        fns, fs = fns + nb - na, fs + tb - ta
    print(f"floor_pct {100 * fns / 1e9 / fs:.4f} {fs:.1f}" if fs > 0 else "floor_pct n/a")
    print(f"pass_cpu_ms {pass_ns / 1e6:.1f}" if busy else "pass_cpu_ms n/a")

cmd = sys.argv[1]
if cmd == "latency":
    cmd_latency(sys.argv[2:])
elif cmd == "bulk":
    cmd_bulk(int(sys.argv[2]))
elif cmd == "noop":
    cmd_noop(int(sys.argv[2]))
elif cmd == "idle":
    cmd_idle(float(sys.argv[2]))
EOF

py() { R=$R CONF=$conf P=$P AGENT=$agent_pid IPBASE=${IPBASE:-} TMPOUT=${TMPOUT:-} /usr/bin/python3 "$BIN/agentbench.py" "$@"; }

# First, before any container runs here: the loop's own cost.
say "loop alone: go test -bench"
"$BIN/reconciler.test" -test.run '^$' -test.bench 'BenchmarkPass|BenchmarkStatus' -test.benchmem -test.count "${GOBENCH_COUNT:-5}" >"$BIN/gobench.txt"
"$BIN/reconciler.test" -test.run '^$' -test.bench 'BenchmarkPassNoop200$' -test.count 3 -test.cpuprofile "$BIN/cpu.prof" >/dev/null

say "start the agent"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
# Its own session, so that the signals of this script's job never reach it.
setsid "$vzd" agent "${flags[@]}" >"$R/agent.log" 2>&1 </dev/null &
agent_pid=$!
for _ in $(seq 300); do [ -S "$R/run/vzd/vzd.sock" ] && break; sleep 0.1; done
[ -S "$R/run/vzd/vzd.sock" ] || { cat "$R/agent.log" >&2; exit 1; }
sleep 0.5

say "latency: first container (builds the busybox template)"
IPBASE=10.99.0. py latency "${P}first" >"$BIN/first.txt"
ids=()
for i in $(seq -w 1 "$N_LAT"); do ids+=("${P}l$i"); done
say "latency: $N_LAT containers one after another"
IPBASE=10.99.100. py latency "${ids[@]}" >"$BIN/lat.txt"
say "latency: $N_LAT2 more, the temp file written outside the config directory"
mkdir -p "$R/tmp"
ids2=()
for i in $(seq -w 1 "$N_LAT2"); do ids2+=("${P}m$i"); done
TMPOUT=$R/tmp IPBASE=10.99.101. py latency "${ids2[@]}" >"$BIN/latm.txt"

say "bulk: $N_BULK containers at once"
py bulk "$N_BULK" >"$BIN/bulk.txt"
sleep 3

say "latency with every container known: new IDs sorting last, then first"
IPBASE=10.99.200. py latency "${P}z1" "${P}z2" "${P}z3" >"$BIN/latz.txt"
IPBASE=10.99.201. py latency "${P}a1" "${P}a2" "${P}a3" >"$BIN/lata.txt"
loops=$(ls /sys/block | grep -c '^loop')

say "no-op passes"
py noop "$NOOP_RUNS" >"$BIN/noop.txt"
total=$(awk '/^containers/{print $2}' "$BIN/noop.txt")

say "vzd plan --json over $total containers"
hyperfine -N --runs 5 --warmup 1 --export-json "$BIN/plan.json" \
	"$vzd plan --json ${flags[*]}" >/dev/null 2>"$BIN/plan.err" || { cat "$BIN/plan.err" >&2; exit 1; }

say "syscalls of one no-op pass (strace -c)"
strace -c -f -q -p "$agent_pid" -o "$BIN/strace.txt" &
strace_pid=$!
sleep 1
kill -HUP "$agent_pid"
sleep 8
kill -INT "$strace_pid"; wait "$strace_pid" 2>/dev/null || true

perf_ok=0
if command -v perf >/dev/null; then
	say "CPU profile of three no-op passes (perf record)"
	perf record -q -F 999 -g -o "$BIN/perf.data" -p "$agent_pid" -- sleep 7 >/dev/null 2>&1 &
	perf_pid=$!
	sleep 0.5
	for _ in 1 2 3; do kill -HUP "$agent_pid"; sleep 2; done
	wait "$perf_pid" && perf_ok=1
fi

say "idle CPU over $IDLE_S s"
py idle "$IDLE_S" >"$BIN/idle.txt"

agent_rss_end=$(awk '/^VmRSS/{print $2}' "/proc/$agent_pid/status")
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# Peer: LXC's busybox template, privileged, no network: declared (created)
# to running. Same busybox binary as vzd's template.
say "peer: lxc"
lxc_ok=1
mkdir -p "$R.lxc"
cat >"$R.lxc/default.conf" <<EOF
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
EOF
lxc_create_ms=() lxc_total_ms=() lxc_start_ms=()
for i in $(seq "$LXC_RUNS"); do
	n=vzdbl$i
	t0=$EPOCHREALTIME
	lxc-create -P "$R.lxc" -n "$n" -t busybox -f "$R.lxc/default.conf" >/dev/null 2>>"$BIN/lxc.err" || { lxc_ok=0; break; }
	t1=$EPOCHREALTIME
	lxc-start -P "$R.lxc" -n "$n" -d >>"$BIN/lxc.err" 2>&1 || { lxc_ok=0; break; }
	lxc-wait -P "$R.lxc" -n "$n" -s RUNNING -t 30 || { lxc_ok=0; break; }
	t2=$EPOCHREALTIME
	lxc_create_ms+=("$(python3 -c "print(($t1-$t0)*1000)")")
	lxc_start_ms+=("$(python3 -c "print(($t2-$t1)*1000)")")
	lxc_total_ms+=("$(python3 -c "print(($t2-$t0)*1000)")")
done
for i in $(seq "$LXC_RUNS"); do
	lxc-stop -P "$R.lxc" -n "vzdbl$i" -k >/dev/null 2>&1 || true
	lxc-destroy -P "$R.lxc" -n "vzdbl$i" >/dev/null 2>&1 || true
done

say "write $out"
med() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print("%.1f" % statistics.median(v)) if v else print("n/a")' "$@"; }
mn() { python3 -c 'import sys; v=[float(x) for x in sys.argv[1:]]; print("%.1f" % min(v))' "$@"; }
mx() { python3 -c 'import sys; v=[float(x) for x in sys.argv[1:]]; print("%.1f" % max(v))' "$@"; }
col() { awk -v c="$1" '{print $c}' "${2:-$BIN/lat.txt}"; }
get() { awk -v k="$2" '$1==k{print $2}' "$BIN/$1.txt"; }
ratio() { python3 -c "print('%.2f' % ($1/$2))"; }
stepmed() { python3 - "$BIN/lat.txt" "$1" <<'EOF'
import json, statistics, sys
v = [json.loads(l.split(None, 5)[5]).get(sys.argv[2]) for l in open(sys.argv[1])]
v = [x for x in v if x is not None]
print("%.1f" % statistics.median(v) if v else "n/a")
EOF
}
lat_init=$(med $(col 2)); lat_agent=$(med $(col 3)); lat_first=$(med $(col 4))
latm_init=$(med $(col 2 "$BIN/latm.txt")); latm_agent=$(med $(col 3 "$BIN/latm.txt")); latm_first=$(med $(col 4 "$BIN/latm.txt"))
read -r _ first_init first_agent first_first _ <"$BIN/first.txt"
plan_ms=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.1f %.1f %.1f" % (r["median"]*1000, r["min"]*1000, r["max"]*1000))' "$BIN/plan.json")
read -r plan_med plan_min plan_max <<<"$plan_ms"
gobench=$(python3 - "$BIN/gobench.txt" <<'EOF'
import statistics, sys
rows = {}
for l in open(sys.argv[1]):
    f = l.split()
    if f and f[0].startswith("Benchmark"):
        rows.setdefault(f[0].rsplit("-", 1)[0], []).append((float(f[2]) / 1e6, f[4], f[6]))
for k, v in rows.items():
    ms = [x[0] for x in v]
    print(f"| {k} | {statistics.median(ms):.3f} ms | {min(ms):.3f} / {max(ms):.3f} ms | {v[-1][1]} | {v[-1][2]} |")
EOF
)
goprof=$(go tool pprof -top -cum -focus=benchNoop -nodecount 60 "$BIN/reconciler.test" "$BIN/cpu.prof" 2>/dev/null | awk '/flat%/ || /vzd\/|sort\.Slice|json\.Unmarshal|filepath\.Glob|renameio/' | head -20)
perfrep="perf not available"
if [ "$perf_ok" = 1 ]; then
	perfrep=$(perf report -i "$BIN/perf.data" --children --sort symbol --stdio -g none --percent-limit 1 2>/dev/null |
		awk '/^#/ || NF == 0 {next} /vzd\/|mountinfo|syscall\.Syscall|runtime\.gcBgMarkWorker|encoding\/json|hcl/ {printf "%8s %8s  %s\n", $1, $2, $4}' | head -40)
fi
gomed() { grep -E "^$1(-[0-9]+)? " "$BIN/gobench.txt" | awk '{print $3/1e6}' | sort -n | awk '{a[NR]=$1} END {printf "%.2f", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
idle_pct=$(get idle agent_ns_pct)
noop_med=$(get noop median_ms)
met() { python3 -c "print('**met**' if $1 else '**not met**')"; }
if [ "$lxc_ok" = 1 ] && [ "${#lxc_total_ms[@]}" -gt 0 ]; then
	lxc_total=$(med "${lxc_total_ms[@]}"); lxc_create=$(med "${lxc_create_ms[@]}"); lxc_start=$(med "${lxc_start_ms[@]}")
	lxc_row="| LXC $(lxc-start --version): \`lxc-create -t busybox\` + \`lxc-start -d\` until \`lxc-wait -s RUNNING\` | $lxc_total ms (create $lxc_create, start $lxc_start) | $(ratio "$lat_init" "$lxc_total")× |"
else
	lxc_row="| LXC: did not run here (see $BIN/lxc.err of the run) | n/a | n/a |"
fi

# Figures for the bottleneck notes.
slope=$(python3 - "$BIN/lat.txt" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
x = [float(r[4]) for r in rows]; y = [float(r[3]) for r in rows]
print("%.1f" % statistics.linear_regression(x, y).slope if len(set(x)) > 1 else "n/a")
EOF
)
pct() { awk -v f="$2" '$3 == f {print $1; exit}' <<<"$1"; }
pct_find=$(pct "$perfrep" "vzd/actuators/image.findLoop"); pct_mounts=$(pct "$perfrep" "vzd/actuators/image.mountsAt")
pct_observe=$(pct "$perfrep" "vzd/internal/node.(*Node).Observe")
pct_rt=$(pct "$perfrep" "vzd/actuators/runtime.(*Runtime).Status"); pct_tree=$(pct "$perfrep" "vzd/actuators/cgroups.treePids")
pct_cgread=$(pct "$perfrep" "vzd/actuators/cgroups.(*v1).Read"); pct_load=$(pct "$perfrep" "vzd/spec.(*Loader).Load")
pct_img=$(pct "$perfrep" "vzd/actuators/image.(*Actuator).Observe"); pct_loops=$(pct "$perfrep" "vzd/actuators/image.readLoops")
gpct() { awk -v f="$1" '$6 == f {print $5; exit}' <<<"$goprof"; }
gpct_pub=$(gpct "vzd/reconciler.(*Reconciler).publish"); gpct_rec=$(gpct "vzd/reconciler.ListRecords")
bop=$(grep -E '^BenchmarkPassNoop200(-[0-9]+)? ' "$BIN/gobench.txt" | awk '{printf "%.0f", $5/1048576; exit}')

mkdir -p docs/bench
cat >"$out" <<EOF
# Agent benchmark

Written by \`scripts/bench-agent.sh\` on $(date -u +%Y-%m-%dT%H:%MZ): kernel $(uname -r), $(nproc) CPUs,
$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo). Load average at start $load_start, at the end $load_end
(the machine is shared with other work: figures are noisy; compare ratios within this run).

One sandbox node: root \`$R\` (ext4 on the host disk), config directory \`$conf\`, its own network
namespace (\`ip netns add $NS\`), the agent run as
\`vzd agent --root $R --config-dir $conf --global-config $R/etc/vz/vz.conf --host-netns /run/netns/$NS\`
with its defaults (4 workers, resync every 5 min, 100 ms debounce of file events).
Every container is a busybox container: \`ostemplate = "busybox"\`, \`ram = "128M"\`, \`disk.size = "128M"\`,
one routed address \`10.99.x.y/32\` on \`eth0\`. The timing helper (Python, written by the script) polls
\`/proc\` every 1 ms and the agent's control socket (\`GET /status\` on \`$R/run/vzd/vzd.sock\`).

**Running** means two things, both measured:

- *init exec'd*: a process of the container's cgroup (\`/sys/fs/cgroup/pids/vzd/ID/cgroup.procs\`) is named
  \`init\` and its \`/proc/PID/exe\` is busybox (the container's own init has been exec'd);
- *agent reports running*: \`GET /status\` shows the container \`actual = "running"\` with no error, i.e. the
  agent has finished the whole plan (image, mount, limits, start, network).

## Goals

| goal | measured | |
|---|---|---|
| file to running under 100 ms (busybox, template cache warm), temp file written in the config directory, then renamed | $lat_init ms to init exec'd, $lat_agent ms to reported running (median of $N_LAT) | $(met "$lat_init < 100") |
| the same, temp file written in another directory of the same file system, then renamed in | $latm_init ms to init exec'd, $latm_agent ms to reported running (median of $N_LAT2) | $(met "$latm_init < 100") |
| no-op pass over 200 containers under 50 ms | $noop_med ms over $total containers (SIGHUP to the last container synced, median of $NOOP_RUNS) | $(met "$noop_med < 50") |
| idle CPU under 0.1% | $idle_pct% of one CPU over $(get idle seconds) s with $(get idle running) containers running | $(met "$idle_pct < 0.1") |

## File to running

A file written atomically, then polled: the temp file \`.ID.tmp\` written in the config directory itself and
renamed (what most config-management tools and editors do), and, in the rows in italics, written in \`$R/tmp\`
(same file system) and renamed into the directory, which then sees a single event.
Median of $N_LAT containers written one after another, the busybox template image already built; after each,
the helper waits until the pass the file started is over (every container synced again), so samples do not overlap.

| figure | median | min | max |
|---|---:|---:|---:|
| file to init exec'd | $lat_init ms | $(mn $(col 2)) ms | $(mx $(col 2)) ms |
| file to agent reports running | $lat_agent ms | $(mn $(col 3)) ms | $(mx $(col 3)) ms |
| file to the first step starting (debounce + load + queue) | $lat_first ms | $(mn $(col 4)) ms | $(mx $(col 4)) ms |
| *temp file outside the directory ($N_LAT2 more containers):* file to init exec'd | $latm_init ms | $(mn $(col 2 "$BIN/latm.txt")) ms | $(mx $(col 2 "$BIN/latm.txt")) ms |
| *temp file outside:* file to agent reports running | $latm_agent ms | $(mn $(col 3 "$BIN/latm.txt")) ms | $(mx $(col 3 "$BIN/latm.txt")) ms |
| *temp file outside:* file to the first step starting | $latm_first ms | $(mn $(col 4 "$BIN/latm.txt")) ms | $(mx $(col 4 "$BIN/latm.txt")) ms |

Where the time goes (median of each step's \`took\` in the agent's log, \`msg="step applied"\`):

| step | median |
|---|---:|
| create-image (sparse copy of the template image, offline resize to 128M) | $(stepmed create-image) ms |
| mount (loop device, mount, bind of the root) | $(stepmed mount) ms |
| limits (cgroups) | $(stepmed limits) ms |
| start (supervisor, namespaces, idmapped root, init exec'd) | $(stepmed start) ms |
| network (veth, address, route, proxy ARP, hostname/resolver files) | $(stepmed network) ms |

Every file event makes a full pass: the agent re-reads every file and queues *every* known container, those
whose spec changed first, then the others in ID order. The same measurement (temp file in the directory) with
every container of the next sections known ($(awk '{print $5}' "$BIN/latz.txt" | head -1) containers running), 3 samples each:

| new container's ID | file to init exec'd (median, min, max) | file to first step | to reported running |
|---|---:|---:|---:|
| sorts after every other ID (\`${P}z1..3\`) | $(med $(col 2 "$BIN/latz.txt")) ms ($(mn $(col 2 "$BIN/latz.txt")) – $(mx $(col 2 "$BIN/latz.txt"))) | $(med $(col 4 "$BIN/latz.txt")) ms | $(med $(col 3 "$BIN/latz.txt")) ms |
| sorts before every other ID (\`${P}a1..3\`) | $(med $(col 2 "$BIN/lata.txt")) ms ($(mn $(col 2 "$BIN/lata.txt")) – $(mx $(col 2 "$BIN/lata.txt"))) | $(med $(col 4 "$BIN/lata.txt")) ms | $(med $(col 3 "$BIN/lata.txt")) ms |

Raw samples of the first $N_LAT (ID, ms to init exec'd, ms to reported running, ms to first step, containers known
before the file was written, step durations):

\`\`\`
$(cat "$BIN/lat.txt")
\`\`\`

First container ever on this root (builds the busybox template image first, then as above; one sample):
file to init exec'd $first_init ms, to reported running $first_agent ms, first step started after $first_first ms.

Peer, measured in the same run (a peer has no "file to running": the closest is creating and starting a
busybox container with its CLI; privileged, no network, directory backend, median of $LXC_RUNS):

| | median | vzd (init exec'd) is |
|---|---:|---:|
| vzd: file to init exec'd | $lat_init ms | 1.00× |
$lxc_row
| vzd's start step alone (agent log) vs \`lxc-start -d\` until RUNNING | $(stepmed start) ms vs ${lxc_start:-n/a} ms | $( [ -n "${lxc_start:-}" ] && ratio "$(stepmed start)" "$lxc_start" || echo n/a)× |

## $N_BULK containers at once

$N_BULK files written in a burst ($(get bulk written_s) s to write them all), polled every 50 ms until every init is exec'd
and the agent reports all running.

| figure | value |
|---|---:|
| wall time until all $N_BULK inits exec'd | $(get bulk all_init_s) s ($(python3 -c "print('%.0f' % ($(get bulk all_init_s)*1000/$N_BULK))") ms per container) |
| wall time until the agent reports all $N_BULK running | $(get bulk all_agent_s) s |
| median container: file to init exec'd | $(get bulk median_init_s) s |
| agent CPU time during the burst (utime+stime) | $(get bulk agent_cpu_s) s |
| agent VmRSS before / max during (sampled every 50 ms) / VmHWM | $(get bulk rss0_kb) / $(get bulk rss_max_kb) / $(get bulk rss_hwm_kb) KiB |
| agent VmRSS at the end of the run ($total containers, after the no-op and idle phases) | $agent_rss_end KiB |
| supervisor per container: RSS / PSS (mean of $(get bulk supervisors)) | $(get bulk sup_rss_kb) / $(get bulk sup_pss_kb) KiB |

## A pass with nothing to do

All $total containers ($N_BULK + $N_LAT + $N_LAT2 + 7) running, no file changed. \`kill -HUP AGENT\` starts one pass (load every
file, list every record, queue every container); it is over when every container's \`synced\` time in
\`GET /status\` is after the signal. No step ran in these passes: $(get noop steps) \`step applied\` lines logged.
Loop devices on the host during the passes (\`/sys/block/loop*\`, this node's and others'): $loops.

| figure | median | min | max |
|---|---:|---:|---:|
| SIGHUP to every container synced (agent's own timestamps) | $noop_med ms | $(get noop min_ms) ms | $(get noop max_ms) ms |
| of which SIGHUP to loaded (files parsed, records read, \`last_pass\`) | $(get noop median_load_ms) ms | | |
| agent CPU per pass (utime+stime delta; includes the status polls every 200 ms) | $(get noop median_cpu_ms) ms | | |
| \`vzd plan --json\` (a process: load + records + observe + plan of every container) | $plan_med ms | $plan_min ms | $plan_max ms |

Raw runs (pass ms, load ms, CPU ms, steps, containers, passes started in the window: more than 1 means a
resync pass overlapped, and the run lasted until it was over too):

\`\`\`
$(grep '^run' "$BIN/noop.txt")
\`\`\`

The loop alone: \`reconciler\` with its in-memory fake node (no observation cost), one goroutine draining the
queue, \`go test -bench 'BenchmarkPass|BenchmarkStatus' -count 5\` (reconciler/bench_test.go). \`PassNoop200\`:
one pass over 200 converged containers (in-memory config, the 200 records read from disk);
\`PassNoop200HCL\`: the same with 200 HCL files parsed by \`spec.Load\`; \`Status200\`: one status snapshot of
200 containers, which the loop takes after every container it syncs.

| benchmark | median | min / max | B/op | allocs/op |
|---|---:|---:|---:|---:|
$gobench

Median no-op pass over 200 fake containers: $(gomed BenchmarkPassNoop200) ms.

Syscalls of the agent during one no-op pass over $total containers (\`strace -c -f -p AGENT\`, 8 s window
around one SIGHUP; strace slows the agent, so only the counts matter):

\`\`\`
$(head -n 18 "$BIN/strace.txt")
\`\`\`

CPU profile of the real agent during three no-op passes over $total containers
(\`perf record -F 999 -g -p AGENT\` for 7 s, one SIGHUP every 2 s;
\`perf report --children --sort symbol -g none\`, vzd's own functions and a few others; children%, self%, symbol):

\`\`\`
$perfrep
\`\`\`

CPU profile of \`BenchmarkPassNoop200\` (\`go tool pprof -top -cum -focus=benchNoop\`, the loop's functions):

\`\`\`
$goprof
\`\`\`

## Idle

$(get idle running) containers running, nothing changing, $(get idle seconds) s: \`/proc/AGENT/stat\` utime+stime delta.

| figure | value |
|---|---:|
| agent CPU | $(get idle agent_cpu_s) s = $idle_pct% of one CPU |
| the same, from the sum of \`/proc/AGENT/task/*/schedstat\` (ns) | $(get idle agent_ns_pct)% of one CPU |
| resync passes in the window (every 5 min) | $(get idle passes) |
| agent CPU of that pass and the 2 s after it (schedstat) | $(get idle pass_cpu_ms) ms |
| the last pass before the end of the window, from its load to its last container synced (agent's timestamps) | $(get idle resync_pass_ms) ms |
| agent CPU outside that pass (the window's one-second samples that overlap no pass, $(awk '$1=="floor_pct"{print $3}' "$BIN/idle.txt") s; schedstat) | $(get idle floor_pct)% of one CPU |
| all $(get idle supervisors) supervisors together | $(get idle sup_cpu_s) s = $(get idle sup_pct)% of one CPU |

## Bottlenecks

Found with this benchmark, then fixed in the reconciler and the image actuator; this run measures the fixed
code (commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)). Earlier runs of this script, before the fixes, on the same machine with
221–237 busybox containers: file to init 160–200 ms (temp file in the directory), a new ID sorting last 4.7 s
to its first step, a no-op pass 2.5–7 s (about 4.5 s of CPU), idle CPU 12–24%, \`BenchmarkPassNoop200\` 34–78 ms
and 40 MiB per pass.

1. **Debounce of file events** (\`reconciler/source.go\`, \`watcher.Run\`): was a fixed 100 ms after the last event
   of a burst, and the temp file of an atomic write restarted it. Fixed (cd26f22, dec20e8): a lone rename
   triggers after 5 ms, and events on names the loader ignores (temp files, swap files, backups) neither trigger
   nor delay a pass. Now: file to first step $lat_first ms (temp file in the directory), $latm_first ms (temp file
   elsewhere).
2. **A new container waited behind the no-op syncs of every other container** (\`reconciler/reconciler.go\`
   \`pass\` queued IDs in sorted order; \`reconciler/queue.go\` was FIFO across passes). Fixed (cd26f22, 794763d):
   changed containers jump the queue. Now, with every container known: a new ID that sorts last waits
   $(med $(col 4 "$BIN/latz.txt")) ms for its first step (max $(mx $(col 4 "$BIN/latz.txt"))), one that sorts first $(med $(col 4 "$BIN/lata.txt")) ms.
3. **Observing one container cost O(loop devices + mounts), so a pass was O(n²)**
   (\`actuators/image/loop_linux.go\` \`findLoop\` → \`Loops()\` read four sysfs files of every \`/sys/block/loop*\` for
   every container, 64–75% of the agent's CPU in a no-op pass; \`mountsAt\` parsed \`/proc/self/mountinfo\` for every
   container, 8%). Fixed (e4c8864): loop devices and mounts are read once per pass (a snapshot the actuator's
   own changes invalidate). Now, in the perf profile above: \`node.Observe\` ${pct_observe:-under 1%} of the agent's CPU,
   \`image.findLoop\` ${pct_find:-under 1%}, \`image.mountsAt\` ${pct_mounts:-under 1%} ($loops loop devices on the host);
   a no-op pass $noop_med ms, $(get noop median_cpu_ms) ms of CPU; idle $idle_pct% of one CPU.
4. **A whole status snapshot after every container synced** (\`reconciler/status.go\` \`publish\` built \`Status()\`,
   a copy and reflection sort of every \`ContainerStatus\`, for a writer that kept one per 200 ms): 36–40% of
   \`BenchmarkPassNoop200\`. Fixed (e4c8864): \`OnChange\` only notifies; the writer builds the status when it
   writes. Now: \`BenchmarkPassNoop200\` $(gomed BenchmarkPassNoop200) ms and ${bop:-?} MiB per pass.
5. **Every pass re-read and decoded every record** (\`reconciler/record.go\`, \`ListRecords\`: JSON holding up to
   two whole specs each). Fixed (d160ced): a record is decoded again only when its file changed since the last
   pass. Now: \`ListRecords\` ${gpct_rec:-under 1%} of \`BenchmarkPassNoop200\`.
6. **The runtime's liveness check walked the container's cgroup tree in every v1 hierarchy** (\`cgroups.treePids\`).
   Fixed (ffbccba): the init's own \`/proc/PID/cgroup\` is read instead. Now: \`runtime.Status\` ${pct_rt:-under 1%} of the
   agent's CPU.
7. **Every pass parsed every file and read back every limit of every container**. Fixed (0c29c0e): \`spec.Loader\`
   still reads every file but parses only those whose bytes changed; a running container's cgroup limits are read
   back every \`--drift-interval\` (default 5 min then, 30 min now; a spec change applies its limits at once whatever it is). Now:
   the load ${pct_load:-under 1%}, \`cgroups.(*v1).Read\` ${pct_cgread:-under 1%} of the agent's CPU.
8. **A no-op pass was bound by system calls** (about 185 per container: \`filepath.EvalSymlinks\` lstat'ing every
   component of three paths per container, \`os.ReadFile\`'s extra stat, fcntl and epoll calls on every sysfs and
   procfs file, every record opened and decoded again, every config file read again). Fixed (34c8db3 and the two
   commits after it): records are decoded again only when their file's identity or times change
   (\`internal/filecache\`; a file changed in the last 2 s is never trusted), config files likewise are only
   lstat'ed (\`spec.Loader\`), \`/proc\` and \`/sys\` files and superblocks are read with three calls, real paths
   are resolved through a per-snapshot memo of their directories, a loop device's number is read once, an init
   found in its cgroup is re-checked once a minute. Now: \`image.Observe\` ${pct_img:-under 1%} of the agent's CPU
   (\`image.readLoops\` ${pct_loops:-under 1%}: the backing file of each of the host's $loops loop devices, once per
   pass), \`runtime.Status\` ${pct_rt:-under 1%}; a no-op pass $noop_med ms, $(get noop median_cpu_ms) ms of CPU.
9. **Idle CPU was two resync passes a minute**, and the loop lstat'ed every config file at each 5 s heartbeat.
   Fixed: the default \`--resync\` is 5 min (file events, init exits, SIGHUP and \`vzd sync\` start a pass at once;
   the timer only catches what changes without an event); the limits read-back of every running container (about
   a dozen cgroup files each, 400 ms of CPU over 200 containers) is every 30 min (\`--drift-interval\`) instead of
   5, so it no longer falls on every resync pass; the heartbeat only beats. Now: idle
   $idle_pct% of one CPU over one resync period, of which the floor (timers, the watchdog heartbeat, the garbage
   collector) is $(get idle floor_pct | cut -d' ' -f1)%.

## Commands

\`\`\`sh
scripts/bench-agent.sh            # all of the above; N_LAT, N_LAT2, N_BULK, IDLE_S, NOOP_RUNS, LXC_RUNS, GOBENCH_COUNT override the sizes
go build -o $BIN/vzd ./cmd/vzd
ip netns add $NS
setsid $BIN/vzd agent ${flags[*]} >$R/agent.log 2>&1 &
# latency, bulk, no-op, idle: $BIN/agentbench.py (written by the script) latency|bulk|noop|idle
hyperfine -N --runs 5 --warmup 1 '$BIN/vzd plan --json ${flags[*]}'
strace -c -f -q -p AGENT   # around one kill -HUP AGENT
go test -c -o reconciler.test ./reconciler
./reconciler.test -test.run '^\$' -test.bench 'BenchmarkPass|BenchmarkStatus' -test.benchmem -test.count 5
./reconciler.test -test.run '^\$' -test.bench 'BenchmarkPassNoop200\$' -test.count 3 -test.cpuprofile cpu.prof
perf record -F 999 -g -p AGENT -- sleep 7   # three kill -HUP AGENT, 2 s apart
lxc-create -P DIR -n NAME -t busybox -f default.conf; lxc-start -P DIR -n NAME -d; lxc-wait -P DIR -n NAME -s RUNNING
\`\`\`
EOF
say "done: $out"
