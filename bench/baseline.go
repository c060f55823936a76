package bench

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// EmptyBidder is the transport floor: it answers every request with an
// empty BidResponse echoing the request id, doing no work. Safe for
// concurrent use.
type EmptyBidder struct {
	personadpb.UnimplementedBidderServer
}

// Bid answers an empty response.
func (EmptyBidder) Bid(_ context.Context, req *personadpb.BidRequest) (*personadpb.BidResponse, error) {
	return &personadpb.BidResponse{Id: req.GetId()}, nil
}

// Baseline is a running gRPC server with an [EmptyBidder]. Close stops it.
type Baseline struct {
	srv  *grpc.Server
	lis  net.Listener
	done chan error
}

// StartBaseline listens on addr (127.0.0.1:0 picks a free port) and serves
// an [EmptyBidder] with grpc-go's default server settings, which is what
// the ratio to the transport floor is taken against.
func StartBaseline(addr string) (*Baseline, error) {
	return StartServer(addr, EmptyBidder{})
}

// StartServer serves impl on addr until Close; tests use it for fake
// servers.
func StartServer(addr string, impl personadpb.BidderServer) (*Baseline, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bench: baseline: %w", err)
	}
	srv := grpc.NewServer()
	personadpb.RegisterBidderServer(srv, impl)
	b := &Baseline{srv: srv, lis: lis, done: make(chan error, 1)}
	go func() { b.done <- srv.Serve(lis) }()
	return b, nil
}

// Addr is the address the server listens on.
func (b *Baseline) Addr() string { return b.lis.Addr().String() }

// Close stops the server, cutting calls in flight, and waits for it.
func (b *Baseline) Close() error {
	b.srv.Stop()
	if err := <-b.done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("bench: baseline: %w", err)
	}
	return nil
}
