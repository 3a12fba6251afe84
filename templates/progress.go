package templates

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Progress receives the progress of a long step (building, copying). Each
// step is a phase with a total in bytes (0 when unknown); Update reports
// the bytes done so far. Implementations must be safe for use from one
// goroutine at a time; the cache never calls them concurrently.
type Progress interface {
	Start(phase string, total int64)
	Update(done int64)
	Done()
}

// Discard is a Progress that shows nothing.
var Discard Progress = discard{}

type discard struct{}

func (discard) Start(string, int64) {}
func (discard) Update(int64)        {}
func (discard) Done()               {}

// NewProgress returns a bar redrawn in place when w is a terminal, and
// plain lines (a few per phase) otherwise.
func NewProgress(w io.Writer) Progress {
	if f, ok := w.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			return &Bar{w: w, now: time.Now}
		}
	}
	return &Lines{w: w, now: time.Now}
}

// state is what both renderings keep of the current phase.
type state struct {
	phase       string
	total, done int64
	start       time.Time
}

// rate returns bytes per second and the estimated time left (-1: unknown).
func (s *state) rate(now time.Time) (float64, time.Duration) {
	el := now.Sub(s.start).Seconds()
	if el <= 0 || s.done <= 0 {
		return 0, -1
	}
	r := float64(s.done) / el
	if s.total <= 0 || s.done >= s.total {
		return r, -1
	}
	return r, time.Duration(float64(s.total-s.done) / r * float64(time.Second))
}

// Bar draws one line with a bar, bytes, rate and ETA, redrawn at most
// every 100 ms.
type Bar struct {
	mu   sync.Mutex
	w    io.Writer
	now  func() time.Time
	s    state
	last time.Time
}

func (b *Bar) Start(phase string, total int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.s = state{phase: phase, total: total, start: b.now()}
	b.drawLocked(true)
}

func (b *Bar) Update(done int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.s.done = done
	b.drawLocked(false)
}

func (b *Bar) Done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.s.total > 0 && b.s.done < b.s.total {
		b.s.done = b.s.total
	}
	b.drawLocked(true)
	fmt.Fprintln(b.w)
}

// drawLocked redraws the line. [b.mu] must be held.
func (b *Bar) drawLocked(force bool) {
	now := b.now()
	if !force && now.Sub(b.last) < 100*time.Millisecond {
		return
	}
	b.last = now
	r, eta := b.s.rate(now)
	const width = 24
	bar := ""
	if b.s.total > 0 {
		n := int(float64(width) * float64(min(b.s.done, b.s.total)) / float64(b.s.total))
		for i := range width {
			if i < n {
				bar += "="
			} else {
				bar += " "
			}
		}
		bar = "[" + bar + "] "
	}
	fmt.Fprintf(b.w, "\r\x1b[K%-10s %s%s", b.s.phase, bar, amount(b.s, r, eta))
}

// Lines prints a line when a phase starts, about every 10% or 5 s, and when
// it ends: for logs and pipes.
type Lines struct {
	mu       sync.Mutex
	w        io.Writer
	now      func() time.Time
	s        state
	last     time.Time
	lastDone int64
}

func (l *Lines) Start(phase string, total int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.s = state{phase: phase, total: total, start: l.now()}
	l.last, l.lastDone = l.s.start, 0
	if total > 0 {
		fmt.Fprintf(l.w, "%s: started, about %s\n", phase, human(total))
	} else {
		fmt.Fprintf(l.w, "%s: started\n", phase)
	}
}

func (l *Lines) Update(done int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.s.done = done
	now := l.now()
	step := l.s.total / 10
	if now.Sub(l.last) < 5*time.Second && (step <= 0 || done-l.lastDone < step) {
		return
	}
	l.last, l.lastDone = now, done
	r, eta := l.s.rate(now)
	fmt.Fprintf(l.w, "%s: %s\n", l.s.phase, amount(l.s, r, eta))
}

func (l *Lines) Done() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	r, _ := l.s.rate(now)
	fmt.Fprintf(l.w, "%s: done, %s in %s (%s/s)\n", l.s.phase, human(l.s.done),
		now.Sub(l.s.start).Round(time.Millisecond), human(int64(r)))
}

func amount(s state, rate float64, eta time.Duration) string {
	out := human(s.done)
	if s.total > 0 {
		out += " / " + human(s.total)
	}
	if rate > 0 {
		out += fmt.Sprintf("  %s/s", human(int64(rate)))
	}
	if eta >= 0 {
		out += "  eta " + eta.Round(time.Second).String()
	}
	return out
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// orDiscard lets callers pass a nil Progress.
func orDiscard(p Progress) Progress {
	if p == nil {
		return Discard
	}
	return p
}
