package bidder

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

func post(t *testing.T, h *harness, contentType, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post(h.http.URL+PathBid, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestHTTPErrors(t *testing.T) {
	h := newHarness(t, "")
	big := `{"id":"` + strings.Repeat("x", 1<<20) + `"}`
	for _, tc := range []struct {
		name, ct, body string
		code           int
		want           httpError
	}{
		{"invalid field", "application/json", `{"id":"r","imp":[{"id":"1","banner":{"format":[{"w":300,"h":250},{"w":728,"h":90},{"w":0,"h":50}]}}]}`,
			400, httpError{Error: "bidder: imp[0].banner.format[2].w: must be > 0", Field: "imp[0].banner.format[2].w", Nbr: 2}},
		{"no imp", "application/json; charset=utf-8", `{"id":"r"}`,
			400, httpError{Error: "bidder: imp: at least one impression is required", Field: "imp", Nbr: 2}},
		// A body that does not decode: the field's path too.
		// An undeclared field is ignored: "impp" is not "imp".
		{"misspelt field", "application/json", `{"id":"r","impp":[]}`,
			400, httpError{Error: "bidder: imp: at least one impression is required", Field: "imp", Nbr: 2}},
		{"not JSON", "application/json", `id=r`, 400, httpError{Nbr: 2}},
		{"wrong type", "application/json", `{"id":"r","tmax":"soon"}`, 400, httpError{Field: "tmax", Nbr: 2}},
		{"wrong type deep", "application/json", "{\"id\": \"r\",\n \"imp\": [{\"id\": \"1\", \"banner\": {\"w\": 300, \"h\": 250}},\n  {\"id\": \"2\", \"banner\": {\"format\": [{\"w\": 300, \"h\": \"tall\"}]}}]}",
			400, httpError{Field: "imp[1].banner.format[0].h", Nbr: 2}},
		{"duplicate field", "application/json", `{"id":"r","user":{"id":"a","id":"b"}}`, 400, httpError{Field: "user.id", Nbr: 2}},
		{"null element", "application/json", `{"id":"r","imp":[{"id":"1"},null]}`, 400, httpError{Field: "imp[1]", Nbr: 2}},
		{"not UTF-8", "application/json", "{\"id\":\"r\",\"site\":{\"domain\":\"\xff\"}}", 400, httpError{Field: "site.domain", Nbr: 2}},
		{"form", "application/x-www-form-urlencoded", `{}`, 415, httpError{Error: `bidder: Content-Type "application/x-www-form-urlencoded": want application/json`, Nbr: 2}},
		{"too large", "application/json", big, 413, httpError{Error: "bidder: request body exceeds 1048576 bytes", Nbr: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := post(t, h, tc.ct, tc.body)
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.code, body)
			}
			// An error answer is an OpenRTB answer too.
			if v := resp.Header.Get("X-Openrtb-Version"); v != "2.6" {
				t.Errorf("X-Openrtb-Version %q, want 2.6", v)
			}
			var got httpError
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if tc.want.Error == "" {
				if !strings.HasPrefix(got.Error, ErrBadBody.Error()) {
					t.Errorf("error %q, want it to start with %q", got.Error, ErrBadBody)
				}
				got.Error = ""
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("error body (-want +got):\n%s", diff)
			}
		})
	}
	resp, err := http.Get(h.http.URL + PathBid)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET %s: status %d, want 405", PathBid, resp.StatusCode)
	}
}

// TestHTTPPanicVersionHeader: the 500 of a panic during a bid, written
// by recoverHTTP, still says its OpenRTB version, as every answer does.
func TestHTTPPanicVersionHeader(t *testing.T) {
	h := newHarness(t, testRules)
	h.srv.cfg.Now = func() time.Time { panic("clock broke") }
	body, err := protojson.Marshal(request(userCMO))
	if err != nil {
		t.Fatal(err)
	}
	resp, b := post(t, h, "application/json", string(body))
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d %s, want 500", resp.StatusCode, b)
	}
	if v := resp.Header.Get("X-Openrtb-Version"); v != "2.6" {
		t.Errorf("X-Openrtb-Version %q, want 2.6", v)
	}
}

// doMethod sends an empty request with method m to url and returns the
// answer, its body read and closed.
func doMethod(t *testing.T, m, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(m, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

// TestHTTPBidMethods: a method other than POST on the bid path is 405
// with Allow: POST, answered as the path's other errors are: with
// X-Openrtb-Version and a JSON error (the mux's own 405 had neither).
func TestHTTPBidMethods(t *testing.T) {
	h := newHarness(t, "")
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions} {
		resp, b := doMethod(t, m, h.http.URL+PathBid)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" || resp.Header.Get("X-Openrtb-Version") != "2.6" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: status %d, Allow %q, X-Openrtb-Version %q, Content-Type %q; want 405, POST, 2.6, application/json",
				m, resp.StatusCode, resp.Header.Get("Allow"), resp.Header.Get("X-Openrtb-Version"), resp.Header.Get("Content-Type"))
		}
		if m == http.MethodHead {
			continue
		}
		var e httpError
		if err := json.Unmarshal(b, &e); err != nil || e.Error != "bidder: method "+m+": want POST" || e.Nbr != NbrInvalidRequest {
			t.Errorf("%s: body %s (%v), want the JSON error naming the method, nbr 2", m, b, err)
		}
	}
}

// TestHTTPNoBid uses a request whose budget is spent, so the engine is not
// needed: 204 with the reason in a header, or 200 with a body on debug.
func TestHTTPNoBid(t *testing.T) {
	h := newHarness(t, "")
	req := request(userCMO)
	req.Tmax = 1
	body, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	resp, b := post(t, h, "application/json", string(body))
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get(HeaderNbr) != "1" || len(b) != 0 {
		t.Errorf("no-bid: status %d, %s %q, body %q; want 204, 1, empty", resp.StatusCode, HeaderNbr, resp.Header.Get(HeaderNbr), b)
	}

	req.Ext = &personadpb.BidRequestExt{Debug: true}
	body, _ = protojson.Marshal(req)
	resp, b = post(t, h, "application/json", string(body))
	if resp.StatusCode != http.StatusOK || resp.Header.Get(HeaderNbr) != "1" {
		t.Fatalf("debug no-bid: status %d, %s %q; want 200, 1", resp.StatusCode, HeaderNbr, resp.Header.Get(HeaderNbr))
	}
	var got personadpb.BidResponse
	if err := protojson.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Id != "req-1" || got.Nbr != 1 || got.Ext.GetDebug() == nil {
		t.Errorf("debug no-bid body %s, want id, nbr 1 and ext.debug", b)
	}
}

// TestHTTPTmaxFromArrival: tmax runs from the request's arrival, not
// from the end of its body: a body that takes longer than tmax to arrive
// (a slow link, or a large body read and decoded) leaves no time, and is
// answered no-bid (nbr 1) rather than late, with no money reserved.
func TestHTTPTmaxFromArrival(t *testing.T) {
	h := newHarness(t, testRules)
	req := request(userCMO)
	req.Tmax = 40 // 30 ms after the network margin
	body, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, PathBid, io.MultiReader(
		bytes.NewReader(body[:len(body)/2]),
		slowReader{100 * time.Millisecond},
		bytes.NewReader(body[len(body)/2:])))
	r.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(rec, r)
	if rec.Code != http.StatusNoContent || rec.Header().Get(HeaderNbr) != "1" {
		t.Errorf("body arriving 100ms after its start, tmax 40: status %d, %s %q, body %.200s; want 204, nbr 1",
			rec.Code, HeaderNbr, rec.Header().Get(HeaderNbr), rec.Body)
	}

	// The same request, arriving at once, bids.
	resp, b := post(t, h, "application/json", string(body))
	if resp.StatusCode != http.StatusOK {
		t.Errorf("same request at once: status %d (%s), want 200", resp.StatusCode, b)
	}
}

// slowReader reads nothing, after waiting d: a pause in a request body.
type slowReader struct{ d time.Duration }

func (s slowReader) Read([]byte) (int, error) {
	time.Sleep(s.d)
	return 0, io.EOF
}

func TestHealthzAndMetrics(t *testing.T) {
	h := newHarness(t, "")
	get := func(path string) (int, string) {
		resp, err := http.Get(h.http.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(PathHealthz); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz without rules: %d, want 503", code)
	}
	// One invalid request on each wire, then the metrics show them with
	// bounded labels only.
	post(t, h, "application/json", `{"id":"r"}`)
	h.srv.Bid(t.Context(), request("secret-user-id"+strings.Repeat("x", 300)))
	code, body := get(PathMetrics)
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`personad_bid_requests_total{outcome="invalid",wire="http"} 1`,
		`personad_bid_requests_total{outcome="invalid",wire="grpc"} 1`,
		`personad_bid_requests_in_flight 0`,
		`personad_decision_duration_seconds_bucket{le="1e-05"}`,
		`personad_bid_nobids_total{reason="unmatched_user"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "secret-user-id") || strings.Contains(body, `"r"`) {
		t.Error("/metrics carries a user or request id")
	}
}

// TestHTTPGzipBody: a body sent with Content-Encoding gzip, as exchanges
// send them, is decompressed (it had been 400, "invalid value \u001f"),
// within the size limit applied to the decompressed bytes too, so a small
// zip bomb is 413; a body that is not gzip is 400 and another encoding
// 415, naming it.
func TestHTTPGzipBody(t *testing.T) {
	h := newHarness(t, testRules)
	gz := func(s string) []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write([]byte(s))
		zw.Close()
		return b.Bytes()
	}
	reqJSON, err := marshalJSON.Marshal(request(userCMO))
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 1<<20+1)
	rand.NewChaCha8([32]byte{1}).Read(random)
	bomb := gz(`{"id":"r"` + strings.Repeat(" ", 8<<20) + `}`)
	for _, tc := range []struct {
		name, enc string
		body      []byte
		code      int
		want      string // substring of the error, or of the bid response
	}{
		{"gzip", "gzip", gz(string(reqJSON)), 200, `"cid":"acme-cmo"`},
		{"gzip, any case", "GZip", gz(string(reqJSON)), 200, `"cid":"acme-cmo"`},
		{"identity", "identity", reqJSON, 200, `"cid":"acme-cmo"`},
		{"bomb", "gzip", bomb, 413, "bidder: request body exceeds 1048576 bytes once decompressed"},
		{"large as sent", "gzip", gz(string(random)), 413, "bidder: request body exceeds 1048576 bytes"},
		{"not gzip", "gzip", reqJSON, 400, "request body is not a valid BidRequest: decompressing: gzip: invalid header"},
		{"truncated", "gzip", gz(string(reqJSON))[:40], 400, "decompressing: unexpected EOF"},
		{"brotli", "br", reqJSON, 415, `bidder: Content-Encoding \"br\": want gzip or identity`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(bomb) > 64<<10 {
				t.Fatalf("the bomb is %d bytes compressed, want a small one", len(bomb))
			}
			r, err := http.NewRequest(http.MethodPost, h.http.URL+PathBid, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Content-Encoding", tc.enc)
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.want) {
				t.Errorf("status %d %s; want %d and %q", resp.StatusCode, b, tc.code, tc.want)
			}
			if v := resp.Header.Get("X-Openrtb-Version"); v != "2.6" {
				t.Errorf("X-Openrtb-Version %q, want 2.6", v)
			}
		})
	}
}
