package engine

import (
	"context"
	"testing"
	"time"
)

// TestDecideAllocs proves the decision path does not allocate once warm:
// scratch is pooled, the Decision is caller-owned and reused, the index is
// combined in place, and a cached persona is read without copying.
func TestDecideAllocs(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("allocation counts are not meaningful under -race or -cover")
	}
	r, snap := allocWorld(t)
	imp := func(id string, sizes ...Size) Imp { return Imp{ID: id, Sizes: sizes} }
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		q      Query
		budget float64 // allocations per decision, with the reason when > 0
	}{
		{"known user, cached persona, bid", Query{Now: now, BuyerUID: "u1", Channel: "social", Imps: []Imp{imp("1", Size{300, 250})}}, 0},
		{"user found by user.id", Query{Now: now, BuyerUID: "x", UserID: "u2", Imps: []Imp{imp("1", Size{300, 250})}}, 0},
		{"unknown user", Query{Now: now, UserID: "stranger", Domain: "www.linkedin.com", Imps: []Imp{imp("1", Size{300, 250})}}, 0},
		{"request facts", Query{Now: now, Facts: []Fact{{"title", "cmo"}, {"industry", "fintech"}, {"title", "nope"}}, Imps: []Imp{imp("1", Size{300, 250})}}, 0},
		{"three imps, blocks, floor", Query{Now: now, BuyerUID: "u1", BCat: []string{"IAB9"}, BAdv: []string{"zeta.io"},
			Imps: []Imp{imp("1", Size{300, 250}), imp("2", Size{728, 90}, Size{300, 250}), {ID: "3", Sizes: []Size{{160, 600}}, FloorMicros: 2e6}}}, 0},
		{"no bid: unmatched", Query{Now: now, BuyerUID: "u3", Channel: "email", Imps: []Imp{imp("1", Size{1, 1})}}, 0},
	}
	for _, cache := range []int64{0, 1024} {
		e := newTestEngine(t, r, snap, cache)
		for _, tt := range tests {
			var d Decision
			for range 10 { // warm: pool, cache (ristretto's Set is asynchronous), d's slices
				e.Decide(context.Background(), &tt.q, &d)
				if e.cache != nil {
					e.cache.Wait()
				}
			}
			got := testing.AllocsPerRun(200, func() { e.Decide(context.Background(), &tt.q, &d) })
			if got > tt.budget {
				t.Errorf("cache %d, %s: %v allocations per decision, budget %v", cache, tt.name, got, tt.budget)
			}
		}
	}
}

func allocWorld(t testing.TB) (*Rules, *segmentsSnapshot) {
	t.Helper()
	rs := mustParse(t, `
campaigns:
  - id: acme-cmo
    bid_cpm: 4.5
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
