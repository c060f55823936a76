package bidder

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

func TestAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		header []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"gzip"}, true},
		{[]string{"GZip"}, true},
		{[]string{"x-gzip"}, true},
		{[]string{"gzip, deflate, br"}, true},
		{[]string{"deflate, br"}, false},
		{[]string{"br;q=1.0, gzip;q=0.8, *;q=0.1"}, true},
		{[]string{" gzip ; q=0.5 "}, true},
		{[]string{"gzip;Q=0.001"}, true},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip;q=0.000"}, false},
		{[]string{"gzip;q=0, *"}, false},
		{[]string{"*, gzip;q=0"}, false},
		{[]string{"*"}, true},
		{[]string{"*;q=0"}, false},
		{[]string{"identity"}, false},
		{[]string{"identity, *;q=0.5"}, false},         // identity preferred
		{[]string{"identity;q=0.5, gzip"}, true},       // gzip preferred
		{[]string{"identity;q=1, gzip;q=0.5"}, false},  // identity preferred
		{[]string{"gzip;q=0.5, *;q=0.9"}, false},       // identity, through *, preferred
		{[]string{"gzip;q=0.5, identity;q=0.5"}, true}, // a tie: the smaller answer
		{[]string{"deflate", "gzip"}, true},            // two header lines
		{[]string{"gzip;q=2"}, false},                  // weights above 1 do not parse
		{[]string{"gzip;q=1.001"}, false},
		{[]string{"gzip;q=0.5555"}, false},
		{[]string{"gzip;q=.5"}, false},
		{[]string{"gzip;q=abc"}, false},
		{[]string{"gzip;q="}, false},
		{[]string{"gzip;level=1"}, true},  // other parameters are not weights
		{[]string{"gzip;q=bad, *"}, true}, // the unparsable entry is ignored
		{[]string{",,gzip,,"}, true},
		{[]string{"gzipx"}, false},
	} {
		if got := acceptsGzip(tc.header); got != tc.want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", tc.header, got, tc.want)
		}
	}
}

// rawPost posts body to url's bid path with the given Accept-Encoding
// ("" sends none) through a transport that neither asks for gzip nor
// decompresses, so that the answer is seen as sent.
func rawPost(t *testing.T, url, acceptEncoding, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+PathBid, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
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

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("answer is not gzip: %v (%.100q)", err, b)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("decompressing the answer: %v", err)
	}
	return out
}

// TestHTTPGzipAnswer: over the real HTTP handler, an answer of
// /openrtb2/bid is gzip when the request's Accept-Encoding accepts it and
// the answer is large enough, and decodes to the same bid as the
// uncompressed answer; a refusal, no header, a no-bid, an error, a small
// answer and a server with HTTPGzip off answer uncompressed.
func TestHTTPGzipAnswer(t *testing.T) {
	srv := benchServer(t)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	body, err := protojson.Marshal(benchRequest())
	if err != nil {
		t.Fatal(err)
	}
	decode := func(b []byte) *personadpb.BidResponse {
		t.Helper()
		var r personadpb.BidResponse
		if err := protojson.Unmarshal(b, &r); err != nil {
			t.Fatalf("answer %.200q: %v", b, err)
		}
		if len(r.Seatbid) == 0 {
			t.Fatalf("answer %s: no bid", b)
		}
		return &r
	}
	// The bid id differs from one bid to the next.
	same := protocmp.IgnoreFields(&personadpb.Bid{}, "id")

	plainResp, plain := rawPost(t, hs.URL, "", string(body))
	if plainResp.StatusCode != http.StatusOK {
		t.Fatalf("status %d %s, want 200", plainResp.StatusCode, plain)
	}
	if len(plain) < gzipMinSize {
		t.Fatalf("the bench answer is %d bytes, under gzipMinSize %d: the test needs a larger one", len(plain), gzipMinSize)
	}
	want := decode(plain)
	for _, tc := range []struct {
		acceptEncoding string
		gzip           bool
	}{
		{"", false},
		{"gzip", true},
		{"deflate, gzip;q=0.8", true},
		{"*", true},
		{"gzip;q=0", false},
		{"*, gzip;q=0", false},
		{"br", false},
		{"identity", false},
	} {
		resp, b := rawPost(t, hs.URL, tc.acceptEncoding, string(body))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("Accept-Encoding %q: status %d %s, want 200", tc.acceptEncoding, resp.StatusCode, b)
		}
		if got := resp.Header.Get("Vary"); got != "Accept-Encoding" {
			t.Errorf("Accept-Encoding %q: Vary %q, want Accept-Encoding", tc.acceptEncoding, got)
		}
		if got := resp.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Accept-Encoding %q: Content-Type %q, want application/json", tc.acceptEncoding, got)
		}
		enc := resp.Header.Get("Content-Encoding")
		if tc.gzip {
			if enc != "gzip" {
				t.Errorf("Accept-Encoding %q: Content-Encoding %q, want gzip", tc.acceptEncoding, enc)
				continue
			}
			if len(b) >= len(plain) {
				t.Errorf("Accept-Encoding %q: %d bytes gzip, not fewer than %d plain", tc.acceptEncoding, len(b), len(plain))
			}
			b = gunzip(t, b)
		} else if enc != "" {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q, want none", tc.acceptEncoding, enc)
			continue
		}
		if diff := cmp.Diff(want, decode(b), protocmp.Transform(), same); diff != "" {
			t.Errorf("Accept-Encoding %q: answer differs from the uncompressed one (-want +got):\n%s", tc.acceptEncoding, diff)
		}
	}

	// A no-bid is 204 with no body, and no encoding.
	nobid := benchRequest()
	nobid.Imp[0].Banner.Format = []*personadpb.Format{{W: 1, H: 1}}
	nb, _ := protojson.Marshal(nobid)
	resp, b := rawPost(t, hs.URL, "gzip", string(nb))
	if resp.StatusCode != http.StatusNoContent || len(b) != 0 || resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("no-bid: status %d, Content-Encoding %q, body %q; want 204, none, empty", resp.StatusCode, resp.Header.Get("Content-Encoding"), b)
	}
	// An error answer is never compressed: JSON as it is.
	resp, b = rawPost(t, hs.URL, "gzip", `{"id":"r"}`)
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Encoding") != "" || !bytes.HasPrefix(b, []byte(`{"error":`)) {
		t.Errorf("invalid request: status %d, Content-Encoding %q, body %q; want 400, none, JSON", resp.StatusCode, resp.Header.Get("Content-Encoding"), b)
	}

	// An answer under gzipMinSize is sent as it is.
	h := newHarness(t, `
campaigns:
  - id: g
    advertiser: g
    adomain: [g.com]
    bid_cpm: 1.00
    targeting:
      all:
        - {facet: industry, any: [fintech]}
    creatives:
      - {id: c, w: 300, h: 250, adm: "<i>"}
`)
	small, _ := protojson.Marshal(request(userCMO))
	resp, b = rawPost(t, h.http.URL, "gzip", string(small))
	if resp.StatusCode != http.StatusOK || len(b) >= gzipMinSize || resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("small answer: status %d, %d bytes, Content-Encoding %q; want 200, under %d, none", resp.StatusCode, len(b), resp.Header.Get("Content-Encoding"), gzipMinSize)
	}
	decode(b)

	// HTTPGzip off: never compressed, no Vary.
	cfg := srv.cfg
	cfg.HTTPGzip, cfg.Metrics = false, nil
	off, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hsOff := httptest.NewServer(off.Handler())
	defer hsOff.Close()
	resp, b = rawPost(t, hsOff.URL, "gzip", string(body))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "" || resp.Header.Get("Vary") != "" {
		t.Errorf("HTTPGzip false: status %d, Content-Encoding %q, Vary %q; want 200, none, none", resp.StatusCode, resp.Header.Get("Content-Encoding"), resp.Header.Get("Vary"))
	}
	if diff := cmp.Diff(want, decode(b), protocmp.Transform(), same); diff != "" {
		t.Errorf("HTTPGzip false: answer differs (-want +got):\n%s", diff)
	}
}

// discardResponse is an http.ResponseWriter that keeps nothing but its
// header, reused between requests, so that allocation counts are the
// handler's.
type discardResponse struct {
	h    http.Header
	code int
	n    int
}

func (d *discardResponse) Header() http.Header  { return d.h }
func (d *discardResponse) WriteHeader(code int) { d.code = code }
func (d *discardResponse) Write(b []byte) (int, error) {
	d.n += len(b)
	return len(b), nil
}

// TestBidHTTPGzipAllocs: compressing an answer allocates nothing more
// than sending it as it is (pooled compressors, shared header values).
func TestBidHTTPGzipAllocs(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("allocation counts are not meaningful under -race or -cover")
	}
	srv := benchServer(t)
	handler := srv.Handler()
	body, err := protojson.Marshal(benchRequest())
	if err != nil {
		t.Fatal(err)
	}
	allocs := func(acceptEncoding string) (float64, *discardResponse) {
		rd := bytes.NewReader(body)
		req := httptest.NewRequest(http.MethodPost, PathBid, rd)
		req.Header.Set("Content-Type", "application/json")
		if acceptEncoding != "" {
			req.Header.Set("Accept-Encoding", acceptEncoding)
		}
		w := &discardResponse{h: http.Header{}}
		serve := func() {
			rd.Reset(body)
			clear(w.h)
			w.code, w.n = 0, 0
			handler.ServeHTTP(w, req.WithContext(context.Background()))
		}
		for range 2000 { // until the persona cache has admitted the user
			serve()
		}
		return allocsPerRun(1000, serve), w
	}
	plain, pw := allocs("")
	zipped, zw := allocs("gzip")
	t.Logf("allocations per answer: %.2f plain (%d bytes), %.2f gzip (%d bytes)", plain, pw.n, zipped, zw.n)
	if pw.code != 0 && pw.code != http.StatusOK || zw.h.Get("Content-Encoding") != "gzip" {
		t.Fatalf("plain status %d, gzip answer Content-Encoding %q: want 200 and gzip", pw.code, zw.h.Get("Content-Encoding"))
	}
	// A pooled compressor lost at a collection is made again now and
	// then, a fraction of an allocation per answer; one made per answer
	// adds at least one.
	if zipped-plain >= 0.5 {
		t.Errorf("a gzip answer took %.2f allocations, a plain one %.2f: compressing allocates", zipped, plain)
	}
}

// allocsPerRun is testing.AllocsPerRun without its rounding down to a
// whole number, which turns an average of 95.98 into 95 and of 96.01
// into 96: the mean number of allocations per call of f, over runs calls
// after one warm-up call, on one processor.
func allocsPerRun(runs int, f func()) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(runs)
}

// FuzzAcceptsGzip: any header parses without panic, and a list means the
// same sent on one header line or split over two at a comma.
func FuzzAcceptsGzip(f *testing.F) {
	for _, s := range []string{"gzip", "gzip;q=0, *", "br;q=1.0, gzip;q=0.8", "identity;q=0.5, gzip", "x-gzip;q=0.001", "*;q=0", ",;=,q"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		one := acceptsGzip([]string{header})
		for i := range len(header) {
			if header[i] != ',' {
				continue
			}
			if two := acceptsGzip([]string{header[:i], header[i+1:]}); two != one {
				t.Fatalf("%q on one line: %v; split at byte %d: %v", header, one, i, two)
			}
		}
	})
}
