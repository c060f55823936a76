package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/personad/personad/bench"
	"github.com/personad/personad/internal/grpctarget"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

const defaultAddr = "127.0.0.1:9090"

// defaultHTTPAddr is --addr with --wire http: personad's --http-addr
// default.
const defaultHTTPAddr = "127.0.0.1:8080"

// common holds the flags every command shares.
type common struct {
	addr        string
	conns       int
	rps         float64
	concurrency int
	maxInFlight int
	opts        bench.Options
	json        bool
	out         string
	outTmp      *os.File // --out's temporary file in its directory, made before the run (openOut)
	outPath     string   // the file --out names, its link followed (openOut); "" without --out
	cpuProfile  string
	inProcess   bool
	progress    string
	serverPID   int
	// maxErrorRate is run's and baseline's --max-error-rate (sweep has
	// its own, a bound on each step: SweepConfig.MaxErrorRate).
	maxErrorRate float64
	// wire is run's and sweep's --wire (grpc or http), gzip their --gzip.
	wire string
	gzip bool

	wl       bench.WorkloadConfig
	pool     int
	channels string
	sizes    string
	tmax     int
}

// cmdUsage is each command's usage line, which its -h prints before its
// flags.
var cmdUsage = map[string]string{
	"run":   "run [--wire grpc|http [--gzip]] [--addr HOST:PORT|URL] (--rps R | --concurrency C) [--duration D] [--baseline] [--json] [--out FILE] [flags]",
	"sweep": "sweep [--wire grpc|http [--gzip]] [--addr HOST:PORT|URL] [--start R] [--step R] [--max R] [--p99-bound D] [--json] [--out FILE] [flags]",
	"baseline": "baseline (--rps R | --concurrency C) [--compare [--target HOST:PORT]] [flags]\n" +
		"       personabench baseline --serve-only [--addr HOST:PORT]",
	"pace": "pace [--campaigns N] [--warmup-days N] [--json] [flags]",
}

// setUsage makes the -h of command name print its usage line, then its
// flags.
func setUsage(fs *flag.FlagSet, name string) {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: personabench %s\n\nflags:\n", cmdUsage[name])
		fs.PrintDefaults()
	}
}

func newFlagSet(name string, stderr io.Writer, getenv func(string) string, c *common) *flag.FlagSet {
	fs := flag.NewFlagSet("personabench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, name)
	addr := getenv("PERSONABENCH_ADDR")
	if addr == "" {
		addr = defaultAddr
	}
	c.opts = bench.DefaultOptions()
	c.wl = bench.DefaultWorkloadConfig()
	fs.StringVar(&c.addr, "addr", addr, "server address host:port (env PERSONABENCH_ADDR)")
	fs.IntVar(&c.conns, "conns", 2, "gRPC client connections, used round robin (over --wire http, the client keeps as many keep-alive connections as requests in flight)")
	fs.DurationVar(&c.opts.Duration, "duration", c.opts.Duration, "measured window")
	fs.DurationVar(&c.opts.Warmup, "warmup", c.opts.Warmup, "warm-up before the window, same load, not recorded")
	fs.DurationVar(&c.opts.Timeout, "timeout", c.opts.Timeout, "per-request timeout")
	fs.IntVar(&c.maxInFlight, "max-inflight", bench.DefaultMaxInFlight, "open loop: cap on requests in flight; sends beyond it are counted as dropped")
	fs.BoolVar(&c.json, "json", false, "write the report as JSON on stdout")
	fs.StringVar(&c.out, "out", "", "also write the JSON report to this file (checked before the run: a path that cannot be written is refused at once; a run that fails leaves it as it was; a FIFO or device, such as /dev/stderr, is written to at the end)")
	fs.BoolVar(&c.inProcess, "baseline-inprocess", false, "run the empty-handler baseline inside the harness instead of as a child process")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the harness's own CPU profile to this file, over the whole command (a run and its baseline, every step of a sweep)")
	fs.StringVar(&c.progress, "progress", "auto", "progress line on stderr every second: auto (when stderr is a terminal), always, never")
	fs.IntVar(&c.serverPID, "server-pid", 0, "server process for CPU/request; 0 finds the local process listening on --addr, -1 disables")

	fs.Uint64Var(&c.wl.Seed, "seed", c.wl.Seed, "workload seed: the same seed gives the same requests")
	fs.IntVar(&c.wl.Users, "users", c.wl.Users, "known users (ids u%08d by index, as the demo world)")
	fs.Float64Var(&c.wl.ZipfS, "zipf", c.wl.ZipfS, "Zipf exponent (> 1) of user popularity")
	fs.Float64Var(&c.wl.UnknownUsers, "unknown-users", c.wl.UnknownUsers, "fraction of requests for users not in the world")
	fs.Float64Var(&c.wl.SegmentFrac, "segments", c.wl.SegmentFrac, "fraction of requests carrying user.data segments")
	fs.Float64Var(&c.wl.BlockFrac, "blocks", c.wl.BlockFrac, "fraction of requests carrying bcat/badv")
	fs.Float64Var(&c.wl.FloorFrac, "floors", c.wl.FloorFrac, "fraction of impressions with a bidfloor")
	fs.Float64Var(&c.wl.ChannelByDomain, "channel-by-domain", c.wl.ChannelByDomain, "fraction of requests leaving the channel to the rules' domain map")
	fs.IntVar(&c.tmax, "tmax", 0, "fixed tmax in ms; 0 draws from a 50–300 ms mix")
	fs.IntVar(&c.pool, "pool", 65536, "pre-built requests, used round robin")
	c.channels = bench.FormatWeights(c.wl.Channels)
	c.sizes = bench.FormatWeights(c.wl.Sizes)
	fs.StringVar(&c.channels, "channels", c.channels, "channel mix name=weight,…")
	fs.StringVar(&c.sizes, "sizes", c.sizes, "banner size mix WxH=weight,…")
	return fs
}

// profile starts the harness's CPU profile when asked, once for the
// whole command (a run and its baseline, every step of a sweep) and
// before anything is dialled, so that a path that cannot be written is
// a usage error at once; the returned func stops it.
func (c *common) profile() (func(), error) {
	if c.cpuProfile == "" {
		return func() {}, nil
	}
	f, err := os.Create(c.cpuProfile)
	if err != nil {
		return nil, usagef("--cpuprofile %s: %v", c.cpuProfile, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// requests builds the request pool from the workload flags, once the
// flags every driver shares are checked: a bad one is a usage error at
// once, not after dialling the target.
// prepare does what every driving command does once its flags are
// checked, before it dials: the progress output, the request pool, the
// --out file (checked writable before the run) and the --cpuprofile
// (one profile over the whole command). done closes the last two.
func (c *common) prepare(stderr io.Writer) (reqs []*personadpb.BidRequest, done func(), err error) {
	if err := c.setProgress(stderr); err != nil {
		return nil, nil, err
	}
	if reqs, err = c.requests(); err != nil {
		return nil, nil, err
	}
	closeOut, err := c.openOut()
	if err != nil {
		return nil, nil, err
	}
	stopProfile, err := c.profile()
	if err != nil {
		closeOut()
		return nil, nil, err
	}
	return reqs, func() { stopProfile(); closeOut() }, nil
}

func (c *common) requests() ([]*personadpb.BidRequest, error) {
	switch {
	case c.opts.Duration <= 0:
		return nil, usagef("--duration %v must be positive", c.opts.Duration)
	case c.opts.Warmup < 0:
		return nil, usagef("--warmup %v must not be negative", c.opts.Warmup)
	case c.opts.Timeout <= 0:
		return nil, usagef("--timeout %v must be positive", c.opts.Timeout)
	case c.maxInFlight <= 0:
		return nil, usagef("--max-inflight %d must be positive", c.maxInFlight)
	}
	// The workload's own checks (bench.NewWorkload) name its fields;
	// these name the flags.
	switch {
	case c.wl.Users <= 0:
		return nil, usagef("--users %d: want at least 1", c.wl.Users)
	case !(c.wl.ZipfS > 1) || math.IsInf(c.wl.ZipfS, 0):
		return nil, usagef("--zipf %v: want a finite exponent > 1", c.wl.ZipfS)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"unknown-users", c.wl.UnknownUsers}, {"segments", c.wl.SegmentFrac}, {"blocks", c.wl.BlockFrac},
		{"floors", c.wl.FloorFrac}, {"channel-by-domain", c.wl.ChannelByDomain},
	} {
		if !(f.v >= 0 && f.v <= 1) { // NaN too
			return nil, usagef("--%s %v: want a fraction from 0 to 1", f.name, f.v)
		}
	}
	var err error
	if c.wl.Channels, err = bench.ParseWeights(c.channels); err != nil {
		return nil, usagef("--channels: %v", err)
	}
	if c.wl.Sizes, err = bench.ParseWeights(c.sizes); err != nil {
		return nil, usagef("--sizes: %v", err)
	}
	for _, s := range c.wl.Sizes {
		if _, _, err := bench.ParseSize(s.Value); err != nil {
			return nil, usagef("--sizes: %v", err)
		}
	}
	if c.tmax < 0 || c.tmax > 1<<20 {
		return nil, usagef("--tmax %d out of range", c.tmax)
	}
	c.wl.Tmax = int32(c.tmax)
	if c.pool <= 0 {
		return nil, usagef("--pool must be positive")
	}
	w, err := bench.NewWorkload(c.wl)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	return w.Pool(c.pool), nil
}

func (c *common) setProgress(stderr io.Writer) error {
	switch c.progress {
	case "always":
		c.opts.Progress = stderr
	case "never":
	case "auto":
		if f, ok := stderr.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				c.opts.Progress = stderr
			}
		}
	default:
		return usagef("--progress %q: want auto, always or never", c.progress)
	}
	return nil
}

// resolveServerPID finds the server to measure, telling stderr when it
// cannot.
func (c *common) resolveServerPID(addr string, stderr io.Writer) {
	switch {
	case c.serverPID > 0:
		c.opts.ServerPID = c.serverPID
	case c.serverPID == 0:
		pid, err := bench.ListeningPID(addr)
		if err != nil {
			fmt.Fprintf(stderr, "personabench: no server CPU figures: %v (use --server-pid)\n", err)
			return
		}
		if pid == os.Getpid() {
			return // in-process: its CPU is the harness's
		}
		c.opts.ServerPID = pid
	}
}

// wireFlags adds --wire and --gzip to run's and sweep's flags.
func (c *common) wireFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.wire, "wire", bench.WireGRPC,
		"grpc: personad.v1.Bidder/Bid on --addr; http: the same requests as OpenRTB JSON (protojson, encoded once before the run) "+
			"posted over keep-alive HTTP/1.1 to --addr HOST:PORT's "+bench.HTTPPath+" (default "+defaultHTTPAddr+", personad's --http-addr) or to --addr given as an http:// URL; "+
			"a 204's X-Personad-Nbr is its no-bid reason, other statuses count as errors (\"HTTP 400\")")
	fs.BoolVar(&c.gzip, "gzip", false, "with --wire http: send Accept-Encoding: gzip and decode the gzip answers")
}

// checkWire checks --wire and --gzip and, over HTTP, --addr (fs's
// parsed flags tell whether it was given; envAddr is PERSONABENCH_ADDR).
func (c *common) checkWire(fs *flag.FlagSet, envAddr string) error {
	switch c.wire {
	case bench.WireGRPC:
		if c.gzip {
			return usagef("--gzip: only with --wire http (gRPC answers are not compressed)")
		}
		return checkAddr("addr", c.addr)
	case bench.WireHTTP:
	default:
		return usagef("--wire %q: want grpc or http", c.wire)
	}
	given := envAddr != ""
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "addr" })
	if !given {
		c.addr = defaultHTTPAddr
	}
	if _, err := bench.BidURL(c.addr); err != nil {
		return usagef("--addr %q: %v", c.addr, err)
	}
	return nil
}

// pidAddr is the HOST:PORT of --addr a local server listens on.
func (c *common) pidAddr() string {
	if c.wire != bench.WireHTTP {
		return c.addr
	}
	u, _ := bench.BidURL(c.addr)
	if pu, err := url.Parse(u); err == nil && pu.Port() != "" {
		return pu.Host
	}
	return c.addr
}

// dial connects to addr over the flags' wire; maxConns is the most
// requests in flight at once.
func (c *common) dial(ctx context.Context, addr string, reqs []*personadpb.BidRequest, maxConns int) (*bench.Target, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if c.wire == bench.WireHTTP {
		return bench.DialHTTP(dctx, addr, reqs, bench.HTTPConfig{Gzip: c.gzip, MaxConns: maxConns, Timeout: c.opts.Timeout})
	}
	return bench.Dial(dctx, addr, c.conns)
}

// drive runs the open or closed loop, whichever the flags chose.
func (c *common) drive(ctx context.Context, addr string, reqs []*personadpb.BidRequest, opts bench.Options) (*bench.Report, error) {
	maxConns := c.concurrency
	if c.rps > 0 {
		maxConns = c.maxInFlight
	}
	t, err := c.dial(ctx, addr, reqs, maxConns)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	if c.rps > 0 {
		return bench.RunOpen(ctx, t, reqs, bench.OpenConfig{Options: opts, Rate: c.rps, MaxInFlight: c.maxInFlight})
	}
	return bench.RunClosed(ctx, t, reqs, bench.ClosedConfig{Options: opts, Concurrency: c.concurrency})
}

// defaultMaxErrorRate is run's and baseline's --max-error-rate: 1% of the
// requests due failed or dropped. A server keeping up with the load shows
// none (0 in every run of BENCHMARKS.md), and one briefly overloaded a few
// per mille of timeouts; a server that went down or stalled mid-run, or a
// rate far past its capacity, shows tens of percent, whose latency figures
// are not the server's.
const defaultMaxErrorRate = 0.01

// errorRateFlag adds --max-error-rate to run's and baseline's flags.
func (c *common) errorRateFlag(fs *flag.FlagSet) {
	fs.Float64Var(&c.maxErrorRate, "max-error-rate", defaultMaxErrorRate,
		"exit with status 3, once the report is written, when the failed and dropped requests are more than this fraction of the requests due "+
			"(default 1%: a server keeping up shows none; one down or stalled mid-run, far more); 1 never fails")
}

func (c *common) checkErrorRateFlag() error {
	if !(c.maxErrorRate >= 0 && c.maxErrorRate <= 1) { // NaN too
		return usagef("--max-error-rate %v: want a fraction from 0 to 1", c.maxErrorRate)
	}
	return nil
}

// checkErrorRate is the boundError of a report (or its baseline's) whose
// error rate passed --max-error-rate, or nil.
func (c *common) checkErrorRate(r *bench.Report) error {
	for _, r := range []*bench.Report{r, r.Baseline} {
		if r == nil {
			continue
		}
		if rate := r.ErrorRate(); rate > c.maxErrorRate {
			return boundError{fmt.Sprintf("%s: error rate %.2f%% (%d of %d requests due failed or were dropped) is above --max-error-rate %g",
				r.Label, 100*rate, r.Errored(), r.Completed+r.Dropped, c.maxErrorRate)}
		}
	}
	return nil
}

func (c *common) checkMode() error {
	switch {
	case c.rps > 0 && c.concurrency > 0:
		return usagef("--rps and --concurrency are exclusive: open or closed loop")
	case c.rps < 0 || c.concurrency < 0:
		return usagef("--rps and --concurrency must not be negative")
	case math.IsNaN(c.rps) || math.IsInf(c.rps, 0):
		return usagef("--rps %v: want a finite rate", c.rps)
	case c.rps == 0 && c.concurrency == 0:
		return usagef("need --rps R (open loop) or --concurrency C (closed loop)")
	case c.conns <= 0:
		return usagef("--conns must be positive")
	}
	return nil
}

// checkAddr rejects a server address gRPC would dial wrongly
// (grpctarget.Check): one without its port would be dialled at 443 and
// reported, ten seconds later, only as "not ready".
func checkAddr(flag, addr string) error {
	if err := grpctarget.Check(addr); err != nil {
		return usagef("--%s %q: %v", flag, addr, err)
	}
	return nil
}

func cmdRun(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("run", stderr, getenv, &c)
	fs.Float64Var(&c.rps, "rps", 0, "open loop: requests per second, sent on schedule")
	fs.IntVar(&c.concurrency, "concurrency", 0, "closed loop: workers each with one request in flight")
	withBaseline := fs.Bool("baseline", false, "then run the same load against an empty-handler server it starts (a child process; see --baseline-inprocess) and report the ratios (gRPC only)")
	c.errorRateFlag(fs)
	c.wireFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := c.checkMode(); err != nil {
		return err
	}
	if err := c.checkErrorRateFlag(); err != nil {
		return err
	}
	if err := c.checkWire(fs, getenv("PERSONABENCH_ADDR")); err != nil {
		return err
	}
	if *withBaseline && c.wire != bench.WireGRPC {
		return usagef("--baseline: the empty-handler server speaks gRPC only; not with --wire %s", c.wire)
	}
	reqs, done, err := c.prepare(stderr)
	if err != nil {
		return err
	}
	defer done()
	c.resolveServerPID(c.pidAddr(), stderr)
	r, err := c.drive(ctx, c.addr, reqs, c.opts)
	if err != nil {
		return err
	}
	r.Label = "target"
	if *withBaseline && ctx.Err() == nil {
		b, err := c.baseline(ctx, "127.0.0.1:0", reqs)
		if err != nil {
			return err
		}
		r.Compare(b)
	}
	if err := c.write(stdout, r); err != nil {
		return err
	}
	return c.checkErrorRate(r)
}

func cmdBaseline(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("baseline", stderr, func(string) string { return "" }, &c)
	fs.Float64Var(&c.rps, "rps", 0, "open loop: requests per second, sent on schedule")
	fs.IntVar(&c.concurrency, "concurrency", 0, "closed loop: workers each with one request in flight")
	fs.Lookup("addr").Usage = "listen address of the empty-handler server (default 127.0.0.1:0; with --serve-only 127.0.0.1:9191)"
	fs.Lookup("addr").DefValue = ""
	c.addr = ""
	serveOnly := fs.Bool("serve-only", false, "only serve the empty-handler server on --addr until interrupted")
	compare := fs.Bool("compare", false, "run against --target, then against the baseline, and report the ratios")
	target := fs.String("target", defaultAddr, "with --compare: the server to compare with the baseline")
	c.errorRateFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := c.checkErrorRateFlag(); err != nil {
		return err
	}
	if *serveOnly {
		addr := c.addr
		if addr == "" {
			addr = "127.0.0.1:9191"
		}
		srv, err := bench.StartBaseline(addr)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "personabench: empty-handler personad.v1.Bidder serving on %s (pid %d); interrupt to stop\n", srv.Addr(), os.Getpid())
		<-ctx.Done()
		return srv.Close()
	}
	if c.addr == "" {
		c.addr = "127.0.0.1:0"
	}
	if err := c.checkMode(); err != nil {
		return err
	}
	if *compare {
		if err := checkAddr("target", *target); err != nil {
			return err
		}
	}
	reqs, done, err := c.prepare(stderr)
	if err != nil {
		return err
	}
	defer done()
	if !*compare {
		b, err := c.baseline(ctx, c.addr, reqs)
		if err != nil {
			return err
		}
		if err := c.write(stdout, b); err != nil {
			return err
		}
		return c.checkErrorRate(b)
	}
	c.resolveServerPID(*target, stderr)
	r, err := c.drive(ctx, *target, reqs, c.opts)
	if err != nil {
		return err
	}
	r.Label = "target"
	if ctx.Err() == nil {
		b, err := c.baseline(ctx, c.addr, reqs)
		if err != nil {
			return err
		}
		r.Compare(b)
	}
	if err := c.write(stdout, r); err != nil {
		return err
	}
	return c.checkErrorRate(r)
}

func cmdSweep(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlagSet("sweep", stderr, getenv, &c)
	sc := bench.DefaultSweepConfig()
	// A sweep's steps are shorter than a run's.
	fs.Lookup("duration").DefValue = sc.Duration.String()
	c.opts.Duration = sc.Duration
	fs.Lookup("warmup").DefValue = sc.Warmup.String()
	c.opts.Warmup = sc.Warmup
	fs.Float64Var(&sc.Start, "start", sc.Start, "first rate (requests/s)")
	fs.Float64Var(&sc.Step, "step", sc.Step, "rate increment")
	fs.Float64Var(&sc.Max, "max", sc.Max, "last rate tried")
	fs.DurationVar(&sc.P99Bound, "p99-bound", sc.P99Bound, "a step passes while p99 ≤ this")
	fs.Float64Var(&sc.MaxErrorRate, "max-error-rate", sc.MaxErrorRate, "a step passes while (errors+dropped)/requests ≤ this; when the first step does not, the sweep exits with status 3 once its report is written")
	fs.Float64Var(&sc.MinAchieved, "min-achieved", sc.MinAchieved, "a step passes while achieved ≥ this fraction of its rate")
	c.wireFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if c.conns <= 0 {
		return usagef("--conns must be positive")
	}
	if err := c.checkWire(fs, getenv("PERSONABENCH_ADDR")); err != nil {
		return err
	}
	inf := func(v float64) bool { return math.IsInf(v, 0) }
	switch {
	case !(sc.Start > 0) || inf(sc.Start):
		return usagef("--start %v: want a rate above 0", sc.Start)
	case !(sc.Step > 0) || inf(sc.Step):
		return usagef("--step %v: want a rate increment above 0", sc.Step)
	case !(sc.Max >= sc.Start) || inf(sc.Max):
		return usagef("--max %v: want a finite rate at least --start (%v)", sc.Max, sc.Start)
	case sc.P99Bound <= 0:
		return usagef("--p99-bound %v: want a duration above 0", sc.P99Bound)
	case !(sc.MaxErrorRate >= 0 && sc.MaxErrorRate <= 1):
		return usagef("--max-error-rate %v: want a fraction from 0 to 1", sc.MaxErrorRate)
	case !(sc.MinAchieved >= 0 && sc.MinAchieved <= 1):
		return usagef("--min-achieved %v: want a fraction from 0 to 1", sc.MinAchieved)
	}
	reqs, done, err := c.prepare(stderr)
	if err != nil {
		return err
	}
	defer done()
	c.resolveServerPID(c.pidAddr(), stderr)
	sc.Options = c.opts
	sc.MaxInFlight = c.maxInFlight

	t, err := c.dial(ctx, c.addr, reqs, c.maxInFlight)
	if err != nil {
		return err
	}
	defer t.Close()
	sr, err := bench.Sweep(ctx, t, reqs, sc, func(r *bench.Report) {
		fmt.Fprintf(stderr, "sweep: %.0f rps → achieved %.1f/s  p99 %v  errors %.3f%%\n",
			r.Rate, r.Achieved, time.Duration(r.Latency.P99)*time.Microsecond, 100*r.ErrorRate())
	})
	if err != nil {
		return err // its config was checked above: a failure of the run
	}
	for _, r := range sr.Steps {
		r.Workload = c.wl.Info(c.pool)
	}
	if c.json {
		err = writeJSON(stdout, sr)
	} else {
		err = sr.WriteText(stdout)
	}
	if oerr := c.writeOut(sr); err == nil {
		err = oerr
	}
	if err == nil && sr.Knee == 0 && len(sr.Steps) > 0 && ctx.Err() == nil {
		// Failing requests at the first, lowest rate are no knee but a
		// server that fails (down, refusing, misconfigured). A first step
		// over --p99-bound or under --min-achieved is a result: --start
		// is above what the server (or the harness's machine) sustains.
		if r := sr.Steps[0]; r.ErrorRate() > sc.MaxErrorRate {
			err = boundError{fmt.Sprintf("sweep: the first step, %.0f rps, had an error rate of %.2f%% (%d of %d requests due failed or were dropped), above --max-error-rate %g: no knee measured",
				r.Rate, 100*r.ErrorRate(), r.Errored(), r.Completed+r.Dropped, sc.MaxErrorRate)}
		}
	}
	return err
}

// openOut checks --out before the run, so that a path that cannot be
// written is a usage error at once rather than the loss of the report
// after the run: it makes a temporary file beside the file --out names
// (a link's target, so that the link stays), which writeOut renames over
// it when the report is written, with the mode that file had (a new
// one's is os.Create's, 0666 less the umask). A run that fails leaves
// the --out file as it was. A FIFO or a device (/dev/stderr, a pipe into
// another program) cannot be replaced: writeOut writes to it in place.
// The returned func removes the temporary file unless writeOut used it.
func (c *common) openOut() (func(), error) {
	if c.out == "" {
		return func() {}, nil
	}
	fi, err := os.Stat(c.out)
	switch {
	case err == nil && fi.IsDir():
		return nil, usagef("--out %s: is a directory; want a file for the JSON report", c.out)
	case err == nil && !fi.Mode().IsRegular():
		c.outPath = c.out
		return func() {}, nil
	}
	c.outPath = c.out
	if target, err := filepath.EvalSymlinks(c.out); err == nil {
		c.outPath = target
	}
	f, err := createBeside(c.outPath)
	if err == nil && fi != nil {
		if err = f.Chmod(fi.Mode().Perm()); err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}
	if err != nil {
		return nil, usagef("--out %s: cannot write there: %v", c.out, err)
	}
	c.outTmp = f
	return func() {
		if c.outTmp != nil {
			c.outTmp.Close()
			os.Remove(c.outTmp.Name())
		}
	}, nil
}

// createBeside creates a new file in path's directory, named after it,
// with os.Create's mode (0666 less the umask; os.CreateTemp's is 0600).
func createBeside(path string) (*os.File, error) {
	dir, base := filepath.Split(path)
	for {
		name := filepath.Join(dir, fmt.Sprintf(".%s.%d.tmp", base, rand.Uint32()))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
		if !errors.Is(err, os.ErrExist) {
			return f, err
		}
	}
}

// writeOut writes v as JSON to --out, when set: through the temporary
// file openOut made, or in place when --out is not a regular file.
func (c *common) writeOut(v any) error {
	if c.outPath == "" {
		return nil
	}
	f := c.outTmp
	c.outTmp = nil
	if f == nil { // a FIFO or a device: not replaced
		f, err := os.Create(c.outPath)
		if err == nil {
			err = writeJSON(f, v)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			return fmt.Errorf("--out %s: %w", c.out, err)
		}
		return nil
	}
	err := writeJSON(f, v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), c.outPath)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("--out %s: %w", c.out, err)
	}
	return nil
}

func (c *common) write(w io.Writer, r *bench.Report) error {
	r.Workload = c.wl.Info(c.pool)
	if r.Baseline != nil {
		r.Baseline.Workload = r.Workload
	}
	// The report goes to stdout first: a failure to write --out must
	// not cost the run's results.
	var err error
	if c.json {
		err = writeJSON(w, r)
	} else {
		if r.Baseline != nil {
			if err = r.Baseline.WriteText(w); err == nil {
				_, err = fmt.Fprintln(w)
			}
		}
		if err == nil {
			err = r.WriteText(w)
		}
	}
	if oerr := c.writeOut(r); err == nil {
		err = oerr
	}
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
