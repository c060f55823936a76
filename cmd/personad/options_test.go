package main

import (
	"bytes"
	"errors"
	"flag"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zapcore"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func defaults() options {
	return options{
		grpcAddr: "127.0.0.1:9090", httpAddr: "127.0.0.1:8080", dataDir: "./data",
		rules: filepath.Join("data", "rules"), logLevel: zapcore.InfoLevel, personaCache: 1 << 20,
		networkMargin: 10 * time.Millisecond, maxBudget: 50 * time.Millisecond, shutdownTimeout: 10 * time.Second,
		budgetTZ: time.UTC, uploadIdle: 2 * time.Minute, redisFreqWait: 5 * time.Millisecond, maxSegments: 100_000,
		httpGzip: true,
	}
}

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		getenv func(string) string
		want   func(o *options)
	}{
		{"defaults", nil, env(), func(o *options) {}},
		{"flags", []string{
			"--grpc-addr", "127.0.0.1:0", "--http-addr=127.0.0.1:0", "--data-dir", "/srv/pd", "--demo",
			"--log-level", "debug", "--persona-cache", "0", "--network-margin", "5ms", "--max-budget", "20ms",
			"--shutdown-timeout", "1s", "--segments-reserve-users", "40000000", "--segments-upload-idle-timeout", "0",
			"--segments-max", "500", "--drain-delay", "5s", "--http-gzip=false",
		}, env(), func(o *options) {
			o.reserveUsers, o.uploadIdle, o.maxSegments, o.drainDelay, o.httpGzip = 40_000_000, 0, 500, 5*time.Second, false
			o.grpcAddr, o.httpAddr, o.dataDir, o.rules, o.demo = "127.0.0.1:0", "127.0.0.1:0", "/srv/pd", "/srv/pd/rules", true
			o.logLevel, o.personaCache, o.networkMargin, o.maxBudget, o.shutdownTimeout = zapcore.DebugLevel, 0, 5*time.Millisecond, 20*time.Millisecond, time.Second
		}},
		{"rules flag", []string{"--rules", "/etc/pd/rules.yaml"}, env(), func(o *options) { o.rules = "/etc/pd/rules.yaml" }},
		{"environment", nil, env(
			"PERSONAD_GRPC_ADDR", "0.0.0.0:1", "PERSONAD_DATA_DIR", "/d", "PERSONAD_DEMO", "true",
			"PERSONAD_MAX_BUDGET", "30ms", "PERSONAD_LOG_LEVEL", "warn", "PERSONAD_PERSONA_CACHE", "42",
			"PERSONAD_HTTP_GZIP", "false",
		), func(o *options) {
			o.httpGzip = false
			o.grpcAddr, o.dataDir, o.rules, o.demo, o.maxBudget, o.logLevel, o.personaCache = "0.0.0.0:1", "/d", "/d/rules", true, 30*time.Millisecond, zapcore.WarnLevel, 42
		}},
		{"flag wins over environment", []string{"--grpc-addr", "127.0.0.1:7"}, env("PERSONAD_GRPC_ADDR", "0.0.0.0:1", "PERSONAD_HTTP_ADDR", "127.0.0.1:8"),
			func(o *options) { o.grpcAddr, o.httpAddr = "127.0.0.1:7", "127.0.0.1:8" }},
		{"flag wins even when it is the default", []string{"--max-budget", "50ms"}, env("PERSONAD_MAX_BUDGET", "1s"), func(o *options) {}},
		{"money flags", []string{
			"--ledger", "redis://10.0.0.5:6379/2", "--budget-tz", "America/New_York",
			"--notice-url", "https://bidder.example.com", "--notice-key-file", "/etc/pd/notice.key", "--redis-frequency-wait", "0",
		}, env(), func(o *options) {
			o.ledger, o.budgetTZ, o.noticeURL, o.noticeKeyFile = "redis://10.0.0.5:6379/2", mustZone("America/New_York"), "https://bidder.example.com", "/etc/pd/notice.key"
			o.redisFreqWait = 0
		}},
		{"money environment", nil, env(
			"PERSONAD_LEDGER", "/var/lib/pd/ledger", "PERSONAD_BUDGET_TZ", "Europe/Berlin",
			"PERSONAD_NOTICE_URL", "http://10.0.0.7:8080/", "PERSONAD_NOTICE_KEY_FILE", "k", "PERSONAD_REDIS_FREQUENCY_WAIT", "2ms",
		), func(o *options) {
			o.redisFreqWait = 2 * time.Millisecond
			o.ledger, o.budgetTZ, o.noticeURL, o.noticeKeyFile = "/var/lib/pd/ledger", mustZone("Europe/Berlin"), "http://10.0.0.7:8080/", "k"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseOptions(tc.args, tc.getenv, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			want := defaults()
			tc.want(&want)
			zones := cmp.Comparer(func(a, b *time.Location) bool { return a.String() == b.String() })
			if diff := cmp.Diff(want, *got, cmp.AllowUnexported(options{}), zones); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseOptionsErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		getenv func(string) string
		want   string
	}{
		{"unknown flag", []string{"--bogus"}, env(), "flag provided but not defined: -bogus"},
		{"bad duration", []string{"--max-budget", "soon"}, env(), `invalid value "soon" for flag -max-budget`},
		{"bad level", []string{"--log-level", "loud"}, env(), `invalid value "loud" for flag -log-level`},
		{"positional", []string{"serve"}, env(), `unexpected argument "serve"`},
		{"bad env", nil, env("PERSONAD_PERSONA_CACHE", "lots"), `invalid value "lots" for PERSONAD_PERSONA_CACHE`},
		{"bad env bool", nil, env("PERSONAD_DEMO", "perhaps"), `invalid value "perhaps" for PERSONAD_DEMO`},
		{"bad gzip bool", nil, env("PERSONAD_HTTP_GZIP", "sometimes"), `invalid value "sometimes" for PERSONAD_HTTP_GZIP`},
		{"negative cache", []string{"--persona-cache", "-1"}, env(), "--persona-cache -1 must be >= 0"},
		// 48 TB of counters: the runtime's fatal "out of memory" at start.
		{"huge cache", []string{"--persona-cache", "1000000000000"}, env(), "--persona-cache 1000000000000 exceeds the limit of 4294967294"},
		{"negative reserve", nil, env("PERSONAD_SEGMENTS_RESERVE_USERS", "-5"), "--segments-reserve-users -5 is outside [0, 4294967294]"},
		{"negative idle timeout", []string{"--segments-upload-idle-timeout", "-1s"}, env(), "--segments-upload-idle-timeout -1s must be >= 0"},
		{"negative segments max", []string{"--segments-max", "-1"}, env(), "--segments-max -1 must be >= 0"},
		{"negative drain delay", nil, env("PERSONAD_DRAIN_DELAY", "-1s"), "--drain-delay -1s must be >= 0"},
		{"huge reserve", []string{"--segments-reserve-users", "5000000000"}, env(), "--segments-reserve-users 5000000000 is outside [0, 4294967294]"},
		{"negative margin", []string{"--network-margin", "-1ms"}, env(), "--network-margin -1ms must be >= 0"},
		{"zero budget", nil, env("PERSONAD_MAX_BUDGET", "0s"), "--max-budget 0s must be > 0"},
		{"negative frequency wait", []string{"--redis-frequency-wait", "-1ms"}, env(), "--redis-frequency-wait -1ms must be >= 0"},
		{"empty addr", []string{"--grpc-addr", ""}, env(), "--grpc-addr must not be empty"},
		{"addr without port", []string{"--grpc-addr", "localhost"}, env(), `--grpc-addr "localhost": want host:port`},
		{"addr with bad port", nil, env("PERSONAD_HTTP_ADDR", ":99999"), `--http-addr ":99999": want host:port`},
		{"same addr", []string{"--grpc-addr", "127.0.0.1:9000", "--http-addr", "127.0.0.1:9000"}, env(), `--grpc-addr "127.0.0.1:9000" and --http-addr "127.0.0.1:9000" name the same port`},
		{"same port, all interfaces", []string{"--grpc-addr", ":9000"}, env("PERSONAD_HTTP_ADDR", "127.0.0.1:9000"), `--grpc-addr ":9000" and --http-addr "127.0.0.1:9000" name the same port`},
		{"bad zone", []string{"--budget-tz", "Mars/Olympus"}, env(), `--budget-tz "Mars/Olympus": want an IANA time zone`},
		{"local zone", nil, env("PERSONAD_BUDGET_TZ", "Local"), `--budget-tz "Local"`},
		{"bad ledger", []string{"--ledger", "postgres://db/x"}, env(), `--ledger "postgres://db/x": want a directory or redis://host:port[/db]`},
		{"bad Redis database", []string{"--ledger", "redis://127.0.0.1:6379/abc"}, env(), `--ledger "redis://127.0.0.1:6379/abc": invalid database number: "abc"`},
		{"bad Redis scheme option", nil, env("PERSONAD_LEDGER", "redis://127.0.0.1:6379/0?dial_timeout=soon"), `--ledger "redis://127.0.0.1:6379/0?dial_timeout=soon"`},
		{"ledger in the data dir's place", []string{"--data-dir", "/srv/pd", "--ledger", "/srv/pd/"}, env(), `--ledger /srv/pd/ is the data dir: give the ledger a directory of its own`},
		{"bad notice URL", []string{"--notice-url", "bidder.example.com"}, env(), `--notice-url "bidder.example.com": want an absolute http:// or https:// URL`},
		{"notice URL with query", []string{"--notice-url", "http://x/?a=b"}, env(), `--notice-url "http://x/?a=b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseOptions(tc.args, tc.getenv, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans lines, want one", err)
			}
			if exitCode(err) != 2 {
				t.Errorf("exit code %d, want 2", exitCode(err))
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := parseOptions([]string{"-h"}, env(), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"PERSONAD_GRPC_ADDR", "-grpc-addr", "-rules", "-demo"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
	if err := run(t.Context(), []string{"--help"}, env(), &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Errorf("run --help: %v, want nil (exit 0)", err)
	}
}

func TestEnvName(t *testing.T) {
	for flag, want := range map[string]string{"grpc-addr": "PERSONAD_GRPC_ADDR", "demo": "PERSONAD_DEMO", "persona-cache": "PERSONAD_PERSONA_CACHE"} {
		if got := envName(flag); got != want {
			t.Errorf("envName(%q) = %q, want %q", flag, got, want)
		}
	}
}

func mustZone(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return loc
}
