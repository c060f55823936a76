package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/bidder"
	"github.com/personad/personad/engine"
	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

// HTTP server limits: OpenRTB requests are small and answered in
// milliseconds, so a slow client is cut off early.
const (
	httpReadHeaderTimeout = 5 * time.Second
	httpReadTimeout       = 10 * time.Second
	httpWriteTimeout      = 10 * time.Second
	httpIdleTimeout       = 2 * time.Minute
	httpMaxHeaderBytes    = 64 << 10
)

// run is personad: it returns when ctx is done (after a graceful stop) or
// when serving fails. Logs go to stderr; the listening addresses line goes
// to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := newLogger(stderr, o.logLevel)
	defer log.Sync() //nolint:errcheck // nothing to do about a failed flush at exit

	if o.demo {
		if err := seedDemo(o.dataDir, world.DemoConfig(), log); err != nil {
			return err
		}
	}

	t0 := time.Now()
	rs, err := rules.Load(o.rules)
	if err != nil {
		return usageErr(fmt.Errorf("loading rules from %s: %w", o.rules, err))
	}
	tLoad := time.Since(t0)
	t0 = time.Now()
	compiled, err := engine.Compile(rs, "")
	if err != nil {
		return usageErr(fmt.Errorf("compiling rules from %s: %w", o.rules, err))
	}
	tCompile := time.Since(t0)

	t0 = time.Now()
	segDir := filepath.Join(o.dataDir, "segments")
	segs, err := segments.Open(segments.Config{Dir: segDir})
	if err != nil {
		return fmt.Errorf("opening segments in %s: %w", segDir, err)
	}
	defer segs.Close()
	tSegs := time.Since(t0)

	ecfg := engine.DefaultConfig()
	ecfg.PersonaCacheSize = o.personaCache
	eng, err := engine.New(ecfg, segs)
	if err != nil {
		return err
	}
	defer eng.Close()
	eng.SetRules(compiled)

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	bcfg := bidder.DefaultConfig()
	bcfg.Engine = eng
	bcfg.Logger = log
	bcfg.Metrics = reg
	bcfg.NetworkMargin = o.networkMargin
	bcfg.MaxBudget = o.maxBudget
	srv, err := bidder.New(bcfg)
	if err != nil {
		return err
	}

	var lc net.ListenConfig
	gl, err := lc.Listen(ctx, "tcp", o.grpcAddr)
	if err != nil {
		return fmt.Errorf("gRPC listener: %w", err)
	}
	hl, err := lc.Listen(ctx, "tcp", o.httpAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("HTTP listener: %w", err)
	}
	gs := srv.GRPCServer()
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}

	snap := segs.Current()
	log.Info("serving",
		zap.String("grpc_addr", gl.Addr().String()),
		zap.String("http_addr", hl.Addr().String()),
		zap.String("data_dir", o.dataDir),
		zap.String("rules", o.rules),
		zap.String("rules_version", compiled.Version()),
		zap.Int("campaigns", len(compiled.Campaigns())),
		zap.Uint64("segments_version", snap.Version()),
		zap.Int("segments", snap.Len()),
		zap.Int("users", snap.Dict().Len()),
		zap.Duration("rules_load", tLoad),
		zap.Duration("rules_compile", tCompile),
		zap.Duration("segments_load", tSegs),
	)
	fmt.Fprintf(stdout, "grpc=%s http=%s\n", gl.Addr(), hl.Addr())

	// Both servers run in goroutines owned here; run returns only after
	// both have returned.
	errc := make(chan error, 2)
	go func() {
		if err := gs.Serve(gl); err != nil {
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
	select {
	case <-ctx.Done():
		log.Info("stopping", zap.String("signal", context.Cause(ctx).Error()))
	case serveErr = <-errc:
		pending--
		log.Error("server failed; stopping", zap.Error(serveErr))
	}
	shutdown(srv, gs, hs, o.shutdownTimeout, log)
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

// gracefulServer is the part of *grpc.Server shutdown needs.
type gracefulServer interface {
	GracefulStop()
	Stop()
}

// shutdown drains: health goes not serving, then gRPC GracefulStop and
// HTTP Shutdown run together; whatever is still open when timeout passes
// is closed hard.
func shutdown(srv *bidder.Server, gs gracefulServer, hs *http.Server, timeout time.Duration, log *zap.Logger) {
	srv.Shutdown()
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
