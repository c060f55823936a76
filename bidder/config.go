package bidder

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/personad/personad/engine"
	"github.com/personad/personad/ledger"
)

// Config configures a Server. Start from DefaultConfig; New copies it and
// never writes into the caller's value.
type Config struct {
	// Engine decides; required.
	Engine *engine.Engine
	// Logger receives startup, panic and shutdown events, never one line per
	// request. nil means no logging.
	Logger *zap.Logger
	// Metrics is where the server registers its collectors and what
	// /metrics serves. nil means a private registry.
	Metrics *prometheus.Registry
	// Now is the clock for flight windows. nil means time.Now.
	Now func() time.Time

	// NetworkMargin is subtracted from the request's tmax for the round trip
	// to the exchange. Default 10ms.
	NetworkMargin time.Duration
	// MaxBudget caps the time spent on one decision, whatever tmax says; it
	// is also the budget of a request with tmax 0. Default 50ms: a decision
	// takes microseconds, so anything near the cap means an overloaded
	// server that should answer no-bid rather than late.
	MaxBudget time.Duration
	// Seat is the seatbid.seat of every bid. Default "personad".
	Seat string

	// Ledger is the engine's ledger (engine.Config.Ledger), where notices
	// settle. With it, every bid carries nurl, burl and lurl with a signed
	// token, and the server also serves personad.v1.Notices and
	// personad.v1.Reports on gRPC and /notice/win, /notice/bill,
	// /notice/loss on HTTP. nil: bids carry no notice URLs.
	Ledger *ledger.Ledger
	// NoticeURL is the public base URL of the HTTP listener as exchanges
	// reach it, for example "http://bidder.example.com:8080"; the notice
	// URLs start with it. Required with Ledger.
	NoticeURL string

	// Degraded are the checks of other durable state the server's
	// process keeps (personad: the segment store's Store.LogErr): while
	// one returns an error, /healthz still answers 200 (bids are served)
	// with a line "degraded: " and the error, as for the Ledger's log.
	// None may be nil; New keeps a copy of the slice.
	Degraded []func() error

	// HTTPGzip compresses the answers of the OpenRTB JSON wire with gzip
	// when the request's Accept-Encoding accepts it (OpenRTB 2.6 §2.4):
	// a 200 answer of at least 256 bytes (a bid, or ext.debug), with
	// Content-Encoding: gzip and, on every 200 answer, Vary:
	// Accept-Encoding. A 204 no-bid has no body; error answers (about
	// 100 bytes of JSON) are never compressed. Default true.
	HTTPGzip bool

	// Limits bound what a request may carry.
	Limits Limits

	// Transport limits. MaxRecvMsgSize bounds a gRPC message and an HTTP
	// body (default 1 MiB; a large OpenRTB request is a few KiB). An extra
	// grpc.MaxRecvMsgSize option to GRPCServer (personad's, for rule sets)
	// raises grpc-go's limit for every method, as grpc-go has one; the
	// server's codec still refuses, undecoded, a request over
	// MaxRecvMsgSize of any method but Rules/Validate, Rules/Apply and
	// Segments/Upload (whose chunks have limits of their own).
	MaxRecvMsgSize       int
	MaxConcurrentStreams uint32        // per connection; default 1024
	MaxHeaderListSize    uint32        // gRPC header bytes; default 16 KiB
	KeepaliveMinTime     time.Duration // clients may ping at most this often; default 10s
	KeepaliveTime        time.Duration // server pings an idle connection after; default 1m
	KeepaliveTimeout     time.Duration // and closes it when no ack within; default 20s
	MaxConnectionIdle    time.Duration // closes connections idle this long; default 15m
}

// Limits bound a bid request; a request beyond any of them is invalid.
// The defaults are generous for real OpenRTB traffic and small enough that a
// hostile request cannot make a decision expensive. Publishers' block
// lists run to hundreds of categories and thousands of advertiser
// domains, and data providers' segments to hundreds. bcat and badv are
// scanned for each candidate's categories and domains, at under a
// nanosecond an entry (only an entry as long as the name or one of its
// parents is compared as text): a decision with the largest lists, 1024
// bcat and 4096 badv, took ~7.6µs where one with 3 of each took ~0.8µs
// (engine BenchmarkDecideBlocks, small world, on a 2-core VM; ~27µs
// before that scan, BENCHMARKS.md §1); the deadline bounds the worst case.
type Limits struct {
	MaxImps     int // imp entries; default 16
	MaxFormats  int // banner.format entries per impression; default 32
	MaxData     int // user.data entries; default 32
	MaxSegments int // user.data[].segment entries, all data together; default 1024
	MaxBCat     int // bcat entries; default 1024
	MaxBAdv     int // badv entries; default 4096
	MaxCur      int // cur entries; default 16
	MaxCat      int // site.cat or app.cat entries; default 64
	// MaxString bounds ids, names, domains, bundles, codes and segment
	// fields, in bytes; default 256.
	MaxString int
	// MaxLongString bounds site.page and device.ua, in bytes; default 4096.
	MaxLongString int
	// MaxDimension bounds banner widths and heights in pixels; default
	// 10000 (rules.MaxCreativeDimension).
	MaxDimension int32
	// MaxFloorCPM is no longer used: every finite imp.bidfloor >= 0 is
	// valid, and a floor no campaign can meet (rules.MaxBidCPM caps bids)
	// makes its impression a no-bid, not the request invalid (a floor of
	// 15000 in a currency such as IDR is an ordinary one).
	//
	// Deprecated: ignored; any value is accepted.
	MaxFloorCPM float64
}

// DefaultConfig returns the defaults documented on Config and Limits.
// Engine is left nil.
func DefaultConfig() Config {
	return Config{
		NetworkMargin: 10 * time.Millisecond,
		MaxBudget:     50 * time.Millisecond,
		Seat:          "personad",
		HTTPGzip:      true,
		Limits: Limits{
			MaxImps:       16,
			MaxFormats:    32,
			MaxData:       32,
			MaxSegments:   1024,
			MaxBCat:       1024,
			MaxBAdv:       4096,
			MaxCur:        16,
			MaxCat:        64,
			MaxString:     256,
			MaxLongString: 4096,
			MaxDimension:  10_000,
		},
		MaxRecvMsgSize:       1 << 20,
		MaxConcurrentStreams: 1024,
		MaxHeaderListSize:    16 << 10,
		KeepaliveMinTime:     10 * time.Second,
		KeepaliveTime:        time.Minute,
		KeepaliveTimeout:     20 * time.Second,
		MaxConnectionIdle:    15 * time.Minute,
	}
}

// check validates c, reporting every problem.
func (c *Config) check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("bidder: config: "+format, args...)) }
	if c.Engine == nil {
		bad("Engine is required")
	}
	if c.NetworkMargin < 0 {
		bad("NetworkMargin %v must be >= 0", c.NetworkMargin)
	}
	if c.MaxBudget <= 0 {
		bad("MaxBudget %v must be > 0", c.MaxBudget)
	}
	if c.Seat == "" {
		bad("Seat is required")
	}
	if c.Ledger != nil {
		if u, err := url.Parse(c.NoticeURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			bad("NoticeURL %q must be an absolute http or https URL without query", c.NoticeURL)
		}
	}
	for i, check := range c.Degraded {
		if check == nil {
			bad("Degraded[%d] is nil", i)
		}
	}
	if c.MaxRecvMsgSize <= 0 {
		bad("MaxRecvMsgSize must be > 0")
	}
	if c.MaxConcurrentStreams == 0 {
		bad("MaxConcurrentStreams must be > 0")
	}
	if c.MaxHeaderListSize == 0 {
		bad("MaxHeaderListSize must be > 0")
	}
	if c.KeepaliveMinTime <= 0 || c.KeepaliveTime <= 0 || c.KeepaliveTimeout <= 0 || c.MaxConnectionIdle <= 0 {
		bad("keepalive durations must be > 0")
	}
	l := &c.Limits
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxImps", l.MaxImps}, {"MaxFormats", l.MaxFormats}, {"MaxData", l.MaxData},
		{"MaxSegments", l.MaxSegments}, {"MaxBCat", l.MaxBCat}, {"MaxBAdv", l.MaxBAdv},
		{"MaxCur", l.MaxCur}, {"MaxCat", l.MaxCat}, {"MaxString", l.MaxString},
		{"MaxLongString", l.MaxLongString}, {"MaxDimension", int(l.MaxDimension)},
	} {
		if f.v <= 0 {
			bad("Limits.%s must be > 0", f.name)
		}
	}
	return errors.Join(errs...)
}
