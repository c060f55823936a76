package bidder

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/engine"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/segments"
)

// benchServer is a Server on the small generated world.
func benchServer(b testing.TB) *Server {
	b.Helper()
	w, err := world.Generate(world.SmallConfig())
	if err != nil {
		b.Fatal(err)
	}
	r, err := engine.Compile(w.Rules, "")
	if err != nil {
		b.Fatal(err)
	}
	eng, err := engine.New(engine.DefaultConfig(), segments.NewStore(w.Segments))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(eng.Close)
	eng.SetRules(r)
	cfg := DefaultConfig()
	cfg.Engine = eng
	srv, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return srv
}

func benchRequest() *personadpb.BidRequest {
	return &personadpb.BidRequest{
		Id:   "bench-1",
		Tmax: 100,
		Imp: []*personadpb.Imp{{Id: "1", Bidfloor: 0.5, Banner: &personadpb.Banner{
			Format: []*personadpb.Format{{W: 300, H: 250}, {W: 728, H: 90}}}}},
		Site: &personadpb.Site{Domain: "linkedin.com", Ext: &personadpb.DistributionExt{Channel: "social"}},
		User: &personadpb.User{Buyeruid: world.UserID(7)},
	}
}

// BenchmarkBid measures the bidder's whole request path in process:
// validation, translation, deadline, decision, response and metrics —
// everything but the transport.
func BenchmarkBid(b *testing.B) {
	srv := benchServer(b)
	req := benchRequest()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := srv.Bid(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBidLoopback measures Bid over a real loopback gRPC connection,
// on the server personad runs (interceptors, limits, health, reflection),
// next to an empty handler on a default grpc-go server
// (BenchmarkEmptyLoopback): their ratio is the cost of personad relative
// to the transport floor. Compare the two with benchstat.
func BenchmarkBidLoopback(b *testing.B) {
	loopback(b, benchServer(b).GRPCServer())
}

func BenchmarkEmptyLoopback(b *testing.B) {
	gs := grpc.NewServer()
	personadpb.RegisterBidderServer(gs, emptyBidder{})
	loopback(b, gs)
}

type emptyBidder struct {
	personadpb.UnimplementedBidderServer
}

func (emptyBidder) Bid(_ context.Context, req *personadpb.BidRequest) (*personadpb.BidResponse, error) {
	return &personadpb.BidResponse{Id: req.Id}, nil
}

func loopback(b *testing.B, gs *grpc.Server) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go gs.Serve(l)
	defer gs.Stop()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := personadpb.NewBidderClient(conn)
	req := benchRequest()
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.Bid(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestBidAllocs pins what a whole Bid costs in allocations, wire to wire
// but for the transport: the engine's decision allocates nothing
// (engine/alloc_test.go) and the latency budget is a field of the Query
// (context.WithTimeout cost 4); what remains is the response (1 for a
// no-bid: BidResponse; 6 for one bid: BidResponse, the
// seatbid slice, SeatBid, the bid slice, Bid, the bid id string). With
// the server's default durable ledger and notice URLs (two bids, one per
// impression, each answered by a loss) the round is pinned as measured.
func TestBidAllocs(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("allocation counts are not meaningful under -race or -cover")
	}
	srv := benchServer(t)
	bid := benchRequest()
	nobid := benchRequest()
	nobid.Imp[0].Banner.Format = []*personadpb.Format{{W: 1, H: 1}}
	for _, tc := range []struct {
		name   string
		req    *personadpb.BidRequest
		budget float64
	}{{"bid", bid, 6}, {"no bid", nobid, 1}} {
		if resp, err := srv.Bid(context.Background(), tc.req); err != nil || (tc.name == "bid") != (len(resp.Seatbid) > 0) {
			t.Fatalf("%s: %v, %v", tc.name, resp, err)
		}
		for range 2000 { // until the persona cache has admitted the user
			srv.Bid(context.Background(), tc.req)
		}
		got := testing.AllocsPerRun(1000, func() { srv.Bid(context.Background(), tc.req) })
		t.Logf("%s: %v allocations per Bid", tc.name, got)
		if got > tc.budget {
			t.Errorf("%s: %v allocations per Bid, budget %v", tc.name, got, tc.budget)
		}
	}

	l := newLedger(t, t.TempDir())
	defer l.Close()
	h := newMoneyHarness(t, moneyRules, l)
	req := moneyRequest("allocs")
	// Each bid is answered by a loss notice, as exchanges do, so that the
	// campaigns' leases are not spent and every round bids.
	bids := 0
	round := func() {
		resp, err := h.srv.Bid(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		for _, sb := range resp.Seatbid {
			for _, b := range sb.Bid {
				bids++
				id, err := strconv.ParseUint(b.Id, 16, 64)
				if err != nil || b.Nurl == "" {
					t.Fatalf("bid %q: %v, nurl %q", b.Id, err, b.Nurl)
				}
				if err := l.Loss(context.Background(), id, time.Now().UnixNano()); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for range 300 { // each loss waits for the journal's group commit
		round()
	}
	bids = 0
	got := testing.AllocsPerRun(200, round)
	t.Logf("ledger: %v allocations per Bid and its two losses, %d bids in %d rounds", got, bids, 201)
	if bids != 2*201 {
		t.Fatalf("%d bids in 201 rounds, want two each: the money path did not bid throughout", bids)
	}
	// Measured (pprof -memprofilerate 1): the two bids' response 8 (as
	// the no-ledger bid's 6 for one), their notice URL strings 2, each
	// loss's group commit 1 (the broadcast channel), and ~3 for the
	// reservation shards' due heaps and maps growing from empty in this
	// short run (256 shards; amortised away in a server that has been up a
	// while): 15 a round; 17 leaves slack for the tables' growth.
	if got > 17 {
		t.Errorf("ledger: %v allocations per round, budget 17", got)
	}
}

// BenchmarkBidHTTP is BenchmarkBid over the OpenRTB JSON wire's handler
// (JSON in and out, no socket), its answer not compressed (no
// Accept-Encoding).
func BenchmarkBidHTTP(b *testing.B) {
	benchBidHTTP(b, "")
}

// BenchmarkBidHTTPGzip is BenchmarkBidHTTP for an exchange that sends
// Accept-Encoding: gzip: its answer (~850 bytes) is compressed.
func BenchmarkBidHTTPGzip(b *testing.B) {
	benchBidHTTP(b, "gzip")
}

func benchBidHTTP(b *testing.B, acceptEncoding string) {
	srv := benchServer(b)
	body, err := protojson.Marshal(benchRequest())
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	rd := bytes.NewReader(body)
	req := httptest.NewRequest(http.MethodPost, PathBid, rd)
	req.Header.Set("Content-Type", "application/json")
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
		if got := w.Header().Get("Content-Encoding"); (got == "gzip") != (acceptEncoding == "gzip") {
			b.Fatalf("Accept-Encoding %q: Content-Encoding %q", acceptEncoding, got)
		}
	}
}
