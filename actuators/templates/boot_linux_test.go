package templates

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vzd/actuators/cgroups"
	"vzd/actuators/image"
	"vzd/actuators/runtime"
	"vzd/internal/testutil"
	"vzd/spec"
	"vzd/templates"
)

// TestBusyboxTemplateContainerBoots creates a container from the busybox
// template's cache with the images actuator and boots it with the
// runtime: busybox init reads the template's inittab and runs its rcS.
func TestBusyboxTemplateContainerBoots(t *testing.T) {
	testutil.RequireLoop(t)
	testutil.RequireCgroupV1(t, "memory", "pids", "freezer")
	log := slog.New(slog.NewTextHandler(logWriter{t}, nil))
	node := t.TempDir()
	paths := spec.Paths{Prefix: node}
	cache := templates.NewCache(paths, log)
	src, err := cache.Image(t.Context(), ".busybox", nil)
	if err != nil {
		t.Fatal(err)
	}
	img, err := image.New(image.Config{Paths: paths, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	id := testutil.UniqueName("ct")
	c := &spec.Container{ID: id, Hostname: "bb-" + id, State: spec.StateRunning,
		OSTemplate: "busybox", Disk: spec.Disk{Size: 256 << 20},
		StopTimeout: 20 * time.Second, Init: []string{spec.DefaultInit},
		Root: filepath.Join(node, "vz/root", id), Private: filepath.Join(node, "vz/private", id)}
	if err := img.Create(t.Context(), c, src); err != nil {
		t.Fatal(err)
	}
	if err := img.Mount(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := img.Unmount(context.Background(), c); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	// The copy is the template's tree, grown to the container's size.
	if _, err := os.Stat(filepath.Join(c.Root, "etc/inittab")); err != nil {
		t.Fatal(err)
	}
	// rcS starts /etc/init.d/S* scripts; this one leaves a mark.
	if err := os.WriteFile(filepath.Join(c.Root, "etc/init.d/S10mark"), []byte("#!/bin/sh\necho \"$1\" > /run/s10-ran\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cg, err := cgroups.NewV1("", testutil.UniqueName("vzt"), log)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := runtime.New(runtime.Config{Paths: paths, Cgroups: cg, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rt.Stop(ctx, c); err != nil {
			t.Errorf("stop: %v", err)
		}
		if err := cg.Remove(ctx, c.ID); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
		for _, d := range cg.Dirs("x") {
			os.Remove(filepath.Dir(d))
		}
	})
	sh := func(script string) string {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		var out bytes.Buffer
		code, err := rt.Exec(ctx, c, []string{"/bin/sh", "-c", script}, nil, &out, &out, false)
		if err != nil || code != 0 {
			t.Fatalf("exec %q: %d, %v: %s", script, code, err, out.String())
		}
		return strings.TrimSpace(out.String())
	}
	// rcS has run once S10mark has and lo is up (bounded wait).
	var got string
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		got = sh("cat /proc/1/comm; cat /run/s10-ran 2>/dev/null; ip -o link show lo | grep -q UP && echo lo-up; true")
		if strings.Contains(got, "start") && strings.Contains(got, "lo-up") {
			break
		}
	}
	if got != "init\nstart\nlo-up" {
		t.Errorf("inside the container:\n%s", got)
	}
	if got := sh("id -u; ls /bin/sh /sbin/ifconfig /sbin/udhcpc >/dev/null && echo applets"); got != "0\napplets" {
		t.Errorf("shell and networking applets: %q", got)
	}
}
