package engine_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/engine"
	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

var (
	genMu    sync.Mutex
	genRules = map[int]*rules.RuleSet{}
)

// generatedRules is the rule set of a world of n campaigns (seed 1),
// generated once per process.
func generatedRules(b *testing.B, n int) *rules.RuleSet {
	b.Helper()
	genMu.Lock()
	defer genMu.Unlock()
	if rs := genRules[n]; rs != nil {
		return rs
	}
	cfg := world.ReferenceConfig()
	cfg.Campaigns = n
	rs, err := world.GenerateRules(cfg)
	if err != nil {
		b.Fatal(err)
	}
	genRules[n] = rs
	return rs
}

// BenchmarkCompileSizes measures validate + compile (no cache: every
// campaign compiled) and the swap, at 10,000 and 100,000 generated
// campaigns; and a reload through a warm Compiler that changes one
// campaign among them (hash every campaign, validate and compile the
// changed one, link and index all, swap).
func BenchmarkCompileSizes(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("campaigns=%d/cold", n), func(b *testing.B) {
			rs := generatedRules(b, n)
			e := newRulesOnlyEngine(b)
			b.ReportAllocs()
			for b.Loop() {
				r, err := engine.Compile(rs, "")
				if err != nil {
					b.Fatal(err)
				}
				e.SetRules(r)
			}
		})
		b.Run(fmt.Sprintf("campaigns=%d/one-changed", n), func(b *testing.B) {
			rs := generatedRules(b, n)
			cc, err := engine.NewCompiler(engine.DefaultCompilerConfig())
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Close()
			edited := *rs
			edited.Campaigns = append([]rules.Campaign(nil), rs.Campaigns...)
			if _, err := cc.Compile(&edited, ""); err != nil {
				b.Fatal(err)
			}
			e := newRulesOnlyEngine(b)
			base := rs.Campaigns[n/2].BidCPM
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				edited.Campaigns[n/2].BidCPM = base + float64(i%1000)/100
				r, err := cc.Compile(&edited, "")
				if err != nil {
					b.Fatal(err)
				}
				if s := r.Stats(); s.Compiled > 1 && i > 1 {
					b.Fatalf("recompiled %d campaigns, want 1", s.Compiled)
				}
				e.SetRules(r)
			}
		})
	}
}

func newRulesOnlyEngine(b *testing.B) *engine.Engine {
	cfg := engine.DefaultConfig()
	cfg.PersonaCacheSize = 0
	e, err := engine.New(cfg, segments.NewStore(nil))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	return e
}

// BenchmarkDecideDuringReload measures single decisions on every CPU
// (RunParallel) over the benchmark world (PERSONAD_BENCH_WORLD; reference
// for the figure), steady and while another goroutine reloads the
// rules through a Compiler — back to back (loop), or every 100 ms, the
// watcher's default debounce (paced) — each reload changing one campaign's
// bid, compiling and swapping. It reports the median and tail latency, the
// reloads done, and errors: a failed compile, or a decision that missed
// its 100 ms deadline or saw no rules. Compare p99-ns across sub-benchmarks.
func BenchmarkDecideDuringReload(b *testing.B) {
	w := benchWorld(b)
	qs := queries(w, w.Config.Users, 1<<16)
	cc, err := engine.NewCompiler(engine.DefaultCompilerConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	edited := *w.Rules
	edited.Campaigns = slices.Clone(w.Rules.Campaigns)
	r, err := cc.Compile(&edited, "")
	if err != nil {
		b.Fatal(err)
	}
	e, err := engine.New(engine.DefaultConfig(), segments.NewStore(w.Segments))
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	e.SetRules(r)
	ctx := context.Background()
	var d engine.Decision
	for i := range qs { // warm the persona cache and the pool
		e.Decide(ctx, &qs[i], &d)
	}
	k := len(edited.Campaigns) / 2
	base := edited.Campaigns[k].BidCPM
	for _, bc := range []struct {
		name  string
		every time.Duration // between reloads; 0: no reloads; -1: back to back
	}{{"steady", 0}, {"reload=loop", -1}, {"reload=paced", 100 * time.Millisecond}} {
		b.Run(bc.name, func(b *testing.B) {
			var (
				stop    = make(chan struct{})
				reloads atomic.Int64
				errs    atomic.Int64
				wg      sync.WaitGroup
			)
			if bc.every != 0 {
				wg.Go(func() {
					tick := time.NewTicker(max(bc.every, time.Nanosecond))
					defer tick.Stop()
					for i := 1; ; i++ {
						if bc.every > 0 {
							select {
							case <-stop:
								return
							case <-tick.C:
							}
						} else {
							select {
							case <-stop:
								return
							default:
							}
						}
						edited.Campaigns[k].BidCPM = base + float64(i%1000)/100
						r, err := cc.Compile(&edited, "")
						if err != nil {
							errs.Add(1)
							continue
						}
						e.SetRules(r)
						reloads.Add(1)
					}
				})
			}
			var (
				mu  sync.Mutex
				lat []time.Duration
				seq atomic.Int64
			)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var d engine.Decision
				mine := make([]time.Duration, 0, 1<<16)
				for pb.Next() {
					q := &qs[int(seq.Add(1))&(len(qs)-1)]
					start := time.Now()
					ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
					e.Decide(ctx, q, &d)
					cancel()
					mine = append(mine, time.Since(start))
					if d.NoBid == engine.ReasonDeadline || d.NoBid == engine.ReasonNoRules || d.RulesVersion == "" {
						errs.Add(1)
					}
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			b.StopTimer()
			close(stop)
			wg.Wait()
			reportPercentiles(b, lat)
			b.ReportMetric(float64(reloads.Load()), "reloads")
			b.ReportMetric(float64(errs.Load()), "errors")
		})
	}
}
