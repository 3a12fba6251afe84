package runtime

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"vzd/actuators/cgroups"
	"vzd/spec"
)

// benchMain is run by scripts/bench-runtime.sh through the test binary
// (VZD_BENCH=start|idle, VZD_BENCH_ROOT = a busybox root): it measures
// what a Go benchmark cannot (detached processes, host memory) and prints
// Markdown-ready lines. It returns the exit code.
func benchMain(mode string) int {
	root := os.Getenv("VZD_BENCH_ROOT")
	n, _ := strconv.Atoi(os.Getenv("VZD_BENCH_N"))
	prefix, err := os.MkdirTemp("/var/tmp", "vzd-bench-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(prefix)
	parent := fmt.Sprintf("vzdbench%d", os.Getpid())
	cg, err := cgroups.NewV1("", parent, nil)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	ctx := context.Background()
	defer func() {
		// Every container's cgroup, then the parent, whatever happened.
		for i := range max(n, 1) {
			id := fmt.Sprintf("b%d", i)
			cg.Kill(ctx, id) // waits until the cgroup is empty
			if err := cg.Remove(ctx, id); err != nil {
				fmt.Fprintln(os.Stderr, "remove cgroup:", err)
			}
		}
		for _, d := range cg.Dirs("x") {
			os.Remove(filepath.Dir(d))
		}
	}()
	r, err := New(Config{Paths: spec.Paths{Prefix: prefix}, Cgroups: cg})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	mk := func(i int, init []string) *spec.Container {
		id := fmt.Sprintf("b%d", i)
		c := &spec.Container{ID: id, Hostname: id, Root: root, Private: filepath.Join(prefix, "vz/private", id), Init: init, StopTimeout: 10 * time.Second}
		os.MkdirAll(c.Private, 0o700)
		return c
	}
	switch mode {
	case "start":
		// Start to init (/bin/true) exited and recorded, n times.
		c := mk(0, []string{"/bin/true"})
		var ds []time.Duration
		for range n {
			t0 := time.Now()
			if err := r.Start(ctx, c); err != nil {
				fmt.Println(err)
				return 1
			}
			rec, _ := readRecord(c.Private)
			if fd, err := openPidfd(rec.SupervisorPid, rec.SupervisorStart); err == nil {
				waitPidfd(ctx, fd, 10*time.Second)
			}
			if _, ok := readExit(c.Private); !ok {
				fmt.Println("no exit record")
				return 1
			}
			ds = append(ds, time.Since(t0))
		}
		slices.Sort(ds)
		fmt.Printf("median_ms %.2f\nmin_ms %.2f\nmax_ms %.2f\n", ms(ds[len(ds)/2]), ms(ds[0]), ms(ds[len(ds)-1]))
		fmt.Printf("times_ms")
		for _, d := range ds {
			fmt.Printf(" %.3f", ms(d))
		}
		fmt.Println()
	case "debian":
		// Start to `systemctl is-system-running` saying running or
		// degraded, n times (a warm-up boot first), stopping in between.
		c := mk(0, []string{spec.DefaultInit})
		var ds []time.Duration
		for i := range n + 1 {
			t0 := time.Now()
			if err := r.Start(ctx, c); err != nil {
				fmt.Println(err)
				return 1
			}
			booted := false
			for end := time.Now().Add(2 * time.Minute); time.Now().Before(end) && !booted; time.Sleep(20 * time.Millisecond) {
				var out strings.Builder
				r.Exec(ctx, c, []string{"systemctl", "is-system-running"}, nil, &out, io.Discard, false)
				s := strings.TrimSpace(out.String())
				booted = s == "running" || s == "degraded"
			}
			d := time.Since(t0)
			if err := r.Stop(ctx, c); err != nil || !booted {
				fmt.Println("boot failed", err)
				return 1
			}
			if i > 0 {
				ds = append(ds, d)
			}
		}
		slices.Sort(ds)
		fmt.Printf("median_ms %.2f\nmin_ms %.2f\nmax_ms %.2f\n", ms(ds[len(ds)/2]), ms(ds[0]), ms(ds[len(ds)-1]))
	case "idle":
		before, kbefore := memAvailable(), kernelMem()
		var cs []*spec.Container
		defer func() {
			var wg sync.WaitGroup
			for _, c := range cs {
				wg.Go(func() {
					r.Stop(ctx, c)
					cg.Remove(ctx, c.ID)
				})
			}
			wg.Wait()
		}()
		t0 := time.Now()
		for i := range n {
			c := mk(i, nil)
			if err := r.Start(ctx, c); err != nil {
				fmt.Println(err)
				return 1
			}
			cs = append(cs, c)
		}
		elapsed := time.Since(t0)
		time.Sleep(3 * time.Second) // let the inits settle
		after, kafter := memAvailable(), kernelMem()
		var supRSS, supPSS, ctPSS, cgMem int64
		for _, c := range cs {
			rec, _ := readRecord(c.Private)
			rss, pss := procMem(rec.SupervisorPid)
			supRSS += rss
			supPSS += pss
			procs, _ := cg.Procs(ctx, c.ID)
			for _, p := range procs {
				_, pss := procMem(p)
				ctPSS += pss
			}
			if b, err := os.ReadFile(filepath.Join(cg.Dirs(c.ID)["memory"], "memory.usage_in_bytes")); err == nil {
				v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
				cgMem += v
			}
		}
		k := int64(len(cs))
		fmt.Printf("containers %d\nstart_all_s %.2f\n", k, elapsed.Seconds())
		fmt.Printf("supervisor_rss_kib %d\nsupervisor_pss_kib %d\n", supRSS/k/1024, supPSS/k/1024)
		fmt.Printf("container_procs_pss_kib %d\ncontainer_cgroup_kib %d\n", ctPSS/k/1024, cgMem/k/1024)
		fmt.Printf("memavailable_drop_kib %d\n", (before-after)/k/1024)
		fmt.Printf("host_overhead_kib %d\n", (before-after-ctPSS)/k/1024)
		fmt.Printf("kernel_mem_kib %d\n", (kafter-kbefore)/k/1024)
	}
	return 0
}

// kernelMem sums the kernel's own allocations in /proc/meminfo: slab,
// kernel stacks, page tables, per-cpu areas. Less noisy than MemAvailable
// on a shared machine.
func kernelMem() int64 {
	b, _ := os.ReadFile("/proc/meminfo")
	var sum int64
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "Slab:", "KernelStack:", "PageTables:", "Percpu:":
			v, _ := strconv.ParseInt(f[1], 10, 64)
			sum += v * 1024
		}
	}
	return sum
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func memAvailable() int64 {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemAvailable:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v * 1024
		}
	}
	return 0
}

// procMem returns the RSS and PSS of pid in bytes.
func procMem(pid int) (rss, pss int64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Rss:":
			rss = v * 1024
		case "Pss:":
			pss = v * 1024
		}
	}
	return rss, pss
}
