package bidder

import (
	"bytes"
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

type badCase struct {
	name   string
	mutate func(r *personadpb.BidRequest)
	path   string
	msg    string // substring of the message after the path
}

func formats(n int) []*personadpb.Format {
	fs := make([]*personadpb.Format, n)
	for i := range fs {
		fs[i] = &personadpb.Format{W: 300, H: 250}
	}
	return fs
}

func strs(n int, s string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

var badCases = []badCase{
	{"no id", func(r *personadpb.BidRequest) { r.Id = "" }, "id", "required"},
	{"long id", func(r *personadpb.BidRequest) { r.Id = strings.Repeat("x", 257) }, "id", "exceeds the limit of 256"},
	{"no imp", func(r *personadpb.BidRequest) { r.Imp = nil }, "imp", "at least one"},
	{"too many imps", func(r *personadpb.BidRequest) {
		for i := range 16 {
			r.Imp = append(r.Imp, &personadpb.Imp{Id: string(rune('a' + i)), Banner: &personadpb.Banner{W: 1, H: 1}})
		}
	}, "imp", "17 impressions exceeds the limit of 16"},
	{"imp without id", func(r *personadpb.BidRequest) { r.Imp[0].Id = "" }, "imp[0].id", "required"},
	{"duplicate imp id", func(r *personadpb.BidRequest) {
		r.Imp = append(r.Imp, &personadpb.Imp{Id: "1", Banner: &personadpb.Banner{W: 728, H: 90}})
	}, "imp[1].id", `duplicate impression id "1" (also imp[0])`},
	{"imp without banner", func(r *personadpb.BidRequest) { r.Imp[0].Banner = nil }, "imp[0].banner", "required"},
	{"banner without size", func(r *personadpb.BidRequest) { r.Imp[0].Banner = &personadpb.Banner{} }, "imp[0].banner", "no size"},
	{"banner w only", func(r *personadpb.BidRequest) { r.Imp[0].Banner = &personadpb.Banner{W: 300} }, "imp[0].banner.h", "must be > 0"},
	{"negative banner w", func(r *personadpb.BidRequest) { r.Imp[0].Banner = &personadpb.Banner{W: -300, H: 250} }, "imp[0].banner.w", "must be > 0"},
	{"absurd banner h", func(r *personadpb.BidRequest) { r.Imp[0].Banner = &personadpb.Banner{W: 300, H: 1 << 30} }, "imp[0].banner.h", "exceeds the limit of 10000"},
	{"zero format w", func(r *personadpb.BidRequest) {
		r.Imp[0].Banner.Format = append(formats(2), &personadpb.Format{W: 0, H: 250})
	}, "imp[0].banner.format[2].w", "must be > 0"},
	{"negative format h", func(r *personadpb.BidRequest) {
		r.Imp[0].Banner.Format = []*personadpb.Format{{W: 300, H: -1}}
	}, "imp[0].banner.format[0].h", "must be > 0"},
	{"absurd format w", func(r *personadpb.BidRequest) {
		r.Imp[0].Banner.Format = []*personadpb.Format{{W: 10001, H: 250}}
	}, "imp[0].banner.format[0].w", "exceeds the limit"},
	{"too many formats", func(r *personadpb.BidRequest) { r.Imp[0].Banner.Format = formats(33) }, "imp[0].banner.format", "33 formats"},
	{"negative w beside format", func(r *personadpb.BidRequest) { r.Imp[0].Banner.W = -1 }, "imp[0].banner.w", "must be > 0"},
	{"negative pos", func(r *personadpb.BidRequest) { r.Imp[0].Banner.Pos = -1 }, "imp[0].banner.pos", "not an AdCOM placement position"},
	{"negative floor", func(r *personadpb.BidRequest) { r.Imp[0].Bidfloor = -0.5 }, "imp[0].bidfloor", "must be >= 0"},
	{"NaN floor", func(r *personadpb.BidRequest) { r.Imp[0].Bidfloor = math.NaN() }, "imp[0].bidfloor", "not a number"},
	{"infinite floor", func(r *personadpb.BidRequest) { r.Imp[0].Bidfloor = math.Inf(1) }, "imp[0].bidfloor", "not a number"},
	{"floor currency lower case", func(r *personadpb.BidRequest) { r.Imp[0].Bidfloorcur = "usd" }, "imp[0].bidfloorcur", "ISO-4217"},
	{"floor currency 4 letters", func(r *personadpb.BidRequest) { r.Imp[0].Bidfloorcur = "USDX" }, "imp[0].bidfloorcur", "ISO-4217"},
	{"bad secure", func(r *personadpb.BidRequest) { r.Imp[0].Secure = 2 }, "imp[0].secure", "not 0 or 1"},
	{"long tagid", func(r *personadpb.BidRequest) { r.Imp[0].Tagid = strings.Repeat("t", 300) }, "imp[0].tagid", "exceeds"},
	{"second imp broken", func(r *personadpb.BidRequest) {
		r.Imp = append(r.Imp, &personadpb.Imp{Id: "2", Banner: &personadpb.Banner{Format: []*personadpb.Format{{W: 728, H: 90}, {W: 160}}}})
	}, "imp[1].banner.format[1].h", "must be > 0"},
	{"site and app", func(r *personadpb.BidRequest) { r.App = &personadpb.App{Bundle: "com.example"} }, "app", "mutually exclusive"},
	{"long site domain", func(r *personadpb.BidRequest) { r.Site.Domain = strings.Repeat("d", 257) }, "site.domain", "exceeds"},
	{"long site page", func(r *personadpb.BidRequest) { r.Site.Page = strings.Repeat("p", 4097) }, "site.page", "exceeds"},
	{"long channel", func(r *personadpb.BidRequest) {
		r.Site.Ext = &personadpb.DistributionExt{Channel: strings.Repeat("c", 257)}
	}, "site.ext.channel", "exceeds"},
	{"empty site cat", func(r *personadpb.BidRequest) { r.Site.Cat = []string{"IAB1", ""} }, "site.cat[1]", "must not be empty"},
	{"long app bundle", func(r *personadpb.BidRequest) {
		r.Site = nil
		r.App = &personadpb.App{Bundle: strings.Repeat("b", 257)}
	}, "app.bundle", "exceeds"},
	{"long publisher", func(r *personadpb.BidRequest) {
		r.Site.Publisher = &personadpb.Publisher{Name: strings.Repeat("n", 257)}
	}, "site.publisher.name", "exceeds"},
	{"negative tmax", func(r *personadpb.BidRequest) { r.Tmax = -1 }, "tmax", "must be >= 0"},
	{"bad test", func(r *personadpb.BidRequest) { r.Test = 2 }, "test", "not 0 or 1"},
	{"bad coppa", func(r *personadpb.BidRequest) { r.Regs = &personadpb.Regs{Coppa: 3} }, "regs.coppa", "not 0 or 1"},
	{"bad gdpr", func(r *personadpb.BidRequest) { r.Regs = &personadpb.Regs{Gdpr: -1} }, "regs.gdpr", "not 0 or 1"},
	{"negative devicetype", func(r *personadpb.BidRequest) { r.Device = &personadpb.Device{Devicetype: -1} }, "device.devicetype", "not an AdCOM device type"},
	{"long ua", func(r *personadpb.BidRequest) { r.Device = &personadpb.Device{Ua: strings.Repeat("u", 4097)} }, "device.ua", "exceeds"},
	{"bad cur", func(r *personadpb.BidRequest) { r.Cur = []string{"USD", "euro"} }, "cur[1]", "ISO-4217"},
	{"too many cur", func(r *personadpb.BidRequest) { r.Cur = strs(17, "USD") }, "cur", "17 currencies"},
	{"too many bcat", func(r *personadpb.BidRequest) { r.Bcat = strs(1025, "IAB1") }, "bcat", "1025 entries"},
	{"empty bcat", func(r *personadpb.BidRequest) { r.Bcat = []string{""} }, "bcat[0]", "must not be empty"},
	{"negative cattax", func(r *personadpb.BidRequest) { r.Cattax = -1 }, "cattax",
		"-1 is not an AdCOM category taxonomy: want 0 (unset: IAB Content Category Taxonomy 1.0) or a taxonomy id, 1 and up"},
	{"too many badv", func(r *personadpb.BidRequest) { r.Badv = strs(4097, "x.com") }, "badv", "4097 entries"},
	{"long badv", func(r *personadpb.BidRequest) { r.Badv = []string{strings.Repeat("x", 257)} }, "badv[0]", "exceeds"},
	{"long buyeruid", func(r *personadpb.BidRequest) { r.User.Buyeruid = strings.Repeat("u", 257) }, "user.buyeruid", "exceeds"},
	{"too many data", func(r *personadpb.BidRequest) {
		for range 33 {
			r.User.Data = append(r.User.Data, &personadpb.Data{})
		}
	}, "user.data", "33 data entries"},
	{"too many segments", func(r *personadpb.BidRequest) {
		for range 11 {
			d := &personadpb.Data{}
			for range 100 {
				d.Segment = append(d.Segment, &personadpb.Segment{Id: "title:cmo"})
			}
			r.User.Data = append(r.User.Data, d)
		}
	}, "user.data[10].segment", "more than 1024 segments"},
	{"long segment value", func(r *personadpb.BidRequest) {
		r.User.Data = []*personadpb.Data{{Segment: []*personadpb.Segment{{Name: "title", Value: strings.Repeat("v", 257)}}}}
	}, "user.data[0].segment[0].value", "exceeds"},
}

// TestValidation: every bad input is INVALID_ARGUMENT whose message is
// "bidder: <path>: <what>", and is counted as invalid.
func TestValidation(t *testing.T) {
	s := newTestServer(t, "")
	for _, tc := range badCases {
		t.Run(tc.name, func(t *testing.T) {
			req := request(userCMO)
			tc.mutate(req)
			resp, err := s.Bid(context.Background(), req)
			if resp != nil {
				t.Errorf("got a response %v, want none", resp)
			}
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("code = %v (%v), want InvalidArgument", st.Code(), err)
			}
			prefix := "bidder: " + tc.path + ": "
			if !strings.HasPrefix(st.Message(), prefix) || !strings.Contains(st.Message(), tc.msg) {
				t.Errorf("message = %q, want prefix %q containing %q", st.Message(), prefix, tc.msg)
			}
		})
	}
	if got := testutil.ToFloat64(s.metrics.requests[wireGRPC][outcomeInvalid]); got != float64(len(badCases)) {
		t.Errorf("invalid requests counted = %v, want %d", got, len(badCases))
	}
}

// TestValidationKeepsServing sends every bad input over the real gRPC stack
// and checks the server still answers afterwards.
func TestValidationKeepsServing(t *testing.T) {
	h := newHarness(t, "")
	ctx := context.Background()
	for _, tc := range badCases {
		req := request(userCMO)
		tc.mutate(req)
		_, err := h.client.Bid(ctx, req)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "bidder: "+tc.path+": ") {
			t.Errorf("%s: got %v, want InvalidArgument at %s", tc.name, err, tc.path)
		}
	}
	// A request whose budget is already spent is answered without the
	// engine: the server is still up and deciding.
	req := request(userCMO)
	req.Tmax = 5 // below the 10ms network margin
	resp, err := h.client.Bid(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Nbr != NbrTechnicalError || len(resp.Seatbid) != 0 || resp.Id != "req-1" {
		t.Errorf("spent budget: got %v, want a no-bid with nbr 1", resp)
	}
	hc, err := healthpb.NewHealthClient(h.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// No rules are loaded in this harness.
	if hc.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health = %v, want NOT_SERVING without rules", hc.Status)
	}
}

// TestAdCOMListValuesAccepted: device.devicetype and banner.pos take
// their values from AdCOM lists that grow and reserve 500 and above for
// exchange-specific codes: out-of-home (8), a value past today's list and
// an exchange's own value are valid requests, on both wires.
func TestAdCOMListValuesAccepted(t *testing.T) {
	s := newTestServer(t, "")
	h := s.Handler()
	for name, mutate := range map[string]func(*personadpb.BidRequest){
		"devicetype 8 (out-of-home)": func(r *personadpb.BidRequest) { r.Device = &personadpb.Device{Devicetype: 8} },
		"devicetype 9":               func(r *personadpb.BidRequest) { r.Device = &personadpb.Device{Devicetype: 9} },
		"devicetype 500":             func(r *personadpb.BidRequest) { r.Device = &personadpb.Device{Devicetype: 500} },
		"pos 8":                      func(r *personadpb.BidRequest) { r.Imp[0].Banner.Pos = 8 },
		"pos 501":                    func(r *personadpb.BidRequest) { r.Imp[0].Banner.Pos = 501 },
	} {
		req := request(userCMO)
		mutate(req)
		if _, err := s.Bid(context.Background(), req); err != nil {
			t.Errorf("%s: gRPC: %v", name, err)
		}
		body, err := marshalJSON.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, PathBid, bytes.NewReader(body)))
		if rec.Code != http.StatusOK && rec.Code != http.StatusNoContent {
			t.Errorf("%s: HTTP %d %s, want 200 or 204", name, rec.Code, rec.Body)
		}
	}
}

// TestValidRequestsPass: requests at the edge of every limit validate.
func TestValidRequestsPass(t *testing.T) {
	l := DefaultConfig().Limits
	for name, mutate := range map[string]func(*personadpb.BidRequest){
		"minimal":       func(*personadpb.BidRequest) {},
		"banner w x h":  func(r *personadpb.BidRequest) { r.Imp[0].Banner = &personadpb.Banner{W: 728, H: 90} },
		"max formats":   func(r *personadpb.BidRequest) { r.Imp[0].Banner.Format = formats(32) },
		"max dimension": func(r *personadpb.BidRequest) { r.Imp[0].Banner.Format[0].W = 10000 },
		"max floor":     func(r *personadpb.BidRequest) { r.Imp[0].Bidfloor = 10000; r.Imp[0].Bidfloorcur = "EUR" },
		"huge floor":    func(r *personadpb.BidRequest) { r.Imp[0].Bidfloor = 1e308 },
		"app":           func(r *personadpb.BidRequest) { r.Site = nil; r.App = &personadpb.App{Bundle: "com.example"} },
		"neither":       func(r *personadpb.BidRequest) { r.Site = nil },
		"no user":       func(r *personadpb.BidRequest) { r.User = nil },
		"test and regs": func(r *personadpb.BidRequest) { r.Test = 1; r.Regs = &personadpb.Regs{Coppa: 1, Gdpr: 1} },
		"devicetype 7":  func(r *personadpb.BidRequest) { r.Device = &personadpb.Device{Devicetype: 7} },
		"tmax 0":        func(r *personadpb.BidRequest) { r.Tmax = 0 },
		"max bcat":      func(r *personadpb.BidRequest) { r.Bcat = strs(1024, "IAB1") },
		// A publisher's block list and a data provider's segments, as
		// exchanges send them: valid, not refused.
		"max badv": func(r *personadpb.BidRequest) { r.Badv = strs(4096, "blocked.example") },
		"max segments": func(r *personadpb.BidRequest) {
			for range 8 {
				d := &personadpb.Data{Name: "dmp"}
				for range 128 {
					d.Segment = append(d.Segment, &personadpb.Segment{Id: "dmp-123456"})
				}
				r.User.Data = append(r.User.Data, d)
			}
		},
		"junk segments": func(r *personadpb.BidRequest) {
			r.User.Data = []*personadpb.Data{{Segment: []*personadpb.Segment{{Id: "??"}, {Name: "X Y"}}}}
		},
		"max imps":       func(r *personadpb.BidRequest) { r.Imp = nil; r.Imp = append(r.Imp, bannerImps(16)...) },
		"format and w h": func(r *personadpb.BidRequest) { r.Imp[0].Banner.W, r.Imp[0].Banner.H = 300, 250 },
	} {
		req := request(userCMO)
		mutate(req)
		if err := validate(req, &l); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func bannerImps(n int) []*personadpb.Imp {
	imps := make([]*personadpb.Imp, n)
	for i := range imps {
		imps[i] = &personadpb.Imp{Id: string(rune('a' + i)), Banner: &personadpb.Banner{W: 300, H: 250}}
	}
	return imps
}

// TestValidateNoAllocs: a valid request validates without allocating
// (paths are built only on failure).
func TestValidateNoAllocs(t *testing.T) {
	l := DefaultConfig().Limits
	req := request(userCMO)
	req.Imp = append(req.Imp, bannerImps(3)...)
	req.User.Data = []*personadpb.Data{{Segment: []*personadpb.Segment{{Id: "title:cmo"}}}}
	req.Bcat = []string{"IAB25"}
	if n := testing.AllocsPerRun(100, func() {
		if err := validate(req, &l); err != nil {
			t.Fatal(err)
		}
	}); n != 0 && !raceEnabled {
		t.Errorf("validate allocates %v times per request, want 0", n)
	}
}
