package engine

import (
	"context"
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

// warmRecorder is a ledger.FrequencyWarmer that remembers the campaigns
// of the last Warm and allows everything.
type warmRecorder struct{ got []string }

func (w *warmRecorder) Allow(string, uint64, int32, int32, time.Duration, int64) bool { return true }
func (w *warmRecorder) Record(string, uint64, uint64, time.Duration, int64)           {}
func (w *warmRecorder) Close() error                                                  { return nil }
func (w *warmRecorder) Warm(_ context.Context, _ uint64, caps []ledger.FrequencyCap, _ int64) error {
	w.got = w.got[:0]
	for _, c := range caps {
		w.got = append(w.got, c.Campaign)
	}
	return nil
}

// TestSetRulesWarmsOnlyItsCampaigns: a shared frequency store is asked to
// read the counts of the published rules' capped campaigns, not of one a
// reload removed (the ledger keeps its state for the process's life).
func TestSetRulesWarmsOnlyItsCampaigns(t *testing.T) {
	w := &warmRecorder{}
	lcfg := ledger.DefaultConfig()
	lcfg.Manual = true
	lcfg.Frequency = w
	l, err := ledger.New(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e, err := New(Config{Ledger: l}, newEmptyStore())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	set := func(yaml string) {
		t.Helper()
		r, err := Compile(mustParse(t, yaml), "")
		if err != nil {
			t.Fatal(err)
		}
		if _, refused := e.SetRules(r); refused != 0 {
			t.Fatalf("%d campaigns refused", refused)
		}
	}
	warmed := func() []string {
		t.Helper()
		w.got = nil
		if err := l.WarmFrequency(context.Background(), 7, time.Now().UnixNano()); err != nil {
			t.Fatal(err)
		}
		return w.got
	}
	set(moneyRules + `
  - id: capped-too
    bid_cpm: 2
    frequency_cap: {max: 1, window: 24h}
    creatives: [{id: cr-too, w: 300, h: 250, adm: "<b>t</b>"}]
`)
	if got, want := warmed(), []string{"capped", "capped-too"}; !equal(got, want) {
		t.Errorf("warmed %v, want %v", got, want)
	}
	set(moneyRules)
	if got, want := warmed(), []string{"capped"}; !equal(got, want) {
		t.Errorf("after capped-too was removed: warmed %v, want %v", got, want)
	}
}
