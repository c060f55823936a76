package bench

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// Target is a pool of gRPC client connections to one Bidder server, used
// round robin by request index ([Dial]), or an HTTP client posting
// OpenRTB JSON to one ([DialHTTP]). It is safe for concurrent use.
type Target struct {
	addr    string
	conns   []*grpc.ClientConn
	clients []personadpb.BidderClient
	http    *httpWire
}

// Dial opens n connections to addr and waits until each is ready or ctx
// ends, so connection setup is never part of a measurement.
func Dial(ctx context.Context, addr string, n int) (*Target, error) {
	if n <= 0 {
		return nil, fmt.Errorf("bench: dial %s: connection count %d must be positive", addr, n)
	}
	t := &Target{addr: addr}
	for range n {
		// Each ClientConn is its own HTTP/2 connection; WithNoProxy keeps a
		// loopback benchmark from ever being routed through a proxy.
		cc, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithNoProxy())
		if err != nil {
			_ = t.Close()
			return nil, fmt.Errorf("bench: dial %s: %w", addr, err)
		}
		t.conns = append(t.conns, cc)
		t.clients = append(t.clients, personadpb.NewBidderClient(cc))
	}
	for _, cc := range t.conns {
		if err := waitReady(ctx, cc); err != nil {
			_ = t.Close()
			return nil, fmt.Errorf("bench: dial %s: %w", addr, err)
		}
	}
	return t, nil
}

func waitReady(ctx context.Context, cc *grpc.ClientConn) error {
	cc.Connect()
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.Shutdown:
			return errors.New("connection shut down")
		case connectivity.TransientFailure:
			// Keep waiting: the server may still be starting; ctx bounds it.
			cc.Connect()
		}
		if !cc.WaitForStateChange(ctx, s) {
			return fmt.Errorf("not ready (%v): %w", s, ctx.Err())
		}
	}
}

// Addr is the server address.
func (t *Target) Addr() string { return t.addr }

// Conns is the number of connections in the pool; over HTTP, the TCP
// connections opened so far.
func (t *Target) Conns() int {
	if t.http != nil {
		return int(t.http.conns.Load())
	}
	return len(t.conns)
}

// Wire is how requests are sent: [WireGRPC], [WireHTTP] or [WireHTTPGzip].
func (t *Target) Wire() string {
	switch {
	case t.http == nil:
		return WireGRPC
	case t.http.gzip:
		return WireHTTPGzip
	default:
		return WireHTTP
	}
}

// bid sends req, the request of index i, over the target's wire.
func (t *Target) bid(ctx context.Context, i uint64, req *personadpb.BidRequest) (*personadpb.BidResponse, error) {
	if t.http != nil {
		return t.http.bid(ctx, req)
	}
	return t.clients[i%uint64(len(t.clients))].Bid(ctx, req)
}

// Close closes every connection.
func (t *Target) Close() error {
	if t.http != nil {
		t.http.client.CloseIdleConnections()
		return nil
	}
	var errs []error
	for _, cc := range t.conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}
