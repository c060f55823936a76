package bidder

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/personad/personad/engine"
	"github.com/personad/personad/ledger"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

// Server answers bid requests on the gRPC and OpenRTB HTTP wires. It holds
// no goroutines of its own. A Server is safe for concurrent use.
type Server struct {
	personadpb.UnimplementedBidderServer

	cfg     Config
	eng     *engine.Engine
	log     *zap.Logger
	reg     *prometheus.Registry
	metrics *metrics
	health  *health.Server
	// healthSvc serves health as grpc.health.v1; stop ends its Watch
	// streams (Shutdown).
	healthSvc *healthService
	stop      context.CancelFunc
	// noticeURLs builds bids' nurl, burl and lurl; nil without a ledger.
	noticeURLs *noticeURLs

	// stopping is set by Shutdown: /healthz and grpc.health.v1 then answer
	// not serving so that load balancers drain the server.
	stopping atomic.Bool

	scratch sync.Pool // *scratch
}

// scratch is one request's engine Query and Decision, pooled.
type scratch struct {
	q engine.Query
	d engine.Decision
	// caps are the frequency caps the decision may ask a shared
	// frequency store about (warmFrequency).
	caps []ledger.FrequencyCap
}

// maxPooledTrace bounds the debug trace capacity a pooled scratch may keep:
// a debug request over a large rule set should not pin its trace forever.
const maxPooledTrace = 4096

// New returns a Server deciding with cfg.Engine. It validates cfg and keeps
// its own copy.
func New(cfg Config) (*Server, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// The caller's slice is not the Server's: /healthz reads it.
	cfg.Degraded = slices.Clone(cfg.Degraded)
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		eng:     cfg.Engine,
		log:     cfg.Logger.Named("bidder"),
		reg:     cfg.Metrics,
		metrics: m,
		health:  health.NewServer(),
	}
	stopped, stop := context.WithCancel(context.Background())
	s.healthSvc, s.stop = &healthService{Server: s.health, stopped: stopped}, stop
	if cfg.Ledger != nil {
		s.noticeURLs = newNoticeURLs(cfg.Ledger.Signer(), cfg.NoticeURL)
		if err := cfg.Metrics.Register(newLedgerCollector(cfg.Ledger, cfg.Now)); err != nil {
			return nil, err
		}
	}
	s.scratch.New = func() any { return new(scratch) }
	s.UpdateHealth()
	return s, nil
}

// Ready reports whether the server is serving: rules are loaded and
// Shutdown has not been called.
func (s *Server) Ready() bool { return !s.stopping.Load() && s.eng.Rules() != nil }

// UpdateHealth publishes Ready to grpc.health.v1, for the whole server ("")
// and for personad.v1.Bidder. Call it after loading rules.
func (s *Server) UpdateHealth() {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if s.Ready() {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(personadpb.Bidder_ServiceDesc.ServiceName, st)
}

// Shutdown marks the server not serving on /healthz and grpc.health.v1
// (for good: a later UpdateHealth does not undo it), and ends the
// grpc.health.v1 Watch streams once they have been sent NOT_SERVING, so
// that they do not hold a graceful stop. Requests are still answered;
// the caller then stops the transports.
func (s *Server) Shutdown() {
	s.stopping.Store(true)
	s.health.Shutdown()
	s.stop()
}

// Bid implements personad.v1.Bidder/Bid. The response shares read-only
// slices with the compiled rules: callers must not modify it.
func (s *Server) Bid(ctx context.Context, req *personadpb.BidRequest) (*personadpb.BidResponse, error) {
	resp, err := s.decide(ctx, req, wireGRPC, time.Now())
	if err != nil {
		return nil, grpcError(err)
	}
	return resp, nil
}

// decide is the request path both wires share: validate, translate, decide
// within the budget, answer. The budget runs from arrived, when the
// request reached the server: the HTTP wire's time reading and decoding
// the body counts against tmax. Its only errors are *ValidationError.
func (s *Server) decide(ctx context.Context, req *personadpb.BidRequest, w wire, arrived time.Time) (*personadpb.BidResponse, error) {
	m := s.metrics
	m.inFlight.Inc()
	defer m.inFlight.Dec()

	if err := validate(req, &s.cfg.Limits); err != nil {
		m.requests[w][outcomeInvalid].Inc()
		return nil, err
	}
	budget := s.budget(req.Tmax)
	if budget <= 0 {
		m.requests[w][outcomeNoBid].Inc()
		m.noBid(engine.ReasonDeadline)
		if req.GetExt().GetDebug() {
			return s.expired(req), nil
		}
		return noBidResponse(req, NbrTechnicalError), nil
	}
	deadline := arrived.Add(budget)

	sc := s.scratch.Get().(*scratch)
	defer s.putScratch(sc)
	translate(req, s.cfg.Now(), &sc.q)
	sc.q.Deadline = deadline // the caller's own, if earlier, wins through ctx
	if l := s.cfg.Ledger; l != nil && l.WarmsFrequency() {
		s.warmFrequency(ctx, l, sc, deadline)
	}
	start := time.Now()
	s.eng.Decide(ctx, &sc.q, &sc.d)
	m.latency.Observe(time.Since(start).Seconds())

	resp := buildResponse(req, &sc.d, s.cfg.Seat, s.noticeURLs)
	if len(resp.Seatbid) > 0 {
		m.requests[w][outcomeBid].Inc()
	} else {
		m.requests[w][outcomeNoBid].Inc()
		m.noBid(sc.d.NoBid)
	}
	return resp, nil
}

// warmFrequency has the ledger's shared frequency store (Redis) read the
// user's counts of the capped campaigns the decision may ask about
// (engine.FrequencyCaps) before the decision, which does no I/O and caps
// a user whose counts it does not hold. It waits until
// half of what is left before deadline has passed at most, leaving the
// decision the rest (the store bounds the wait further: redisledger
// FetchWait, 5 ms by default), or the caller's own deadline; what it does
// not read by then, the decision does without.
func (s *Server) warmFrequency(ctx context.Context, l *ledger.Ledger, sc *scratch, deadline time.Time) {
	q := &sc.q
	user := engine.UserKey(q)
	if user == 0 {
		return
	}
	sc.caps = s.eng.FrequencyCaps(q, sc.caps[:0])
	if len(sc.caps) == 0 {
		return
	}
	now := time.Now()
	left := deadline.Sub(now)
	if left <= 0 {
		return // the decision answers nbr 1 at once
	}
	wctx, cancel := context.WithDeadline(ctx, now.Add(left/2))
	_ = l.WarmFrequency(wctx, user, sc.caps, q.Now.UnixNano()) // counted in the store's stats
	cancel()
}

// expired answers a debug request whose tmax leaves no time after the
// network margin: a no-bid (nbr 1) whose ext.debug names the versions,
// channel and persona and gives every campaign the deadline stage, with
// the reason. Debug requests only: it allocates.
func (s *Server) expired(req *personadpb.BidRequest) *personadpb.BidResponse {
	sc := s.scratch.Get().(*scratch)
	defer s.putScratch(sc)
	translate(req, s.cfg.Now(), &sc.q)
	s.eng.Expired(&sc.q, &sc.d)
	detail := fmt.Sprintf("tmax %dms leaves no time after the network margin of %v", req.Tmax, s.cfg.NetworkMargin)
	for i := range sc.d.Trace {
		sc.d.Trace[i].Detail = detail
	}
	return buildResponse(req, &sc.d, s.cfg.Seat, s.noticeURLs)
}

// budget is the time one decision may take: tmax minus the network margin,
// capped by MaxBudget; tmax 0 means MaxBudget. The caller's own deadline,
// if earlier, wins through the context.
func (s *Server) budget(tmaxMillis int32) time.Duration {
	if tmaxMillis == 0 {
		return s.cfg.MaxBudget
	}
	return min(time.Duration(tmaxMillis)*time.Millisecond-s.cfg.NetworkMargin, s.cfg.MaxBudget)
}

// putScratch resets sc and returns it to the pool.
func (s *Server) putScratch(sc *scratch) {
	if cap(sc.d.Trace) > maxPooledTrace {
		return
	}
	sc.reset()
	s.scratch.Put(sc)
}

// reset empties sc for reuse, keeping capacity. It clears every string and
// pointer within capacity so that a pooled scratch pins neither an old
// request nor old rules.
func (sc *scratch) reset() {
	q := &sc.q
	clear(q.Facts[:cap(q.Facts)])
	imps := q.Imps[:cap(q.Imps)]
	for i := range imps {
		imps[i].ID, imps[i].FloorCur = "", ""
		imps[i].Sizes = imps[i].Sizes[:0]
	}
	clear(q.BCat[:cap(q.BCat)])
	clear(q.BAdv[:cap(q.BAdv)])
	clear(q.Currencies[:cap(q.Currencies)])
	q.Reset()

	d := &sc.d
	clear(d.Bids[:cap(d.Bids)])
	clear(d.Persona[:cap(d.Persona)])
	clear(d.Trace[:cap(d.Trace)])
	*d = engine.Decision{Bids: d.Bids[:0], Persona: d.Persona[:0], Trace: d.Trace[:0]}
}
