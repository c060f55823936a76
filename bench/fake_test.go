package bench

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// fakeBidder answers after delay; with serial, one request at a time (a
// server with a single worker, so queueing builds up past its capacity).
// Users whose id ends in an even digit get a bid, the others nbr 8.
type fakeBidder struct {
	personadpb.UnimplementedBidderServer
	delay  time.Duration
	serial bool
	mu     sync.Mutex
}

func (f *fakeBidder) Bid(ctx context.Context, req *personadpb.BidRequest) (*personadpb.BidResponse, error) {
	if f.serial {
		f.mu.Lock()
		defer f.mu.Unlock()
	}
	if f.delay > 0 {
		t := time.NewTimer(f.delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	uid := req.GetUser().GetBuyeruid()
	if uid == "" {
		uid = req.GetUser().GetId()
	}
	if uid != "" && strings.ContainsAny(uid[len(uid)-1:], "02468") {
		return &personadpb.BidResponse{Id: req.GetId(), Seatbid: []*personadpb.SeatBid{{
			Bid: []*personadpb.Bid{{Id: "b1", Impid: req.GetImp()[0].GetId(), Price: 1.5, Crid: "cr1"}}}}}, nil
	}
	return &personadpb.BidResponse{Id: req.GetId(), Nbr: 8}, nil
}

// startFake serves impl on a loopback port and dials it with conns
// connections; both are closed when the test ends.
func startFake(t testing.TB, impl personadpb.BidderServer, conns int) *Target {
	t.Helper()
	srv, err := StartServer("127.0.0.1:0", impl)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tg, err := Dial(ctx, srv.Addr(), conns)
	if err != nil {
		_ = srv.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tg.Close(); err != nil {
			t.Error(err)
		}
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	return tg
}

func testPool(t testing.TB, n int) []*personadpb.BidRequest {
	t.Helper()
	w, err := NewWorkload(DefaultWorkloadConfig())
	if err != nil {
		t.Fatal(err)
	}
	return w.Pool(n)
}
