package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// SweepConfig configures [Sweep]. Options apply to every step.
type SweepConfig struct {
	Options
	// Start, Step and Max are the open-loop rates tried: Start,
	// Start+Step, … up to Max.
	Start, Step, Max float64
	// P99Bound and MaxErrorRate are the bounds a step must keep to pass;
	// MinAchieved is the fraction of the intended rate it must achieve.
	P99Bound     time.Duration
	MaxErrorRate float64
	MinAchieved  float64
	MaxInFlight  int
}

// DefaultSweepConfig is the sweep's defaults.
func DefaultSweepConfig() SweepConfig {
	o := DefaultOptions()
	o.Duration, o.Warmup = 5*time.Second, time.Second
	return SweepConfig{Options: o, Start: 1000, Step: 1000, Max: 50_000,
		P99Bound: 5 * time.Millisecond, MaxErrorRate: 0.001, MinAchieved: 0.95, MaxInFlight: DefaultMaxInFlight}
}

// SweepReport is the outcome of a sweep.
type SweepReport struct {
	Steps []*Report `json:"steps"`
	// Knee is the highest rate that kept within the bounds (0: none did).
	Knee float64 `json:"knee_rps"`
	// Stop says why the sweep ended.
	Stop       string  `json:"stop"`
	P99BoundUS int64   `json:"p99_bound_us"`
	MaxErrRate float64 `json:"max_error_rate"`
}

// Sweep runs open loops at rising rates until a step breaks a bound (p99,
// error rate, achieved rate) or Max is passed, and reports the knee: the
// last rate that held. onStep, when set, sees each step's report as it
// ends.
func Sweep(ctx context.Context, t *Target, reqs []*personadpb.BidRequest, cfg SweepConfig, onStep func(*Report)) (*SweepReport, error) {
	if !(cfg.Start > 0) || !(cfg.Step > 0) || cfg.Max < cfg.Start {
		return nil, fmt.Errorf("bench: sweep: need 0 < start ≤ max and step > 0 (start %v, step %v, max %v)", cfg.Start, cfg.Step, cfg.Max)
	}
	if cfg.P99Bound <= 0 {
		return nil, errors.New("bench: sweep: p99 bound must be positive")
	}
	sr := &SweepReport{P99BoundUS: cfg.P99Bound.Microseconds(), MaxErrRate: cfg.MaxErrorRate, Stop: "reached max rate"}
	for rate := cfg.Start; rate <= cfg.Max; rate += cfg.Step {
		if ctx.Err() != nil {
			sr.Stop = "interrupted"
			break
		}
		r, err := RunOpen(ctx, t, reqs, OpenConfig{Options: cfg.Options, Rate: rate, MaxInFlight: cfg.MaxInFlight})
		if err != nil {
			return nil, err
		}
		sr.Steps = append(sr.Steps, r)
		if onStep != nil {
			onStep(r)
		}
		if ctx.Err() != nil {
			sr.Stop = "interrupted"
			break
		}
		if why := breaks(r, cfg); why != "" {
			sr.Stop = fmt.Sprintf("%.0f rps: %s", rate, why)
			break
		}
		sr.Knee = rate
	}
	return sr, nil
}

// breaks says which bound r breaks, or "".
func breaks(r *Report, cfg SweepConfig) string {
	switch {
	case r.Latency.P99 > cfg.P99Bound.Microseconds():
		return fmt.Sprintf("p99 %s > %s", us(r.Latency.P99), fmtDur(cfg.P99Bound))
	case r.ErrorRate() > cfg.MaxErrorRate:
		return fmt.Sprintf("error rate %.3f%% > %.3f%%", 100*r.ErrorRate(), 100*cfg.MaxErrorRate)
	case r.Achieved < cfg.MinAchieved*r.Rate:
		return fmt.Sprintf("achieved %.0f/s < %.0f%% of %.0f/s", r.Achieved, 100*cfg.MinAchieved, r.Rate)
	}
	return ""
}

// WriteText writes the sweep as a table.
func (s *SweepReport) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target/s\tachieved/s\tp50\tp90\tp99\tp99.9\tmax\terrors\tdropped\tserver µs/req\t")
	for _, r := range s.Steps {
		cpu := "-"
		if r.ServerCPU != nil {
			cpu = fmt.Sprintf("%.1f", r.ServerCPU.PerRequestUS)
		}
		var errs int64
		for _, n := range r.Errors {
			errs += n
		}
		l := r.Latency
		fmt.Fprintf(tw, "%.0f\t%.1f\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t\n",
			r.Rate, r.Achieved, us(l.P50), us(l.P90), us(l.P99), us(l.P999), us(l.Max), errs, r.Dropped, cpu)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range s.Steps {
		for _, warn := range r.Warnings {
			fmt.Fprintf(w, "warning at %.0f rps: %s\n", r.Rate, warn)
		}
	}
	_, err := fmt.Fprintf(w, "knee: %.0f rps (p99 ≤ %s, error rate ≤ %.3f%%); stopped: %s\n",
		s.Knee, us(s.P99BoundUS), 100*s.MaxErrRate, s.Stop)
	return err
}
