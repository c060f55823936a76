package bidder

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/personad/personad/engine"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

func TestTranslate(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	seg := func(ss ...*personadpb.Segment) *personadpb.User {
		return &personadpb.User{Id: "ex-1", Buyeruid: "u1", Data: []*personadpb.Data{{Name: "provider", Segment: ss}}}
	}
	for _, tc := range []struct {
		name   string
		mutate func(r *personadpb.BidRequest)
		want   engine.Query
	}{
		{
			name:   "minimal site",
			mutate: func(r *personadpb.BidRequest) {},
			want: engine.Query{Now: now, BuyerUID: "u00000001", Domain: "news.example",
				Imps: []engine.Imp{{ID: "1", Sizes: []engine.Size{sz(300, 250)}}}},
		},
		{
			name: "facts by name and value, and by id, lower-cased; junk ignored",
			mutate: func(r *personadpb.BidRequest) {
				r.User = seg(
					&personadpb.Segment{Name: "title", Value: "cmo"},
					&personadpb.Segment{Name: "Industry", Value: "FinTech"},
					&personadpb.Segment{Id: "pain_point:lead-quality"},
					&personadpb.Segment{Id: "SENIORITY:VP"},
					&personadpb.Segment{Id: "12345"},                              // an exchange's opaque id
					&personadpb.Segment{Name: "title", Value: "not valid!"},       // not a value
					&personadpb.Segment{Name: "9title", Value: "cmo"},             // not a facet
					&personadpb.Segment{Id: ":cmo"},                               // no facet
					&personadpb.Segment{Name: "title", Id: "company_size:51-200"}, // name without value: id counts
				)
			},
			want: engine.Query{Now: now, BuyerUID: "u1", UserID: "ex-1", Domain: "news.example",
				Facts: []engine.Fact{
					fact("title", "cmo"), fact("industry", "fintech"), fact("pain_point", "lead-quality"),
					fact("seniority", "vp"), fact("company_size", "51-200"),
				},
				Imps: []engine.Imp{{ID: "1", Sizes: []engine.Size{sz(300, 250)}}}},
		},
		{
			name: "site channel lower-cased",
			mutate: func(r *personadpb.BidRequest) {
				r.Site.Ext = &personadpb.DistributionExt{Channel: "Social"}
			},
			want: engine.Query{Now: now, BuyerUID: "u00000001", Channel: "social", Domain: "news.example",
				Imps: []engine.Imp{{ID: "1", Sizes: []engine.Size{sz(300, 250)}}}},
		},
		{
			name: "app",
			mutate: func(r *personadpb.BidRequest) {
				r.Site = nil
				r.App = &personadpb.App{Bundle: "com.example.app", Domain: "example.com", Ext: &personadpb.DistributionExt{Channel: "MOBILE"}}
			},
			want: engine.Query{Now: now, BuyerUID: "u00000001", App: true, Channel: "mobile", Domain: "example.com", Bundle: "com.example.app",
				Imps: []engine.Imp{{ID: "1", Sizes: []engine.Size{sz(300, 250)}}}},
		},
		{
			name: "imps: formats, w x h, floors rounded to micros, blocks, currencies, debug",
			mutate: func(r *personadpb.BidRequest) {
				r.Imp[0].Banner.Format = append(r.Imp[0].Banner.Format, &personadpb.Format{W: 320, H: 50})
				r.Imp[0].Bidfloor = 1.1
				r.Imp[0].Bidfloorcur = "EUR"
				r.Imp = append(r.Imp, &personadpb.Imp{Id: "2", Banner: &personadpb.Banner{W: 728, H: 90}, Bidfloor: 0.0000005})
				r.Imp = append(r.Imp, &personadpb.Imp{Id: "3", Banner: &personadpb.Banner{W: 160, H: 600}, Bidfloor: 2.675})
				r.Bcat = []string{"IAB25"}
				r.Badv = []string{"badco.example"}
				r.Cur = []string{"USD", "EUR"}
				r.Ext = &personadpb.BidRequestExt{Debug: true}
			},
			want: engine.Query{Now: now, BuyerUID: "u00000001", Domain: "news.example",
				Imps: []engine.Imp{
					{ID: "1", Sizes: []engine.Size{sz(300, 250), sz(320, 50)}, FloorMicros: 1_100_000, FloorCur: "EUR"},
					{ID: "2", Sizes: []engine.Size{sz(728, 90)}, FloorMicros: 1},
					{ID: "3", Sizes: []engine.Size{sz(160, 600)}, FloorMicros: 2_675_000},
				},
				BCat: []string{"IAB25"}, BAdv: []string{"badco.example"}, Currencies: []string{"USD", "EUR"},
				Debug: true},
		},
		{
			name:   "bcat in IAB Content Category Taxonomy 1.0, named",
			mutate: func(r *personadpb.BidRequest) { r.Bcat, r.Cattax = []string{"IAB25"}, 1 },
			want: engine.Query{Now: now, BuyerUID: "u00000001", Domain: "news.example",
				Imps: []engine.Imp{{ID: "1", Sizes: []engine.Size{sz(300, 250)}}}, BCat: []string{"IAB25"}},
		},
		{
			name:   "bcat in another taxonomy",
			mutate: func(r *personadpb.BidRequest) { r.Bcat, r.Cattax = []string{"653"}, 7 },
			want: engine.Query{Now: now, BuyerUID: "u00000001", Domain: "news.example",
				Imps: []engine.Imp{{ID: "1", Sizes: []engine.Size{sz(300, 250)}}}, BCat: []string{"653"}, BCatForeign: true},
		},
		{
			name:   "another taxonomy, nothing blocked",
			mutate: func(r *personadpb.BidRequest) { r.Cattax = 7 },
			want: engine.Query{Now: now, BuyerUID: "u00000001", Domain: "news.example",
				Imps: []engine.Imp{{ID: "1", Sizes: []engine.Size{sz(300, 250)}}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := request(userCMO)
			tc.mutate(req)
			l := DefaultConfig().Limits
			if err := validate(req, &l); err != nil {
				t.Fatal(err)
			}
			var q engine.Query
			translate(req, now, &q)
			if diff := cmp.Diff(tc.want, q, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("query (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTranslateReuse: a pooled scratch translates a request without
// allocating, and a reset scratch holds nothing of the last request.
func TestTranslateReuse(t *testing.T) {
	s := newTestServer(t, "")
	req := request(userCMO)
	req.Imp = append(req.Imp, bannerImps(3)...)
	req.Imp[1].Banner.Format = formats(4)
	req.User.Data = []*personadpb.Data{{Segment: []*personadpb.Segment{{Id: "title:cmo"}, {Name: "industry", Value: "fintech"}}}}
	req.Bcat, req.Badv, req.Cur = []string{"IAB25"}, []string{"x.com"}, []string{"USD"}
	now := time.Now()

	// The pool itself is not under test (the race detector makes it drop
	// items on purpose): one scratch, translated into and reset.
	sc := new(scratch)
	translate(req, now, &sc.q)
	sc.reset()
	if n := testing.AllocsPerRun(100, func() {
		translate(req, now, &sc.q)
		sc.reset()
	}); n > 0 && !raceEnabled {
		t.Errorf("translate into a reused scratch allocates %v times, want 0", n)
	}

	var sc2 scratch
	translate(req, now, &sc2.q)
	sc2.d.Persona = append(sc2.d.Persona, "title:cmo")
	sc2.d.Bids = append(sc2.d.Bids, engine.Bid{Campaign: &engine.Campaign{ID: "c"}})
	s.putScratch(&sc2)
	if diff := cmp.Diff(engine.Query{}, sc2.q, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("reset query (-want +got):\n%s", diff)
	}
	for _, imp := range sc2.q.Imps[:cap(sc2.q.Imps)] {
		if imp.ID != "" || len(imp.Sizes) != 0 {
			t.Errorf("reset imp kept %+v", imp)
		}
	}
	if b := sc2.d.Bids[:cap(sc2.d.Bids)]; b[0].Campaign != nil {
		t.Errorf("reset decision keeps a campaign pointer")
	}
	if p := sc2.d.Persona[:cap(sc2.d.Persona)]; p[0] != "" {
		t.Errorf("reset decision keeps persona %q", p[0])
	}
}

func TestFloorToMicros(t *testing.T) {
	for _, tc := range []struct {
		cpm  float64
		want int64
	}{
		{0, 0}, {1, 1_000_000}, {1.1, 1_100_000}, {0.29, 290_000}, {4.35, 4_350_000},
		{0.0000005, 1}, {0.0000004, 1}, {1.0000004, 1_000_001}, {9999.999999, 9_999_999_999}, {10000, 10_000_000_000},
		{15000, 15_000_000_000}, {8.9e12, 8_900_000_000_000_000_000}, {9e12, math.MaxInt64}, {1e308, math.MaxInt64},
	} {
		if got := floorToMicros(tc.cpm); got != tc.want {
			t.Errorf("floorToMicros(%v) = %d, want %d", tc.cpm, got, tc.want)
		}
	}
}

func sz(w, h int32) engine.Size { return engine.Size{W: w, H: h} }

func fact(facet, value string) engine.Fact { return engine.Fact{Facet: facet, Value: value} }
