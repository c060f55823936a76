package bench

import (
	"context"
	"testing"
	"time"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

func TestBaselineEchoesID(t *testing.T) {
	srv, err := StartBaseline("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tg, err := Dial(ctx, srv.Addr(), 1)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tg.bid(ctx, 0, &personadpb.BidRequest{Id: "req-42"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetId() != "req-42" || len(resp.GetSeatbid()) != 0 || resp.GetNbr() != 0 {
		t.Errorf("response %v, want only the id echoed", resp)
	}
	if err := tg.Close(); err != nil {
		t.Error(err)
	}
	if err := srv.Close(); err != nil {
		t.Error(err)
	}
}

func TestDialFailsFast(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	// Nothing listens on port 1 of loopback.
	if _, err := Dial(ctx, "127.0.0.1:1", 1); err == nil {
		t.Error("dial to a closed port succeeded")
	}
	if _, err := Dial(ctx, "127.0.0.1:1", 0); err == nil {
		t.Error("zero connections accepted")
	}
}
