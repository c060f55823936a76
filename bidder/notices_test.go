package bidder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/personad/personad/engine"
	"github.com/personad/personad/ledger"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

// moneyRules: two budgeted campaigns on different sizes, so a two-imp
// request gets two bids, and one unbudgeted campaign.
const moneyRules = `
campaigns:
  - id: acme
    advertiser: acme
    adomain: [acme.com]
    bid_cpm: 4.50
    pacing: asap
    budget: {daily: 100, total: 1000}
    creatives:
      - {id: cr-acme, w: 300, h: 250, adm: "<div>${AUCTION_PRICE}</div>"}
  - id: beta
    advertiser: beta
    adomain: [beta.io]
    bid_cpm: 2.0
    pacing: asap
    budget: {daily: 50}
    creatives:
      - {id: cr-beta, w: 728, h: 90, adm: "<div>beta</div>"}
`

const noticeKey = "bidder test notice key, 32 bytes"

// moneyHarness is a Server with a ledger, on bufconn and a real HTTP
// listener (the notice URLs must name it).
type moneyHarness struct {
	srv     *Server
	led     *ledger.Ledger
	conn    *grpc.ClientConn
	bidder  personadpb.BidderClient
	notices personadpb.NoticesClient
	reports personadpb.ReportsClient
	http    *httptest.Server
	close   func()
}

func newLedger(t *testing.T, dir string) *ledger.Ledger {
	t.Helper()
	cfg := ledger.DefaultConfig()
	cfg.Dir = dir
	cfg.NoticeKey = []byte(noticeKey)
	cfg.SyncInterval = time.Millisecond
	l, err := ledger.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// newMoneyHarness serves doc with ledger l. Its close (also a cleanup)
// stops the transports but leaves l open.
func newMoneyHarness(t *testing.T, doc string, l *ledger.Ledger) *moneyHarness {
	t.Helper()
	eng, err := engine.New(engine.Config{Ledger: l}, testSegments())
	if err != nil {
		t.Fatal(err)
	}
	if _, refused := eng.SetRules(compileRules(t, doc)); refused != 0 {
		t.Fatalf("%d campaigns refused", refused)
	}
	// A durable ledger spends only within leases: take them now rather
	// than lose the first bids to the background lease.
	for _, c := range eng.Rules().Campaigns() {
		if err := l.Lease(context.Background(), l.Lookup(c.ID), time.Now().UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	hs := httptest.NewUnstartedServer(nil)
	cfg := DefaultConfig()
	cfg.Engine = eng
	cfg.Logger = zaptest.NewLogger(t)
	cfg.Ledger = l
	cfg.NoticeURL = "http://" + hs.Listener.Addr().String() + "/"
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs.Config.Handler = s.Handler()
	hs.Start()
	conn, stop := serveBufconn(t, s.GRPCServer(), 1<<20)
	var once sync.Once
	h := &moneyHarness{
		srv: s, led: l, http: hs, conn: conn,
		bidder:  personadpb.NewBidderClient(conn),
		notices: personadpb.NewNoticesClient(conn),
		reports: personadpb.NewReportsClient(conn),
	}
	h.close = func() {
		once.Do(func() {
			hs.Close()
			stop()
			eng.Close()
		})
	}
	t.Cleanup(h.close)
	return h
}

// moneyRequest asks for both campaigns' sizes.
func moneyRequest(id string) *personadpb.BidRequest {
	return &personadpb.BidRequest{
		Id: id,
		Imp: []*personadpb.Imp{
			{Id: "1", Banner: &personadpb.Banner{W: 300, H: 250}},
			{Id: "2", Banner: &personadpb.Banner{W: 728, H: 90}},
		},
		Site: &personadpb.Site{Domain: "news.example"},
		User: &personadpb.User{Id: "ex-" + id},
		Tmax: 500,
	}
}

func (h *moneyHarness) bid(t *testing.T, id string) []*personadpb.Bid {
	t.Helper()
	resp, err := h.bidder.Bid(context.Background(), moneyRequest(id))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Seatbid) != 1 {
		t.Fatalf("request %s: no bid (nbr %d)", id, resp.Nbr)
	}
	return resp.Seatbid[0].Bid
}

// token returns the t parameter of a notice URL.
func token(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return p.Query().Get("t")
}

func TestBidNoticeURLs(t *testing.T) {
	l := newLedger(t, "")
	defer l.Close()
	h := newMoneyHarness(t, moneyRules, l)
	bids := h.bid(t, "req-urls")
	if len(bids) != 2 {
		t.Fatalf("%d bids, want 2", len(bids))
	}
	base := h.http.URL
	for _, b := range bids {
		if len(b.Id) != 16 || strings.Trim(b.Id, "0123456789abcdef") != "" {
			t.Errorf("bid id %q, want 16 hex digits", b.Id)
		}
		tok := token(t, b.Nurl)
		bid, price, err := l.Signer().Verify(tok)
		if err != nil {
			t.Fatalf("nurl token: %v", err)
		}
		if got := formatBidID(bid); got != b.Id {
			t.Errorf("token names bid %s, response says %s", got, b.Id)
		}
		if want := engine.ImpressionMicros(int64(b.Price * 1e6)); price != want {
			t.Errorf("bid %s: token price %d micros, want %d (CPM %v / 1000)", b.Id, price, want, b.Price)
		}
		want := []string{
			base + "/notice/win?t=" + tok + "&price=${AUCTION_PRICE}",
			base + "/notice/bill?t=" + tok + "&price=${AUCTION_PRICE}",
			base + "/notice/loss?t=" + tok + "&reason=${AUCTION_LOSS}",
		}
		if diff := cmp.Diff(want, []string{b.Nurl, b.Burl, b.Lurl}); diff != "" {
			t.Errorf("bid %s notice URLs (-want +got):\n%s", b.Id, diff)
		}
	}
	if bids[0].Price != 4.5 || bids[1].Price != 2 {
		t.Errorf("prices %v, %v: want the CPM bids 4.5 and 2", bids[0].Price, bids[1].Price)
	}
	if bids[0].Id == bids[1].Id {
		t.Error("two bids share an id")
	}
	if got := l.Pending(); got != 2 {
		t.Errorf("ledger holds %d reservations, want 2", got)
	}
}

// wireNotice sends a notice over w and returns the gRPC code (gRPC) or
// the HTTP status and the answer's field (HTTP), and the error message.
func (h *moneyHarness) wireNotice(t *testing.T, w wire, kind noticeKind, tok, price string) (_ codes.Code, httpCode int, field, msg string) {
	t.Helper()
	ctx := context.Background()
	if w == wireGRPC {
		var err error
		switch kind {
		case kindWin:
			_, err = h.notices.Win(ctx, &personadpb.WinRequest{Token: tok, Price: price})
		case kindBill:
			_, err = h.notices.Bill(ctx, &personadpb.BillRequest{Token: tok, Price: price})
		case kindLoss:
			_, err = h.notices.Loss(ctx, &personadpb.LossRequest{Token: tok, Reason: price})
		}
		st := status.Convert(err)
		return st.Code(), 0, "", st.Message()
	}
	param := "price"
	if kind == kindLoss {
		param = "reason"
	}
	u := h.http.URL + "/notice/" + kindNames[kind] + "?t=" + url.QueryEscape(tok)
	if price != "" {
		u += "&" + param + "=" + url.QueryEscape(price)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var a noticeAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("GET %s: %d %q: not JSON: %v", u, resp.StatusCode, body, err)
	}
	return codes.Unknown, resp.StatusCode, a.Field, a.Error
}

func TestNoticeErrors(t *testing.T) {
	l := newLedger(t, "")
	defer l.Close()
	h := newMoneyHarness(t, moneyRules, l)
	bids := h.bid(t, "req-err")
	acme := token(t, bids[0].Burl) // 4.50 CPM: 4500 micros per impression
	// An earlier bill at 3.00 makes a bill at another price a conflict.
	if _, err := h.notices.Bill(context.Background(), &personadpb.BillRequest{Token: token(t, bids[1].Burl), Price: "1.5"}); err != nil {
		t.Fatal(err)
	}
	billed := token(t, bids[1].Burl)
	forged := []byte(acme)
	forged[len(forged)-2] ^= 1 // still base64, wrong MAC
	otherKey, _ := ledger.NewSigner([]byte("another key entirely, 32 bytes!!"))

	for _, tc := range []struct {
		name     string
		kind     noticeKind
		tok      string
		price    string
		code     codes.Code
		http     int
		outcome  noticeOutcome
		contains string
		field    string // the HTTP answer's
	}{
		{"forged MAC", kindBill, string(forged), "1", codes.InvalidArgument, 400, noticeForged, "bad notice token", "token"},
		{"other key", kindWin, otherKey.Sign(1234, 4500), "", codes.InvalidArgument, 400, noticeForged, "bad notice token", "token"},
		{"garbage token", kindLoss, "not-a-token", "", codes.InvalidArgument, 400, noticeForged, "bad notice token", "token"},
		{"no token", kindBill, "", "1", codes.InvalidArgument, 400, noticeInvalid, "token: required", "token"},
		{"unknown bid", kindBill, l.Signer().Sign(0xfeed, 4500), "1", codes.NotFound, 404, noticeUnknownBid, "000000000000feed: ledger: unknown bid", ""},
		{"negative price", kindBill, acme, "-1", codes.InvalidArgument, 400, noticeBadPrice, `"-1" is negative`, "price"},
		{"unsubstituted macro", kindBill, acme, "${AUCTION_PRICE}", codes.InvalidArgument, 400, noticeBadPrice, "${AUCTION_PRICE} was not substituted: a bill needs the clearing price", "price"},
		{"non-numeric", kindBill, acme, "abc", codes.InvalidArgument, 400, noticeBadPrice, "not a decimal number", "price"},
		{"exponent", kindBill, acme, "1e3", codes.InvalidArgument, 400, noticeBadPrice, "not a decimal number", "price"},
		{"NaN", kindWin, acme, "NaN", codes.InvalidArgument, 400, noticeBadPrice, "not a decimal number", "price"},
		{"missing bill price", kindBill, acme, "", codes.InvalidArgument, 400, noticeBadPrice, "price: required", "price"},
		{"above the bid", kindBill, acme, "4.51", codes.InvalidArgument, 400, noticeBadPrice, "price: 4.51 CPM (4510 micros per impression) is above the bid (4500)", "price"},
		{"win above the bid", kindWin, acme, "9", codes.InvalidArgument, 400, noticeBadPrice, "is above the bid", "price"},
		{"huge", kindBill, acme, "99999999999999999999", codes.InvalidArgument, 400, noticeBadPrice, "above any bid", "price"},
		{"bad loss reason", kindLoss, acme, "outbid", codes.InvalidArgument, 400, noticeInvalid, "not an OpenRTB loss reason", "reason"},
		{"loss reason macro in another form", kindLoss, acme, "${AUCTION_LOSS:B64}", codes.InvalidArgument, 400, noticeInvalid, "not an OpenRTB loss reason", "reason"},
		{"conflicting bill", kindBill, billed, "1.2", codes.FailedPrecondition, 409, noticeConflict, "conflicts with an earlier one", ""},
	} {
		for _, w := range []wire{wireGRPC, wireHTTP} {
			t.Run(tc.name+"/"+wireNames[w], func(t *testing.T) {
				before, stats := l.Report(time.Now()), l.Stats()
				counter := h.srv.metrics.notices[w][tc.kind][tc.outcome]
				n := testutil.ToFloat64(counter)
				code, httpCode, field, msg := h.wireNotice(t, w, tc.kind, tc.tok, tc.price)
				if w == wireGRPC && code != tc.code {
					t.Errorf("code %v (%s), want %v", code, msg, tc.code)
				}
				if w == wireHTTP && httpCode != tc.http {
					t.Errorf("HTTP %d (%s), want %d", httpCode, msg, tc.http)
				}
				if w == wireHTTP && field != tc.field {
					t.Errorf("HTTP answer's field %q (%s), want %q", field, msg, tc.field)
				}
				if !strings.Contains(msg, tc.contains) {
					t.Errorf("message %q, want it to say %q", msg, tc.contains)
				}
				// Both wires' messages name the field, as its path.
				if tc.field != "" && !strings.Contains(msg, tc.field+": ") {
					t.Errorf("message %q does not name the field %s:", msg, tc.field)
				}
				if diff := cmp.Diff(before, l.Report(time.Now())); diff != "" {
					t.Errorf("ledger changed (-before +after):\n%s", diff)
				}
				after := l.Stats()
				if after.Bills != stats.Bills || after.Wins != stats.Wins || after.Losses != stats.Losses {
					t.Errorf("ledger counted a notice: %+v -> %+v", stats, after)
				}
				if got := testutil.ToFloat64(counter) - n; got != 1 {
					t.Errorf("personad_notices_total{wire=%s,kind=%s,outcome=%s} grew by %v, want 1",
						wireNames[w], kindNames[tc.kind], noticeOutcomeNames[tc.outcome], got)
				}
			})
		}
	}
}

// TestNoticeMethods: a notice path answers a method other than GET (HEAD,
// a prefetch, included) as its other refusals: 405 + Allow: GET and a
// JSON error, counted as an invalid notice of its kind, nothing settled.
func TestNoticeMethods(t *testing.T) {
	l := newLedger(t, "")
	defer l.Close()
	h := newMoneyHarness(t, moneyRules, l)
	bids := h.bid(t, "req-methods")
	before := l.Report(time.Now())
	for _, kind := range []noticeKind{kindWin, kindBill, kindLoss} {
		for _, m := range []string{http.MethodPost, http.MethodHead, http.MethodPut, http.MethodDelete} {
			counter := h.srv.metrics.notices[wireHTTP][kind][noticeInvalid]
			n := testutil.ToFloat64(counter)
			resp, b := doMethod(t, m, h.http.URL+"/notice/"+kindNames[kind]+"?t="+url.QueryEscape(token(t, bids[0].Burl))+"&price=1")
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%s %s: status %d, Allow %q, Content-Type %q; want 405, GET, application/json",
					m, kindNames[kind], resp.StatusCode, resp.Header.Get("Allow"), resp.Header.Get("Content-Type"))
			}
			var e noticeAnswer
			if m != http.MethodHead && (json.Unmarshal(b, &e) != nil || e.Error != "bidder: method "+m+": want GET") {
				t.Errorf("%s %s: body %q, want the JSON error naming the method", m, kindNames[kind], b)
			}
			if got := testutil.ToFloat64(counter) - n; got != 1 {
				t.Errorf("%s %s: personad_notices_total{wire=http,kind=%s,outcome=invalid} grew by %v, want 1", m, kindNames[kind], kindNames[kind], got)
			}
		}
	}
	if diff := cmp.Diff(before, l.Report(time.Now())); diff != "" {
		t.Errorf("ledger changed (-before +after):\n%s", diff)
	}
}

// TestUnsubstitutedMacros: an exchange that calls a nurl or lurl without
// substituting ${AUCTION_PRICE} or ${AUCTION_LOSS} sends the macro
// itself. The win and the loss are still taken (the price and the reason
// are optional on them): a won bid that is never billed then counts at
// its bid price when its reservation expires, and a lost one is released
// at once. A bill without its price is refused (TestNoticeErrors).
func TestUnsubstitutedMacros(t *testing.T) {
	l := newLedger(t, "")
	defer l.Close()
	h := newMoneyHarness(t, moneyRules, l)
	for _, w := range []wire{wireGRPC, wireHTTP} {
		t.Run(wireNames[w], func(t *testing.T) {
			bids := h.bid(t, "req-macros-"+wireNames[w])
			if len(bids) != 2 {
				t.Fatalf("%d bids, want 2", len(bids))
			}
			stats, before := l.Stats(), reservedByCampaign(l)
			// The URLs as the bid response gave them, macros and all.
			_, code, _, msg := h.wireNotice(t, w, kindWin, token(t, bids[0].Nurl), query(t, bids[0].Nurl, "price"))
			if msg != "" || (w == wireHTTP && code != http.StatusOK) {
				t.Errorf("win with ${AUCTION_PRICE} unsubstituted: HTTP %d %q, want it taken", code, msg)
			}
			_, code, _, msg = h.wireNotice(t, w, kindLoss, token(t, bids[1].Lurl), query(t, bids[1].Lurl, "reason"))
			if msg != "" || (w == wireHTTP && code != http.StatusOK) {
				t.Errorf("loss with ${AUCTION_LOSS} unsubstituted: HTTP %d %q, want it taken", code, msg)
			}
			if got := l.Stats(); got.Wins != stats.Wins+1 || got.Losses != stats.Losses+1 {
				t.Errorf("ledger counted %d wins and %d losses, want 1 and 1", got.Wins-stats.Wins, got.Losses-stats.Losses)
			}
			after := reservedByCampaign(l)
			if won := bids[0].Cid; after[won] != before[won] {
				t.Errorf("won bid's campaign %s reserves %d micros, was %d: its reservation must stand until its bill or expiry", won, after[won], before[won])
			}
			if lost := bids[1].Cid; after[lost] != 0 {
				t.Errorf("lost bid's campaign %s still reserves %d micros (was %d), want 0", lost, after[lost], before[lost])
			}
		})
	}
}

// TestLossReasonBidWon: an lurl called with loss reason 0, "Bid Won", is
// the exchange saying the bid won: it counts as a win (the reservation
// stands, and counts at the bid price if no bill comes), not as a loss
// (which would release it and count nothing).
func TestLossReasonBidWon(t *testing.T) {
	l := newLedger(t, "")
	defer l.Close()
	h := newMoneyHarness(t, moneyRules, l)
	for _, w := range []wire{wireGRPC, wireHTTP} {
		t.Run(wireNames[w], func(t *testing.T) {
			bids := h.bid(t, "req-won-"+wireNames[w])
			if len(bids) == 0 {
				t.Fatal("no bid")
			}
			b := bids[0]
			stats, before := l.Stats(), reservedByCampaign(l)
			_, code, _, msg := h.wireNotice(t, w, kindLoss, token(t, b.Lurl), "0")
			if msg != "" || (w == wireHTTP && code != http.StatusOK) {
				t.Fatalf("loss reason 0: HTTP %d %q, want it taken", code, msg)
			}
			if got := l.Stats(); got.Wins != stats.Wins+1 || got.Losses != stats.Losses {
				t.Errorf("ledger counted %d wins and %d losses, want 1 and 0", got.Wins-stats.Wins, got.Losses-stats.Losses)
			}
			if after := reservedByCampaign(l); after[b.Cid] != before[b.Cid] {
				t.Errorf("campaign %s reserves %d micros, was %d: a won bid's reservation stands until its bill or expiry", b.Cid, after[b.Cid], before[b.Cid])
			}
			// The notice is counted as what was done, a win, as the
			// ledger's events count it.
			metrics := h.metricsText(t)
			for _, want := range []string{
				fmt.Sprintf(`personad_notices_total{kind="win",outcome="ok",wire=%q} 1`, wireNames[w]),
				fmt.Sprintf(`personad_notices_total{kind="loss",outcome="ok",wire=%q} 0`, wireNames[w]),
			} {
				if !strings.Contains(metrics, want+"\n") {
					t.Errorf("/metrics lacks %s", want)
				}
			}
		})
	}
	// A loss notice refused before its reason is read counts as a loss.
	_, _, _, msg := h.wireNotice(t, wireHTTP, kindLoss, "forged", "0")
	if msg == "" {
		t.Fatal("a forged token was taken")
	}
	if want := `personad_notices_total{kind="loss",outcome="forged",wire="http"} 1`; !strings.Contains(h.metricsText(t), want+"\n") {
		t.Errorf("/metrics lacks %s", want)
	}
}

// metricsText is the server's /metrics page.
func (h *moneyHarness) metricsText(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(h.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	return string(body)
}

// reservedByCampaign is each campaign's outstanding reservations.
func reservedByCampaign(l *ledger.Ledger) map[string]int64 {
	m := map[string]int64{}
	for _, c := range l.Report(time.Now()) {
		m[c.ID] = c.ReservedMicros
	}
	return m
}

// query returns the raw value of parameter name in notice URL u, as an
// exchange that substitutes nothing sends it.
func query(t *testing.T, u, name string) string {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return pu.Query().Get(name)
}

// fate is what the exchange says about one bid in the replay test.
type fate struct {
	win, loss bool
	bill      string // clearing CPM, "" for none
}

// TestNoticeReplay sends every notice of many bids 1 to 5 times, shuffled
// (losses before wins, bills before wins, late bills after losses), over
// both wires at once, with the ledger restarted halfway; each bid must
// count exactly once.
func TestNoticeReplay(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 5))
	dir := t.TempDir()
	l := newLedger(t, dir)
	h := newMoneyHarness(t, moneyRules, l)

	type bidInfo struct {
		cid   string
		tok   string
		price int64 // per impression
		fate  fate
	}
	var all []bidInfo
	for i := range 60 {
		for _, b := range h.bid(t, fmt.Sprintf("replay-%d", i)) {
			bi := bidInfo{cid: b.Cid, tok: token(t, b.Burl), price: engine.ImpressionMicros(int64(b.Price * 1e6))}
			switch i % 6 {
			case 0: // won and billed
				bi.fate = fate{win: true, bill: fmt.Sprintf("%.3f", b.Price*r.Float64())}
			case 1: // lost
				bi.fate = fate{loss: true}
			case 2: // won, never billed: stays reserved until expiry
				bi.fate = fate{win: true}
			case 3: // contradictory exchange: loss, then a bill (the bill wins)
				bi.fate = fate{loss: true, bill: fmt.Sprintf("%.2f", b.Price)}
			case 4: // billed without a win notice
				bi.fate = fate{bill: "0.5"}
			case 5: // no notice at all
			}
			all = append(all, bi)
		}
	}
	type send struct {
		kind  noticeKind
		tok   string
		price string
	}
	var sends []send
	for _, b := range all {
		var mine []send
		add := func(k noticeKind, price string) {
			for range 1 + r.IntN(5) {
				mine = append(mine, send{k, b.tok, price})
			}
		}
		if b.fate.win {
			add(kindWin, b.fate.bill)
		}
		if b.fate.loss {
			add(kindLoss, "102")
		}
		if b.fate.bill != "" {
			add(kindBill, b.fate.bill)
		}
		r.Shuffle(len(mine), func(i, j int) { mine[i], mine[j] = mine[j], mine[i] })
		sends = append(sends, mine...)
	}
	r.Shuffle(len(sends), func(i, j int) { sends[i], sends[j] = sends[j], sends[i] })

	// Expected money per campaign: a bill's price if billed, nothing if
	// lost, else the reserved bid price.
	want := map[string][3]int64{} // settled, reserved, bills
	wantBills := int64(0)
	for _, b := range all {
		e := want[b.cid]
		switch {
		case b.fate.bill != "":
			cpm, err := parseCPM(b.fate.bill)
			if err != nil {
				t.Fatal(err)
			}
			e[0] += engine.ImpressionMicros(cpm)
			wantBills++
		case b.fate.loss:
		default:
			e[1] += b.price
		}
		want[b.cid] = e
	}

	deliver := func(h *moneyHarness, part []send) {
		var wg sync.WaitGroup
		ch := make(chan send)
		for g := range 4 {
			wg.Go(func() {
				for s := range ch {
					w := wire(g % 2)
					code, httpCode, _, msg := h.wireNotice(t, w, s.kind, s.tok, s.price)
					if (w == wireGRPC && code != codes.OK) || (w == wireHTTP && httpCode != 200) {
						t.Errorf("%s notice over %s: %v %d %s", kindNames[s.kind], wireNames[w], code, httpCode, msg)
					}
				}
			})
		}
		for _, s := range part {
			ch <- s
		}
		close(ch)
		wg.Wait()
	}
	half := len(sends) / 2
	deliver(h, sends[:half])

	// Restart: stop serving, close the ledger (flushes), reopen it from
	// its directory with the same key, serve again, deliver the rest.
	h.close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = newLedger(t, dir)
	defer l.Close()
	h = newMoneyHarness(t, moneyRules, l)
	deliver(h, sends[half:])
	// And everything once more, for good measure: all replays.
	deliver(h, sends)

	got := map[string][3]int64{}
	for _, rep := range l.Report(time.Now()) {
		got[rep.ID] = [3]int64{rep.SettledTotalMicros, rep.ReservedMicros, 0}
		if rep.TotalSpentMicros != rep.SettledTotalMicros+rep.ReservedMicros {
			t.Errorf("%s: spent %d != settled %d + reserved %d", rep.ID, rep.TotalSpentMicros, rep.SettledTotalMicros, rep.ReservedMicros)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("per campaign [settled, reserved] (-want +got):\n%s", diff)
	}
	if st := l.Stats(); st.Bills != wantBills {
		t.Errorf("ledger counted %d bills, want %d (one per billed bid)", st.Bills, wantBills)
	}
	t.Logf("%d bids, %d notices delivered (with replays) across a restart; stats %+v", len(all), len(sends)*2, l.Stats())
}

// TestBidWinBillReport is the money path end to end: bid over gRPC, the
// exchange calls nurl and burl over HTTP with the clearing price
// substituted, and Reports shows the spend.
func TestBidWinBillReport(t *testing.T) {
	l := newLedger(t, t.TempDir())
	defer l.Close()
	h := newMoneyHarness(t, moneyRules, l)
	bids := h.bid(t, "req-e2e")
	get := func(u string) {
		t.Helper()
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", u, resp.StatusCode, body)
		}
	}
	// acme wins at 3.20 CPM; beta loses.
	get(strings.ReplaceAll(bids[0].Nurl, "${AUCTION_PRICE}", "3.20"))
	get(strings.ReplaceAll(bids[0].Burl, "${AUCTION_PRICE}", "3.20"))
	get(strings.ReplaceAll(bids[1].Lurl, "${AUCTION_LOSS}", "102"))

	rep, err := h.reports.Campaigns(context.Background(), &personadpb.ReportsCampaignsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Cid                                 string
		Today, Settled, Reserved, Total     int64
		Daily, TotalBudget, Left, LeftTotal int64
		Pacing, Currency, Advertiser        string
		InRules                             bool
	}
	var got []row
	for _, c := range rep.Campaigns {
		got = append(got, row{c.Cid, c.SpentTodayMicros, c.SettledTodayMicros, c.ReservedMicros, c.SpentTotalMicros,
			c.DailyBudgetMicros, c.TotalBudgetMicros, c.RemainingTodayMicros, c.RemainingTotalMicros,
			c.Pacing, c.Currency, c.Advertiser, c.InRules})
	}
	want := []row{
		{"acme", 3200, 3200, 0, 3200, 100e6, 1000e6, 100e6 - 3200, 1000e6 - 3200, "asap", "USD", "acme", true},
		{"beta", 0, 0, 0, 0, 50e6, 0, 50e6, -1, "asap", "USD", "beta", true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	if rep.TimeZone != "UTC" {
		t.Errorf("time zone %q, want UTC", rep.TimeZone)
	}
	one, err := h.reports.Campaigns(context.Background(), &personadpb.ReportsCampaignsRequest{Campaign: "beta"})
	if err != nil || len(one.Campaigns) != 1 || one.Campaigns[0].Cid != "beta" {
		t.Errorf("report for beta: %v, %v", one, err)
	}
	// The ledger's events are on /metrics.
	resp, err := http.Get(h.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`personad_ledger_events_total{event="bill"} 1`,
		"personad_ledger_unknown_billed_micros_total 0",
		`personad_notices_total{kind="bill",outcome="ok",wire="http"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestParseCPM: a clearing price is read exactly from its digits, to six
// decimals, a seventh digit of 5 or more rounding up (a float read had
// rounded some halves down: 0.1286135 was 128613).
func TestParseCPM(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"3.25", 3_250_000, true}, {"4.5", 4_500_000, true}, {".5", 500_000, true},
		{"7.", 7_000_000, true}, {"0.0000004", 0, true}, {"0.0000005", 1, true},
		{"0.1286135", 128_614, true}, {"0.0009975", 998, true}, {"1.0000001", 1_000_000, true},
		{"1.0000005", 1_000_001, true}, {"4.49999949999", 4_499_999, true}, {"007.25", 7_250_000, true},
		{"1000000000", 1e15, true}, {"1000000000.0000001", 1e15, true}, {"1000000000.000001", 0, false},
		{"99999999999", 0, false}, {"00000000000000000001", 1_000_000, true},
		{"", 0, false}, {"-0", 0, false}, {"+1", 0, false}, {"1,5", 0, false}, {".", 0, false},
		{"1.2.3", 0, false}, {"Inf", 0, false}, {"0x10", 0, false}, {" 1", 0, false},
	} {
		got, err := parseCPM(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseCPM(%q) = %d, %v; want %d, ok %t", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestNoticeURLConfig(t *testing.T) {
	l := newLedger(t, "")
	defer l.Close()
	eng, err := engine.New(engine.Config{Ledger: l}, testSegments())
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	for _, u := range []string{"", "ftp://x", "http://", "http://x/?a=1", "x.example:80"} {
		cfg := DefaultConfig()
		cfg.Engine, cfg.Ledger, cfg.NoticeURL = eng, l, u
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "NoticeURL") {
			t.Errorf("NoticeURL %q: %v, want an error naming NoticeURL", u, err)
		}
	}
	if got := formatBidID(0xabc); got != "0000000000000abc" {
		t.Errorf("formatBidID = %q", got)
	}
	if _, err := strconv.ParseUint(formatBidID(^uint64(0)), 16, 64); err != nil {
		t.Error(err)
	}
}

// A bid's three notice URLs cost one allocation (one string, three
// substrings), and stay correct when a long base URL outgrows the stack
// buffer they are built in.
func TestNoticeURLsAllocs(t *testing.T) {
	signer, err := ledger.NewSigner([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	for _, base := range []string{"http://127.0.0.1:8080", "https://" + strings.Repeat("n", 400) + ".example"} {
		n := newNoticeURLs(signer, base)
		nurl, burl, lurl := n.urls(42, 7_500_000)
		tok := signer.Sign(42, engine.ImpressionMicros(7_500_000))
		want := []string{
			base + "/notice/win?t=" + tok + "&price=${AUCTION_PRICE}",
			base + "/notice/bill?t=" + tok + "&price=${AUCTION_PRICE}",
			base + "/notice/loss?t=" + tok + "&reason=${AUCTION_LOSS}",
		}
		if diff := cmp.Diff(want, []string{nurl, burl, lurl}); diff != "" {
			t.Errorf("base %.30q: (-want +got):\n%s", base, diff)
		}
		if testing.CoverMode() != "" || raceEnabled {
			continue
		}
		want1 := 1.0
		if len(base) > 100 {
			want1 = 2 // the buffer moves to the heap
		}
		if got := testing.AllocsPerRun(1000, func() { n.urls(42, 7_500_000) }); got > want1 {
			t.Errorf("base of %d bytes: %v allocations, want %v", len(base), got, want1)
		}
	}
}

// The money open reservations hold is on /metrics per currency: a sum of
// USD and EUR micros would mean nothing.
func TestReservedMicrosMetricPerCurrency(t *testing.T) {
	l := newLedger(t, t.TempDir())
	defer l.Close()
	ctx := context.Background()
	now := time.Now().UnixNano()
	for i, c := range []struct {
		id, cur string
		micros  int64
	}{{"us1", "USD", 2_000_000}, {"us2", "USD", 500_000}, {"eu", "EUR", 3_000_000}, {"old", "", 1_000_000}} {
		camp, err := l.Campaign(c.id, ledger.Limits{DailyMicros: 100_000_000, Currency: c.cur})
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.Reserve(camp, uint64(i+1), uint64(i+1), c.micros, now)
		if errors.Is(err, ledger.ErrNoLease) { // a lease covers a slice of the budget
			if err := l.Lease(ctx, camp, now); err != nil {
				t.Fatal(err)
			}
			_, err = l.Reserve(camp, uint64(i+1), uint64(i+1), c.micros, now)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newLedgerCollector(l, time.Now))
	got, err := testutil.GatherAndCount(reg, "personad_ledger_reserved_micros")
	if err != nil || got != 3 {
		t.Fatalf("%d series of personad_ledger_reserved_micros (%v), want 3: USD, EUR, %s", got, err, ledger.NoCurrency)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byCur := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "personad_ledger_reserved_micros" {
			continue
		}
		for _, m := range mf.GetMetric() {
			byCur[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	if diff := cmp.Diff(map[string]float64{"USD": 2_500_000, "EUR": 3_000_000, ledger.NoCurrency: 1_000_000}, byCur); diff != "" {
		t.Errorf("personad_ledger_reserved_micros by currency (-want +got):\n%s", diff)
	}
}
