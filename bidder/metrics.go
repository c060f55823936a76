package bidder

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/personad/personad/engine"
)

// Label values. Every label is bounded: no user, request or campaign ids.
type wire uint8

const (
	wireGRPC wire = iota
	wireHTTP
	numWires
)

var wireNames = [numWires]string{"grpc", "http"}

type outcome uint8

const (
	outcomeBid outcome = iota
	outcomeNoBid
	outcomeInvalid
	outcomeError
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"bid", "nobid", "invalid", "error"}

// noBidReasons are the reason label values: the engine's reasons.
var noBidReasons = []engine.Reason{
	engine.ReasonUnmatchedUser, engine.ReasonNoEligible, engine.ReasonDeadline, engine.ReasonNoRules,
}

// metrics holds the server's collectors with every label child resolved
// up front, so that counting a request is a few atomic adds.
type metrics struct {
	requests [numWires][numOutcomes]prometheus.Counter
	noBids   map[engine.Reason]prometheus.Counter
	latency  prometheus.Histogram
	inFlight prometheus.Gauge
	panics   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "personad_bid_requests_total",
		Help: "Bid requests answered, by wire (grpc, http) and outcome (bid, nobid, invalid, error).",
	}, []string{"wire", "outcome"})
	noBids := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "personad_bid_nobids_total",
		Help: "No-bids by engine reason (unmatched_user, no_eligible, deadline, no_rules, unknown).",
	}, []string{"reason"})
	m := &metrics{
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "personad_decision_duration_seconds",
			Help: "Time the engine spent deciding one bid request.",
			// 10µs doubling to ~164ms: the decision's target is tens of
			// microseconds; the tail shows the deadline at work.
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 15),
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "personad_bid_requests_in_flight",
			Help: "Bid requests being answered now.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "personad_panics_recovered_total",
			Help: "Panics recovered while serving a request (gRPC or HTTP); each is logged.",
		}),
		noBids: make(map[engine.Reason]prometheus.Counter, len(noBidReasons)+1),
	}
	for w := range numWires {
		for o := range numOutcomes {
			m.requests[w][o] = requests.WithLabelValues(wireNames[w], outcomeNames[o])
		}
	}
	for _, r := range noBidReasons {
		m.noBids[r] = noBids.WithLabelValues(r.String())
	}
	m.noBids[engine.ReasonNone] = noBids.WithLabelValues("unknown")
	for _, c := range []prometheus.Collector{requests, noBids, m.latency, m.inFlight, m.panics} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) noBid(r engine.Reason) {
	c, ok := m.noBids[r]
	if !ok {
		c = m.noBids[engine.ReasonNone]
	}
	c.Inc()
}
