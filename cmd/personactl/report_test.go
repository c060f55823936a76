package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/personad/personad/bidder"
	"github.com/personad/personad/engine"
	"github.com/personad/personad/ledger"
	"github.com/personad/personad/segments"
)

const reportRules = `
campaigns:
  - id: big-spender
    advertiser: acme
    bid_cpm: 8
    pacing: asap
    budget: {daily: 10, total: 100}
    creatives: [{id: cr-big, w: 300, h: 250, adm: "<b>big</b>"}]
  - id: even-paced
    advertiser: beta
    currency: EUR
    bid_cpm: 2
    pacing: even
    budget: {daily: 50}
    creatives: [{id: cr-even, w: 728, h: 90, adm: "<b>even</b>"}]
  - id: unbudgeted
    bid_cpm: 1
    creatives: [{id: cr-free, w: 160, h: 600, adm: "<b>free</b>"}]
`

// startReportServer serves reportRules with an in-memory ledger and
// spends a little: big-spender reserves 3 bids and settles one at 6.00
// CPM, even-paced reserves 1 bid.
func startReportServer(t *testing.T) string {
	t.Helper()
	lcfg := ledger.DefaultConfig()
	l, err := ledger.New(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	compiled := compileRules(t, reportRules, "v-report")
	eng, err := engine.New(engine.Config{Ledger: l}, segments.NewStore(segments.NewBuilder().Build(1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	eng.SetRules(compiled)
	now := time.Now().UnixNano()
	big, even := l.Lookup("big-spender"), l.Lookup("even-paced")
	for i, c := range []*ledger.Campaign{big, big, big, even} {
		price := int64(8000)
		if c == even {
			price = 2000
		}
		if _, err := l.Reserve(c, uint64(i+1), 0, price, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Bill(context.Background(), 1, 6000, now); err != nil {
		t.Fatal(err)
	}
	cfg := bidder.DefaultConfig()
	cfg.Engine, cfg.Ledger, cfg.NoticeURL = eng, l, "http://127.0.0.1:1"
	srv, err := bidder.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gs := srv.GRPCServer()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

func TestReport(t *testing.T) {
	addr := startReportServer(t)
	var out, errb bytes.Buffer
	e := env{getenv: func(string) string { return "" }, stdin: strings.NewReader(""), stdout: &out, stderr: &errb}
	if err := run(context.Background(), []string{"--addr", addr, "report"}, e); err != nil {
		t.Fatalf("report: %v\n%s", err, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[0], "budget day ") || !strings.Contains(lines[0], " UTC, 3 campaigns") {
		t.Fatalf("report:\n%s", out.String())
	}
	var got [][]string
	for _, l := range lines[2:] {
		got = append(got, strings.Fields(l))
	}
	want := [][]string{
		{"CAMPAIGN", "CUR", "TODAY", "DAILY", "LEFT", "TODAY", "SETTLED", "RESERVED", "TOTAL", "BUDGET", "LEFT", "PACING", "RATE"},
		// 6.00 CPM settled = 0.006, two bids of 8 CPM reserved = 0.016.
		{"big-spender", "USD", "0.022", "10.00", "9.978", "0.006", "0.016", "0.022", "100.00", "99.978", "asap", "-"},
		{"even-paced", "EUR", "0.002", "50.00", "49.998", "0.00", "0.002", "0.002", "-", "-", "even", "100.0%"},
		{"unbudgeted", "USD", "0.00", "-", "-", "0.00", "0.00", "0.00", "-", "-", "even", "100.0%"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("report table (-want +got):\n%s\n%s", diff, out.String())
	}

	out.Reset()
	if err := run(context.Background(), []string{"--addr", addr, "report", "--campaign", "big-spender"}, e); err != nil {
		t.Fatalf("report --campaign: %v", err)
	}
	if !strings.Contains(out.String(), " UTC, 1 campaign, largest") {
		t.Errorf("report --campaign:\n%s\nwant '1 campaign', not '1 campaigns'", out.String())
	}

	out.Reset()
	if err := run(context.Background(), []string{"--addr", addr, "report", "--json", "--campaign", "big-spender"}, e); err != nil {
		t.Fatalf("report --json: %v", err)
	}
	var js struct {
		TimeZone  string `json:"time_zone"`
		Campaigns []struct {
			Cid     string `json:"cid"`
			Settled string `json:"settled_total_micros"`
			Spent   string `json:"spent_today_micros"`
			Pacing  string `json:"pacing"`
		} `json:"campaigns"`
	}
	if err := json.Unmarshal(out.Bytes(), &js); err != nil {
		t.Fatalf("report --json is not JSON: %v\n%s", err, out.String())
	}
	if js.TimeZone != "UTC" || len(js.Campaigns) != 1 || js.Campaigns[0].Cid != "big-spender" ||
		js.Campaigns[0].Settled != "6000" || js.Campaigns[0].Spent != "22000" || js.Campaigns[0].Pacing != "asap" {
		t.Errorf("report --json:\n%s", out.String())
	}

	// An id neither the rules nor the ledger know is a typo, not a
	// campaign without spend (unbudgeted above has none and is listed).
	err := run(context.Background(), []string{"--addr", addr, "report", "--campaign", "nope"}, e)
	if want := `report: no campaign "nope" in the live rules or the ledger (personactl report lists them all)`; exitCode(err) != 1 || err.Error() != want {
		t.Errorf("unknown campaign: %v, exit %d; want %q, exit 1", err, exitCode(err), want)
	}
	out.Reset()
	if err := run(context.Background(), []string{"--addr", addr, "report", "--campaign", "unbudgeted"}, e); err != nil || !strings.Contains(out.String(), "unbudgeted") {
		t.Errorf("report --campaign unbudgeted (no spend): %v\n%s", err, out.String())
	}
	if err := run(context.Background(), []string{"--addr", addr, "report", "extra"}, e); exitCode(err) != 2 {
		t.Errorf("extra argument: %v, exit %d; want usage error", err, exitCode(err))
	}
}

func TestMoney(t *testing.T) {
	for in, want := range map[int64]string{
		0: "0.00", 1: "0.000001", 6000: "0.006", 10_000_000: "10.00", 9_978_000: "9.978", 1_234_567_890: "1234.56789", -1500: "-0.0015",
	} {
		if got := money(in); got != want {
			t.Errorf("money(%d) = %q, want %q", in, got, want)
		}
	}
}
