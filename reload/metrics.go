package reload

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/personad/personad/engine"
)

type outcome uint8

const (
	outcomeApplied outcome = iota
	outcomeUnchanged
	outcomeRejected
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"applied", "unchanged", "rejected"}

var sources = []Source{SourceFile, SourceAPI}

// metrics are the Manager's collectors. Labels are bounded: source and
// outcome are enums, and the info gauge holds only the active version.
type metrics struct {
	reloads     map[Source]*[numOutcomes]prometheus.Counter
	lastSuccess prometheus.Gauge
	active      *prometheus.GaugeVec
	campaigns   prometheus.Gauge
	duration    prometheus.Histogram
	parse       prometheus.Histogram
	compiled    prometheus.Counter
	reused      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "personad_rules_reloads_total",
		Help: "Attempts to change the rules, by source (file, api) and outcome (applied, unchanged, rejected).",
	}, []string{"source", "outcome"})
	compiled := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "personad_rules_campaigns_compiled_total",
		Help: "Campaigns compiled by applied rule sets, by how (compiled, reused from the compile cache).",
	}, []string{"how"})
	m := &metrics{
		reloads: map[Source]*[numOutcomes]prometheus.Counter{},
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "personad_rules_last_success_timestamp_seconds",
			Help: "When the active rule set was applied (Unix seconds).",
		}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "personad_rules_active_info",
			Help: "The active rule set: 1, labelled with its version and source.",
		}, []string{"version", "source"}),
		campaigns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "personad_rules_campaigns",
			Help: "Campaigns in the active rule set.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "personad_rules_apply_duration_seconds",
			Help:    "Time to validate, compile and swap an applied rule set.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1 ms .. 8 s
		}),
		parse: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "personad_rules_files_parse_duration_seconds",
			Help: "Time to read and parse the rules files, when a reload finds them changed " +
				"(the apply that follows is personad_rules_apply_duration_seconds).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14), // 1 ms .. 8 s
		}),
		compiled: compiled.WithLabelValues("compiled"),
		reused:   compiled.WithLabelValues("reused"),
	}
	for _, s := range sources {
		var cs [numOutcomes]prometheus.Counter
		for o := range numOutcomes {
			cs[o] = reloads.WithLabelValues(string(s), outcomeNames[o])
		}
		m.reloads[s] = &cs
	}
	for _, c := range []prometheus.Collector{reloads, compiled, m.lastSuccess, m.active, m.campaigns, m.duration, m.parse} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) outcome(s Source, o outcome) { m.reloads[s][o].Inc() }

func (m *metrics) applied(s Source, r *engine.Rules, at time.Time, took time.Duration) {
	m.outcome(s, outcomeApplied)
	m.lastSuccess.Set(float64(at.UnixNano()) / 1e9)
	m.active.Reset()
	m.active.WithLabelValues(r.Version(), string(s)).Set(1)
	st := r.Stats()
	m.campaigns.Set(float64(st.Campaigns))
	m.compiled.Add(float64(st.Compiled))
	m.reused.Add(float64(st.Reused))
	m.duration.Observe(took.Seconds())
}
