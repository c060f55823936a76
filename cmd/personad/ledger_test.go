package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/personad/personad/engine"
	"github.com/personad/personad/internal/tcpproxy"
	"github.com/personad/personad/ledger"
	"github.com/personad/personad/segments"
)

func TestNoticeKey(t *testing.T) {
	dir := t.TempDir()
	info := &ledgerInfo{}
	k1, err := loadNoticeKey("", dir, info)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notice.key")
	if info.createdKey != path || len(k1) != 32 {
		t.Errorf("created %q, key of %d bytes; want %s and 32 bytes", info.createdKey, len(k1), path)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file %v, %v; want mode 0600", fi, err)
	}
	info = &ledgerInfo{}
	k2, err := loadNoticeKey("", dir, info)
	if err != nil || !bytes.Equal(k1, k2) || info.createdKey != "" {
		t.Errorf("second start: key changed (%v) or was created again (%q)", err, info.createdKey)
	}
	// The same file given explicitly (another node) yields the same key.
	if k3, err := loadNoticeKey(path, "/nonexistent", &ledgerInfo{}); err != nil || !bytes.Equal(k1, k3) {
		t.Errorf("explicit file: %v, equal %t", err, bytes.Equal(k1, k3))
	}

	raw := filepath.Join(dir, "raw.key")
	os.WriteFile(raw, []byte("raw key bytes, not hex at all!!"), 0o600)
	if k, err := loadNoticeKey(raw, dir, &ledgerInfo{}); err != nil || string(k) != "raw key bytes, not hex at all!!" {
		t.Errorf("raw key: %q, %v", k, err)
	}
	short := filepath.Join(dir, "short.key")
	os.WriteFile(short, []byte("00112233\n"), 0o600)
	if _, err := loadNoticeKey(short, dir, &ledgerInfo{}); err == nil || !strings.Contains(err.Error(), "key has 4 bytes, want at least 16") {
		t.Errorf("short key: %v", err)
	}
	if _, err := loadNoticeKey(filepath.Join(dir, "missing.key"), dir, &ledgerInfo{}); err == nil || !strings.Contains(err.Error(), "--notice-key-file") {
		t.Errorf("missing explicit key file: %v, want an error (never generated in a place the operator named)", err)
	}
	open := &ledgerInfo{}
	os.Chmod(raw, 0o644)
	loadNoticeKey(raw, dir, open)
	if open.keyMode&0o077 == 0 {
		t.Errorf("mode %v of a world-readable key not reported", open.keyMode)
	}
}

// TestRedisClientLogsStructured: go-redis logs some failures itself (a
// connection pool that cannot dial, …); with a Redis ledger those lines
// go through personad's logger as JSON, not to stderr as plain text among
// the JSON lines, where a log pipeline would choke on them.
func TestRedisClientLogsStructured(t *testing.T) {
	if !*useRedis {
		t.Skip("-redis=false")
	}
	ctx := context.Background()
	o := &options{dataDir: t.TempDir(), ledger: "redis://" + testRedisAddr(), budgetTZ: time.UTC}
	var logs syncBuffer
	log := newLogger(&logs, zapcore.InfoLevel)
	led, _, err := openLedger(ctx, o, log)
	if err != nil {
		t.Fatalf("Redis at %s is not reachable (set PERSONAD_TEST_REDIS_ADDR, or pass -redis=false to skip): %v", testRedisAddr(), err)
	}
	closeLedger(led, log)

	// Any go-redis client of the process logs through the same logger.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Fatal("Ping of 127.0.0.1:1 succeeded")
	}
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if line == "" {
			continue
		}
		var entry struct{ Level, Logger, Msg string }
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		if entry.Logger == "personad.redis" && strings.Contains(entry.Msg, "failed to dial") {
			found = entry.Level == "warn"
		}
	}
	if !found {
		t.Errorf("no warning from logger personad.redis about the failed dial; logs:\n%s", logs.String())
	}
}

// TestRedisFrequencyWaitMetrics: --redis-frequency-wait reaches the Redis
// client (0: the ledger's warm step reads nothing and an unknown user is
// capped), and its waits for counts are on /metrics.
func TestRedisFrequencyWaitMetrics(t *testing.T) {
	if !*useRedis {
		t.Skip("-redis=false")
	}
	for _, wait := range []time.Duration{0, time.Second} {
		t.Run(wait.String(), func(t *testing.T) {
			o := &options{dataDir: t.TempDir(), ledger: "redis://" + testRedisAddr(), budgetTZ: time.UTC, redisFreqWait: wait}
			log := zap.NewNop()
			led, info, err := openLedger(context.Background(), o, log)
			if err != nil {
				t.Fatalf("Redis at %s is not reachable (set PERSONAD_TEST_REDIS_ADDR, or pass -redis=false to skip): %v", testRedisAddr(), err)
			}
			defer closeLedger(led, log)
			reg := prometheus.NewRegistry()
			redisMetrics(reg, info.redis)
			// A user no node has shown anything: with a wait its count is
			// read before the decision (an MGET of keys that do not exist;
			// nothing is left in Redis), without one it is capped until
			// read.
			waits := 0.0
			if wait > 0 {
				waits = 1
			}
			c, err := led.Campaign(fmt.Sprintf("metrics-test-%d", time.Now().UnixNano()), ledger.Limits{Pacing: ledger.PacingASAP, CapMax: 1, CapWindow: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now().UnixNano()
			fc, _ := c.FrequencyCap()
			if err := led.WarmFrequency(context.Background(), 1, []ledger.FrequencyCap{fc}, now); err != nil {
				t.Fatal(err)
			}
			if ok := led.FrequencyOK(c, 1, now); ok != (wait > 0) {
				t.Errorf("a user no node knows passed %v, want %v", ok, wait > 0)
			}
			want := map[string]float64{
				"personad_ledger_shared_frequency_waits_total":         waits,
				"personad_ledger_shared_frequency_wait_timeouts_total": 0,
				"personad_ledger_shared_frequency_waits_skipped_total": 0,
				"personad_ledger_shared_frequency_wait_seconds_total":  waits, // 1: more than 0
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			for _, mf := range mfs {
				if _, ok := want[mf.GetName()]; ok {
					got[mf.GetName()] = mf.GetMetric()[0].GetCounter().GetValue()
				}
			}
			if s, ok := got["personad_ledger_shared_frequency_wait_seconds_total"]; ok && s > 0 {
				got["personad_ledger_shared_frequency_wait_seconds_total"] = 1
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("metrics (-want +got):\n%s", diff)
			}
		})
	}
}

// A Redis --ledger URL may carry a password (redis://user:password@…):
// personad's errors, on stderr and so in the logs, show it as xxxxx,
// whether the URL is refused as a flag, does not parse, or names a Redis
// that does not answer (port 1 has none).
func TestLedgerPasswordNotShown(t *testing.T) {
	const pw = "s3cretpw"
	for _, u := range []string{
		"redis://u:" + pw + "@127.0.0.1:6379/0?dial_timeout=soon",
		"redis://u:" + pw + "%zz@127.0.0.1:6379/1",
	} {
		_, err := parseOptions([]string{"--ledger", u}, env(), io.Discard)
		if err == nil || strings.Contains(err.Error(), pw) || !strings.HasPrefix(err.Error(), "--ledger ") {
			t.Errorf("--ledger %s: err %v, want a --ledger error without the password", u, err)
		}
	}
	var logs syncBuffer
	dir := t.TempDir()
	args := []string{"--data-dir", dir, "--rules", "testdata/rules.yaml", "--ledger", "redis://:" + pw + "@127.0.0.1:1",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}
	err := run(t.Context(), args, env(), io.Discard, &logs)
	if err == nil || strings.Contains(err.Error(), pw) || !strings.Contains(err.Error(), "redis://:xxxxx@127.0.0.1:1") {
		t.Errorf("unreachable Redis: err %v, want the URL with its password as xxxxx", err)
	}
	if strings.Contains(logs.String(), pw) {
		t.Errorf("the logs show the Redis password:\n%s", logs.String())
	}
}

// A Redis that does not answer at start fails the start with one error
// (main prints it). go-redis logged the same failed dials before it as
// warnings, one per attempt of the check ("connection pool: failed to dial
// after 5 attempts: … connection refused" twice); they are debug lines
// now, shown by --log-level debug.
func TestRedisStartFailureSaidOnce(t *testing.T) {
	for _, level := range []string{"info", "debug"} {
		var logs syncBuffer
		args := []string{"--data-dir", t.TempDir(), "--rules", "testdata/rules.yaml", "--ledger", "redis://127.0.0.1:1",
			"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-level", level}
		err := run(t.Context(), args, env(), io.Discard, &logs)
		if err == nil || !strings.Contains(err.Error(), "--ledger: redisledger: redis://127.0.0.1:1: dial tcp 127.0.0.1:1") {
			t.Fatalf("unreachable Redis: err %v, want the failed dial", err)
		}
		var warned, debug int
		for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var entry struct{ Level, Logger, Msg string }
			if json.Unmarshal([]byte(line), &entry) != nil || entry.Logger != "personad.redis" {
				continue
			}
			switch entry.Level {
			case "debug":
				debug++
			default:
				warned++
			}
		}
		if warned != 0 || (level == "debug") != (debug > 0) {
			t.Errorf("--log-level %s: %d go-redis warnings and %d debug lines beside the returned error, want none and (at debug) some:\n%s",
				level, warned, debug, logs.String())
		}
	}
}

// The "ledger opened" line tells bids the ledger remembers (settled and
// released ones included, for notices' idempotency) from the money
// reservations still hold: it named the first "pending_bids", which a
// restart after a load test showed as ten thousand bids pending while
// almost nothing was reserved.
func TestLedgerOpenedLog(t *testing.T) {
	ctx := context.Background()
	o := &options{dataDir: t.TempDir(), budgetTZ: time.UTC}
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(core)
	l, info, err := openLedger(ctx, o, log)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	now := time.Now().UnixNano()
	reserve := func(c *ledger.Campaign, bid uint64, micros int64) {
		t.Helper()
		_, err := l.Reserve(c, bid, bid, micros, now)
		if errors.Is(err, ledger.ErrNoLease) { // a lease covers a slice of the budget
			if err := l.Lease(ctx, c, now); err != nil {
				t.Fatal(err)
			}
			_, err = l.Reserve(c, bid, bid, micros, now)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	c, err := l.Campaign("c", ledger.Limits{DailyMicros: 100_000_000, TotalMicros: 1_000_000_000, Currency: "USD"})
	if err != nil {
		t.Fatal(err)
	}
	for bid := uint64(1); bid <= 3; bid++ {
		reserve(c, bid, 2_000_000)
	}
	for bid := uint64(1); bid <= 2; bid++ {
		if err := l.Loss(ctx, bid, now); err != nil {
			t.Fatal(err)
		}
	}
	// Money in two more currencies: each is its own figure, never summed
	// with the others (a first version logged "reserved_micros":7000000).
	e, err := l.Campaign("e", ledger.Limits{DailyMicros: 100_000_000, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	reserve(e, 4, 3_000_000)
	old, err := l.Campaign("old", ledger.Limits{DailyMicros: 100_000_000})
	if err != nil {
		t.Fatal(err)
	}
	reserve(old, 5, 2_000_000)
	segs, err := segments.Open(func() segments.Config { c := segments.DefaultConfig(); c.Dir = t.TempDir(); return c }())
	if err != nil {
		t.Fatal(err)
	}
	defer segs.Close()
	eng, err := engine.New(engine.DefaultConfig(), segs)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	logLedger(l, info, eng, log)
	opened := logs.FilterMessage("ledger opened").All()
	if len(opened) != 1 {
		t.Fatalf("%d \"ledger opened\" lines", len(opened))
	}
	f := opened[0].ContextMap()
	if _, ok := f["pending_bids"]; ok {
		t.Errorf("pending_bids %v: the field counts remembered bids, settled and released ones too", f["pending_bids"])
	}
	if f["bids_remembered"] != int64(5) {
		t.Errorf("bids_remembered %v, want 5", f["bids_remembered"])
	}
	for name, want := range map[string]map[string]any{
		"reserved_micros":    {"USD": int64(2_000_000), "EUR": int64(3_000_000), ledger.NoCurrency: int64(2_000_000)},
		"spent_today_micros": {"USD": int64(2_000_000), "EUR": int64(3_000_000), ledger.NoCurrency: int64(2_000_000)},
	} {
		if diff := cmp.Diff(want, f[name]); diff != "" {
			t.Errorf("%s, per currency (-want +got):\n%s", name, diff)
		}
	}
}

// TestRedisDownLogged: a Redis ledger whose calls fail (here a partition;
// also a Redis that refuses writes, as a replica or at maxmemory does)
// made the node stop bidding on its budgeted campaigns once its leases
// were spent with nothing in its log but go-redis's lines about dials (none
// at all while connections stay open or Redis answers with errors), and
// nothing on /metrics but lease_failure events rising. It logs one error
// when calls start failing, one line when they succeed again, and
// personad_ledger_shared_redis_down says which holds.
func TestRedisDownLogged(t *testing.T) {
	if !*useRedis {
		t.Skip("-redis=false")
	}
	ctx := context.Background()
	p := tcpproxy.New(t, testRedisAddr())
	defer p.Close()
	id := fmt.Sprintf("down-log-test-%d", time.Now().UnixNano())
	t.Cleanup(func() {
		rdb := redis.NewClient(&redis.Options{Addr: testRedisAddr()})
		defer rdb.Close()
		if keys, _ := rdb.Keys(ctx, "personad:ledger:{"+id+"*").Result(); len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
	})
	o := &options{dataDir: t.TempDir(), ledger: "redis://" + p.Addr(), budgetTZ: time.UTC, redisFreqWait: time.Millisecond}
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(core)
	l, info, err := openLedger(ctx, o, log)
	if err != nil {
		t.Fatalf("Redis at %s is not reachable (set PERSONAD_TEST_REDIS_ADDR, or pass -redis=false to skip): %v", testRedisAddr(), err)
	}
	defer closeLedger(l, log)
	reg := prometheus.NewRegistry()
	redisMetrics(reg, info.redis)
	down := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "personad_ledger_shared_redis_down" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no personad_ledger_shared_redis_down on /metrics")
		return 0
	}
	n := 0
	lease := func() error { // a new campaign: its first lease asks Redis
		t.Helper()
		n++
		c, err := l.Campaign(fmt.Sprintf("%s-%d", id, n), ledger.Limits{DailyMicros: 100_000_000, Pacing: ledger.PacingASAP})
		if err != nil {
			t.Fatal(err)
		}
		lctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		return l.Lease(lctx, c, time.Now().UnixNano())
	}
	if err := lease(); err != nil {
		t.Fatal(err)
	}
	if d := down(); d != 0 {
		t.Errorf("personad_ledger_shared_redis_down %v with Redis answering, want 0", d)
	}
	p.Partition()
	for range 2 {
		if err := lease(); err == nil {
			t.Fatal("a lease succeeded with Redis partitioned")
		}
	}
	if d := down(); d != 1 {
		t.Errorf("personad_ledger_shared_redis_down %v with Redis partitioned, want 1", d)
	}
	p.Heal()
	if err := lease(); err != nil {
		t.Fatal(err)
	}
	if d := down(); d != 0 {
		t.Errorf("personad_ledger_shared_redis_down %v once Redis answers again, want 0", d)
	}
	var got []string
	for _, e := range logs.All() {
		if strings.Contains(e.Message, "Redis ledger") {
			got = append(got, e.Level.String()+" "+e.Message[:strings.Index(e.Message+":", ":")])
		}
	}
	want := []string{"error Redis ledger calls fail", "info Redis ledger calls succeed again"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log lines about Redis (-want +got):\n%s", diff)
	}
}

// TestRedisSilentAtStart: a Redis that accepts connections but never
// answers (a stopped process; here a silenced proxy) failed the start
// after 5s with "--ledger: redisledger: redis://…: context deadline
// exceeded", which does not say that Redis did not answer, nor for how
// long it was waited for. The error says both.
func TestRedisSilentAtStart(t *testing.T) {
	if !*useRedis {
		t.Skip("-redis=false")
	}
	p := tcpproxy.New(t, testRedisAddr())
	defer p.Close()
	p.Silence()
	o := &options{dataDir: t.TempDir(), ledger: "redis://" + p.Addr(), budgetTZ: time.UTC}
	l, _, err := openLedger(context.Background(), o, zap.NewNop())
	if err == nil {
		l.Close()
		t.Fatal("the ledger opened with Redis silent")
	}
	want := fmt.Sprintf("redis://%s: context deadline exceeded (no answer within %v)", p.Addr(), redisConnectTimeout)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to hold %q", err, want)
	}
}
