package bench

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/personad/personad/bidder"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

// fakeHTTP serves POST /openrtb2/bid as personad's OpenRTB wire does,
// with fakeBidder's answers (a bid for users whose id ends in an even
// digit, else 204 with X-Personad-Nbr 8) except for users whose id ends
// in 9, answered 400. It checks each body decodes to a request of want
// (by id) and counts the answers it gzipped and the Accept-Encoding
// headers it saw.
type fakeHTTP struct {
	t        testing.TB
	want     map[string]*personadpb.BidRequest
	bidder   fakeBidder
	gzipped  atomic.Int64
	accepts  sync.Map // Accept-Encoding → struct{}
	mismatch atomic.Int64
}

func (f *fakeHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != HTTPPath || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "wrong method, path or type", http.StatusUnsupportedMediaType)
		return
	}
	f.accepts.Store(r.Header.Get("Accept-Encoding"), struct{}{})
	body, _ := io.ReadAll(r.Body)
	req := &personadpb.BidRequest{}
	if err := protojson.Unmarshal(body, req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !proto.Equal(req, f.want[req.GetId()]) {
		f.mismatch.Add(1)
	}
	if strings.HasSuffix(fakeUID(req), "9") {
		http.Error(w, `{"error":"bidder: user.buyeruid: no","field":"user.buyeruid","nbr":2}`, http.StatusBadRequest)
		return
	}
	resp, _ := f.bidder.Bid(r.Context(), req)
	if len(resp.GetSeatbid()) == 0 {
		w.Header().Set(headerNbr, strconv.Itoa(int(resp.GetNbr())))
		w.WriteHeader(http.StatusNoContent)
		return
	}
	out, _ := protojson.Marshal(resp)
	w.Header().Set("Content-Type", "application/json")
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		f.gzipped.Add(1)
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		zw.Write(out)
		zw.Close()
		return
	}
	w.Write(out)
}

// fakeUID is the user id fakeBidder reads.
func fakeUID(r *personadpb.BidRequest) string {
	if uid := r.GetUser().GetBuyeruid(); uid != "" {
		return uid
	}
	return r.GetUser().GetId()
}

// Over HTTP, every request of the pool is posted as its protojson and the
// answers are counted as over gRPC: bids, no-bids by the nbr header,
// error answers by status; with Gzip the answers come gzipped and decode.
func TestRunOpenHTTP(t *testing.T) {
	reqs := testPool(t, 100)
	var bids, nobids, bad int64
	f := &fakeHTTP{t: t, want: map[string]*personadpb.BidRequest{}}
	for _, r := range reqs {
		f.want[r.GetId()] = r
		uid := fakeUID(r)
		switch {
		case strings.HasSuffix(uid, "9"):
			bad++
		case uid != "" && strings.ContainsAny(uid[len(uid)-1:], "02468"):
			bids++
		default:
			nobids++
		}
	}
	if bids == 0 || nobids == 0 || bad == 0 {
		t.Fatalf("pool has %d bids, %d no-bids, %d errors: want some of each", bids, nobids, bad)
	}
	srv := httptest.NewServer(f)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, gz := range []bool{false, true} {
		f.gzipped.Store(0)
		f.accepts.Clear()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		tg, err := DialHTTP(ctx, addr, reqs, HTTPConfig{Gzip: gz, MaxConns: 200, Timeout: 10 * time.Second})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if len(tg.http.bodies) != len(reqs) {
			t.Errorf("%d bodies pre-encoded, want %d", len(tg.http.bodies), len(reqs))
		}
		// 200 requests at 1000/s: each of the pool's twice, none dropped
		// however slow the machine (-race) as all may be in flight at once.
		r, err := RunOpen(context.Background(), tg, reqs, OpenConfig{
			Options: Options{Duration: 200 * time.Millisecond, Timeout: 10 * time.Second}, Rate: 1000, MaxInFlight: 200})
		tg.Close()
		if err != nil {
			t.Fatal(err)
		}
		wire := WireHTTP
		if gz {
			wire = WireHTTPGzip
		}
		if r.Wire != wire || r.Addr != srv.URL+HTTPPath || r.Conns < 1 {
			t.Errorf("gzip %v: wire %q addr %q conns %d", gz, r.Wire, r.Addr, r.Conns)
		}
		if r.Completed != 200 || r.Bids != 2*bids || r.NoBid != 2*nobids || r.NoBids["8"] != 2*nobids ||
			r.Errors["HTTP 400"] != 2*bad || len(r.Errors) != 1 || r.OK != 2*(bids+nobids) {
			t.Errorf("gzip %v: completed %d ok %d bids %d nobids %d %v errors %v; want 200, %d bids, %d nbr 8, %d HTTP 400",
				gz, r.Completed, r.OK, r.Bids, r.NoBid, r.NoBids, r.Errors, 2*bids, 2*nobids, 2*bad)
		}
		// The answer's error, naming the field, is in the report.
		if got, want := r.ErrorSamples["HTTP 400"], "bidder: user.buyeruid: no"; got != want {
			t.Errorf("gzip %v: first HTTP 400 %q, want %q", gz, got, want)
		}
		if n := f.mismatch.Load(); n > 0 {
			t.Errorf("%d bodies did not decode to their request", n)
		}
		var seen []string
		f.accepts.Range(func(k, _ any) bool { seen = append(seen, k.(string)); return true })
		if want := map[bool]string{false: "", true: "gzip"}[gz]; len(seen) != 1 || seen[0] != want {
			t.Errorf("gzip %v: Accept-Encoding headers %q, want only %q", gz, seen, want)
		}
		if got := f.gzipped.Load(); (got == 2*bids) != gz || (got == 0) == gz {
			t.Errorf("gzip %v: %d answers gzipped", gz, got)
		}
		var sb strings.Builder
		if err := r.WriteText(&sb); err != nil || !strings.Contains(sb.String(), "OpenRTB JSON over HTTP/1.1") || !strings.Contains(sb.String(), "HTTP 400 ") {
			t.Errorf("text report (%v):\n%s", err, sb.String())
		}
	}
}

// A server that does not answer in time counts as DeadlineExceeded, its
// latency in the tail; one that is gone as Unavailable.
func TestHTTPTimeoutsAndRefusals(t *testing.T) {
	reqs := testPool(t, 10)
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	tg, err := DialHTTP(context.Background(), srv.URL, reqs, HTTPConfig{MaxConns: 8, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	r, err := RunClosed(context.Background(), tg, reqs, ClosedConfig{
		Options: Options{Duration: 100 * time.Millisecond, Timeout: 50 * time.Millisecond}, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors["DeadlineExceeded"] == 0 || r.Errors["DeadlineExceeded"] != r.Completed || r.Latency.Count != r.Completed {
		t.Errorf("errors %v, completed %d, latencies %d: want every call DeadlineExceeded and timed", r.Errors, r.Completed, r.Latency.Count)
	}

	gone := httptest.NewServer(http.NotFoundHandler())
	u := gone.URL
	tg2, err := DialHTTP(context.Background(), u, reqs, HTTPConfig{MaxConns: 8, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer tg2.Close()
	gone.Close()
	if _, err := tg2.bid(context.Background(), 0, reqs[0]); err == nil || !strings.Contains(err.Error(), "Unavailable") {
		t.Errorf("bid to a closed server: %v, want Unavailable", err)
	}
}

func TestBidURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080":                 "http://127.0.0.1:8080/openrtb2/bid",
		"http://10.0.0.1:80":             "http://10.0.0.1:80/openrtb2/bid",
		"http://lb.example/exchange/bid": "http://lb.example/exchange/bid",
		"https://lb.example:8443/x":      "https://lb.example:8443/x",
		"localhost":                      "",
		"http://":                        "",
		"ftp://host:21/x":                "",
	} {
		got, err := BidURL(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("BidURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestHTTPAnswerBounded: an answer over maxAnswerSize, as sent or once
// decompressed (a 64 MB gzip bomb of 64 KB), fails the request with
// ResourceExhausted, as over gRPC, rather than being read whole.
func TestHTTPAnswerBounded(t *testing.T) {
	reqs := testPool(t, 1)
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	zw.Write(make([]byte, 64<<20))
	zw.Close()
	for name, h := range map[string]http.HandlerFunc{
		"plain": func(w http.ResponseWriter, r *http.Request) {
			w.Write(bytes.Repeat([]byte(" "), maxAnswerSize+1))
		},
		"gzip": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(bomb.Bytes())
		},
		"error status": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			w.Write(bytes.Repeat([]byte("x"), 2*maxAnswerSize))
		},
	} {
		srv := httptest.NewServer(h)
		tg, err := DialHTTP(context.Background(), srv.URL, reqs, HTTPConfig{Gzip: true, MaxConns: 1, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		_, err = tg.bid(context.Background(), 0, reqs[0])
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("%s: %v, want ResourceExhausted", name, err)
		}
		tg.Close()
		srv.Close()
	}
	// An answer at the bound is read.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"id": "x"}`))
		w.Write(bytes.Repeat([]byte(" "), maxAnswerSize-len(`{"id": "x"}`)))
	}))
	defer srv.Close()
	tg, err := DialHTTP(context.Background(), srv.URL, reqs, HTTPConfig{MaxConns: 1, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if resp, err := tg.bid(context.Background(), 0, reqs[0]); err != nil || resp.GetId() != "x" {
		t.Errorf("answer of maxAnswerSize bytes: %v, %v", resp, err)
	}
}

// TestHTTPAnswerBadGzip: a gzip answer that does not decode (no gzip
// header, a bad checksum, corrupt data) is the server's fault, counted
// Internal as a 200 whose JSON does not decode, not Unavailable (a
// failed connection).
func TestHTTPAnswerBadGzip(t *testing.T) {
	reqs := testPool(t, 1)
	var good bytes.Buffer
	zw := gzip.NewWriter(&good)
	zw.Write([]byte(`{"id": "x"}`))
	zw.Close()
	badSum := bytes.Clone(good.Bytes())
	badSum[len(badSum)-5] ^= 0xff // the CRC-32 in the trailer
	corrupt := bytes.Clone(good.Bytes())
	corrupt[10] = 0xff // the first deflate block's header: a reserved type
	for name, body := range map[string][]byte{
		"not gzip":     []byte(`{"id": "x"}`),
		"bad checksum": badSum,
		"corrupt":      corrupt,
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(body)
		}))
		tg, err := DialHTTP(context.Background(), srv.URL, reqs, HTTPConfig{Gzip: true, MaxConns: 1, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tg.bid(context.Background(), 0, reqs[0]); status.Code(err) != codes.Internal {
			t.Errorf("%s: %v, want Internal", name, err)
		}
		tg.Close()
		srv.Close()
	}
}

// TestHTTPNamesMatchTheServer: the harness writes the bid path and the
// no-bid header again rather than link the server; they must stay the
// server's.
func TestHTTPNamesMatchTheServer(t *testing.T) {
	if HTTPPath != bidder.PathBid || headerNbr != bidder.HeaderNbr {
		t.Errorf("bench has %q and %q, the server %q and %q", HTTPPath, headerNbr, bidder.PathBid, bidder.HeaderNbr)
	}
}
