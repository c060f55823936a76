package rules

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestMayRepeat: equal hashes are found wherever they are, zeros (empty
// ids) never count, and distinct hashes pass even when they share a slot.
func TestMayRepeat(t *testing.T) {
	for _, tc := range []struct {
		hashes []uint64
		want   bool
	}{
		{nil, false},
		{[]uint64{0, 0, 0}, false},
		{[]uint64{1, 2, 3}, false},
		{[]uint64{1, 1 << 40, 2 << 40, 3}, false}, // one slot, probed past
		{[]uint64{5, 0, 5}, true},
		{[]uint64{1, 1 << 40, 2 << 40, 1 << 40}, true},
		{[]uint64{idHash("a"), idHash("b"), idHash(""), idHash("")}, false},
		{[]uint64{idHash("a"), idHash("b"), idHash("a")}, true},
	} {
		if got := mayRepeat(tc.hashes); got != tc.want {
			t.Errorf("mayRepeat(%v) = %v, want %v", tc.hashes, got, tc.want)
		}
	}
}

// TestDeliveryWarnings: what a valid set holds that can never deliver —
// ended flights (one warning, naming them; paused campaigns and flights
// still running left out), a frequency cap's window without a max, a
// creative written only for channels its campaign does not run on — is
// warned of at its path; the rest draws nothing.
func TestDeliveryWarnings(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	rs, err := Parse("t.yaml", []byte(`
campaigns:
  - {id: running, bid_cpm: 1, end: "2027-01-01T00:00:00Z", frequency_cap: {max: 3, window: 24h}, creatives: [{id: c0, w: 1, h: 1, adm: x}]}
  - {id: last-year, bid_cpm: 1, start: "2025-01-01T00:00:00Z", end: "2025-12-31T00:00:00Z", creatives: [{id: c1, w: 1, h: 1, adm: x}]}
  - {id: paused-old, status: paused, bid_cpm: 1, end: "2025-12-31T00:00:00Z", creatives: [{id: c2, w: 1, h: 1, adm: x}]}
  - {id: this-morning, bid_cpm: 1, end: "2026-11-29T12:00:00+01:00", creatives: [{id: c3, w: 1, h: 1, adm: x}]}
  - {id: tonight-new-year, bid_cpm: 1, end: "2027-01-01T00:00:00+14:00", creatives: [{id: c4, w: 1, h: 1, adm: x}]}
  - {id: uncapped, bid_cpm: 1, frequency_cap: {window: 24h}, creatives: [{id: c5, w: 1, h: 1, adm: x}]}
  - id: email-only
    bid_cpm: 1
    targeting: {channels: [email, social]}
    creatives:
      - {id: c6, w: 1, h: 1, channels: [web], adm: x}
      - {id: c7, w: 1, h: 1, channels: [web, social], adm: x}
      - {id: c8, w: 1, h: 1, adm: x}
  - {id: any-channel, bid_cpm: 1, creatives: [{id: c9, w: 1, h: 1, channels: [web], adm: x}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Validate(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range rs.DeliveryWarnings(now) {
		got = append(got, w.Error())
	}
	want := []string{
		`campaigns[1].end: flight ended 2025-12-31T00:00:00Z: the campaign never bids; move end, or pause it (2 active campaigns' flights have ended: last-year, this-morning)`,
		`campaigns[5].frequency_cap.max: not set, so the window 24h caps nothing (max 0 is no cap): set the impressions a user may see per window, or remove frequency_cap`,
		`campaigns[6].creatives[0].channels: none of [web] is a channel of the campaign (targeting.channels [email, social]): the creative never serves`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	// On New Year's Eve at noon UTC, the flight that ended at midnight in
	// UTC+14 (10:00 UTC), in a year yet to come in UTC, has ended too.
	if ws := rs.DeliveryWarnings(time.Date(2026, 12, 31, 12, 0, 0, 0, time.UTC)); len(ws) == 0 || !strings.Contains(ws[0].Msg, "(3 active campaigns' flights have ended: last-year, this-morning, tonight-new-year)") {
		t.Errorf("a day later: %v, want tonight-new-year's flight ended too", ws)
	}
}

// TestDeliveryWarningsHouseRules: a campaign whose advertiser domain the
// house rules block (a subdomain too), or whose every creative has a
// blocked category (a subcategory too, the campaign's cat for a creative
// without its own), never bids, and a creative with a blocked category
// never serves: each is warned of at the domain or category, by the
// engine's own test (CategoryBlocker, DomainBlocker). A paused campaign is
// not.
func TestDeliveryWarningsHouseRules(t *testing.T) {
	got := deliveryWarnings(t, `
campaigns:
  - {id: shop, bid_cpm: 1, adomain: [ok.example, Shop.BadCo.example], creatives: [{id: c0, w: 1, h: 1, adm: x}]}
  - {id: not-a-subdomain, bid_cpm: 1, adomain: [notbadco.example], creatives: [{id: c1, w: 1, h: 1, adm: x}]}
  - id: all-blocked
    bid_cpm: 1
    cat: [IAB25-3]
    creatives:
      - {id: c2, w: 1, h: 1, adm: x}
      - {id: c3, w: 1, h: 1, cat: [IAB1, iab26], adm: x}
  - id: one-blocked
    bid_cpm: 1
    cat: [IAB19]
    creatives:
      - {id: c4, w: 1, h: 1, adm: x}
      - {id: c5, w: 1, h: 1, cat: [IAB19, IAB26-1], adm: x}
      - {id: c6, w: 1, h: 1, cat: [IAB250], adm: x}
  - {id: paused, status: paused, bid_cpm: 1, adomain: [badco.example], creatives: [{id: c7, w: 1, h: 1, adm: x}]}
content_rules:
  blocked_cat: [IAB25, IAB26]
  blocked_adomain: [badco.example]
`)
	want := []string{
		`campaigns[0].adomain[1]: "Shop.BadCo.example" is blocked by content_rules.blocked_adomain "badco.example": the campaign never bids`,
		`campaigns[2].cat[0]: "IAB25-3" is blocked by content_rules.blocked_cat "IAB25": the campaign never bids (content_rules.blocked_cat blocks a category of each of its creatives)`,
		`campaigns[3].creatives[1].cat[1]: "IAB26-1" is blocked by content_rules.blocked_cat "IAB26": creative c5 never serves`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}

// deliveryWarnings parses and validates the YAML rule set doc and returns
// its delivery warnings on 2026-11-29, as text.
func deliveryWarnings(t *testing.T, doc string) []string {
	t.Helper()
	rs, err := Parse("t.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Validate(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range rs.DeliveryWarnings(time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)) {
		got = append(got, w.Error())
	}
	return got
}

// TestDeliveryWarningsTargeting: a targeting.all clause (or a creative's
// persona clause) every value of which targeting.none excludes can never
// match, and is warned of at the clause; clauses that only look contrary
// are not, since a user may hold several values of one facet.
func TestDeliveryWarningsTargeting(t *testing.T) {
	got := deliveryWarnings(t, `
campaigns:
  - id: cmo-not-cmo
    bid_cpm: 1
    targeting:
      all: [{facet: industry, any: [fintech]}, {facet: title, any: [cmo]}]
      none: [{facet: title, any: [cmo]}]
    creatives: [{id: c0, w: 1, h: 1, adm: x}]
  - id: split-over-two-clauses
    bid_cpm: 1
    targeting:
      all: [{facet: title, any: [cmo, cfo, ceo, cto, cio, coo]}]
      none: [{facet: title, any: [cfo, cmo, ceo]}, {facet: industry, any: [cmo]}, {facet: title, any: [cto, cio, coo]}]
    creatives: [{id: c1, w: 1, h: 1, adm: x}]
  - id: persona-excluded
    bid_cpm: 1
    targeting:
      none: [{facet: pain_point, any: [churn]}]
    creatives:
      - {id: c2, w: 1, h: 1, adm: x, persona: [{facet: pain_point, any: [churn]}]}
      - {id: c3, w: 1, h: 1, adm: x, persona: [{facet: pain_point, any: [churn, lead-quality]}]}
  # Not contrary: a user may be both a CMO and a CFO; a CFO who is not a
  # CMO matches; the same value of another facet is another segment.
  - id: cmo-and-cfo
    bid_cpm: 1
    targeting:
      all: [{facet: title, any: [cmo]}, {facet: title, any: [cfo]}]
    creatives: [{id: c4, w: 1, h: 1, adm: x, persona: [{facet: title, any: [ceo]}]}]
  - id: cfo-not-cmo
    bid_cpm: 1
    targeting:
      all: [{facet: title, any: [cmo, cfo]}]
      none: [{facet: title, any: [cmo]}, {facet: role, any: [cfo]}]
    creatives: [{id: c5, w: 1, h: 1, adm: x, persona: [{facet: title, any: [cfo, cmo]}]}]
  - id: paused
    status: paused
    bid_cpm: 1
    targeting:
      all: [{facet: title, any: [cmo]}]
      none: [{facet: title, any: [cmo]}]
    creatives: [{id: c6, w: 1, h: 1, adm: x}]
`)
	want := []string{
		`campaigns[0].targeting.all[1]: every title it takes (cmo) is excluded by targeting.none[0]: no user can match it, so the campaign never bids`,
		`campaigns[1].targeting.all[0]: every title it takes (cmo, cfo, ceo, cto, cio and 1 more) is excluded by targeting.none[0] and targeting.none[2]: no user can match it, so the campaign never bids`,
		`campaigns[2].creatives[0].persona[0]: every pain_point it takes (churn) is excluded by the campaign's targeting.none[0]: the creative never serves`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}

// TestDeliveryWarningsTargetingExhaustive checks the targeting warning
// against the targeting's meaning on random campaigns over two facets of
// three values: a campaign is warned of exactly when none of the 64
// personas (every set of the six segments: a user may hold several
// values of a facet) passes its targeting, and a creative's persona
// exactly when none passes both.
func TestDeliveryWarningsTargetingExhaustive(t *testing.T) {
	facets, values := []string{"title", "industry"}, []string{"x", "y", "z"}
	rng := rand.New(rand.NewPCG(1, 2))
	clauses := func(max int) []Clause {
		cs := make([]Clause, rng.IntN(max+1))
		for i := range cs {
			cs[i].Facet = facets[rng.IntN(len(facets))]
			for _, v := range values {
				if rng.IntN(2) == 0 {
					cs[i].Any = append(cs[i].Any, v)
				}
			}
			if len(cs[i].Any) == 0 {
				cs[i].Any = []string{values[rng.IntN(len(values))]}
			}
		}
		return cs
	}
	holds := func(persona int, cl Clause) bool { // persona: a bit per segment
		f := slices.Index(facets, cl.Facet)
		return slices.ContainsFunc(cl.Any, func(v string) bool { return persona&(1<<(f*len(values)+slices.Index(values, v))) != 0 })
	}
	passes := func(persona int, all, none []Clause) bool {
		return !slices.ContainsFunc(all, func(cl Clause) bool { return !holds(persona, cl) }) &&
			!slices.ContainsFunc(none, func(cl Clause) bool { return holds(persona, cl) })
	}
	warned, tried := 0, 0
	for range 2000 {
		c := Campaign{ID: "c", BidCPM: 1, Targeting: Targeting{All: clauses(3), None: clauses(3)},
			Creatives: []Creative{{ID: "cr", W: 1, H: 1, Adm: "x", Persona: clauses(2)}}}
		rs := &RuleSet{Campaigns: []Campaign{c}}
		if err := rs.Validate(); err != nil {
			t.Fatal(err)
		}
		var campaignWarned, creativeWarned bool
		for _, w := range rs.DeliveryWarnings(time.Time{}) {
			campaignWarned = campaignWarned || strings.Contains(w.Path, ".targeting.all[")
			creativeWarned = creativeWarned || strings.Contains(w.Path, ".persona[")
		}
		var campaignCan, creativeCan bool
		for p := range 1 << (len(facets) * len(values)) {
			if passes(p, c.Targeting.All, c.Targeting.None) {
				campaignCan = true
				creativeCan = creativeCan || passes(p, c.Creatives[0].Persona, nil)
			}
		}
		if campaignWarned == campaignCan {
			t.Fatalf("targeting %+v: warned %v, but some persona matches: %v", c.Targeting, campaignWarned, campaignCan)
		}
		// A creative of a campaign that never bids is warned of only
		// when its own persona is excluded.
		if campaignCan && creativeWarned == creativeCan {
			t.Fatalf("targeting %+v, persona %+v: creative warned %v, but some persona matches both: %v", c.Targeting, c.Creatives[0].Persona, creativeWarned, creativeCan)
		}
		tried++
		if campaignWarned {
			warned++
		}
	}
	if warned < tried/10 || warned > tried*9/10 {
		t.Errorf("%d of %d campaigns warned of: the generator tests too little", warned, tried)
	}
}

// manyExcludedValues is a campaign whose targeting.all clause takes n
// titles, every one excluded by one of its two targeting.none clauses.
func manyExcludedValues(n int) *RuleSet {
	vals := make([]string, n)
	for i := range vals {
		vals[i] = "title-" + strconv.Itoa(i)
	}
	return &RuleSet{Campaigns: []Campaign{{ID: "a", Targeting: Targeting{
		All:  []Clause{{Facet: "title", Any: vals}},
		None: []Clause{{Facet: "title", Any: vals[:n/2]}, {Facet: "title", Any: vals[n/2:]}},
	}}}}
}

// TestDeliveryWarningsManyExcludedValues: a clause excluded by two none
// clauses together is warned of once, naming both.
func TestDeliveryWarningsManyExcludedValues(t *testing.T) {
	w := manyExcludedValues(2000).DeliveryWarnings(time.Now())
	if len(w) != 1 || !strings.Contains(w[0].Msg, "excluded by targeting.none[0] and targeting.none[1]") {
		t.Fatalf("warnings %v, want the one of targeting.all[0]", w)
	}
}

// BenchmarkDeliveryWarningsExcludedValues: the check that targeting.none
// excludes every value of a clause looked each value up in every none
// clause, quadratic in the values: 40,000 titles (an 800 KB file) took
// 1.4–1.7 s, with a reload's lock held, 434 times 2,000's; with the none
// values indexed once per campaign (707840f), 13 ms against 0.15 ms
// (-benchtime 2x, a loaded 2-core VM).
func BenchmarkDeliveryWarningsExcludedValues(b *testing.B) {
	for _, n := range []int{2000, 40000} {
		rs := manyExcludedValues(n)
		b.Run("values="+strconv.Itoa(n), func(b *testing.B) {
			for b.Loop() {
				rs.DeliveryWarnings(time.Now())
			}
		})
	}
}
