package bidder

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/personad/personad/engine"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

// bidSummary is what the end-to-end cases assert of a response.
type bidSummary struct {
	Nbr  int32
	Bids []string // "impid cid crid price"
}

func summarize(r *personadpb.BidResponse) bidSummary {
	s := bidSummary{Nbr: r.Nbr}
	for _, sb := range r.Seatbid {
		for _, b := range sb.Bid {
			s.Bids = append(s.Bids, strings.Join([]string{b.Impid, b.Cid, b.Crid, strconv.FormatFloat(b.Price, 'f', -1, 64)}, " "))
		}
	}
	return s
}

func TestEndToEnd(t *testing.T) {
	h := newHarness(t, testRules)
	facts := func(ss ...*personadpb.Segment) *personadpb.User {
		return &personadpb.User{Data: []*personadpb.Data{{Name: "exchange", Segment: ss}}}
	}
	for _, tc := range []struct {
		name   string
		mutate func(r *personadpb.BidRequest)
		want   bidSummary
	}{
		{"CMO gets the CMO creative", func(r *personadpb.BidRequest) {},
			bidSummary{Bids: []string{`1 acme-cmo cr-acme-cmo 4.5`}}},
		{"CMO by user.id when buyeruid is unknown", func(r *personadpb.BidRequest) {
			r.User = &personadpb.User{Buyeruid: "stranger", Id: userCMO}
		}, bidSummary{Bids: []string{`1 acme-cmo cr-acme-cmo 4.5`}}},
		{"VP gets the generic variant", func(r *personadpb.BidRequest) { r.User.Buyeruid = userVP },
			bidSummary{Bids: []string{`1 acme-cmo cr-acme-generic 4.5`}}},
		{"unmatched user", func(r *personadpb.BidRequest) { r.User.Buyeruid = userChurny },
			bidSummary{Nbr: 8}},
		{"unknown user", func(r *personadpb.BidRequest) { r.User.Buyeruid = "nobody" },
			bidSummary{Nbr: 8}},
		{"no user", func(r *personadpb.BidRequest) { r.User = nil },
			bidSummary{Nbr: 8}},
		{"request-carried fact by name and value", func(r *personadpb.BidRequest) {
			r.User = facts(&personadpb.Segment{Name: "title", Value: "Marketing-Coordinator"})
		}, bidSummary{Bids: []string{`1 beta-coord cr-beta-300 2`}}},
		{"request-carried fact by id", func(r *personadpb.BidRequest) {
			r.User = facts(&personadpb.Segment{Id: "title:marketing-coordinator"})
			r.Imp[0].Banner = &personadpb.Banner{W: 728, H: 90}
		}, bidSummary{Bids: []string{`1 beta-coord cr-beta-728 2`}}},
		{"bcat blocks the CMO campaign", func(r *personadpb.BidRequest) { r.Bcat = []string{"IAB19"} },
			bidSummary{Bids: []string{`1 gamma-fintech cr-gamma 1`}}},
		{"bcat in IAB 1.0 named by cattax", func(r *personadpb.BidRequest) { r.Bcat, r.Cattax = []string{"IAB19"}, 1 },
			bidSummary{Bids: []string{`1 gamma-fintech cr-gamma 1`}}},
		{"bcat in another taxonomy blocks every creative", func(r *personadpb.BidRequest) {
			r.Bcat, r.Cattax = []string{"653"}, 7 // Content Taxonomy 3.0: its codes are not IAB 1.0's
		}, bidSummary{Nbr: 0}},
		{"another taxonomy with nothing blocked", func(r *personadpb.BidRequest) { r.Cattax = 7 },
			bidSummary{Bids: []string{`1 acme-cmo cr-acme-cmo 4.5`}}},
		{"badv blocks both", func(r *personadpb.BidRequest) { r.Badv = []string{"acme.com", "gamma.com"} },
			bidSummary{Nbr: 0}},
		{"a publisher's long badv list is honoured", func(r *personadpb.BidRequest) {
			for i := range 2999 {
				r.Badv = append(r.Badv, fmt.Sprintf("blocked-%d.example", i))
			}
			r.Badv = append(r.Badv, "acme.com")
			for i := range 499 {
				r.Bcat = append(r.Bcat, fmt.Sprintf("IAB%d-%d", 30+i/50, i%50))
			}
		}, bidSummary{Bids: []string{`1 gamma-fintech cr-gamma 1`}}},
		{"floor above every price", func(r *personadpb.BidRequest) { r.Imp[0].Bidfloor = 100 },
			bidSummary{Nbr: 0}},
		{"floor between prices", func(r *personadpb.BidRequest) {
			r.Bcat = []string{"IAB19"}
			r.Imp[0].Bidfloor = 1.5
		}, bidSummary{Nbr: 0}},
		{"no size matches", func(r *personadpb.BidRequest) { r.Imp[0].Banner = &personadpb.Banner{W: 160, H: 600} },
			bidSummary{Nbr: 0}},
		{"two imps: a campaign bids once", func(r *personadpb.BidRequest) {
			r.Imp = append(r.Imp, &personadpb.Imp{Id: "2", Banner: &personadpb.Banner{W: 300, H: 250}})
		}, bidSummary{Bids: []string{`1 acme-cmo cr-acme-cmo 4.5`, `2 gamma-fintech cr-gamma 1`}}},
		{"budget spent before the decision", func(r *personadpb.BidRequest) { r.Tmax = 9 },
			bidSummary{Nbr: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := request(userCMO)
			tc.mutate(req)
			resp, err := h.client.Bid(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, summarize(resp)); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			if resp.Id != req.Id {
				t.Errorf("id %q, want %q", resp.Id, req.Id)
			}
		})
	}
}

func TestEndToEndBidFields(t *testing.T) {
	h := newHarness(t, testRules)
	resp, err := h.client.Bid(context.Background(), request(userCMO))
	if err != nil {
		t.Fatal(err)
	}
	want := &personadpb.BidResponse{
		Id:  "req-1",
		Cur: "USD",
		Seatbid: []*personadpb.SeatBid{{Seat: "personad", Bid: []*personadpb.Bid{{
			Id: bidID("req-1", "1"), Impid: "1", Price: 4.5,
			Adm:     "<div>For CMOs ${AUCTION_PRICE}</div>",
			Adomain: []string{"acme.com"}, Crid: "cr-acme-cmo", Cid: "acme-cmo",
			Cat: []string{"IAB19"}, W: 300, H: 250,
		}}}},
	}
	if diff := cmp.Diff(want, resp, protocmp.Transform()); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
	if got := testutil.ToFloat64(h.srv.metrics.requests[wireGRPC][outcomeBid]); got != 1 {
		t.Errorf("bids counted = %v, want 1", got)
	}
}

func TestEndToEndDebug(t *testing.T) {
	h := newHarness(t, testRules)
	req := request(userCMO)
	req.Bcat = []string{"IAB19"}
	req.Ext = &personadpb.BidRequestExt{Debug: true}
	resp, err := h.client.Bid(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	dbg := resp.GetExt().GetDebug()
	if dbg == nil {
		t.Fatal("no ext.debug")
	}
	if dbg.RulesVersion != "test-v1" || dbg.SegmentsVersion != 7 || dbg.Channel != "web" {
		t.Errorf("debug header: rules %q, segments %d, channel %q; want test-v1, 7, web", dbg.RulesVersion, dbg.SegmentsVersion, dbg.Channel)
	}
	for _, p := range []string{"title:cmo", "industry:fintech"} {
		if !slices.Contains(dbg.Persona, p) {
			t.Errorf("persona %v lacks %s", dbg.Persona, p)
		}
	}
	stages := map[string]string{}
	for _, c := range dbg.Campaigns {
		if c.Stage == "chosen" {
			if c.Crid != "cr-gamma" || c.Impid != "1" {
				t.Errorf("chosen entry %v, want cr-gamma on imp 1", c)
			}
		}
		if _, seen := stages[c.Cid]; !seen {
			stages[c.Cid] = c.Stage
		}
	}
	want := map[string]string{"acme-cmo": "blocked", "beta-coord": "targeting", "gamma-fintech": "chosen"}
	if diff := cmp.Diff(want, stages); diff != "" {
		t.Errorf("first stage per campaign (-want +got):\n%s\nall: %v", diff, dbg.Campaigns)
	}

	// Without debug, no explanation.
	req.Ext = nil
	resp, err = h.client.Bid(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Ext != nil {
		t.Errorf("ext %v without debug", resp.Ext)
	}
}

func TestEndToEndHealthServing(t *testing.T) {
	h := newHarness(t, testRules)
	hc := healthpb.NewHealthClient(h.conn)
	resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "personad.v1.Bidder"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, want SERVING", resp.Status)
	}
	r, err := http.Get(h.http.URL + PathHealthz)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Errorf("/healthz %d, want 200", r.StatusCode)
	}

	h.srv.Shutdown()
	resp, err = hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health after Shutdown = %v, want NOT_SERVING", resp.Status)
	}
	r, err = http.Get(h.http.URL + PathHealthz)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/healthz after Shutdown %d, want 503", r.StatusCode)
	}
}

// TestDeadline: a caller whose own deadline has passed gets a no-bid for a
// technical error, not a late bid.
func TestDeadline(t *testing.T) {
	s := newTestServer(t, testRules)
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	req := request(userCMO)
	req.Imp = append(req.Imp, bannerImps(15)...) // enough work to reach a deadline check
	resp, err := s.Bid(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Seatbid) != 0 || resp.Nbr != NbrTechnicalError {
		t.Errorf("past deadline: got %v, want no-bid nbr 1", summarize(resp))
	}
	if got := testutil.ToFloat64(s.metrics.noBids[engine.ReasonDeadline]); got != 1 {
		t.Errorf("deadline no-bids counted = %v, want 1", got)
	}
}

// TestDebugTmaxWithinMargin: a debug request whose tmax leaves no time
// after the network margin still explains its no-bid: ext.debug names the
// rules and segment versions and the channel, and gives every campaign the
// deadline stage with the reason (it had been an empty debug object).
// The answer stays nbr 1, as without debug, and nothing is decided.
func TestDebugTmaxWithinMargin(t *testing.T) {
	s := newTestServer(t, testRules)
	req := request(userCMO)
	req.Tmax = 10 // the default network margin
	req.Ext = &personadpb.BidRequestExt{Debug: true}
	resp, err := s.Bid(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Seatbid) != 0 || resp.Nbr != NbrTechnicalError {
		t.Errorf("got %v, want no-bid nbr 1", summarize(resp))
	}
	dbg := resp.GetExt().GetDebug()
	if dbg.GetRulesVersion() != "test-v1" || dbg.GetSegmentsVersion() != 7 || dbg.GetChannel() != "web" {
		t.Errorf("debug header: rules %q, segments %d, channel %q; want test-v1, 7, web", dbg.GetRulesVersion(), dbg.GetSegmentsVersion(), dbg.GetChannel())
	}
	if !slices.Contains(dbg.GetPersona(), "title:cmo") {
		t.Errorf("persona %v lacks title:cmo", dbg.GetPersona())
	}
	var cids []string
	for _, c := range dbg.GetCampaigns() {
		cids = append(cids, c.Cid)
		if c.Stage != "deadline" || !strings.Contains(c.Detail, "tmax 10ms leaves no time after the network margin of 10ms") {
			t.Errorf("campaign %s: stage %q, detail %q; want deadline and why", c.Cid, c.Stage, c.Detail)
		}
	}
	if want := []string{"acme-cmo", "beta-coord", "gamma-fintech"}; !slices.Equal(cids, want) {
		t.Errorf("campaigns %v, want %v", cids, want)
	}
	if got := testutil.ToFloat64(s.metrics.noBids[engine.ReasonDeadline]); got != 1 {
		t.Errorf("deadline no-bids counted = %v, want 1", got)
	}

	req.Ext = nil
	if resp, err := s.Bid(context.Background(), req); err != nil || resp.Nbr != NbrTechnicalError || resp.Ext != nil {
		t.Errorf("without debug: %v, %v; want nbr 1 and no ext", resp, err)
	}
}

// TestJSONBothWires: one JSON body, as grpcurl -d sends it and as an
// exchange POSTs it, gets the same answer on both wires.
func TestJSONBothWires(t *testing.T) {
	h := newHarness(t, testRules)
	for _, body := range []string{
		// OpenRTB field names, exactly as an exchange sends them.
		`{"id":"auction-1","imp":[{"id":"1","banner":{"format":[{"w":300,"h":250},{"w":728,"h":90}]},"bidfloor":0.5,"bidfloorcur":"USD"}],
		  "site":{"domain":"news.example","ext":{"channel":"web"}},"user":{"buyeruid":"u00000001"},"tmax":120,"cur":["USD"]}`,
		`{"id":"auction-2","imp":[{"id":"a","banner":{"w":728,"h":90}}],"app":{"bundle":"com.example"},
		  "user":{"data":[{"name":"x","segment":[{"id":"title:marketing-coordinator"}]}]},"ext":{"debug":true}}`,
		`{"id":"auction-3","imp":[{"id":"1","banner":{"w":300,"h":250}}],"user":{"buyeruid":"u00000004"}}`,
	} {
		var req personadpb.BidRequest
		if err := protojson.Unmarshal([]byte(body), &req); err != nil {
			t.Fatal(err)
		}
		grpcResp, err := h.client.Bid(context.Background(), &req)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post(h.http.URL+PathBid, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		httpResp := &personadpb.BidResponse{Id: req.Id}
		switch resp.StatusCode {
		case http.StatusOK:
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if err := protojson.Unmarshal(b, httpResp); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), "rulesVersion") || strings.Contains(string(b), "segmentsVersion") {
				t.Errorf("HTTP body uses JSON camel-case names, want proto names: %s", b)
			}
		case http.StatusNoContent:
			n := resp.Header.Get(HeaderNbr)
			if n == "" {
				t.Errorf("204 without %s", HeaderNbr)
			}
			if err := protojson.Unmarshal([]byte(`{"nbr":`+n+`}`), httpResp); err != nil {
				t.Fatal(err)
			}
			httpResp.Id = req.Id
		default:
			t.Fatalf("%s: HTTP status %d: %s", req.Id, resp.StatusCode, b)
		}
		if diff := cmp.Diff(grpcResp, httpResp, protocmp.Transform()); diff != "" {
			t.Errorf("%s: gRPC vs HTTP (-grpc +http):\n%s", req.Id, diff)
		}
	}
}

// TestHTTPIgnoresUndeclaredFields sends an exchange's request, full of
// OpenRTB 2.6 fields personad does not read, and the same request with
// its declared fields only: the HTTP wire answers both alike.
func TestHTTPIgnoresUndeclaredFields(t *testing.T) {
	h := newHarness(t, testRules)
	declared := `{"id":"auction-x","imp":[{"id":"1","banner":{"format":[{"w":300,"h":250}]},"bidfloor":0.5,"bidfloorcur":"USD"}],
	  "site":{"domain":"news.example","publisher":{"id":"pub-1"}},"user":{"buyeruid":"u00000001"},"tmax":120,"cur":["USD"]}`
	exchange := `{"id":"auction-x","at":1,"allimps":0,"wlang":["en"],"bapp":["com.bad"],
	  "source":{"tid":"t-1","schain":{"complete":1,"ver":"1.0","nodes":[{"asi":"exchange.example","sid":"77","hp":1}]}},
	  "regs":{"coppa":0,"gdpr":1,"ext":{"us_privacy":"1YNN"}},
	  "imp":[{"id":"1","secure":1,"instl":0,"displaymanager":"sdk","banner":{"format":[{"w":300,"h":250}],"mimes":["image/png"],"api":[3,5]},
	    "bidfloor":0.5,"bidfloorcur":"USD","metric":[{"type":"viewability","value":0.8}]}],
	  "site":{"domain":"news.example","page":"https://news.example/a","cat":["IAB19"],"publisher":{"id":"pub-1","name":"News"}},
	  "device":{"ua":"Mozilla/5.0","ip":"203.0.113.7","geo":{"country":"DEU"},"language":"de"},
	  "user":{"buyeruid":"u00000001","eids":[{"source":"id.example","uids":[{"id":"x"}]}],"ext":{"consent":"CO"}},
	  "tmax":120,"cur":["USD"]}`
	answer := func(body string) (int, *personadpb.BidResponse) {
		t.Helper()
		resp, b := post(t, h, "application/json", body)
		got := &personadpb.BidResponse{}
		if resp.StatusCode == http.StatusOK {
			if err := protojson.Unmarshal(b, got); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, got
	}
	wantCode, want := answer(declared)
	gotCode, got := answer(exchange)
	if wantCode != http.StatusOK || gotCode != wantCode {
		t.Fatalf("status %d with the exchange's fields, %d without; want 200 for both", gotCode, wantCode)
	}
	// Each bid has an id (and notice tokens) of its own.
	for _, r := range []*personadpb.BidResponse{want, got} {
		for _, sb := range r.Seatbid {
			for _, b := range sb.Bid {
				b.Id, b.Nurl, b.Burl, b.Lurl = "", "", "", ""
			}
		}
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("the exchange's request vs its declared fields (-declared +exchange):\n%s", diff)
	}
}

// TestFloorAboveEveryBid: a finite floor no campaign can meet (15000 in
// IDR, 15000 in USD, 1e300) is a no-bid for its impression, not an
// invalid request: the request's other impression still gets its bid, on
// both wires, and ext.debug names the floor (or the floor's currency) as
// the stage that stopped the campaign there.
func TestFloorAboveEveryBid(t *testing.T) {
	h := newHarness(t, testRules)
	for _, tc := range []struct {
		floor float64
		cur   string
		stage string
	}{
		{15000, "IDR", "currency"},
		{15000, "", "floor"},
		{1e300, "USD", "floor"},
	} {
		req := request(userCMO)
		req.Imp = []*personadpb.Imp{
			{Id: "high", Banner: &personadpb.Banner{W: 300, H: 250}, Bidfloor: tc.floor, Bidfloorcur: tc.cur},
			{Id: "open", Banner: &personadpb.Banner{W: 300, H: 250}},
		}
		req.Ext = &personadpb.BidRequestExt{Debug: true}
		resp, err := h.client.Bid(context.Background(), req)
		if err != nil {
			t.Fatalf("floor %v %s: %v", tc.floor, tc.cur, err)
		}
		bids := resp.GetSeatbid()
		if len(bids) != 1 || len(bids[0].Bid) != 1 || bids[0].Bid[0].Impid != "open" {
			t.Errorf("floor %v %s: seatbid %v, want one bid, on imp open", tc.floor, tc.cur, bids)
		}
		var got string
		for _, c := range resp.GetExt().GetDebug().GetCampaigns() {
			if c.Cid == "acme-cmo" && c.Impid == "high" {
				got = c.Stage
			}
		}
		if got != tc.stage {
			t.Errorf("floor %v %s: acme-cmo on imp high: stage %q, want %q", tc.floor, tc.cur, got, tc.stage)
		}

		body, err := marshalJSON.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		hr, err := http.Post(h.http.URL+PathBid, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		hr.Body.Close()
		if hr.StatusCode != http.StatusOK {
			t.Errorf("floor %v %s: HTTP %s, want 200", tc.floor, tc.cur, hr.Status)
		}
	}
}

// TestFlexFormats: an OpenRTB 2.6 Format gives w and h, or, for a flex
// ad, wratio, hratio and wmin instead. personad serves exact sizes only,
// so a flex format is passed over, not refused: the impression's other
// sizes are bid on, an impression with only flex formats is a no-bid of
// its own (stage size), and the request is valid. A format with neither
// is still invalid.
func TestFlexFormats(t *testing.T) {
	h := newHarness(t, testRules)
	body := `{"id":"flex","imp":[
	    {"id":"1","banner":{"format":[{"wratio":16,"hratio":9,"wmin":320},{"w":300,"h":250}]}},
	    {"id":"2","banner":{"format":[{"wratio":1,"hratio":1,"wmin":200}]}}],
	  "site":{"domain":"news.example"},"user":{"buyeruid":"u00000001"},"ext":{"debug":true}}`
	resp, b := post(t, h, "application/json", body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("flex formats: status %d (%s), want 200", resp.StatusCode, b)
	}
	var got personadpb.BidResponse
	if err := protojson.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	bids := got.GetSeatbid()
	if len(bids) != 1 || len(bids[0].Bid) != 1 || bids[0].Bid[0].Impid != "1" || bids[0].Bid[0].W != 300 {
		t.Errorf("flex formats: seatbid %v, want one 300x250 bid, on imp 1", bids)
	}
	for _, c := range got.GetExt().GetDebug().GetCampaigns() {
		if c.Impid == "2" && (c.Stage != "size" || !strings.Contains(c.Detail, "no exact size")) {
			t.Errorf("flex formats: %s on imp 2 (flex only): stage %q (%s), want size, no exact size", c.Cid, c.Stage, c.Detail)
		}
	}

	for _, tc := range []struct{ format, field string }{
		{`{}`, "imp[0].banner.format[0].w"},
		{`{"wratio":16}`, "imp[0].banner.format[0].hratio"},
		{`{"wratio":-16,"hratio":9}`, "imp[0].banner.format[0].wratio"},
		{`{"wratio":16,"hratio":9,"wmin":-1}`, "imp[0].banner.format[0].wmin"},
		{`{"w":300,"h":250,"wmin":-4}`, "imp[0].banner.format[0].wmin"}, // >= 0 in any format, as the proto says
	} {
		resp, b := post(t, h, "application/json", `{"id":"r","imp":[{"id":"1","banner":{"format":[`+tc.format+`]}}]}`)
		var e httpError
		json.Unmarshal(b, &e)
		if resp.StatusCode != http.StatusBadRequest || e.Field != tc.field {
			t.Errorf("format %s: status %d, field %q (%s); want 400, %q", tc.format, resp.StatusCode, e.Field, b, tc.field)
		}
	}
}
