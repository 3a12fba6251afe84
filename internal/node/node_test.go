package node

import (
	"testing"
	"time"
)

func TestDriftDue(t *testing.T) {
	n := &Node{cfg: Config{DriftInterval: time.Hour}}
	if !n.driftDue("a") {
		t.Fatal("first observation of a container skipped its limits check")
	}
	if n.driftDue("a") {
		t.Fatal("limits read back again within the interval")
	}
	if !n.driftDue("b") {
		t.Fatal("one container's check held another's")
	}
	n.driftChecked["a"] = time.Now().Add(-2 * time.Hour)
	if !n.driftDue("a") {
		t.Fatal("check not due after the interval")
	}
	// A resync period equal to the interval lands a little early: due.
	n.driftChecked["a"] = time.Now().Add(-59 * time.Minute)
	if !n.driftDue("a") {
		t.Fatal("check made just under the interval ago not due: every other pass would skip it")
	}
	n.driftChecked["a"] = time.Now().Add(-30 * time.Minute)
	if n.driftDue("a") {
		t.Fatal("check due at half the interval")
	}
	every := &Node{}
	if !every.driftDue("a") || !every.driftDue("a") {
		t.Fatal("DriftInterval 0 must check at every observation")
	}
}
