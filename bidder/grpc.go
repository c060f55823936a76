package bidder

import (
	"context"
	"fmt"
	"runtime"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// GRPCServer returns a gRPC server with personad.v1.Bidder (and, with a
// Ledger, personad.v1.Notices and personad.v1.Reports), grpc.health.v1
// and server reflection registered, a panic-recovery interceptor on unary
// and stream calls, and the transport limits of the Config: receive size,
// concurrent streams per connection, header list size, keepalive
// enforcement and parameters, and the codec of rulescodec.go. extra options are appended (tests add
// nothing; other services register on the returned server).
// The caller owns the server: Serve, GracefulStop, Stop.
func (s *Server) GRPCServer(extra ...grpc.ServerOption) *grpc.Server {
	c := &s.cfg
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(c.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(c.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(c.MaxHeaderListSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             c.KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: c.MaxConnectionIdle,
			Time:              c.KeepaliveTime,
			Timeout:           c.KeepaliveTimeout,
		}),
		// Serve streams on a fixed pool of worker goroutines instead of a
		// new goroutine per RPC: a worker's stack has already grown to what
		// a decision needs, so RPCs do not pay for stack growth and copying
		// (measured: ~8% of the server's CPU under load without it). When
		// every worker is busy grpc-go falls back to a new goroutine.
		grpc.NumStreamWorkers(uint32(4 * runtime.GOMAXPROCS(0))),
		// grpc-go's proto codec, but a large Rules request's campaigns are
		// decoded on every CPU, and a request of another method over
		// MaxRecvMsgSize is refused undecoded when an extra option raised
		// the server's limit for rule sets (rulescodec.go).
		grpc.ForceServerCodecV2(newServerCodec(c.MaxRecvMsgSize)),
		// Stop, like GracefulStop, returns only once every handler has:
		// what shutdown closes after it (the segment store, the ledger)
		// is no longer in use.
		grpc.WaitForHandlers(true),
		grpc.ChainUnaryInterceptor(s.recoverUnary),
		grpc.ChainStreamInterceptor(s.recoverStream),
	}
	gs := grpc.NewServer(append(opts, extra...)...)
	// Bidder, Notices and Reports as generated, but a request that is
	// not valid protobuf is INVALID_ARGUMENT, counted (malformed.go).
	gs.RegisterService(bidderDesc, s)
	if s.cfg.Ledger != nil {
		gs.RegisterService(noticesDesc, &noticesService{s: s})
		gs.RegisterService(reportsDesc, &reportsService{s: s})
	}
	healthpb.RegisterHealthServer(gs, s.healthSvc)
	reflection.Register(gs)
	return gs
}

// recoverUnary turns a panic in a handler into codes.Internal, logged and
// counted; the server keeps serving.
func (s *Server) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.panicked("grpc", info.FullMethod, r)
			if info.FullMethod == personadpb.Bidder_Bid_FullMethodName {
				s.metrics.requests[wireGRPC][outcomeError].Inc()
			}
			resp, err = nil, grpcError(ErrInternal)
		}
	}()
	return handler(ctx, req)
}

func (s *Server) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.panicked("grpc", info.FullMethod, r)
			err = grpcError(ErrInternal)
		}
	}()
	return handler(srv, ss)
}

// panicked logs and counts a recovered panic. Only the method and the
// panic are logged, never the request (it may carry user ids).
func (s *Server) panicked(wire, method string, r any) {
	s.metrics.panics.Inc()
	s.log.Error("panic serving request",
		zap.String("wire", wire),
		zap.String("method", method),
		zap.String("panic", fmt.Sprint(r)),
		zap.StackSkip("stack", 2))
}
