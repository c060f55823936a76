package engine_test

import (
	"fmt"
	"sync"
	"testing"

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
