package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/engine"
	"github.com/personad/personad/ledger"
	"github.com/personad/personad/segments"
)

// The benchmark world is chosen by PERSONAD_BENCH_WORLD: small (default,
// what `make test` runs once), demo (1M users, 1,000 campaigns) or
// reference (10M users, 10,000 campaigns, ~1,000 segments: the issue's
// reference world, what `make bench` runs).
func benchWorld(b *testing.B) *world.World {
	b.Helper()
	benchOnce.Do(func() {
		name := os.Getenv("PERSONAD_BENCH_WORLD")
		var cfg world.Config
		switch name {
		case "", "small":
			name, cfg = "small", world.SmallConfig()
		case "demo":
			cfg = world.DemoConfig()
		case "reference":
			cfg = world.ReferenceConfig()
		default:
			benchErr = fmt.Errorf("PERSONAD_BENCH_WORLD=%q: want small, demo or reference", name)
			return
		}
		start := time.Now()
		benchW, benchErr = world.Generate(cfg)
		if benchErr == nil {
			fmt.Fprintf(os.Stderr, "bench world %s: %d campaigns, %d segments, %d users, generated in %v\n",
				name, len(benchW.Rules.Campaigns), benchW.Segments.Len(), cfg.Users, time.Since(start).Round(time.Millisecond))
		}
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchW
}

var (
	benchOnce sync.Once
	benchW    *world.World
	benchErr  error
)

// queries builds n seeded queries: users drawn Zipf-like by index (so the
// persona cache sees real hits and misses), 5% unknown users, a mix of
// channels and sizes, occasional floors, blocks and request-carried facts.
func queries(w *world.World, users, n int) []engine.Query {
	rng := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(rng, 1.1, 1, uint64(users-1))
	channels := []string{"social", "web", "email", "mobile", "video", ""}
	sizes := [][]engine.Size{
		{{W: 300, H: 250}}, {{W: 728, H: 90}}, {{W: 320, H: 50}}, {{W: 160, H: 600}}, {{W: 1200, H: 627}},
		{{W: 300, H: 250}, {W: 728, H: 90}},
	}
	facets := make([]string, 0, len(w.Facets))
	for f := range w.Facets {
		facets = append(facets, f)
	}
	slices.Sort(facets)
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	qs := make([]engine.Query, n)
	for i := range qs {
		q := &qs[i]
		q.Now = now
		if rng.IntN(20) == 0 {
			q.UserID = fmt.Sprintf("anon-%d", rng.IntN(1<<30))
		} else {
			q.BuyerUID = world.UserID(int(zipf.Uint64()))
		}
		q.Channel = channels[rng.IntN(len(channels))]
		if q.Channel == "" {
			q.Domain = "www.linkedin.com"
		}
		q.Imps = []engine.Imp{{ID: "1", Sizes: sizes[rng.IntN(len(sizes))]}}
		if rng.IntN(4) == 0 {
			q.Imps[0].FloorMicros = int64(rng.IntN(5_000_000))
		}
		if rng.IntN(10) == 0 {
			q.BCat = []string{"IAB25", "IAB9"}
		}
		if rng.IntN(10) == 0 {
			f := facets[rng.IntN(len(facets))]
			vals := w.Facets[f]
			q.Facts = []engine.Fact{{Facet: f, Value: vals[rng.IntN(len(vals))]}}
		}
	}
	return qs
}

func newBenchEngine(b *testing.B, w *world.World, cache int64, l *ledger.Ledger) *engine.Engine {
	b.Helper()
	r, err := engine.Compile(w.Rules, "")
	if err != nil {
		b.Fatal(err)
	}
	cfg := engine.DefaultConfig()
	cfg.PersonaCacheSize = cache
	cfg.Ledger = l
	e, err := engine.New(cfg, segments.NewStore(w.Segments))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	e.SetRules(r)
	return e
}

// BenchmarkDecide measures whole decisions over the workload, with the
// persona cache warm (cache) and off (nocache), and with the money checks
// of an in-memory ledger (ledger: budgets, pacing, frequency caps and a
// reservation per bid, each bid then released by a loss notice so the
// budgets last), and reports the median and tail of single decisions
// measured one by one. ledger against cache is the cost of the money.
func BenchmarkDecide(b *testing.B) {
	w := benchWorld(b)
	qs := queries(w, w.Config.Users, 1<<16)
	now := time.Now()
	for i := range qs {
		qs[i].Now = now // ledger days follow the clock
	}
	for _, bc := range []struct {
		name   string
		cache  int64
		ledger bool
	}{{"cache", 1 << 20, false}, {"nocache", 0, false}, {"ledger", 1 << 20, true}} {
		b.Run(bc.name, func(b *testing.B) {
			var l *ledger.Ledger
			if bc.ledger {
				lcfg := ledger.DefaultConfig()
				lcfg.Manual = true
				var err error
				if l, err = ledger.New(lcfg); err != nil {
					b.Fatal(err)
				}
				defer l.Close()
			}
			e := newBenchEngine(b, w, bc.cache, l)
			var d engine.Decision
			ctx := context.Background()
			for i := range qs { // warm the cache and the pool
				e.Decide(ctx, &qs[i], &d)
				if l != nil {
					for _, bid := range d.Bids {
						l.Loss(ctx, bid.ID, qs[i].Now.UnixNano()) //nolint:errcheck // a release
					}
				}
			}
			lat := make([]time.Duration, 0, 1<<20)
			bids := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				q := &qs[i&(len(qs)-1)]
				start := time.Now()
				e.Decide(ctx, q, &d)
				if len(lat) < cap(lat) {
					lat = append(lat, time.Since(start))
				}
				bids += len(d.Bids)
				if l != nil {
					for _, bid := range d.Bids {
						l.Loss(ctx, bid.ID, q.Now.UnixNano()) //nolint:errcheck // a release; the bid exists
					}
				}
			}
			b.StopTimer()
			reportPercentiles(b, lat)
			b.ReportMetric(float64(bids)/float64(b.N), "bids/op")
		})
	}
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	at := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) }
	b.ReportMetric(at(0.50), "p50-ns")
	b.ReportMetric(at(0.99), "p99-ns")
}

// BenchmarkCompile measures compiling the world's rule set: validation,
// ranking and the targeting index.
func BenchmarkCompile(b *testing.B) {
	w := benchWorld(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := engine.Compile(w.Rules, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(w.Rules.Campaigns)), "campaigns")
}

// BenchmarkDecideBlocks measures decisions whose requests carry block
// lists: typical short ones (a few bcat and badv entries) and the largest
// bidder.Limits admit (1,024 bcat, 4,096 badv). Most entries block nothing
// the world's creatives carry; a few block some of its advertisers and
// categories, so that several candidates are checked per decision.
func BenchmarkDecideBlocks(b *testing.B) {
	w := benchWorld(b)
	base := queries(w, w.Config.Users, 1<<12)
	for _, bc := range []struct {
		name       string
		bcat, badv []string
	}{
		{"small", []string{"IAB25", "IAB9", "IAB7-1"}, []string{"competitor.example", "acme.com", "ads.hooli.com"}},
		{"max", maxBCat(), maxBAdv()},
		// badv blocks every advertiser of the rules but one, so that a
		// decision checks the domain of candidate after candidate.
		{"max-blocking", maxBCat(), append(allAdvertisersButOne(w), maxBAdv()...)[:4096]},
	} {
		b.Run(bc.name, func(b *testing.B) {
			qs := slices.Clone(base)
			for i := range qs {
				qs[i].BCat, qs[i].BAdv = bc.bcat, bc.badv
			}
			e := newBenchEngine(b, w, 1<<20, nil)
			var d engine.Decision
			ctx := context.Background()
			for i := range qs {
				e.Decide(ctx, &qs[i], &d)
			}
			bids := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				e.Decide(ctx, &qs[i&(len(qs)-1)], &d)
				bids += len(d.Bids)
			}
			b.ReportMetric(float64(bids)/float64(b.N), "bids/op")
		})
	}
}

// allAdvertisersButOne is the domain of every advertiser of w's rules
// but the first.
func allAdvertisersButOne(w *world.World) []string {
	var l []string
	for _, c := range w.Rules.Campaigns {
		for _, d := range c.Adomain {
			if !slices.Contains(l, d) {
				l = append(l, d)
			}
		}
	}
	return l[1:]
}

// maxBCat is 1,024 subcategories ("IAB1-1" to "IAB26-40"; the world's
// creatives carry top-level categories, which a subcategory does not
// block) and, among them, IAB7 and IAB13, which block some.
func maxBCat() []string {
	var l []string
	for i := 1; len(l) < 1022; i++ {
		l = append(l, fmt.Sprintf("IAB%d-%d", (i-1)%26+1, (i-1)/26+1))
	}
	return append(l, "IAB7", "IAB13")
}

// maxBAdv is 4,096 advertiser domains of 6 to 17 bytes, as long as the
// world's own ("acme.com", "hooli.com"), four of them the world's (two as
// a parent domain, two as a subdomain, which does not block the parent).
func maxBAdv() []string {
	l := []string{"acme.com", "globex.com", "ads.hooli.com", "www.initech.com"}
	names := []string{"ads", "shop", "brand", "news", "bet", "loans", "cars", "deals"}
	tlds := []string{"com", "net", "io", "co.uk"}
	for i := 0; len(l) < 4096; i++ {
		l = append(l, fmt.Sprintf("%s%d.%s", names[i%len(names)], i, tlds[i/len(names)%len(tlds)]))
	}
	return l
}
