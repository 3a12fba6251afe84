package reconciler

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestQueueCoalescesAndNeverHandsOutAKeyTwice(t *testing.T) {
	q := newQueue()
	q.Add("a")
	q.Add("a")
	q.Add("b")
	k, _ := q.Get()
	if k != "a" {
		t.Fatalf("got %q", k)
	}
	q.Add("a") // while processing: one rerun after Done
	q.Add("a")
	k2, _ := q.Get()
	if k2 != "b" {
		t.Fatalf("got %q, want b (a is being processed)", k2)
	}
	q.Done("b")
	if q.Len() != 1 {
		t.Fatalf("len %d, want 1 (a processing)", q.Len())
	}
	q.Done("a")
	k3, _ := q.Get()
	if k3 != "a" {
		t.Fatalf("rerun of a missing, got %q", k3)
	}
	q.Done("a")
	if q.Len() != 0 {
		t.Fatalf("len %d after all done", q.Len())
	}
	q.Close()
	if _, ok := q.Get(); ok {
		t.Fatal("Get after Close")
	}
}

func TestQueueAddAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueue()
		defer q.Close()
		q.AddAfter("a", 5*time.Second)
		q.AddAfter("a", time.Second) // an earlier retry is already set: ignored
		time.Sleep(4 * time.Second)
		if q.Len() != 0 {
			t.Fatal("added before its delay")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if q.Len() != 1 {
			t.Fatal("not added after its delay")
		}
	})
}

func TestBackoffIsCappedAndResets(t *testing.T) {
	b := newBackoff(time.Second, 8*time.Second)
	var got []time.Duration
	for range 6 {
		got = append(got, b.Next("x"))
	}
	want := []time.Duration{1, 2, 4, 8, 8, 8}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("delays %v", got)
		}
	}
	b.Reset("x")
	if d := b.Next("x"); d != time.Second {
		t.Fatalf("after reset %v", d)
	}
}

func TestQueueAddFirst(t *testing.T) {
	q := newQueue()
	defer q.Close()
	q.Add("a")
	q.Add("b")
	q.AddFirst("c")
	q.AddFirst("b") // queued already: moved to the front
	var got []string
	for range 3 {
		k, _ := q.Get()
		got = append(got, k)
		q.Done(k)
	}
	if got[0] != "b" || got[1] != "c" || got[2] != "a" {
		t.Fatalf("order %v, want [b c a]", got)
	}
}
