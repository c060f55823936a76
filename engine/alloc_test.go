package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/personad/personad/ledger"
	"github.com/personad/personad/segments"
)

// allocCase is one representative decision and its allocation budget.
type allocCase struct {
	name   string
	q      Query
	budget float64 // allocations per decision, with the reason when > 0
}

// TestDecideAllocs proves the decision path does not allocate once warm:
// scratch is pooled, the Decision is caller-owned and reused, the index is
// combined in place, and a cached persona is read without copying.
func TestDecideAllocs(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("allocation counts are not meaningful under -race or -cover")
	}
	r, snap := allocWorld(t)
	imp := func(id string, sizes ...Size) Imp { return Imp{ID: id, Sizes: sizes} }
	now := time.Now()
	tests := []allocCase{
		{"known user, cached persona, bid", Query{Now: now, BuyerUID: "u1", Channel: "social", Imps: []Imp{imp("1", Size{300, 250})}}, 0},
		{"user found by user.id", Query{Now: now, BuyerUID: "x", UserID: "u2", Imps: []Imp{imp("1", Size{300, 250})}}, 0},
		{"unknown user", Query{Now: now, UserID: "stranger", Domain: "www.linkedin.com", Imps: []Imp{imp("1", Size{300, 250})}}, 0},
		{"request facts", Query{Now: now, Facts: []Fact{{"title", "cmo"}, {"industry", "fintech"}, {"title", "nope"}}, Imps: []Imp{imp("1", Size{300, 250})}}, 0},
		{"three imps, blocks, floor", Query{Now: now, BuyerUID: "u1", BCat: []string{"IAB9"}, BAdv: []string{"zeta.io"},
			Imps: []Imp{imp("1", Size{300, 250}), imp("2", Size{728, 90}, Size{300, 250}), {ID: "3", Sizes: []Size{{160, 600}}, FloorMicros: 2e6}}}, 0},
		{"no bid: unmatched", Query{Now: now, BuyerUID: "u3", Channel: "email", Imps: []Imp{imp("1", Size{1, 1})}}, 0},
	}
	for _, cache := range []int64{0, 1024} {
		runAllocCases(t, newTestEngine(t, r, snap, cache), fmt.Sprintf("cache %d", cache), tests)
	}

	// With a ledger every bid of acme-cmo also passes the budget, even
	// pacing and frequency checks and reserves its spend; each bid is then
	// answered by a loss notice, as exchanges do. A lost reservation stays
	// in the ledger's pending table until expiry (Tick) trims it, so that
	// table grows, amortised: a few allocations per hundred decisions, the
	// ledger's own growth (see its Reserve benchmark), which
	// testing.AllocsPerRun's whole-number average rounds to 0. What the
	// budget of 0 pins is that no decision allocates on its own.
	lcfg := ledger.DefaultConfig()
	lcfg.Manual = true
	l, err := ledger.New(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := DefaultConfig()
	cfg.Ledger = l
	e, err := New(cfg, segments.NewStore(snap))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.SetRules(r)
	runAllocCases(t, e, "ledger", tests)
	if l.Pending() == 0 {
		t.Error("ledger: no reservation was made: the money path did not run")
	}
}

func runAllocCases(t *testing.T, e *Engine, label string, tests []allocCase) {
	t.Helper()
	ctx := context.Background()
	for _, tt := range tests {
		var d Decision
		decide := func() {
			e.Decide(ctx, &tt.q, &d)
			for _, b := range d.Bids {
				if e.ledger != nil {
					if err := e.ledger.Loss(ctx, b.ID, tt.q.Now.UnixNano()); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		for range 2000 { // warm: pool, cache (ristretto's Set is asynchronous), d's slices, ledger tables
			decide()
			if e.cache != nil {
				e.cache.Wait()
			}
		}
		got := testing.AllocsPerRun(1000, decide)
		if got > tt.budget {
			t.Errorf("%s, %s: %v allocations per decision, budget %v", label, tt.name, got, tt.budget)
		}
	}
}

func allocWorld(t testing.TB) (*Rules, *segmentsSnapshot) {
	t.Helper()
	rs := mustParse(t, `
campaigns:
  - id: acme-cmo
    bid_cpm: 4.5
    budget: {daily: 1000, total: 100000}
    pacing: even
    frequency_cap: {max: 1000000, window: 24h}
    targeting:
      all: [{facet: title, any: [cmo, vp-marketing]}, {facet: industry, any: [fintech]}]
      channels: [social, web]
    creatives:
      - {id: a1, w: 300, h: 250, adm: "<b>a</b>"}
      - {id: a2, w: 300, h: 250, persona: [{facet: title, any: [cmo]}], adm: "<b>cmo</b>"}
  - id: zeta
    adomain: [zeta.io]
    bid_cpm: 3
    cat: [IAB9-1]
    creatives:
      - {id: z1, w: 728, h: 90, adm: "<b>z</b>"}
      - {id: z2, w: 300, h: 250, adm: "<b>z</b>"}
  - id: sky
    bid_cpm: 2
    targeting:
      none: [{facet: title, any: [cfo]}]
    creatives:
      - {id: s1, w: 160, h: 600, adm: "<b>s</b>"}
content_rules:
  channel_map: [{channel: social, domains: [linkedin.com]}]
`)
	r, err := Compile(rs, "")
	if err != nil {
		t.Fatal(err)
	}
	return r, parseSegments(t, []byte("title:cmo u1\ntitle:vp-marketing u2\ntitle:cfo u3\nindustry:fintech u1 u2 u3\n"))
}
