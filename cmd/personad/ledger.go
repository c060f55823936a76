package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	_ "time/tzdata" // --budget-tz works on hosts without a zoneinfo database

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/personad/personad/engine"
	"github.com/personad/personad/ledger"
	"github.com/personad/personad/ledger/redisledger"
)

// redisConnectTimeout bounds the first contact with a Redis ledger.
const redisConnectTimeout = 5 * time.Second

// ledgerDir is the embedded ledger's directory in the data dir, unless
// --ledger names another.
const ledgerDir = "ledger"

// noticeKeyName is the notice key's file in the data dir, by default.
const noticeKeyName = "notice.key"

// isRedisURL reports whether --ledger names a Redis server.
func isRedisURL(s string) bool {
	return strings.HasPrefix(s, "redis://") || strings.HasPrefix(s, "rediss://")
}

// checkLedgerFlag rejects a --ledger that is neither a directory nor a
// Redis URL (a typo must not become a directory named "redis:/..."), and
// a Redis URL go-redis cannot use (a database that is not a number, an
// unknown option), so that it is a usage error rather than a failure to
// connect.
func checkLedgerFlag(s string) error {
	if isRedisURL(s) {
		if _, err := redis.ParseURL(s); err != nil {
			// Not the password, which a *url.Error quotes: stderr goes
			// to logs.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return fmt.Errorf("--ledger %q: %s", redisledger.RedactURL(s), strings.TrimPrefix(err.Error(), "redis: "))
		}
		return nil
	}
	if strings.Contains(s, "://") {
		return fmt.Errorf("--ledger %q: want a directory or redis://host:port[/db]", s)
	}
	return nil
}

func checkNoticeURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("--notice-url %q: want an absolute http:// or https:// URL without query, e.g. https://bidder.example.com", s)
	}
	return nil
}

// openLedger opens the spend ledger --ledger names: always the embedded
// durable ledger (in <data-dir>/ledger or the directory given), and with a
// Redis URL the shared leaser and frequency share plugged into it, so
// that budgets are leased from Redis and the hot path never waits on it.
// Redis must answer at start; later outages fail closed. It logs nothing:
// logLedger does once the rules are loaded, so that a start refused for
// bad rules prints only the problem.
func openLedger(ctx context.Context, o *options, log *zap.Logger) (*ledger.Ledger, *ledgerInfo, error) {
	cfg := ledger.DefaultConfig()
	cfg.Dir = filepath.Join(o.dataDir, ledgerDir)
	if o.ledger != "" && !isRedisURL(o.ledger) {
		cfg.Dir = o.ledger
	}
	cfg.Location = o.budgetTZ
	// A full or read-only disk under the ledger: one line when its log's
	// writes begin to fail (naming the file and the errno), one when they
	// work again; /metrics and /healthz show it meanwhile.
	cfg.LogTrouble = func(err error) {
		if err != nil {
			// A write the disk refused is retried; a log given up (its
			// error says so) waits for a restart.
			log.Error("ledger log not durable: notices and budget leases refused until it writes again, or until a restart if the error says it is given up",
				zap.String("dir", cfg.Dir), zap.Error(err))
			return
		}
		log.Info("ledger log writes again", zap.String("dir", cfg.Dir))
	}
	info := &ledgerInfo{dir: cfg.Dir, backend: "embedded"}
	key, err := loadNoticeKey(o.noticeKeyFile, o.dataDir, info)
	if err != nil {
		return nil, nil, usageErr(err)
	}
	cfg.NoticeKey = key
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("ledger: %w", err)
	}
	var rc *redisledger.Client
	if isRedisURL(o.ledger) {
		// The start's own check of Redis returns its failure (logged
		// once, by main); go-redis's lines about the same failed dials,
		// one for each attempt, would say it again and first.
		rlog := &redisLog{log: log.Named("redis")}
		rlog.checking.Store(true)
		redis.SetLogger(rlog)
		cctx, cancel := context.WithTimeout(ctx, redisConnectTimeout)
		ropts := redisledger.DefaultOptions()
		ropts.FetchWait = o.redisFreqWait
		ropts.OnStateLost = func(campaign string, err error) {
			log.Error("Redis lost the shared budget counters (restarted without persistence, flushed or evicted?): "+
				"this node stops bidding on the campaign once its leases are spent; restore Redis's data, "+
				"or set the counters to the sum of the nodes' leased_today_micros and leased_total_micros",
				zap.String("campaign", campaign), zap.Error(err))
		}
		// A lease or frequency call's error is counted, not returned to
		// anyone who would log it: say when calls start failing (the
		// node then stops bidding on budgeted campaigns once its leases
		// are spent) and when they succeed again.
		ropts.OnDown = func(op string, err error) {
			log.Error("Redis ledger calls fail: this node spends the leases it holds, then stops bidding on budgeted campaigns; "+
				"users whose frequency counts it has not read are capped",
				zap.String("op", op), zap.Error(err))
		}
		ropts.OnUp = func() { log.Info("Redis ledger calls succeed again") }
		rc, err = redisledger.New(cctx, o.ledger, ropts)
		cancel()
		if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			// A Redis that accepts connections but does not answer (a
			// stopped process, a full backlog, a firewall that drops)
			// says only "context deadline exceeded": say whose.
			err = fmt.Errorf("%w (no answer within %v)", err, redisConnectTimeout)
		}
		if err != nil {
			// checking stays set: a dial of the check still retrying
			// says the same again.
			return nil, nil, fmt.Errorf("--ledger: %w", err)
		}
		rlog.checking.Store(false)
		cfg.Leaser, cfg.Frequency = rc, rc
		info.backend, info.redis = "redis", rc
	}
	t0 := time.Now()
	l, err := ledger.New(cfg)
	if err != nil {
		if rc != nil {
			rc.Close()
		}
		return nil, nil, fmt.Errorf("opening ledger in %s: %w", cfg.Dir, err)
	}
	info.took = time.Since(t0)
	return l, info, nil
}

// redisLog carries go-redis's own log lines (a connection pool that
// cannot dial, …), which it would otherwise print to stderr as plain text
// among personad's JSON lines, into the zap logger as warnings. While
// checking is set (the start's check that Redis answers, whose failure
// is returned) they are debug lines: they say that failure again, once
// per attempt. go-redis has one logger per process.
type redisLog struct {
	log      *zap.Logger
	checking atomic.Bool
}

func (r *redisLog) Printf(_ context.Context, format string, v ...any) {
	msg := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	if r.checking.Load() {
		r.log.Debug(msg, zap.String("during", "start check"))
		return
	}
	r.log.Warn(msg)
}

// ledgerInfo is what opening the ledger did, for the log.
type ledgerInfo struct {
	backend    string
	redis      *redisledger.Client // with a Redis URL
	dir        string
	createdKey string // the notice key file created, or ""
	keyMode    os.FileMode
	took       time.Duration
}

// closeLedger flushes the ledger and returns unspent leases; run calls it
// once the servers have stopped.
func closeLedger(l *ledger.Ledger, log *zap.Logger) {
	if err := l.Close(); err != nil {
		log.Error("closing ledger; unreturned leases stay counted as spent", zap.Error(err))
	}
}

// logLedger logs what opening the ledger found and how the loaded rules
// bound to it: a campaign whose limits the ledger refused cannot spend.
func logLedger(l *ledger.Ledger, info *ledgerInfo, eng *engine.Engine, log *zap.Logger) {
	if info.createdKey != "" {
		log.Info("created notice key", zap.String("path", info.createdKey))
	}
	if info.keyMode&0o077 != 0 {
		log.Warn("notice key file is readable by group or others; anyone who reads it can forge notices",
			zap.String("mode", info.keyMode.String()))
	}
	// Money by currency: a sum of USD and EUR micros means nothing.
	spent, reserved := currencyMicros{}, currencyMicros{}
	reps := l.Report(time.Now())
	for _, r := range reps {
		cur := ledger.CurrencyLabel(r.Currency)
		spent[cur] += r.SpentTodayMicros
		reserved[cur] += r.ReservedMicros
	}
	var refused []string
	bound := 0
	if r := eng.Rules(); r != nil {
		cs := r.Campaigns()
		bound = len(cs)
		for i := range cs {
			if l.Lookup(cs[i].ID) == nil {
				refused = append(refused, cs[i].ID)
			}
		}
	}
	log.Info("ledger opened",
		zap.String("backend", info.backend),
		zap.String("dir", info.dir),
		zap.Int("campaigns", len(reps)),
		// Bids the ledger remembers (for notices' idempotency), those
		// already settled or released included: not the money held,
		// which reserved_micros is.
		zap.Int("bids_remembered", l.Pending()),
		zap.Object("reserved_micros", reserved),
		zap.Object("spent_today_micros", spent),
		zap.Int("bound", bound-len(refused)),
		zap.Int("refused", len(refused)),
		zap.Duration("took", info.took))
	if len(refused) > 0 {
		log.Warn("ledger refused campaigns' limits; they cannot spend",
			zap.Int("refused", len(refused)), zap.Strings("campaigns", refused[:min(len(refused), 20)]))
	}
}

// currencyMicros is an amount per currency, logged as an object with a
// field per currency ({"EUR":…,"USD":…}, sorted).
type currencyMicros map[string]int64

func (m currencyMicros) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	for _, cur := range slices.Sorted(maps.Keys(m)) {
		enc.AddInt64(cur, m[cur])
	}
	return nil
}

// minNoticeKey is the shortest notice key accepted (ledger.NewSigner).
const minNoticeKey = 16

// loadNoticeKey reads the HMAC key of notice tokens from path: hex (the
// format personad writes) or raw bytes, at least 16 bytes. With path ""
// it is <dataDir>/notice.key, created with 32 random bytes (mode 0600) on
// first start, so that tokens in flight survive a restart.
func loadNoticeKey(path, dataDir string, info *ledgerInfo) ([]byte, error) {
	explicit := path != ""
	if !explicit {
		path = filepath.Join(dataDir, noticeKeyName)
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		if b, err = createNoticeKey(path); err != nil {
			return nil, err
		}
		info.createdKey = path
	}
	if err != nil {
		return nil, fmt.Errorf("--notice-key-file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil {
		info.keyMode = fi.Mode().Perm()
	}
	key := bytes.TrimSpace(b)
	if k, err := hex.DecodeString(string(key)); err == nil {
		key = k
	} else {
		key = b
	}
	if len(key) < minNoticeKey {
		return nil, fmt.Errorf("--notice-key-file %s: key has %d bytes, want at least %d", path, len(key), minNoticeKey)
	}
	return key, nil
}

// createNoticeKey writes a new random key to path, atomically and durably.
func createNoticeKey(path string) ([]byte, error) {
	raw := make([]byte, 32)
	rand.Read(raw)
	text := []byte(hex.EncodeToString(raw) + "\n")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("notice key: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".notice.key-*")
	if err != nil {
		return nil, fmt.Errorf("notice key: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes the file 0600.
	_, err = tmp.Write(text)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("notice key: %w", err)
	}
	// Link, not rename: two processes starting on one data dir must not
	// each win with a different key.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return os.ReadFile(path)
		}
		return nil, fmt.Errorf("notice key: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return text, nil
}

// redisMetrics exports the Redis client's counts on /metrics.
func redisMetrics(reg prometheus.Registerer, rc *redisledger.Client) {
	const name, help = "personad_ledger_shared_frequency_lost_total",
		"Impressions not published to the other nodes through Redis, by reason: queue_full (dropped before Redis), redis_error (failed there). " +
			"This node counts them; the others under-count that user's frequency until the window ends."
	for reason, v := range map[string]func(redisledger.Stats) int64{
		"queue_full":  func(s redisledger.Stats) int64 { return s.FrequencyLostQueue },
		"redis_error": func(s redisledger.Stats) int64 { return s.FrequencyLostRedis },
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"reason": reason}},
			func() float64 { return float64(v(rc.Stats())) }))
	}
	for _, m := range []struct {
		name, help string
		v          func(redisledger.Stats) float64
	}{
		{"personad_ledger_shared_frequency_waits_total",
			"Bid requests that waited, before their decision, for a user's counts from Redis: this node had none read within the last refresh interval.",
			func(s redisledger.Stats) float64 { return float64(s.FrequencyWaits) }},
		{"personad_ledger_shared_frequency_wait_seconds_total",
			"Time bid requests waited, before their decision, for counts from Redis.",
			func(s redisledger.Stats) float64 { return time.Duration(s.FrequencyWaitNanos).Seconds() }},
		{"personad_ledger_shared_frequency_wait_timeouts_total",
			"Reads of a user's counts from Redis that got none within --redis-frequency-wait or the request's deadline (a timeout or an error), each shared by the requests waiting on it: " +
				"a user this node did not know was capped, another judged by the count the node had. No request reads for a second after one that --redis-frequency-wait ended.",
			func(s redisledger.Stats) float64 { return float64(s.FrequencyWaitTimeouts) }},
		{"personad_ledger_shared_frequency_waits_skipped_total",
			"Bid requests that needed a user's counts from Redis but did not read them, as a read had failed in the second before: " +
				"a user this node did not know was capped, another judged by the count the node had.",
			func(s redisledger.Stats) float64 { return float64(s.FrequencyWaitSkipped) }},
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: m.name, Help: m.help},
			func() float64 { return m.v(rc.Stats()) }))
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "personad_ledger_shared_state_lost_total",
		Help: "Leases and returns Redis refused because it counts less of a campaign's budget as leased than this node holds: " +
			"Redis lost its data (restart without persistence, flush, eviction). The campaign fails closed on this node.",
	}, func() float64 { return float64(rc.Stats().StateLost) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "personad_ledger_shared_redis_down",
		Help: "1 while the last call to Redis (a lease, a return, a frequency read or record in the background) failed, 0 once one succeeds: " +
			"while down, budgeted campaigns stop once this node's leases are spent.",
	}, func() float64 {
		if rc.Stats().Down {
			return 1
		}
		return 0
	}))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "personad_ledger_shared_redis_downs_total",
		Help: "Times calls to Redis started failing (personad_ledger_shared_redis_down went to 1).",
	}, func() float64 { return float64(rc.Stats().Downs) }))
}
