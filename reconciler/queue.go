package reconciler

import (
	"sync"
	"time"
)

// queue is a keyed work queue in the shape of client-go's workqueue: a key
// is never handed to two workers at once, and adds while a key is being
// processed collapse into one rerun after it is done.
type queue struct {
	mu         sync.Mutex
	cond       *sync.Cond
	order      []string
	queued     map[string]bool // in order, waiting
	processing map[string]bool
	dirty      map[string]bool // added while processing
	timers     map[string]*time.Timer
	closed     bool
}

func newQueue() *queue {
	q := &queue{
		queued:     map[string]bool{},
		processing: map[string]bool{},
		dirty:      map[string]bool{},
		timers:     map[string]*time.Timer{},
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add queues key unless it is queued already.
func (q *queue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key)
}

// addLocked queues key. [q.mu] must be held.
func (q *queue) addLocked(key string) {
	if q.closed || q.queued[key] {
		return
	}
	if q.processing[key] {
		q.dirty[key] = true
		return
	}
	q.queued[key] = true
	q.order = append(q.order, key)
	q.cond.Signal()
}

// AddFirst queues key at the front, moving it there when it is queued
// already: a container whose spec changed must not wait behind the no-op
// syncs left over from an earlier pass.
func (q *queue) AddFirst(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	if q.processing[key] {
		q.dirty[key] = true
		return
	}
	if q.queued[key] {
		for i, k := range q.order {
			if k == key {
				q.order = append(q.order[:i], q.order[i+1:]...)
				break
			}
		}
	}
	q.queued[key] = true
	q.order = append([]string{key}, q.order...)
	q.cond.Signal()
}

// AddAfter queues key after d, unless an earlier retry is already set.
func (q *queue) AddAfter(key string, d time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.timers[key] != nil {
		return
	}
	q.timers[key] = time.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		delete(q.timers, key)
		q.addLocked(key)
	})
}

// Get blocks until a key is ready or the queue is closed (ok false).
func (q *queue) Get() (key string, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.order) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return "", false
	}
	key, q.order = q.order[0], q.order[1:]
	delete(q.queued, key)
	q.processing[key] = true
	return key, true
}

// Done ends processing of key, requeueing it when it was added meanwhile.
func (q *queue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if q.dirty[key] {
		delete(q.dirty, key)
		q.addLocked(key)
	}
}

// Len is the number of keys waiting or being processed.
func (q *queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.order) + len(q.processing)
}

// Close wakes every Get with ok false and stops the retry timers.
func (q *queue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	for _, t := range q.timers {
		t.Stop()
	}
	q.cond.Broadcast()
}

// backoff is a capped exponential delay per key, reset on success.
type backoff struct {
	mu       sync.Mutex
	base     time.Duration
	max      time.Duration
	failures map[string]int
}

func newBackoff(base, max time.Duration) *backoff {
	return &backoff{base: base, max: max, failures: map[string]int{}}
}

// Next records a failure of key and returns how long to wait.
func (b *backoff) Next(key string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.failures[key]
	b.failures[key] = n + 1
	d := b.base << min(n, 20)
	if d > b.max || d <= 0 {
		d = b.max
	}
	return d
}

// Reset forgets key's failures.
func (b *backoff) Reset(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.failures, key)
}
