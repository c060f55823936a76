package bench

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/codes"
)

// Report is the outcome of one run. Latencies are in microseconds.
type Report struct {
	// Mode is "open" or "closed"; Label names the server ("target",
	// "baseline").
	Mode  string `json:"mode"`
	Label string `json:"label,omitempty"`
	Addr  string `json:"addr"`
	// Wire is how the requests went: "grpc", or OpenRTB JSON over
	// HTTP/1.1, "http" or "http+gzip" (Accept-Encoding: gzip).
	Wire  string `json:"wire"`
	Conns int    `json:"conns"`
	// Rate is the intended rate (open loop), Concurrency the workers
	// (closed loop).
	Rate        float64 `json:"target_rps,omitempty"`
	Concurrency int     `json:"concurrency,omitempty"`
	MaxInFlight int     `json:"max_in_flight,omitempty"`
	// Workers is the peak number of open-loop workers, i.e. of requests
	// in flight at once.
	Workers   int     `json:"workers,omitempty"`
	DurationS float64 `json:"duration_s"`
	WarmupS   float64 `json:"warmup_s"`
	// ElapsedS is the measured window actually run (shorter when stopped).
	ElapsedS float64 `json:"elapsed_s"`

	// Sent requests and those that Completed (answered or failed) in the
	// measured window; Dropped were due but not sent (in-flight cap).
	Sent      int64 `json:"sent"`
	Completed int64 `json:"completed"`
	Dropped   int64 `json:"dropped"`
	// Late were sent more than 1 ms after their due time (open loop); their
	// latency still counts from the due time.
	Late int64 `json:"late"`
	OK   int64 `json:"ok"`
	// SendRate is Sent per second; Achieved is OK answers per second.
	SendRate float64 `json:"send_rps"`
	Achieved float64 `json:"achieved_rps"`

	// Latency is from the intended send time (open loop) or the actual
	// send (closed loop); SendLag is intended → actual send (open loop).
	Latency Latency  `json:"latency_us"`
	SendLag *Latency `json:"send_lag_us,omitempty"`

	// Errors counts failed calls by gRPC code name; over HTTP, error
	// answers by status ("HTTP 400"), a connection that failed as
	// Unavailable and a timeout as DeadlineExceeded.
	Errors map[string]int64 `json:"errors"`
	// ErrorSamples holds, for each key of Errors, the message of the
	// first such failure (a gRPC status's message, naming the field of
	// a refused request; over HTTP, the error of the answer's JSON body).
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	// Bids is the number of bids; NoBids counts no-bid answers by nbr.
	Bids   int64            `json:"bids"`
	NoBid  int64            `json:"nobids"`
	NoBids map[string]int64 `json:"nobids_by_nbr"`

	// ServerCPU is the server process's CPU over the window (a local
	// server only); ClientCPU this process's.
	ServerCPU *CPU `json:"server_cpu,omitempty"`
	ClientCPU *CPU `json:"client_cpu,omitempty"`

	// Warnings say why the figures may not mean what they seem.
	Warnings []string `json:"warnings,omitempty"`

	// Workload describes the requests, when the caller set it.
	Workload *WorkloadInfo `json:"workload,omitempty"`

	// Baseline, when measured in the same run, and the ratios to it.
	Baseline *Report `json:"baseline,omitempty"`
	Ratio    *Ratio  `json:"baseline_ratio,omitempty"`
}

// WorkloadInfo is what a report records of its workload, enough to
// reproduce it with the same flags.
type WorkloadInfo struct {
	Seed         uint64  `json:"seed"`
	Users        int     `json:"users"`
	ZipfS        float64 `json:"zipf_s"`
	UnknownUsers float64 `json:"unknown_users"`
	Pool         int     `json:"pool"`
}

// Info returns the report's view of cfg with a pool of n requests.
func (cfg WorkloadConfig) Info(n int) *WorkloadInfo {
	return &WorkloadInfo{Seed: cfg.Seed, Users: cfg.Users, ZipfS: cfg.ZipfS, UnknownUsers: cfg.UnknownUsers, Pool: n}
}

// Latency summarises a histogram, in microseconds.
type Latency struct {
	Count int64   `json:"count"`
	Min   int64   `json:"min"`
	Mean  float64 `json:"mean"`
	P50   int64   `json:"p50"`
	P90   int64   `json:"p90"`
	P99   int64   `json:"p99"`
	P999  int64   `json:"p99_9"`
	Max   int64   `json:"max"`
}

// CPU is a process's CPU time (user + system) over the measured window.
type CPU struct {
	PID          int     `json:"pid"`
	Seconds      float64 `json:"seconds"`
	PerRequestUS float64 `json:"us_per_request"`
}

// Ratio compares a target with the baseline: Throughput is target achieved
// rate over baseline achieved rate (1 = as fast as the transport floor);
// the latency ratios are target over baseline (1 = no slower).
type Ratio struct {
	Throughput float64 `json:"throughput"`
	P50        float64 `json:"p50"`
	P99        float64 `json:"p99"`
	P999       float64 `json:"p99_9"`
}

// Errored is the number of failed calls plus dropped sends.
func (r *Report) Errored() int64 {
	var n int64
	for _, v := range r.Errors {
		n += v
	}
	return n + r.Dropped
}

// ErrorRate is Errored over all requests due in the window.
func (r *Report) ErrorRate() float64 {
	total := r.Completed + r.Dropped
	if total == 0 {
		return 0
	}
	return float64(r.Errored()) / float64(total)
}

// summarize reads the standard percentiles off h.
func summarize(h *hdrhistogram.Histogram) *Latency {
	if h.TotalCount() == 0 {
		return &Latency{}
	}
	return &Latency{
		Count: h.TotalCount(),
		Min:   h.Min(),
		Mean:  h.Mean(),
		P50:   h.ValueAtQuantile(50),
		P90:   h.ValueAtQuantile(90),
		P99:   h.ValueAtQuantile(99),
		P999:  h.ValueAtQuantile(99.9),
		Max:   h.Max(),
	}
}

func newReport(mode string, t *Target, o Options, c *collector, elapsed time.Duration) *Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &Report{
		Mode:      mode,
		Addr:      t.Addr(),
		Wire:      t.Wire(),
		Conns:     t.Conns(),
		DurationS: o.Duration.Seconds(),
		WarmupS:   o.Warmup.Seconds(),
		ElapsedS:  elapsed.Seconds(),
		Completed: c.n,
		OK:        c.ok,
		Latency:   *summarize(c.lat),
		Errors:    map[string]int64{},
		Bids:      c.bids,
		NoBid:     c.nobid,
		Late:      c.late,
		NoBids:    map[string]int64{},
	}
	for code, n := range c.codes {
		if code != int(codes.OK) && n > 0 {
			r.Errors[codes.Code(code).String()] = n
		}
	}
	for st, n := range c.http {
		r.Errors[fmt.Sprintf("HTTP %d", st)] = n
	}
	for k, msg := range c.first {
		if r.ErrorSamples == nil {
			r.ErrorSamples = map[string]string{}
		}
		r.ErrorSamples[errorKindName(k)] = msg
	}
	for nbr, n := range c.nbr {
		r.NoBids[strconv.Itoa(int(nbr))] = n
	}
	if s := elapsed.Seconds(); s > 0 {
		r.Achieved = float64(c.ok) / s
	}
	return r
}

// finish fills SendRate and the warnings once Sent is known.
func (r *Report) finish() {
	if r.ElapsedS > 0 {
		r.SendRate = float64(r.Sent) / r.ElapsedS
	}
	if r.Sent > 0 && float64(r.Late) > 0.01*float64(r.Sent) {
		r.Warnings = append(r.Warnings, fmt.Sprintf(
			"%.1f%% of sends left more than 1 ms late: this process (or the machine) was short of CPU, and the latencies include its own delay",
			100*float64(r.Late)/float64(r.Sent)))
	}
	if r.Dropped > 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf(
			"%d requests due were not sent (in-flight cap %d reached): the server fell behind the offered rate", r.Dropped, r.MaxInFlight))
	}
}

// Compare sets r.Baseline and r.Ratio.
func (r *Report) Compare(baseline *Report) {
	r.Baseline = baseline
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	r.Ratio = &Ratio{
		Throughput: div(r.Achieved, baseline.Achieved),
		P50:        div(float64(r.Latency.P50), float64(baseline.Latency.P50)),
		P99:        div(float64(r.Latency.P99), float64(baseline.Latency.P99)),
		P999:       div(float64(r.Latency.P999), float64(baseline.Latency.P999)),
	}
}

// nbrNames are the OpenRTB no-bid reasons personad answers.
var nbrNames = map[string]string{
	"0": "unknown/none eligible",
	"1": "technical error",
	"2": "invalid request",
	"8": "unmatched user",
}

// fmtDur prints a duration with microsecond precision, in the unit that
// reads best.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.3fs", d.Seconds())
	}
}

func us(v int64) string { return fmtDur(time.Duration(v) * time.Microsecond) }

// maxSampleLen cuts a failure's message in the text report.
const maxSampleLen = 300

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// WriteText writes the human-readable report.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	label := r.Label
	if label == "" {
		label = "target"
	}
	conns := fmt.Sprintf("%d conns", r.Conns)
	switch r.Wire {
	case WireHTTP:
		conns = fmt.Sprintf("OpenRTB JSON over HTTP/1.1, %d conns opened", r.Conns)
	case WireHTTPGzip:
		conns = fmt.Sprintf("OpenRTB JSON over HTTP/1.1 with Accept-Encoding: gzip, %d conns opened", r.Conns)
	}
	switch r.Mode {
	case "open":
		fmt.Fprintf(w, "%s %s: open loop %.0f rps for %gs after %gs warm-up, %s, max in flight %d (peak %d)\n",
			label, r.Addr, r.Rate, r.DurationS, r.WarmupS, conns, r.MaxInFlight, r.Workers)
	default:
		fmt.Fprintf(w, "%s %s: closed loop, concurrency %d for %gs after %gs warm-up, %s\n",
			label, r.Addr, r.Concurrency, r.DurationS, r.WarmupS, conns)
	}
	if wl := r.Workload; wl != nil {
		fmt.Fprintf(tw, "workload\tseed %d, %d users (zipf %g, %g unknown), pool of %d requests\n",
			wl.Seed, wl.Users, wl.ZipfS, wl.UnknownUsers, wl.Pool)
	}
	fmt.Fprintf(tw, "requests\tsent %d  completed %d  ok %d  dropped %d  in %.2fs\n",
		r.Sent, r.Completed, r.OK, r.Dropped, r.ElapsedS)
	fmt.Fprintf(tw, "rate\tachieved %.1f/s  sent %.1f/s\n", r.Achieved, r.SendRate)
	from := "from actual send"
	if r.Mode == "open" {
		from = "from intended send"
	}
	l := r.Latency
	fmt.Fprintf(tw, "latency\tp50 %s  p90 %s  p99 %s  p99.9 %s  max %s  mean %s  (%s)\n",
		us(l.P50), us(l.P90), us(l.P99), us(l.P999), us(l.Max), fmtDur(time.Duration(l.Mean*float64(time.Microsecond))), from)
	if g := r.SendLag; g != nil && g.Count > 0 {
		fmt.Fprintf(tw, "send lag\tp50 %s  p99 %s  p99.9 %s  max %s  late >1ms %d  (scheduler: intended → actual send)\n",
			us(g.P50), us(g.P99), us(g.P999), us(g.Max), r.Late)
	}
	var nb []string
	for _, k := range sortedKeys(r.NoBids) {
		name := nbrNames[k]
		if name == "" {
			name = "?"
		}
		nb = append(nb, fmt.Sprintf("nbr %s (%s) %d", k, name, r.NoBids[k]))
	}
	if len(nb) == 0 {
		nb = []string{"none"}
	}
	fmt.Fprintf(tw, "outcomes\tbids %d  no-bids %d: %s\n", r.Bids, r.NoBid, strings.Join(nb, ", "))
	var errs []string
	for _, k := range sortedKeys(r.Errors) {
		errs = append(errs, fmt.Sprintf("%s %d", k, r.Errors[k]))
	}
	if r.Dropped > 0 {
		errs = append(errs, fmt.Sprintf("dropped %d", r.Dropped))
	}
	if len(errs) == 0 {
		errs = []string{"none"}
	}
	fmt.Fprintf(tw, "errors\t%s  (rate %.4f%%)\n", strings.Join(errs, ", "), 100*r.ErrorRate())
	for _, k := range sortedKeys(r.ErrorSamples) {
		msg := r.ErrorSamples[k]
		if len(msg) > maxSampleLen {
			msg = msg[:maxSampleLen] + "…"
		}
		fmt.Fprintf(tw, "\tfirst %s: %s\n", k, msg)
	}
	if c := r.ServerCPU; c != nil {
		fmt.Fprintf(tw, "server cpu\tpid %d  %.2fs  %.1f µs/request\n", c.PID, c.Seconds, c.PerRequestUS)
	}
	if c := r.ClientCPU; c != nil {
		fmt.Fprintf(tw, "harness cpu\tpid %d  %.2fs  %.1f µs/request\n", c.PID, c.Seconds, c.PerRequestUS)
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(tw, "warning\t%s\n", w)
	}
	if b, q := r.Baseline, r.Ratio; b != nil && q != nil {
		fmt.Fprintf(tw, "vs baseline\tthroughput %.2f×  p50 %.2f×  p99 %.2f×  p99.9 %.2f×  (baseline: %.1f/s, p50 %s, p99 %s, p99.9 %s)\n",
			q.Throughput, q.P50, q.P99, q.P999, b.Achieved, us(b.Latency.P50), us(b.Latency.P99), us(b.Latency.P999))
	}
	return tw.Flush()
}
