package bidder

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// healthService is grpc.health.v1.Health: grpc-go's health server, whose
// Watch streams also end once Shutdown has told them NOT_SERVING.
// grpc-go's own Watch runs until its client goes away, and
// grpc.Server.GracefulStop waits for every stream: a load balancer or
// health checker watching the server (grpc-health-probe, Envoy, gRPC
// clients' health checking) held every graceful stop for the whole
// --shutdown-timeout, however idle the server. The watcher still sees
// NOT_SERVING first, then UNAVAILABLE, as from a server going away.
// It is safe for concurrent use.
type healthService struct {
	*health.Server // Check, List and the statuses
	// stopped is done once Shutdown has set every status NOT_SERVING.
	stopped context.Context
}

func (h *healthService) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	w := &endingWatch{Health_WatchServer: stream, ctx: ctx, end: cancel, stopped: h.stopped}
	// A status that is not SERVING when the stop comes (no rules loaded,
	// an unknown service) is all the watcher will hear: end at once.
	// Otherwise Send ends the stream once NOT_SERVING is sent.
	stop := context.AfterFunc(h.stopped, w.endUnlessServing)
	defer stop()
	err := h.Server.Watch(req, w)
	if stream.Context().Err() == nil && h.stopped.Err() != nil {
		return status.Error(codes.Unavailable, "bidder: shutting down")
	}
	return err
}

// endingWatch is a Watch stream whose context ends once the server is
// stopping and the last status sent is not SERVING.
type endingWatch struct {
	healthpb.Health_WatchServer
	ctx     context.Context
	end     context.CancelFunc
	stopped context.Context

	mu   sync.Mutex
	sent bool // a status was sent, last
	last healthpb.HealthCheckResponse_ServingStatus
}

func (w *endingWatch) Context() context.Context { return w.ctx }

func (w *endingWatch) Send(r *healthpb.HealthCheckResponse) error {
	err := w.Health_WatchServer.Send(r)
	w.mu.Lock()
	w.sent, w.last = true, r.GetStatus()
	w.mu.Unlock()
	if err == nil && w.stopped.Err() != nil {
		w.endUnlessServing()
	}
	return err
}

func (w *endingWatch) endUnlessServing() {
	w.mu.Lock()
	serving := !w.sent || w.last == healthpb.HealthCheckResponse_SERVING
	w.mu.Unlock()
	if !serving {
		w.end()
	}
}
