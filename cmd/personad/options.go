package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/personad/personad/bidder"
	"github.com/personad/personad/engine"
	"github.com/personad/personad/ledger/redisledger"
	"github.com/personad/personad/segments"
)

// options are personad's settings, from flags and the environment.
type options struct {
	grpcAddr        string
	httpAddr        string
	dataDir         string
	rules           string // "" means <dataDir>/rules
	demo            bool
	pprof           bool
	logLevel        zapcore.Level
	personaCache    int64
	reserveUsers    int
	uploadIdle      time.Duration
	maxSegments     int
	networkMargin   time.Duration
	maxBudget       time.Duration
	shutdownTimeout time.Duration
	drainDelay      time.Duration
	httpGzip        bool

	ledger        string         // "" (<dataDir>/ledger), a directory, or redis://host:port[/db]
	redisFreqWait time.Duration  // with a Redis ledger: redisledger.Options.FetchWait
	budgetTZ      *time.Location // where budget days begin
	noticeURL     string         // "" means http://<actual HTTP address>
	noticeKeyFile string         // "" means <dataDir>/notice.key, created when missing
}

// envPrefix starts the environment variable of every flag.
const envPrefix = "PERSONAD_"

// envName is the environment variable of a flag: grpc-addr is
// PERSONAD_GRPC_ADDR.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseOptions reads args, then the environment for every flag not on the
// command line. Every error is a usage error (exit 2).
func parseOptions(args []string, getenv func(string) string, usage io.Writer) (*options, error) {
	bdef, edef, sdef := bidder.DefaultConfig(), engine.DefaultConfig(), bidder.DefaultSegmentsConfig()
	o := &options{logLevel: zapcore.InfoLevel}
	fs := flag.NewFlagSet("personad", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.grpcAddr, "grpc-addr", "127.0.0.1:9090", "gRPC listen `address` (port 0 picks a free port)")
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:8080", "HTTP listen `address` for /openrtb2/bid, /notice/{win,bill,loss}, /healthz, /metrics (and /debug/pprof/ with --pprof)")
	fs.StringVar(&o.dataDir, "data-dir", "./data", "data `directory`: rules/, rules-applied/, segments/, ledger/ and notice.key")
	fs.StringVar(&o.rules, "rules", "", "rules file, or `directory` of .yaml, .yml and .json files, in any case (default <data-dir>/rules)")
	fs.BoolVar(&o.demo, "demo", false, "seed a generated demo world into the data dir unless it holds one (rules/, segments/, rules-applied/ or ledger/)")
	fs.BoolVar(&o.pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on --http-addr (keep that address private)")
	fs.TextVar(&o.logLevel, "log-level", zapcore.InfoLevel, "log `level`: debug, info, warn or error")
	fs.Int64Var(&o.personaCache, "persona-cache", edef.PersonaCacheSize, "resolved personas cached, in `users` (0 turns the cache off; about 48 bytes per user, taken at start)")
	fs.IntVar(&o.reserveUsers, "segments-reserve-users", 0, "make room in the user dictionary for this many `users` at start (about 15 bytes each plus the id bytes, taken and faulted in at start; at most the machine's memory, or its cgroup's limit if lower), so that uploads up to it never grow it: for hosts where fresh memory is slow to fault in, such as VMs that take freed memory back")
	fs.IntVar(&o.maxSegments, "segments-max", segments.DefaultConfig().MaxSegments, "the most `segments` the store holds: an upload that would add one more is refused, nothing applied (0: no limit)")
	fs.DurationVar(&o.uploadIdle, "segments-upload-idle-timeout", sdef.UploadIdleTimeout, "end a segment upload when its client's next message has not arrived after this long (nothing is applied; 0 never ends one)")
	fs.DurationVar(&o.networkMargin, "network-margin", bdef.NetworkMargin, "subtracted from a request's tmax for the network round trip")
	fs.DurationVar(&o.maxBudget, "max-budget", bdef.MaxBudget, "the most time one decision may take, whatever tmax says")
	fs.BoolVar(&o.httpGzip, "http-gzip", bdef.HTTPGzip, "compress /openrtb2/bid answers of 256 bytes or more with gzip when the request's Accept-Encoding accepts it (OpenRTB 2.6 §2.4); false always answers uncompressed")
	fs.StringVar(&o.ledger, "ledger", "", "spend ledger: a `directory` for the embedded durable ledger (default <data-dir>/ledger), or redis://host:port[/db] to share budgets and frequency caps with other nodes through Redis (the embedded ledger in <data-dir>/ledger then holds this node's leases)")
	rdef := redisledger.DefaultOptions()
	fs.DurationVar(&o.redisFreqWait, "redis-frequency-wait", rdef.FetchWait, fmt.Sprintf("with a Redis --ledger, how long a bid request may wait, before its decision, for Redis's counts of the user's impressions of the frequency-capped campaigns the request could bid on, read when this node has none from the last %v (at most half the request's time budget; the decision itself never waits); past it a user the node does not know is capped, another is judged by the count it has, and no request reads for a second (0: never read before deciding; unknown users are capped until read in the background)", rdef.Refresh))
	budgetTZ := fs.String("budget-tz", "UTC", "IANA time `zone` where daily budgets begin and end, e.g. America/New_York")
	fs.StringVar(&o.noticeURL, "notice-url", "", "public base `URL` of the HTTP listener as exchanges reach it; bids' nurl, burl and lurl start with it (default http://<http-addr>)")
	fs.StringVar(&o.noticeKeyFile, "notice-key-file", "", "`file` with the HMAC key that signs notice tokens (hex or raw, at least 16 bytes); give every node sharing a Redis ledger the same file (default <data-dir>/notice.key, 32 random bytes created on first start)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGTERM or SIGINT, how long in-flight requests may finish before connections are closed (a second signal exits at once)")
	fs.DurationVar(&o.drainDelay, "drain-delay", 0, "on SIGTERM or SIGINT, how long to go on answering with health NOT_SERVING (/healthz 503) before the listeners close and --shutdown-timeout begins, so that a load balancer sees it and stops sending requests rather than have them refused (0: close at once; a second signal exits at once)")
	// The flag package calls Usage on every parse error; personad prints
	// the usage only for -h and a one-line error otherwise.
	fs.Usage = func() {}

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(usage, "Usage: personad [flags]\n\nEvery flag is also read from %s<FLAG> (e.g. %s); a flag wins.\n\n", envPrefix, envName("grpc-addr"))
			fs.SetOutput(usage)
			fs.PrintDefaults()
			return nil, flag.ErrHelp
		}
		return nil, usageErr(err)
	}
	if fs.NArg() > 0 {
		return nil, usageErr(fmt.Errorf("unexpected argument %q (personad takes flags only)", fs.Arg(0)))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || envErr != nil {
			return
		}
		name := envName(f.Name)
		if v := getenv(name); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = usageErr(fmt.Errorf("invalid value %q for %s: %v", v, name, err))
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}

	switch {
	case o.grpcAddr == "":
		return nil, usageErr(errors.New("--grpc-addr must not be empty"))
	case o.httpAddr == "":
		return nil, usageErr(errors.New("--http-addr must not be empty"))
	case o.dataDir == "":
		return nil, usageErr(errors.New("--data-dir must not be empty"))
	case o.personaCache < 0:
		return nil, usageErr(fmt.Errorf("--persona-cache %d must be >= 0", o.personaCache))
	case o.personaCache > engine.MaxPersonaCacheSize:
		return nil, usageErr(fmt.Errorf("--persona-cache %d exceeds the limit of %d (the most users the segment store holds)", o.personaCache, int64(engine.MaxPersonaCacheSize)))
	case o.reserveUsers < 0 || o.reserveUsers > segments.MaxUsers:
		return nil, usageErr(fmt.Errorf("--segments-reserve-users %d is outside [0, %d]", o.reserveUsers, segments.MaxUsers))
	case o.maxSegments < 0:
		return nil, usageErr(fmt.Errorf("--segments-max %d must be >= 0", o.maxSegments))
	case o.uploadIdle < 0:
		return nil, usageErr(fmt.Errorf("--segments-upload-idle-timeout %v must be >= 0", o.uploadIdle))
	case o.networkMargin < 0:
		return nil, usageErr(fmt.Errorf("--network-margin %v must be >= 0", o.networkMargin))
	case o.maxBudget <= 0:
		return nil, usageErr(fmt.Errorf("--max-budget %v must be > 0", o.maxBudget))
	case o.shutdownTimeout <= 0:
		return nil, usageErr(fmt.Errorf("--shutdown-timeout %v must be > 0", o.shutdownTimeout))
	case o.drainDelay < 0:
		return nil, usageErr(fmt.Errorf("--drain-delay %v must be >= 0", o.drainDelay))
	case o.redisFreqWait < 0:
		return nil, usageErr(fmt.Errorf("--redis-frequency-wait %v must be >= 0", o.redisFreqWait))
	}
	for _, a := range [...]struct{ flag, addr string }{{"grpc-addr", o.grpcAddr}, {"http-addr", o.httpAddr}} {
		if err := checkListenAddr(a.flag, a.addr); err != nil {
			return nil, usageErr(err)
		}
	}
	if samePort(o.grpcAddr, o.httpAddr) {
		return nil, usageErr(fmt.Errorf("--grpc-addr %q and --http-addr %q name the same port: give each listener its own", o.grpcAddr, o.httpAddr))
	}
	if o.ledger != "" && !isRedisURL(o.ledger) && sameDir(o.ledger, o.dataDir) {
		return nil, usageErr(fmt.Errorf("--ledger %s is the data dir: give the ledger a directory of its own (default <data-dir>/ledger)", o.ledger))
	}
	if o.rules == "" {
		o.rules = filepath.Join(o.dataDir, "rules")
	}
	loc, err := time.LoadLocation(*budgetTZ)
	if err != nil || *budgetTZ == "" || strings.EqualFold(*budgetTZ, "local") {
		return nil, usageErr(fmt.Errorf("--budget-tz %q: want an IANA time zone such as UTC or Europe/Berlin", *budgetTZ))
	}
	o.budgetTZ = loc
	if err := checkLedgerFlag(o.ledger); err != nil {
		return nil, usageErr(err)
	}
	if o.noticeURL != "" {
		if err := checkNoticeURL(o.noticeURL); err != nil {
			return nil, usageErr(err)
		}
	}
	return o, nil
}

// checkListenAddr rejects a listen address that is not host:port with a
// valid port, so that a typo is a usage error (exit 2) rather than a
// listener failure. Whether the host resolves or the port is free is
// found out by listening.
func checkListenAddr(flag, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil && port != "" {
		_, err = net.LookupPort("tcp", port)
	}
	if err != nil {
		return fmt.Errorf("--%s %q: want host:port, e.g. 127.0.0.1:9090 (port 0 picks a free port)", flag, addr)
	}
	return nil
}

// samePort reports whether two valid listen addresses would take the same
// port: one not 0 (which picks a free one), on the same host or with
// either on every interface. The second listener would fail with "address
// already in use", which reads as another process holding the port.
func samePort(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	na, _ := net.LookupPort("tcp", pa)
	nb, _ := net.LookupPort("tcp", pb)
	if na == 0 || na != nb {
		return false
	}
	wildcard := func(h string) bool { ip := net.ParseIP(h); return h == "" || ip != nil && ip.IsUnspecified() }
	return strings.EqualFold(ha, hb) || wildcard(ha) || wildcard(hb)
}

// sameDir reports whether two paths name the same directory, as written
// (a symbolic link is not followed). The ledger's lock would then be the
// data dir's, and taking it again fails as if another personad held it.
func sameDir(a, b string) bool {
	aa, errA := filepath.Abs(a)
	ab, errB := filepath.Abs(b)
	return errA == nil && errB == nil && aa == ab
}

// exitError carries the exit status of an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr marks a problem with how personad was started: bad flags or
// environment, unreadable or invalid rules. It exits 2.
func usageErr(err error) error { return &exitError{code: 2, err: err} }

// exitCode is the process exit status for run's error.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if e := (*exitError)(nil); errors.As(err, &e) {
		return e.code
	}
	return 1
}
