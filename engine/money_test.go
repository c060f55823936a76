package engine

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/personad/personad/ledger"
)

const moneyRules = `
campaigns:
  - id: capped
    bid_cpm: 4
    pacing: asap
    frequency_cap: {max: 2, window: 1h}
    creatives: [{id: cr-capped, w: 300, h: 250, adm: "<b>c</b>"}]
  - id: small-budget
    bid_cpm: 3
    pacing: asap
    budget: {daily: 0.009}
    creatives: [{id: cr-small, w: 728, h: 90, adm: "<b>s</b>"}]
  - id: fallback
    bid_cpm: 1
    creatives:
      - {id: cr-fb-300, w: 300, h: 250, adm: "<b>f</b>"}
      - {id: cr-fb-728, w: 728, h: 90, adm: "<b>f</b>"}
`

func newMoneyEngine(t *testing.T, yaml string) (*Engine, *ledger.Ledger) {
	t.Helper()
	lcfg := ledger.DefaultConfig()
	lcfg.Manual = true
	l, err := ledger.New(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	cfg := DefaultConfig()
	cfg.Ledger = l
	e, err := New(cfg, newEmptyStore())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	r, err := Compile(mustParse(t, yaml), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, refused := e.SetRules(r); refused != 0 {
		t.Fatalf("%d campaigns refused", refused)
	}
	return e, l
}

// TestFrequencyCapAcrossChannels: a user capped on social is capped on
// email too; another user is not.
func TestFrequencyCapAcrossChannels(t *testing.T) {
	e, _ := newMoneyEngine(t, moneyRules)
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	bid := func(user, channel string) string {
		q := &Query{Now: now, BuyerUID: user, Channel: channel, Imps: []Imp{{ID: "1", Sizes: []Size{{300, 250}}}}}
		var d Decision
		e.Decide(context.Background(), q, &d)
		if len(d.Bids) != 1 {
			t.Fatalf("%s on %s: no bid (%v)", user, channel, d.NoBid)
		}
		if d.Bids[0].ID == 0 {
			t.Errorf("%s on %s: bid without a reservation id", user, channel)
		}
		return d.Bids[0].Campaign.ID
	}
	var got []string
	for _, ch := range []string{"social", "email", "web"} {
		got = append(got, bid("ann", ch))
	}
	if want := []string{"capped", "capped", "fallback"}; !equal(got, want) {
		t.Errorf("ann on social, email, web: %v, want %v", got, want)
	}
	if c := bid("bob", "web"); c != "capped" {
		t.Errorf("bob: %s, want capped (his own count)", c)
	}
	if c := bid("", "web"); c != "fallback" {
		t.Errorf("unknown user: %s, want fallback (a capped campaign cannot count an unknown user)", c)
	}

	// The trace names the frequency stage.
	q := &Query{Now: now, BuyerUID: "ann", Debug: true, Imps: []Imp{{ID: "1", Sizes: []Size{{300, 250}}}}}
	var d Decision
	e.Decide(context.Background(), q, &d)
	if tr := traceOf(&d, "capped"); tr.Stage != StageFrequency || tr.Detail != "frequency cap reached for this user" {
		t.Errorf("capped: stage %v (%q), want frequency, the cap reached", tr.Stage, tr.Detail)
	}
	// For an unknown user it says why: no id to count by.
	q.BuyerUID = ""
	e.Decide(context.Background(), q, &d)
	if tr := traceOf(&d, "capped"); tr.Stage != StageFrequency || !strings.HasPrefix(tr.Detail, "no user id") {
		t.Errorf("capped, unknown user: stage %v (%q), want frequency, no user id", tr.Stage, tr.Detail)
	}
}

// TestBudgetNeverOverspent: a daily budget of 0.009 at a 3 CPM price
// (0.003 per impression) pays for exactly three bids; the fourth goes to
// the next campaign, and a reload keeps the spend.
func TestBudgetNeverOverspent(t *testing.T) {
	e, l := newMoneyEngine(t, moneyRules)
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	q := &Query{Now: now, UserID: "x", Imps: []Imp{{ID: "1", Sizes: []Size{{728, 90}}}}}
	var d Decision
	var got []string
	for range 4 {
		e.Decide(context.Background(), q, &d)
		got = append(got, d.Bids[0].Campaign.ID)
	}
	if want := []string{"small-budget", "small-budget", "small-budget", "fallback"}; !equal(got, want) {
		t.Errorf("bids %v, want %v", got, want)
	}
	// A reload (same campaign, new rules version) must not reset spend.
	r, err := Compile(mustParse(t, moneyRules+"\n"), "reloaded")
	if err != nil {
		t.Fatal(err)
	}
	e.SetRules(r)
	e.Decide(context.Background(), q, &d)
	if c := d.Bids[0].Campaign.ID; c != "fallback" {
		t.Errorf("after reload: %s won; spend was reset", c)
	}
	for _, rep := range l.Report(now) {
		if rep.ID == "small-budget" && rep.SpentTodayMicros != 9000 {
			t.Errorf("small-budget spent %d micros today, want 9000", rep.SpentTodayMicros)
		}
	}
}

func traceOf(d *Decision, campaign string) Trace {
	for _, tr := range d.Trace {
		if tr.Campaign == campaign {
			return tr
		}
	}
	return Trace{}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestFrequencyCaps: the caps a bidder has a shared frequency store read
// before a decision are those of the capped campaigns the decision may
// ask about: targeted at the request's persona, live, of one of its
// sizes, not below every floor and not blocked by the request; not every capped campaign of the rules (a
// read of each for every user would not scale, and would fill the
// store's cache with counts no decision asks for).
func TestFrequencyCaps(t *testing.T) {
	e, _ := newMoneyEngine(t, `
campaigns:
  - id: cmo-capped
    bid_cpm: 4
    frequency_cap: {max: 2, window: 1h}
    targeting: {all: [{facet: title, any: [cmo]}]}
    creatives: [{id: cr-cmo, w: 300, h: 250, adm: "<b>c</b>"}]
  - id: cto-capped
    bid_cpm: 4
    frequency_cap: {max: 2, window: 1h}
    targeting: {all: [{facet: title, any: [cto]}]}
    creatives: [{id: cr-cto, w: 300, h: 250, adm: "<b>c</b>"}]
  - id: paused-capped
    status: paused
    bid_cpm: 4
    frequency_cap: {max: 2, window: 1h}
    creatives: [{id: cr-paused, w: 300, h: 250, adm: "<b>p</b>"}]
  - id: leaderboard-capped
    bid_cpm: 4
    frequency_cap: {max: 1, window: 24h}
    creatives: [{id: cr-lb, w: 728, h: 90, adm: "<b>l</b>"}]
  - id: cheap-capped
    bid_cpm: 0.5
    frequency_cap: {max: 2, window: 1h}
    creatives: [{id: cr-cheap, w: 300, h: 250, adm: "<b>c</b>"}]
  - id: any-capped
    bid_cpm: 3
    frequency_cap: {max: 3, window: 30m}
    creatives: [{id: cr-any, w: 300, h: 250, adm: "<b>a</b>"}]
  - id: blocked-capped
    adomain: [blocked.example]
    bid_cpm: 4
    frequency_cap: {max: 2, window: 1h}
    creatives: [{id: cr-blocked, w: 300, h: 250, adm: "<b>b</b>"}]
  - id: uncapped
    bid_cpm: 2
    creatives: [{id: cr-open, w: 300, h: 250, adm: "<b>o</b>"}]
`)
	q := &Query{
		Now:    time.Now(),
		UserID: "u-1",
		Facts:  []Fact{{"title", "cmo"}},
		Imps:   []Imp{{ID: "1", Sizes: []Size{{300, 250}}, FloorMicros: 1_000_000}},
		BAdv:   []string{"blocked.example"},
	}
	got := e.FrequencyCaps(q, nil)
	want := []ledger.FrequencyCap{{Campaign: "cmo-capped", Window: time.Hour}, {Campaign: "any-capped", Window: 30 * time.Minute}}
	if !slices.Equal(got, want) {
		t.Errorf("FrequencyCaps = %v, want %v", got, want)
	}
	// dst is appended to, and reused without allocating (the race
	// detector's sync.Pool drops pooled scratch at random).
	buf := make([]ledger.FrequencyCap, 0, 8)
	if allocs := testing.AllocsPerRun(100, func() { buf = e.FrequencyCaps(q, buf[:0]) }); allocs != 0 && !raceEnabled {
		t.Errorf("FrequencyCaps allocated %.1f times a call, want 0", allocs)
	}
	// Without a ledger there is nothing to read.
	bare, err := New(DefaultConfig(), newEmptyStore())
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	r, err := Compile(mustParse(t, moneyRules), "")
	if err != nil {
		t.Fatal(err)
	}
	bare.SetRules(r)
	if got := bare.FrequencyCaps(q, nil); len(got) != 0 {
		t.Errorf("without a ledger FrequencyCaps = %v, want none", got)
	}
}
