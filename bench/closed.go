package bench

import (
	"context"
	"errors"
	"sync"
	"time"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// ClosedConfig configures [RunClosed].
type ClosedConfig struct {
	Options
	// Concurrency is the number of workers, each with one request in
	// flight at a time.
	Concurrency int
}

// RunClosed drives the closed loop: Concurrency workers each send, wait for
// the answer and send again until the window ends. It measures the
// throughput ceiling; its latencies are from the actual send and so hide
// queueing (use [RunOpen] for latency at a given rate).
func RunClosed(ctx context.Context, t *Target, reqs []*personadpb.BidRequest, cfg ClosedConfig) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Concurrency <= 0 {
		return nil, errors.New("bench: concurrency must be positive")
	}
	if len(reqs) == 0 {
		return nil, errors.New("bench: no requests")
	}

	var (
		col     = newCollector()
		lv      live
		wg      sync.WaitGroup
		callCtx = context.WithoutCancel(ctx)
		cpu     = cpuWindow{serverPID: cfg.ServerPID}
		stop    = make(chan struct{})
	)
	start := time.Now()
	measureAt := start.Add(cfg.Warmup)
	end := measureAt.Add(cfg.Duration)
	if cfg.Warmup == 0 {
		cpu.start()
	}
	prog := startProgress(cfg.Progress, &lv, col, start, measureAt)

	c := uint64(cfg.Concurrency)
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sh := col.shard()
			defer func() { sh.flush(time.Now()) }()
			for i := w; ; i += c {
				select {
				case <-stop:
					return
				default:
				}
				sent := time.Now()
				if !sent.Before(end) {
					return
				}
				lv.sent.Add(1)
				cctx, cancel := context.WithTimeout(callCtx, cfg.Timeout)
				resp, err := t.bid(cctx, i, reqs[i%uint64(len(reqs))])
				cancel()
				now := time.Now()
				lv.done.Add(1)
				if err != nil {
					lv.errs.Add(1)
				}
				if !sent.Before(measureAt) {
					sh.record(now, now.Sub(sent), -1, resp, err)
				}
			}
		}()
	}

	stopped := end
	timer := time.NewTimer(time.Until(measureAt))
	select {
	case <-timer.C:
		if cfg.Warmup > 0 {
			cpu.start()
		}
		timer.Reset(time.Until(end))
		select {
		case <-timer.C:
		case <-ctx.Done():
			stopped = time.Now()
		}
	case <-ctx.Done():
		stopped = time.Now()
	}
	timer.Stop()
	close(stop)
	wg.Wait()
	prog.Stop()

	elapsed := max(stopped.Sub(measureAt), 0)
	r := newReport("closed", t, cfg.Options, col, elapsed)
	r.Concurrency = cfg.Concurrency
	r.Sent = r.Completed
	r.finish()
	if elapsed > 0 {
		cpu.finish(r)
	}
	return r, nil
}
