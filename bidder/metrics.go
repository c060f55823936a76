package bidder

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/personad/personad/engine"
	"github.com/personad/personad/ledger"
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
	notices  [numWires][numKinds][numNoticeOutcomes]prometheus.Counter
}

// noticeOutcome is the outcome label of a notice.
type noticeOutcome uint8

const (
	noticeOK          noticeOutcome = iota // applied, or a replay that changed nothing
	noticeForged                           // bad token signature or format
	noticeUnknownBid                       // no such bid in the ledger
	noticeBadPrice                         // missing, non-numeric, negative or above the bid
	noticeConflict                         // a bill at another price than an earlier bill
	noticeInvalid                          // another malformed parameter (token missing, loss reason)
	noticeUnavailable                      // the ledger is closing or cannot write its log, or the caller gave up
	noticeError                            // anything else
	numNoticeOutcomes
)

var noticeOutcomeNames = [numNoticeOutcomes]string{
	"ok", "forged", "unknown_bid", "bad_price", "conflict", "invalid", "unavailable", "error",
}

func classifyNotice(err error) noticeOutcome {
	var ve *ValidationError
	switch {
	case err == nil:
		return noticeOK
	case errors.Is(err, ledger.ErrForged):
		return noticeForged
	case errors.Is(err, ledger.ErrUnknownBid):
		return noticeUnknownBid
	case errors.Is(err, ledger.ErrPrice), errors.As(err, &ve) && ve.Path == "price":
		return noticeBadPrice
	case errors.Is(err, ledger.ErrConflict):
		return noticeConflict
	case ve != nil:
		return noticeInvalid
	case errors.Is(err, ledger.ErrClosed), errors.Is(err, ledger.ErrNotDurable),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return noticeUnavailable
	}
	return noticeError
}

func (m *metrics) notice(w wire, k noticeKind, err error) {
	m.notices[w][k][classifyNotice(err)].Inc()
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
	notices := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "personad_notices_total",
		Help: "Win, billing and loss notices by wire (grpc, http), kind (win, bill, loss; a loss notice with reason 0, \"Bid Won\", counts as the win it is taken as) and outcome (ok, forged, unknown_bid, bad_price, conflict, invalid, unavailable, error). Replays are ok: see personad_ledger_events_total{event=\"duplicate\"}.",
	}, []string{"wire", "kind", "outcome"})
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
	for w := range numWires {
		for k := range numKinds {
			for o := range numNoticeOutcomes {
				m.notices[w][k][o] = notices.WithLabelValues(wireNames[w], kindNames[k], noticeOutcomeNames[o])
			}
		}
	}
	for _, r := range noBidReasons {
		m.noBids[r] = noBids.WithLabelValues(r.String())
	}
	m.noBids[engine.ReasonNone] = noBids.WithLabelValues("unknown")
	for _, c := range []prometheus.Collector{requests, noBids, notices, m.latency, m.inFlight, m.panics} {
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

// ledgerCollector exports the ledger's event counts (ledger.Stats) as
// personad_ledger_events_total{event}, and the money its open
// reservations hold per currency as personad_ledger_reserved_micros,
// read at scrape time.
type ledgerCollector struct {
	l                        *ledger.Ledger
	now                      func() time.Time
	desc, unknownB, reserved *prometheus.Desc
	logFailures, logFailing  *prometheus.Desc
}

func newLedgerCollector(l *ledger.Ledger, now func() time.Time) *ledgerCollector {
	return &ledgerCollector{l: l, now: now,
		desc: prometheus.NewDesc("personad_ledger_events_total",
			"Ledger events since start (replay of the durable log included): reserved, refused_budget, refused_lease, "+
				"refused_frequency, win, bill, loss, expired, expired_won, duplicate (replayed notices), conflict, "+
				"unknown, bad_price, late_bill, forged, lease_failure.",
			[]string{"event"}, nil),
		unknownB: prometheus.NewDesc("personad_ledger_unknown_billed_micros_total",
			"Clearing prices, in micro-units of the bids' currencies, of the bills for bids the ledger no longer remembers "+
				"(billed more than its retention after the reservation's deadline, or lost in a crash): charged by the exchange, counted in no campaign's spend. "+
				"Summed over currencies: such a bill's currency is not known (the notice token does not carry it), so read it as a count of trouble, not as money.",
			nil, nil),
		reserved: prometheus.NewDesc("personad_ledger_reserved_micros",
			"Money held by open reservations (bids neither billed, lost nor expired), in micro-units of the campaigns' currency, one series per currency "+
				"(\""+ledger.NoCurrency+"\": campaigns the ledger recorded no currency for).",
			[]string{"currency"}, nil),
		logFailures: prometheus.NewDesc("personad_ledger_log_write_failures_total",
			"Writes of the embedded ledger's durable log, and creations of its next segment, that failed (a full or read-only disk), one a batch; the records are kept and written again with the next batch or within a second.",
			nil, nil),
		logFailing: prometheus.NewDesc("personad_ledger_log_failing",
			"1 while the embedded ledger's durable log cannot be written (notices and budget leases are then refused, UNAVAILABLE / 503; the log line \"ledger log not durable\" names the file and the error), else 0.",
			nil, nil),
	}
}

func (c *ledgerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.unknownB
	ch <- c.reserved
	ch <- c.logFailures
	ch <- c.logFailing
}

func (c *ledgerCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.l.Stats()
	for _, e := range []struct {
		name string
		v    int64
	}{
		{"reserved", st.Reserved}, {"refused_budget", st.RefusedBudget}, {"refused_lease", st.RefusedLease},
		{"refused_frequency", st.RefusedFrequency}, {"win", st.Wins}, {"bill", st.Bills}, {"loss", st.Losses},
		{"expired", st.Expired}, {"expired_won", st.ExpiredWon}, {"duplicate", st.Duplicates},
		{"conflict", st.Conflicts}, {"unknown", st.Unknown}, {"bad_price", st.BadPrice}, {"late_bill", st.Late},
		{"forged", st.Forged}, {"lease_failure", st.LeaseFailures},
	} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(e.v), e.name)
	}
	ch <- prometheus.MustNewConstMetric(c.unknownB, prometheus.CounterValue, float64(st.UnknownBilledMicros))
	ch <- prometheus.MustNewConstMetric(c.logFailures, prometheus.CounterValue, float64(st.LogWriteFailures))
	failing := 0.0
	if c.l.LogErr() != nil {
		failing = 1
	}
	ch <- prometheus.MustNewConstMetric(c.logFailing, prometheus.GaugeValue, failing)
	// Per currency, never summed across currencies.
	reserved := map[string]int64{}
	for _, r := range c.l.Report(c.now()) {
		reserved[ledger.CurrencyLabel(r.Currency)] += r.ReservedMicros
	}
	for cur, v := range reserved {
		ch <- prometheus.MustNewConstMetric(c.reserved, prometheus.GaugeValue, float64(v), cur)
	}
}
