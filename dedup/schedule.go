package dedup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/robfig/cron/v3"
)

// TreesFunc returns the containers to scan: ID → mounted image (the
// directory holding root/), without the containers that opted out.
type TreesFunc func(ctx context.Context) (map[string]string, error)

// Schedule runs Scan over the trees that trees returns on the configured
// cron schedule until ctx ends or stop is called. A run still going when
// the next is due is skipped, and a panic in a run is logged, not fatal.
// stop waits for a running scan to notice ctx and end. With dedup disabled
// it schedules nothing.
func (c *Cache) Schedule(ctx context.Context, trees TreesFunc) (stop func(), err error) {
	if !c.Enabled() {
		return func() {}, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	logger := cronLogger{c.log}
	cr := cron.New(cron.WithChain(cron.Recover(logger), cron.SkipIfStillRunning(logger)), cron.WithLogger(logger))
	_, err = cr.AddFunc(c.cfg.Schedule, func() {
		t, err := trees(ctx)
		if err != nil {
			c.log.Warn("scan skipped", "err", err)
			return
		}
		if _, err := c.Scan(ctx, t); err != nil && !errors.Is(err, context.Canceled) {
			c.log.Warn("scan failed", "err", err)
		}
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("dedup schedule %q: %w", c.cfg.Schedule, err)
	}
	cr.Start()
	done := make(chan struct{})
	go func() {
		<-ctx.Done()
		<-cr.Stop().Done() // waits for a running scan, which sees ctx end
		close(done)
	}()
	return func() { cancel(); <-done }, nil
}

// cronLogger adapts slog to cron's logger; cron's routine chatter is
// debug.
type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, kv ...any) { l.log.Debug("cron "+msg, kv...) }
func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.Error("cron "+msg, append(kv, "err", err)...)
}
