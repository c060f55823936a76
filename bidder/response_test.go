package bidder

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/personad/personad/engine"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

func TestNoBidReason(t *testing.T) {
	for _, tc := range []struct {
		r    engine.Reason
		want int32
	}{
		{engine.ReasonNone, 0},
		{engine.ReasonUnmatchedUser, 8},
		{engine.ReasonNoEligible, 0},
		{engine.ReasonDeadline, 1},
		{engine.ReasonNoRules, 1},
		{engine.Reason(200), 0},
	} {
		if got := NoBidReason(tc.r); got != tc.want {
			t.Errorf("NoBidReason(%v) = %d, want %d", tc.r, got, tc.want)
		}
	}
}

func twoImpRequest() *personadpb.BidRequest {
	req := request(userCMO)
	req.Imp = append(req.Imp, &personadpb.Imp{Id: "2", Banner: &personadpb.Banner{W: 728, H: 90}})
	return req
}

func TestBuildResponseBids(t *testing.T) {
	acme := &engine.Campaign{ID: "acme-cmo", Adomain: []string{"acme.com"}, Currency: "USD", BidMicros: 4_500_000}
	acme.Creatives = []engine.Creative{{ID: "cr-acme-cmo", W: 300, H: 250, Adm: "<div>${AUCTION_PRICE}</div>", Cat: []string{"IAB19"}}}
	beta := &engine.Campaign{ID: "beta", Adomain: []string{"beta.io"}, Currency: "USD", BidMicros: 2_000_001}
	beta.Creatives = []engine.Creative{{ID: "cr-beta-728", W: 728, H: 90, Adm: "<b/>"}}
	d := &engine.Decision{Bids: []engine.Bid{
		{Imp: 0, Campaign: acme, Creative: &acme.Creatives[0], PriceMicros: 4_500_000},
		{Imp: 1, Campaign: beta, Creative: &beta.Creatives[0], PriceMicros: 2_000_001},
	}}
	got := buildResponse(twoImpRequest(), d, "personad", nil)
	want := &personadpb.BidResponse{
		Id:  "req-1",
		Cur: "USD",
		Seatbid: []*personadpb.SeatBid{{Seat: "personad", Bid: []*personadpb.Bid{
			{Id: bidID("req-1", "1"), Impid: "1", Price: 4.5, Adm: "<div>${AUCTION_PRICE}</div>", Adomain: []string{"acme.com"},
				Crid: "cr-acme-cmo", Cid: "acme-cmo", Cat: []string{"IAB19"}, W: 300, H: 250},
			{Id: bidID("req-1", "2"), Impid: "2", Price: 2.000001, Adm: "<b/>", Adomain: []string{"beta.io"},
				Crid: "cr-beta-728", Cid: "beta", W: 728, H: 90},
		}}},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
	if a, b := got.Seatbid[0].Bid[0].Id, got.Seatbid[0].Bid[1].Id; a == b || len(a) != 16 {
		t.Errorf("bid ids %q, %q: want distinct 16-digit ids", a, b)
	}
}

// TestBuildResponseCurrency: the response's currency is its bids' (the
// engine decides in one currency), USD for a campaign that names none.
func TestBuildResponseCurrency(t *testing.T) {
	eur := &engine.Campaign{ID: "eur", Currency: "EUR", Creatives: []engine.Creative{{ID: "a", W: 300, H: 250}}}
	usd := &engine.Campaign{ID: "usd", Creatives: []engine.Creative{{ID: "b", W: 728, H: 90}}}
	d := &engine.Decision{Bids: []engine.Bid{{Imp: 0, Campaign: eur, Creative: &eur.Creatives[0], PriceMicros: 1}}}
	if got := buildResponse(twoImpRequest(), d, "s", nil); got.Cur != "EUR" || len(got.Seatbid[0].Bid) != 1 {
		t.Errorf("EUR campaign: got cur %q and %d bids, want EUR and its bid", got.Cur, len(got.Seatbid[0].Bid))
	}
	d.Bids = []engine.Bid{{Imp: 1, Campaign: usd, Creative: &usd.Creatives[0], PriceMicros: 1}}
	if got := buildResponse(twoImpRequest(), d, "s", nil); got.Cur != "USD" {
		t.Errorf("campaign without currency: cur %q, want USD", got.Cur)
	}
}

func TestBuildResponseNoBid(t *testing.T) {
	d := &engine.Decision{NoBid: engine.ReasonUnmatchedUser, RulesVersion: "v1"}
	got := buildResponse(request(userChurny), d, "personad", nil)
	want := &personadpb.BidResponse{Id: "req-1", Nbr: 8}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("no-bid (-want +got):\n%s", diff)
	}
}

func TestBuildResponseDebug(t *testing.T) {
	req := request(userCMO)
	req.Ext = &personadpb.BidRequestExt{Debug: true}
	d := &engine.Decision{
		NoBid:           engine.ReasonNoEligible,
		RulesVersion:    "v1",
		SegmentsVersion: 7,
		Channel:         "web",
		Persona:         []string{"industry:fintech", "title:cmo"},
		Trace: []engine.Trace{
			{Campaign: "acme-cmo", Imp: "1", Stage: engine.StageFloor, Detail: "bid 4.50 below floor 100.00"},
			{Campaign: "beta-coord", Stage: engine.StageTargeting, Detail: "title: no value of [marketing-coordinator]"},
		},
	}
	got := buildResponse(req, d, "personad", nil)
	want := &personadpb.BidResponse{Id: "req-1", Nbr: 0, Ext: &personadpb.BidResponseExt{Debug: &personadpb.Debug{
		RulesVersion: "v1", SegmentsVersion: 7, Channel: "web",
		Persona: []string{"industry:fintech", "title:cmo"},
		Campaigns: []*personadpb.CampaignDecision{
			{Cid: "acme-cmo", Impid: "1", Stage: "floor", Detail: "bid 4.50 below floor 100.00"},
			{Cid: "beta-coord", Stage: "targeting", Detail: "title: no value of [marketing-coordinator]"},
		},
	}}}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("debug (-want +got):\n%s", diff)
	}
	// The decision is pooled scratch: the response must not share its slices.
	d.Persona[0] = "overwritten"
	if got.Ext.Debug.Persona[0] != "industry:fintech" {
		t.Error("debug persona aliases the pooled decision")
	}
}

func TestBidID(t *testing.T) {
	if bidID("ab", "c") == bidID("a", "bc") {
		t.Error(`bidID("ab","c") == bidID("a","bc")`)
	}
	if a, b := bidID("r", "1"), bidID("r", "1"); a != b {
		t.Errorf("bidID not stable: %q, %q", a, b)
	}
	seen := map[string]bool{}
	for i := range 10000 {
		id := bidID("req", string(rune(i)))
		if seen[id] {
			t.Fatalf("collision at %d", i)
		}
		seen[id] = true
	}
}
