package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// OpenConfig configures [RunOpen].
type OpenConfig struct {
	Options
	// Rate is the intended requests per second.
	Rate float64
	// MaxInFlight caps requests in flight (one worker each). A request due
	// while all are busy is not sent and is counted as dropped.
	MaxInFlight int
}

// DefaultMaxInFlight is the default cap on requests in flight.
const DefaultMaxInFlight = 10_000

type job struct {
	i        uint64
	due      time.Time
	measured bool
}

// RunOpen drives the open loop: request i is due at start + i/Rate and is
// handed at that moment to an idle worker, or to a new one while fewer than
// MaxInFlight exist, whether or not earlier requests have answered. Latency
// is measured from the due time, so queueing anywhere — in the server, the
// transport or this process — is in the numbers. reqs is used round robin
// and only read.
//
// Cancelling ctx stops sending; requests in flight finish (each bounded by
// Timeout) and the report covers what was measured.
func RunOpen(ctx context.Context, t *Target, reqs []*personadpb.BidRequest, cfg OpenConfig) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if !(cfg.Rate > 0) || math.IsInf(cfg.Rate, 0) {
		return nil, fmt.Errorf("bench: rate %v must be positive", cfg.Rate)
	}
	if cfg.MaxInFlight <= 0 {
		return nil, errors.New("bench: max in flight must be positive")
	}
	if len(reqs) == 0 {
		return nil, errors.New("bench: no requests")
	}

	interval := float64(time.Second) / cfg.Rate
	warmN := uint64(math.Ceil(float64(cfg.Warmup) / interval))
	total := warmN + uint64(math.Round(float64(cfg.Duration)/interval))
	if total == warmN {
		total++ // at least one measured request
	}

	var (
		col     = newCollector()
		lv      live
		wg      sync.WaitGroup
		jobs    = make(chan job) // unbuffered: a send succeeds only into an idle worker
		callCtx = context.WithoutCancel(ctx)
		cpu     = cpuWindow{serverPID: cfg.ServerPID}
		workers int
		dropped int64
	)
	worker := func(first job) {
		defer wg.Done()
		sh := col.shard()
		do := func(j job) {
			req := reqs[j.i%uint64(len(reqs))]
			sent := time.Now()
			lv.sent.Add(1)
			cctx, cancel := context.WithTimeout(callCtx, cfg.Timeout)
			resp, err := t.bid(cctx, j.i, req)
			cancel()
			now := time.Now()
			lv.done.Add(1)
			if err != nil {
				lv.errs.Add(1)
			}
			if j.measured {
				sh.record(now, now.Sub(j.due), sent.Sub(j.due), resp, err)
			}
		}
		do(first)
		for j := range jobs {
			do(j)
		}
		sh.flush(time.Now())
	}

	start := time.Now()
	due := func(i uint64) time.Time { return start.Add(time.Duration(float64(i) * interval)) }
	measureAt := due(warmN)
	prog := startProgress(cfg.Progress, &lv, col, start, measureAt)
	pace, err := newPacer(ctx)
	if err != nil {
		prog.Stop()
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer pace.Close()

	var i uint64
dispatch:
	for ; i < total; i++ {
		at := due(i)
		if !pace.until(ctx, at) {
			break dispatch
		}
		if i == warmN {
			cpu.start()
		}
		j := job{i: i, due: at, measured: i >= warmN}
		select {
		case jobs <- j:
		default:
			if workers < cfg.MaxInFlight {
				workers++
				wg.Add(1)
				go worker(j)
			} else if j.measured {
				dropped++
			}
		}
	}
	close(jobs)
	wg.Wait()
	prog.Stop()

	measured := uint64(0)
	if i > warmN {
		measured = i - warmN
	}
	elapsed := time.Duration(float64(measured) * interval)
	// A harness that fell behind (short of CPU, or offered a rate beyond
	// it) sent the window's requests over a longer time than the
	// schedule's: the window then ends at the last send, so that the send
	// and achieved rates are what was sent rather than what was asked for.
	if last := col.lastSent; measured > 0 && !last.IsZero() && last.Sub(measureAt) > elapsed {
		elapsed = last.Sub(measureAt)
	}
	r := newReport("open", t, cfg.Options, col, elapsed)
	r.Rate = cfg.Rate
	r.MaxInFlight = cfg.MaxInFlight
	r.Workers = workers
	r.Dropped = dropped
	r.Sent = int64(measured) - dropped
	r.finish()
	r.SendLag = summarize(col.lag)
	if measured > 0 {
		cpu.finish(r)
	}
	return r, nil
}
