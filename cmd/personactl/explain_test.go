package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/personad/personad/bidder"
	"github.com/personad/personad/engine"
	"github.com/personad/personad/ledger"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/segments"
)

const explainRules = `
campaigns:
  - id: acme-cmo
    adomain: [acme.com]
    bid_cpm: 4.5
    frequency_cap: {max: 1, window: 24h}
    targeting:
      all: [{facet: title, any: [cmo]}]
    creatives:
      - {id: cr-generic, w: 300, h: 250, adm: "<b>acme</b>"}
      - {id: cr-cmo, w: 300, h: 250, persona: [{facet: title, any: [cmo]}], adm: "<b>acme for CMOs</b>"}
  - id: zeta-wide
    adomain: [zeta.io]
    bid_cpm: 1
    creatives:
      - {id: cr-zeta, w: 728, h: 90, adm: "<b>zeta</b>"}
`

// startExplainServer serves a real bidder, with an in-memory ledger, on a
// loopback port and returns its address.
func startExplainServer(t *testing.T) string {
	t.Helper()
	led, err := ledger.New(ledger.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	compiled := compileRules(t, explainRules, "v-test")
	b := segments.NewBuilder()
	b.Add("title", "cmo", "u1")
	ecfg := engine.DefaultConfig()
	ecfg.Ledger = led
	eng, err := engine.New(ecfg, segments.NewStore(b.Build(7)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	eng.SetRules(compiled)
	cfg := bidder.DefaultConfig()
	cfg.Engine, cfg.Ledger, cfg.NoticeURL = eng, led, "http://127.0.0.1:1"
	srv, err := bidder.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gs := srv.GRPCServer()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	return l.Addr().String()
}

func TestExplain(t *testing.T) {
	addr := startExplainServer(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cmo := write("cmo.json", `{"id": "r1", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}], "site": {"domain": "linkedin.com"}, "user": {"buyeruid": "u1"}}`)
	nobody := write("nobody.json", `{"id": "r2", "imp": [{"id": "1", "banner": {"w": 160, "h": 600}}], "site": {"domain": "example.com"}, "user": {"id": "stranger"}}`)

	var out, errb bytes.Buffer
	e := env{getenv: func(string) string { return "" }, stdin: strings.NewReader(""), stdout: &out, stderr: &errb}
	if err := run(context.Background(), []string{"--addr", addr, "explain", cmo}, e); err != nil {
		t.Fatalf("explain: %v\n%s", err, errb.String())
	}
	for _, want := range []string{
		"request r1: 1 bid(s) for 1 impression(s)",
		"rules v-test, segments v7, channel web",
		"persona: title:cmo",
		"imp 1: acme-cmo / cr-cmo 300x250 at 4.50 USD CPM",
		"chosen  acme-cmo  1    cr-cmo",
		"stages: chosen 1, size 1",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	// The bid was released: acme-cmo, capped at one impression per user,
	// bids for u1 again; kept (--keep), it counts, and the next time the
	// cap stops it.
	for i, want := range []string{"chosen  acme-cmo", "chosen  acme-cmo", "frequency  acme-cmo"} {
		args := []string{"--addr", addr, "explain", "--all", cmo}
		if i == 1 {
			args = []string{"--addr", addr, "explain", "--all", "--keep", cmo}
		}
		out.Reset()
		if err := run(context.Background(), args, e); err != nil {
			t.Fatalf("explain %v: %v", args, err)
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("explain %v: output lacks %q:\n%s", args, want, out.String())
		}
	}

	out.Reset()
	if err := run(context.Background(), []string{"--addr", addr, "explain", "--all", nobody}, e); err != nil {
		t.Fatalf("explain: %v", err)
	}
	for _, want := range []string{"no bid (nbr 0", "targeting  acme-cmo", "size       zeta-wide"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	// An exchange's request with fields personad does not read is
	// explained, with a note.
	out.Reset()
	errb.Reset()
	mimes := write("mimes.json", `{"id": "r3", "imp": [{"id": "1", "banner": {"w": 300, "h": 250, "mimes": ["image/png"]}, "secure": 1}], "site": {"domain": "linkedin.com"}, "user": {"buyeruid": "u9"}}`)
	if err := run(context.Background(), []string{"--addr", addr, "explain", mimes}, e); err != nil {
		t.Fatalf("explain of a request with unread fields: %v", err)
	}
	if !strings.Contains(out.String(), "request r3:") || !strings.Contains(errb.String(), "has fields personad does not read") || !strings.Contains(errb.String(), "mimes") {
		t.Errorf("request with unread fields: stdout %q, stderr %q; want the explanation and a note naming mimes", out.String(), errb.String())
	}

	err := run(context.Background(), []string{"--addr", addr, "explain", write("bad.json", `{"id": 5}`)}, e)
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "is not an OpenRTB bid request") {
		t.Errorf("bad request file: %v (exit %d)", err, exitCode(err))
	}
	if err := run(context.Background(), []string{"explain"}, e); exitCode(err) != 2 {
		t.Errorf("no file: %v, exit %d; want usage error", err, exitCode(err))
	}
	if err := run(context.Background(), []string{"frobnicate"}, e); exitCode(err) != 2 {
		t.Errorf("unknown command: %v, exit %d; want usage error", err, exitCode(err))
	}
}

// TestExplainUnknownCampaign: --campaign with an id the rules do not have
// (a typo) fails, exit 1, naming the id and the rules' version; it had
// printed no table and no note, and exited 0.
func TestExplainUnknownCampaign(t *testing.T) {
	addr := startExplainServer(t)
	p := filepath.Join(t.TempDir(), "cmo.json")
	if err := os.WriteFile(p, []byte(`{"id": "r1", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}], "user": {"buyeruid": "u1"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	e := env{getenv: func(string) string { return "" }, stdin: strings.NewReader(""), stdout: &out, stderr: &errb}
	err := run(context.Background(), []string{"--addr", addr, "explain", "--campaign", "acme-cmoo", p}, e)
	if want := `explain: no campaign "acme-cmoo" in rules v-test`; err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), want) {
		t.Errorf("unknown campaign: %v (exit %d), want exit 1 and %q", err, exitCode(err), want)
	}
	out.Reset()
	if err := run(context.Background(), []string{"--addr", addr, "explain", "--campaign", "zeta-wide", p}, e); err != nil {
		t.Errorf("known campaign: %v", err)
	}
	if !strings.Contains(out.String(), "size   zeta-wide") {
		t.Errorf("known campaign: output lacks its row:\n%s", out.String())
	}
}

// failingNotices answers the loss of bid "1" with an error and records
// every loss it is sent.
type failingNotices struct {
	personadpb.NoticesClient
	tokens []string
}

func (f *failingNotices) Loss(_ context.Context, req *personadpb.LossRequest, _ ...grpc.CallOption) (*personadpb.LossResponse, error) {
	f.tokens = append(f.tokens, req.Token)
	if req.Token == "t1" {
		return nil, status.Error(codes.Unavailable, "not durable")
	}
	return &personadpb.LossResponse{}, nil
}

// TestReleaseBidsGoesOn: a bid that cannot be released does not keep the
// bids after it holding budget: each gets its loss notice, and every
// failure is reported.
func TestReleaseBidsGoesOn(t *testing.T) {
	resp := &personadpb.BidResponse{Seatbid: []*personadpb.SeatBid{{Bid: []*personadpb.Bid{
		{Id: "1", Cid: "a", Lurl: "http://x/notice/loss?t=t1"},
		{Id: "2", Cid: "b", Lurl: "http://x/notice/loss"},
		{Id: "3", Cid: "c", Lurl: "http://x/notice/loss?t=t3"},
	}}}}
	f := &failingNotices{}
	err := releaseBids(t.Context(), f, resp)
	if want := []string{"t1", "t3"}; !slices.Equal(f.tokens, want) {
		t.Errorf("losses sent for %q, want %q", f.tokens, want)
	}
	if err == nil || !strings.Contains(err.Error(), "bid 1 (campaign a)") || !strings.Contains(err.Error(), "bid 2 (campaign b) was not released") {
		t.Errorf("error %v, want both failures named", err)
	}
}
