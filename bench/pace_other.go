//go:build !linux || pacetimer

package bench

import (
	"context"
	"time"
)

// pacer wakes the open loop's dispatcher when each request is due. Outside
// Linux it is a plain timer, with the runtime's timer resolution.
type pacer struct{ timer *time.Timer }

func newPacer(context.Context) (*pacer, error) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &pacer{timer: t}, nil
}

func (p *pacer) until(ctx context.Context, at time.Time) bool {
	if d := time.Until(at); d > 0 {
		p.timer.Reset(d)
		select {
		case <-p.timer.C:
		case <-ctx.Done():
			p.timer.Stop()
			return false
		}
	}
	return ctx.Err() == nil
}

func (p *pacer) Close() error { p.timer.Stop(); return nil }
