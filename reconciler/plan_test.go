package reconciler

import (
	"slices"
	"strings"
	"testing"

	"vzd/spec"
)

func ct(mod func(*spec.Container)) *spec.Container {
	c := &spec.Container{ID: "c", State: spec.StateRunning, OnBoot: true, Disk: spec.Disk{Size: 1 << 30},
		Init: []string{"/sbin/init"}, Root: "/vz/root/c", Private: "/vz/private/c"}
	if mod != nil {
		mod(c)
	}
	return c
}

func kinds(p Plan) []string {
	var out []string
	for _, s := range p.Steps {
		k := string(s.Kind)
		if s.Live {
			k += "(live)"
		}
		out = append(out, k)
	}
	return out
}

func TestMake(t *testing.T) {
	running := Actual{ImageExists: true, Mounted: true, Running: true, Pid: 5, DiskSize: 1 << 30}
	applied := func(c *spec.Container) *Record {
		return &Record{ID: "c", AppliedHash: c.Hash(), Started: c, LastGood: c, BootID: "b1"}
	}
	base := ct(nil)
	tests := []struct {
		name        string
		in          Input
		want        []string
		wantPending string
		wantNote    string
	}{
		{name: "unknown and absent", in: Input{}, want: nil},
		{name: "new running", in: Input{Desired: base},
			want: []string{"create-image", "mount", "limits", "start", "network"}},
		{name: "converged", in: Input{Desired: base, Record: applied(base), Actual: running}, want: nil},
		{name: "converged, hash known", in: Input{Desired: base, DesiredHash: base.Hash(), Record: applied(base), Actual: running}, want: nil},
		{name: "the known hash is the one compared", in: Input{Desired: base, DesiredHash: "other", Record: applied(base), Actual: running},
			want: []string{"limits(live)", "network(live)"}},
		{name: "crashed init restarts", in: Input{Desired: base, Record: applied(base), BootID: "b1",
			Actual: Actual{ImageExists: true, Mounted: true, DiskSize: 1 << 30}},
			want: []string{"limits", "start", "network"}},
		{name: "held", in: Input{Held: true, Record: applied(base), Actual: running}, want: nil,
			wantNote: "invalid"},
		{name: "orphan stops, keeps data", in: Input{Record: applied(base), Actual: running},
			want: []string{"stop", "teardown", "unmount"}, wantNote: "orphaned"},
		{name: "orphan already stopped", in: Input{Record: applied(base), Actual: Actual{ImageExists: true}},
			want: nil, wantNote: "orphaned"},
		{name: "destroy running", in: Input{Desired: ct(func(c *spec.Container) { c.State = spec.StateDestroyed }),
			Record: applied(base), Actual: running},
			want: []string{"stop", "teardown", "unmount", "destroy"}},
		{name: "destroyed and gone", in: Input{Desired: ct(func(c *spec.Container) { c.State = spec.StateDestroyed })},
			want: nil},
		{name: "stop", in: Input{Desired: ct(func(c *spec.Container) { c.State = spec.StateStopped }),
			Record: applied(base), Actual: running},
			want: []string{"stop", "teardown", "unmount"}},
		{name: "live RAM change", in: Input{Desired: ct(func(c *spec.Container) { c.Memory.RAM = 1 << 30 }),
			Record: applied(base), Actual: running},
			want: []string{"limits(live)", "network(live)"}},
		{name: "drift repaired without spec change", in: Input{Desired: base, Record: applied(base),
			Actual: func() Actual { a := running; a.LimitsDrift = true; return a }()},
			want: []string{"limits(live)"}},
		{name: "live grow", in: Input{Desired: ct(func(c *spec.Container) { c.Disk.Size = 2 << 30 }),
			Record: applied(base), Actual: running},
			want: []string{"limits(live)", "network(live)", "resize(live)"}},
		{name: "grow refused stays pending", in: Input{Desired: ct(func(c *spec.Container) { c.Disk.Size = 2 << 30 }),
			Record: applied(ct(func(c *spec.Container) { c.Disk.Size = 2 << 30 })),
			Actual: func() Actual { a := running; a.PendingGrow = true; return a }()},
			want: nil, wantPending: "disk grow"},
		{name: "shrink while running is pending", in: Input{Desired: ct(func(c *spec.Container) { c.Disk.Size = 512 << 20 }),
			Record: applied(ct(func(c *spec.Container) { c.Disk.Size = 512 << 20 })), Actual: running},
			want: nil, wantPending: "shrink"},
		{name: "shrink at start is offline", in: Input{Desired: ct(func(c *spec.Container) { c.Disk.Size = 512 << 20 }),
			Record: applied(base), BootID: "b1", Actual: Actual{ImageExists: true, DiskSize: 1 << 30}},
			want: []string{"resize", "mount", "limits", "start", "network"}},
		{name: "restart-only change waits", in: Input{Desired: ct(func(c *spec.Container) { c.Init = []string{"/bin/sh"} }),
			Record: applied(base), Actual: running},
			want: []string{"limits(live)", "network(live)"}, wantPending: "init changed"},
		{name: "restart-only change with restart_to_apply",
			in: Input{Desired: ct(func(c *spec.Container) { c.Init = []string{"/bin/sh"}; c.RestartToApply = true }),
				Record: applied(base), Actual: running},
			want: []string{"stop", "teardown", "unmount", "mount", "limits", "start", "network"}},
		{name: "templates added live", in: Input{Desired: ct(func(c *spec.Container) { c.Templates = []string{"nginx"} }),
			Record: applied(base), Actual: running},
			want: []string{"limits(live)", "network(live)", "templates(live)"}},
		{name: "onboot off after reboot waits", in: Input{Desired: ct(func(c *spec.Container) { c.OnBoot = false }),
			Record: applied(base), BootID: "b2", Actual: Actual{ImageExists: true, DiskSize: 1 << 30}},
			want: nil, wantNote: "onboot"},
		{name: "onboot on after reboot starts", in: Input{Desired: base, Record: applied(base), BootID: "b2",
			Actual: Actual{ImageExists: true, DiskSize: 1 << 30}},
			want: []string{"mount", "limits", "start", "network"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.ID = "c"
			p := Make(tt.in)
			if got := kinds(p); !slices.Equal(got, tt.want) {
				t.Fatalf("steps %q, want %q", got, tt.want)
			}
			if tt.wantPending != "" && !strings.Contains(strings.Join(p.Pending, ";"), tt.wantPending) {
				t.Fatalf("pending %q, want %q", p.Pending, tt.wantPending)
			}
			if tt.wantPending == "" && len(p.Pending) > 0 {
				t.Fatalf("unexpected pending %q", p.Pending)
			}
			if tt.wantNote != "" && !strings.Contains(strings.Join(p.Notes, ";"), tt.wantNote) {
				t.Fatalf("notes %q, want %q", p.Notes, tt.wantNote)
			}
		})
	}
}
