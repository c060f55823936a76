package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/bidder"
	"github.com/personad/personad/engine"
	"github.com/personad/personad/reload"
	"github.com/personad/personad/segments"
)

// rulesMaxRecvMsgSize bounds a gRPC message, raised for rule sets sent to
// personad.v1.Rules/Apply.
const rulesMaxRecvMsgSize = 64 << 20

// HTTP server limits: OpenRTB requests are small and answered in
// milliseconds, so a slow client is cut off early.
const (
	httpReadHeaderTimeout = 5 * time.Second
	httpReadTimeout       = 10 * time.Second
	httpWriteTimeout      = 10 * time.Second
	httpIdleTimeout       = 2 * time.Minute
	httpMaxHeaderBytes    = 64 << 10
)

// demoWorld is the world --demo seeds. Tests seed world.SmallConfig: a
// million users take half a minute a start under the race detector.
var demoWorld = world.DemoConfig

// checkRulesPath fails when the --rules path does not exist: personad
// watches it, and serves nothing without it. It runs before the segment
// store and the ledger are opened, so that such a start leaves the data
// dir as it was (but for the lock file), not half-made — which a later
// --demo would serve as a world.
func checkRulesPath(o *options, seeded bool) error {
	_, err := os.Stat(o.rules)
	if !errors.Is(err, fs.ErrNotExist) {
		return nil // there, or loading the rules reports why it cannot be read
	}
	var hint string
	switch {
	case o.demo && !seeded:
		hint = "--demo serves the earlier run's data in " + o.dataDir + " rather than seed over it: point --rules at a rules file or directory, or remove the data dir"
	case dirExists(filepath.Join(o.dataDir, reload.AppliedDir)):
		hint = "to serve only the rule set applied through the API, create it as an empty directory"
	default:
		hint = "point --rules at a rules file or directory, or start with --demo to seed a generated demo world"
	}
	what := "does not exist"
	if _, err := os.Lstat(o.rules); err == nil {
		what = "is a symbolic link to a path that does not exist"
	}
	return fmt.Errorf("--rules %s %s (%s)", o.rules, what, hint)
}

// absent lists the entries of the data dir that personad creates when
// missing and that do not exist yet: the segment store, the embedded
// ledger (unless --ledger names another directory) and the notice key
// (unless --notice-key-file names one).
func absent(o *options) []string {
	names := []string{filepath.Join(o.dataDir, world.SegmentsDir)}
	if o.ledger == "" || isRedisURL(o.ledger) {
		names = append(names, filepath.Join(o.dataDir, ledgerDir))
	}
	if o.noticeKeyFile == "" {
		names = append(names, filepath.Join(o.dataDir, noticeKeyName))
	}
	return slices.DeleteFunc(names, func(name string) bool {
		_, err := os.Lstat(name)
		return !errors.Is(err, fs.ErrNotExist)
	})
}

func dirExists(name string) bool {
	fi, err := os.Stat(name)
	return err == nil && fi.IsDir()
}

// run is personad: it returns when ctx is done (after a graceful stop) or
// when serving fails. Logs go to stderr; the listening addresses line goes
// to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := newLogger(stderr, o.logLevel)
	defer log.Sync() //nolint:errcheck // nothing to do about a failed flush at exit

	// Released last: after the segment store's and the ledger's final
	// writes.
	unlock, err := lockDir("--data-dir", o.dataDir)
	if err != nil {
		return usageErr(err)
	}
	defer unlock()
	if o.ledger != "" && !isRedisURL(o.ledger) {
		unlockLedger, err := lockDir("--ledger", o.ledger)
		if err != nil {
			return usageErr(err)
		}
		defer unlockLedger()
	}

	seeded := false
	if o.demo {
		if seeded, err = seedDemo(o.dataDir, demoWorld(), log); err != nil {
			return err
		}
	}
	if err := checkRulesPath(o, seeded); err != nil {
		return usageErr(err)
	}
	// A start that fails before it serves (bad rules, a busy port) takes
	// back what it created in the data dir — the segment store's and the
	// ledger's directories, a new notice key — once the store and the
	// ledger are closed, so that it leaves no half-made data dir that a
	// later --demo would take for a world. Nothing can have been
	// acknowledged in them: no listener had served.
	created := absent(o)
	serving := false
	defer func() {
		if !serving {
			for _, name := range created {
				if err := os.RemoveAll(name); err != nil {
					log.Warn("failed start: could not remove what it created", zap.String("path", name), zap.Error(err))
				}
			}
		}
	}()

	t0 := time.Now()
	segDir := filepath.Join(o.dataDir, world.SegmentsDir)
	scfg := segments.DefaultConfig()
	scfg.Dir, scfg.OnSnapshot = segDir, func(ev segments.SnapshotEvent) { logSnapshot(log, ev) }
	scfg.ReserveUsers, scfg.MaxSegments = o.reserveUsers, o.maxSegments
	segs, err := segments.Open(scfg)
	if errors.Is(err, segments.ErrNoRoom) {
		return usageErr(fmt.Errorf("--segments-reserve-users: %w", err))
	}
	if err != nil {
		return fmt.Errorf("opening segments in %s: %w", segDir, err)
	}
	defer segs.Close()
	tSegs := time.Since(t0)

	// A stop asked for while loading (SIGTERM or SIGINT during a long
	// start: seeding the demo world, opening the segments) is honoured
	// before the listeners are bound: personad does not announce itself
	// serving, print its addresses, then stop. What this start created is
	// taken back, as for a failed one (nothing was served). It is looked
	// for before the ledger opens too, since the stop cancels a Redis
	// ledger's connection, and that failure is the stop's.
	stoppedBeforeServing := func() bool {
		if ctx.Err() == nil {
			return false
		}
		log.Info("stopped before serving", zap.String("signal", context.Cause(ctx).Error()))
		return true
	}
	if stoppedBeforeServing() {
		return nil
	}

	// The ledger (spend, reservations, frequency) opens before the engine
	// and closes after the servers have stopped: Close flushes the log and
	// returns unspent leases.
	led, ledInfo, err := openLedger(ctx, o, log)
	if err != nil {
		if stoppedBeforeServing() {
			return nil
		}
		return err
	}
	defer closeLedger(led, log)

	ecfg := engine.DefaultConfig()
	ecfg.PersonaCacheSize = o.personaCache
	ecfg.Ledger = led
	eng, err := engine.New(ecfg, segs)
	if err != nil {
		return err
	}
	defer eng.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if ledInfo.redis != nil {
		redisMetrics(reg, ledInfo.redis)
	}

	// Rules: the set last applied through the Rules service, unless the
	// --rules files changed since, then watched (package reload).
	t0 = time.Now()
	rcfg := reload.DefaultConfig()
	rcfg.Engine, rcfg.Path, rcfg.DataDir, rcfg.Segments = eng, o.rules, o.dataDir, segs
	rcfg.Logger, rcfg.Metrics, rcfg.Ledger = log, reg, led
	rulesMgr, err := reload.New(rcfg)
	if err != nil {
		return usageErr(fmt.Errorf("loading rules from %s: %w", o.rules, err))
	}
	defer rulesMgr.Close()
	tRules := time.Since(t0)
	logLedger(led, ledInfo, eng, log)
	if stoppedBeforeServing() {
		return nil
	}
	var lc net.ListenConfig
	gl, err := lc.Listen(ctx, "tcp", o.grpcAddr)
	if err != nil {
		return listenErr("grpc-addr", err)
	}
	hl, err := lc.Listen(ctx, "tcp", o.httpAddr)
	if err != nil {
		gl.Close()
		return listenErr("http-addr", err)
	}
	// Each listener holds at most maxConns connections (conns.go).
	maxConns := connLimits(openFileLimit(4096))
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "personad_connections_refused_total",
		Help: "Connections closed as soon as accepted because their listener (grpc, http) held its most connections at once, max_connections in the serving log line.",
	}, []string{"listener"})
	reg.MustRegister(refused)
	gl = newLimitListener(gl, maxConns, refused.WithLabelValues("grpc"), log)
	hl = newLimitListener(hl, maxConns, refused.WithLabelValues("http"), log)
	// Notice URLs name the HTTP listener as bound (port 0 included)
	// unless --notice-url gives the public address.
	bcfg := bidder.DefaultConfig()
	bcfg.Ledger, bcfg.NoticeURL = led, o.noticeURL
	bcfg.Degraded = []func() error{segs.LogErr}
	if bcfg.NoticeURL == "" {
		bcfg.NoticeURL = "http://" + hl.Addr().String()
	}
	bcfg.Engine = eng
	bcfg.Logger = log
	bcfg.Metrics = reg
	bcfg.NetworkMargin = o.networkMargin
	bcfg.MaxBudget = o.maxBudget
	bcfg.HTTPGzip = o.httpGzip
	srv, err := bidder.New(bcfg)
	if err != nil {
		gl.Close()
		hl.Close()
		return err
	}

	// A rule set travels whole in one Rules/Apply message (a 10,000-campaign
	// set is about 25 MB), far above the 1 MiB a bid request needs. grpc-go
	// has one receive limit per server, so it is raised for every method;
	// a chunked, client-streamed Apply would let it stay small.
	gs := srv.GRPCServer(grpc.MaxRecvMsgSize(rulesMaxRecvMsgSize))
	segCfg := bidder.DefaultSegmentsConfig()
	segCfg.Store, segCfg.Engine, segCfg.Logger, segCfg.Metrics = segs, eng, log, reg
	segCfg.UploadIdleTimeout = o.uploadIdle
	segSrv, err := bidder.NewSegments(segCfg)
	if err != nil {
		gl.Close()
		hl.Close()
		return err
	}
	defer segSrv.Close() // after the servers stop, before segs closes
	bidder.RegisterSegments(gs, segSrv)
	bidder.RegisterRules(gs, bidder.NewRulesService(rulesMgr, log))
	handler := srv.Handler()
	if o.pprof {
		handler = withPprof(handler)
	}
	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}

	logRecovery(log, segs, o.reserveUsers)
	snap := segs.Current()
	log.Info("serving",
		zap.String("grpc_addr", gl.Addr().String()),
		zap.String("http_addr", hl.Addr().String()),
		zap.String("data_dir", o.dataDir),
		zap.String("rules", o.rules),
		zap.String("rules_version", rulesMgr.Status().Version),
		zap.String("rules_source", string(rulesMgr.Status().Source)),
		zap.Int("campaigns", rulesMgr.Status().Campaigns),
		zap.Uint64("segments_version", snap.Version()),
		zap.Int("segments", snap.Len()),
		zap.Int("users", snap.Dict().Len()),
		zap.Duration("rules_load", tRules),
		zap.Duration("segments_load", tSegs),
		zap.Int("max_connections", maxConns),
	)
	fmt.Fprintf(stdout, "grpc=%s http=%s\n", gl.Addr(), hl.Addr())

	// Both servers run in goroutines owned here; run returns only after
	// both have returned.
	serving = true
	errc := make(chan error, 2)
	go func() {
		// A stop before Serve begins makes it return ErrServerStopped (and
		// close gl): a clean stop, like http.ErrServerClosed below.
		if err := gs.Serve(gl); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("gRPC server: %w", err)
			return
		}
		errc <- nil
	}()
	go func() {
		if err := hs.Serve(hl); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("HTTP server: %w", err)
			return
		}
		errc <- nil
	}()

	var serveErr error
	pending := 2
	drain := o.drainDelay
	select {
	case <-ctx.Done():
		log.Info("stopping", zap.String("signal", context.Cause(ctx).Error()), zap.Duration("drain_delay", drain))
	case serveErr = <-errc:
		pending--
		drain = 0 // a listener is gone: no load balancer to wait for
		log.Error("server failed; stopping", zap.Error(serveErr))
	}
	shutdown(srv, gs, hs, drain, o.shutdownTimeout, log)
	for ; pending > 0; pending-- {
		if err := <-errc; err != nil && serveErr == nil {
			serveErr = err
		}
	}
	if serveErr != nil {
		return serveErr
	}
	log.Info("stopped")
	return nil
}

// listenErr is the error of a listener that could not be made: it names
// the flag (and its environment variable) whose address failed, as a
// busy port (another personad, or one still stopping) is a matter of
// that setting. Exit status 1: the setting may be right and the port
// only busy for now.
func listenErr(flag string, err error) error {
	return fmt.Errorf("--%s (or %s): %w", flag, envName(flag), err)
}

// gracefulServer is the part of *grpc.Server shutdown needs.
type gracefulServer interface {
	GracefulStop()
	Stop()
}

// shutdown drains: health goes not serving, requests are still answered
// for drain (--drain-delay: a load balancer that checks health stops
// sending them meanwhile; HTTP keep-alive is off, so that a connection
// held open does not pin a client to the node; a second signal ends the
// process, see main),
// then gRPC GracefulStop and HTTP Shutdown run together; whatever is
// still open when timeout passes is closed hard. gRPC's Stop, like GracefulStop, still waits for the
// handlers running then (grpc.WaitForHandlers), so that nothing uses
// what the caller closes next: they all end on the stream's cancellation
// or are bounded (a commit's fsync, a rules apply).
func shutdown(srv *bidder.Server, gs gracefulServer, hs *http.Server, drain, timeout time.Duration, log *zap.Logger) {
	srv.Shutdown()
	if drain > 0 {
		// HTTP answers close their connection from now on (Connection:
		// close), and idle ones are closed: a client or layer-4 balancer
		// that kept a connection open would otherwise go on sending on it
		// through the delay, whatever health says, and meet the close at
		// its end.
		hs.SetKeepAlivesEnabled(false)
		time.Sleep(drain)
		log.Info("drain delay over; closing the listeners")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	grpcDone := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(grpcDone)
	}()
	if err := hs.Shutdown(ctx); err != nil {
		log.Warn("HTTP graceful shutdown timed out; closing connections", zap.Duration("timeout", timeout))
		hs.Close()
	}
	select {
	case <-grpcDone:
	case <-ctx.Done():
		log.Warn("gRPC graceful stop timed out; closing connections", zap.Duration("timeout", timeout))
		gs.Stop()
		<-grpcDone
	}
}

// newLogger is the production logger: JSON on w at level, sampled, with
// caller and error stack traces.
func newLogger(w io.Writer, level zapcore.Level) *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level)
	core = zapcore.NewSamplerWithOptions(core, time.Second, 100, 100)
	return zap.New(core, zap.AddCaller(), zap.AddStacktrace(zapcore.ErrorLevel)).Named("personad")
}

// logRecovery logs what opening the segment store did: the restart time,
// how much of the write-ahead log it replayed, and the users it made room
// for (--segments-reserve-users).
func logRecovery(log *zap.Logger, segs *segments.Store, reserve int) {
	r := segs.Recovery()
	fields := []zap.Field{
		zap.Uint64("snapshot_version", r.SnapshotVersion),
		zap.Uint64("version", r.Version),
		zap.Int("log_files", r.LogFiles),
		zap.Int("records_replayed", r.Records),
		zap.Int("records_skipped", r.Skipped),
		zap.Int("users", segs.Current().Dict().Len()),
		zap.Int("segments", segs.Current().Len()),
		zap.Duration("took", r.Took),
	}
	if reserve > 0 {
		fields = append(fields, zap.Int("reserve_users", reserve))
	}
	if r.TruncatedFile != "" {
		log.Warn("segments recovered; cut off a torn log tail (an unacknowledged upload)",
			append(fields, zap.String("truncated_file", r.TruncatedFile), zap.Int64("truncated_at", r.TruncatedAt))...)
		return
	}
	log.Info("segments recovered", fields...)
}

// logSnapshot logs a snapshot the segment store wrote, or failed to.
func logSnapshot(log *zap.Logger, ev segments.SnapshotEvent) {
	fields := []zap.Field{
		zap.Uint64("version", ev.Version), zap.Int("segments", ev.Segments), zap.Int("users", ev.Users),
		zap.Int("log_files_removed", ev.LogFilesRemoved), zap.Duration("took", ev.Took),
	}
	if ev.Err != nil {
		log.Error("segments snapshot failed; the write-ahead log keeps every change", append(fields, zap.Error(ev.Err))...)
		return
	}
	log.Info("segments snapshot written", fields...)
}

// withPprof adds the Go profiles at /debug/pprof/ in front of h.
func withPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/", h)
	return mux
}
