package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/personad/personad/bench/world"
)

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunUsageErrors: problems with how personad was started exit 2 with
// an error naming the problem; invalid rules list every error by path.
func TestRunUsageErrors(t *testing.T) {
	dir, empty, halfMade, applied, fresh := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	for _, d := range []string{filepath.Join(halfMade, "segments"), filepath.Join(applied, "rules-applied")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dangling := filepath.Join(dir, "rules-link")
	if err := os.Symlink(filepath.Join(dir, "gone"), dangling); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		args  []string
		lines []string // the error's lines, each a substring
	}{
		{"bad flag", []string{"--grcp-addr", "x"}, []string{"flag provided but not defined: -grcp-addr"}},
		{"missing rules dir", []string{"--data-dir", empty}, []string{"--rules " + filepath.Join(empty, "rules") +
			" does not exist (point --rules at a rules file or directory, or start with --demo to seed a generated demo world)"}},
		{"missing rules file", []string{"--data-dir", dir, "--rules", filepath.Join(dir, "nope.yaml")}, []string{"--rules " + filepath.Join(dir, "nope.yaml") + " does not exist"}},
		{"dangling rules link", []string{"--data-dir", dir, "--rules", dangling}, []string{"--rules " + dangling + " is a symbolic link to a path that does not exist"}},
		{"missing rules dir, a set applied", []string{"--data-dir", applied}, []string{"(to serve only the rule set applied through the API, create it as an empty directory)"}},
		{"demo on a data dir without rules", []string{"--data-dir", halfMade, "--demo"}, []string{"(--demo serves the earlier run's data in " + halfMade + " rather than seed over it"}},
		{"demo seeded, missing rules file", []string{"--data-dir", fresh, "--demo", "--rules", filepath.Join(fresh, "nope.yaml")}, []string{"does not exist (point --rules at a rules file or directory"}},
		{"unparsable rules", []string{"--data-dir", dir, "--rules", writeFile(t, dir, "bad.yaml", "campaigns: [{id: x, bid_cpm: lots}]")},
			[]string{`bad.yaml: line 1: campaigns[0].bid_cpm: cannot use string "lots" here, want a number`}},
		{"invalid rules", []string{"--data-dir", dir, "--rules", "testdata/invalid.yaml"}, []string{
			"loading rules from testdata/invalid.yaml: rules: 3 errors",
			"campaigns[0].id: required",
			"campaigns[0].bid_cpm: -1",
			"campaigns[0].creatives[0].w: 0",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tc.args, env(), &stdout, &stderr)
			if code := exitCode(err); code != 2 {
				t.Fatalf("exit code %d (%v), want 2", code, err)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.lines) {
				t.Errorf("error has %d lines, want %d:\n%v", len(lines), len(tc.lines), err)
			}
			for i, want := range tc.lines {
				if i < len(lines) && !strings.Contains(lines[i], want) {
					t.Errorf("line %d %q, want it to contain %q", i, lines[i], want)
				}
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
	// A start whose rules path does not exist fails before it creates
	// the segment store and the ledger: the data dir is not left
	// half-made (which a later --demo would serve as a world).
	ents, err := os.ReadDir(empty)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != lockFile {
			t.Errorf("a start with no rules created %s in the data dir", e.Name())
		}
	}
}

// TestFailedStartLeavesNoWorld: a start that fails before it serves takes
// back the segment store, ledger and notice key it created, so that a
// later --demo seeds rather than serves a half-made data dir; what was
// there before it (a seeded world, an earlier run's data) stays.
func TestFailedStartLeavesNoWorld(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	bad := writeFile(t, t.TempDir(), "bad.yaml", "campaigns: [{id: x, bid_cpm: lots}]")
	entries := func(dir string) (names []string) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	listen := []string{"--grpc-addr", busy.Addr().String(), "--http-addr", "127.0.0.1:0"}
	for _, tc := range []struct {
		name string
		args []string
		want []string // the data dir's entries after the start
	}{
		{"invalid rules", []string{"--rules", bad}, []string{lockFile}},
		{"busy port", append([]string{"--rules", "testdata/rules.yaml"}, listen...), []string{lockFile}},
		{"demo seeded, busy port", append([]string{"--demo"}, listen...), []string{lockFile, "rules", "segments"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			err := run(t.Context(), append([]string{"--data-dir", dir}, tc.args...), env(), io.Discard, io.Discard)
			if err == nil {
				t.Fatal("the start succeeded")
			}
			if got := entries(dir); !slices.Equal(got, tc.want) {
				t.Errorf("data dir holds %q, want %q", got, tc.want)
			}
			// A later --demo seeds the world, or serves the one seeded.
			if err := run(t.Context(), append([]string{"--data-dir", dir, "--demo"}, listen...), env(), io.Discard, io.Discard); err == nil {
				t.Fatal("the --demo start succeeded on a busy port")
			}
			if got, want := entries(dir), []string{lockFile, "rules", "segments"}; !slices.Equal(got, want) {
				t.Errorf("after a later --demo the data dir holds %q, want %q", got, want)
			}
		})
	}
	// A failed start on an earlier run's data dir removes none of it.
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	_, _, done := startRun(ctx, t, []string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", dir, "--rules", "testdata/rules.yaml"}, &syncBuffer{})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	before := entries(dir)
	if err := run(t.Context(), []string{"--data-dir", dir, "--rules", bad}, env(), io.Discard, io.Discard); err == nil {
		t.Fatal("a start with invalid rules succeeded")
	}
	if got := entries(dir); !slices.Equal(got, before) || !slices.Contains(got, "segments") || !slices.Contains(got, ledgerDir) {
		t.Errorf("after a failed start the data dir holds %q, want %q as before (segments and ledger)", got, before)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRunServesAndStops runs personad in-process on port 0: it prints its
// addresses, serves /healthz, and returns nil once ctx is cancelled, with
// every goroutine stopped (goleak checks in TestMain).
func TestRunServesAndStops(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stderr := &syncBuffer{}
	grpcAddr, httpAddr, done := startRun(ctx, t,
		[]string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", dir, "--rules", "testdata/rules.yaml"}, stderr)
	checkHealthz(t, "personad", httpAddr)
	if grpcAddr == "" {
		t.Error("no gRPC address")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	logs := stderr.String()
	for _, want := range []string{`"msg":"serving"`, `"campaigns":2`, `"rules_version"`, `"msg":"stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
}

// readAddrs reads stdout up to the "grpc=... http=..." line.
func readAddrs(t *testing.T, r io.Reader) (grpcAddr, httpAddr string) {
	t.Helper()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "grpc=") {
				lines <- sc.Text()
				return
			}
		}
		close(lines)
	}()
	select {
	case line, ok := <-lines:
		if !ok {
			t.Fatal("stdout closed before the address line")
		}
		if _, err := fmt.Sscanf(line, "grpc=%s http=%s", &grpcAddr, &httpAddr); err != nil {
			t.Fatalf("address line %q: %v", line, err)
		}
		return grpcAddr, httpAddr
	case <-time.After(60 * time.Second):
		t.Fatal("no address line within 60s")
	}
	return "", ""
}

// startRun runs personad with args until ctx ends, its logs into stderr,
// and returns its addresses once it has printed them, and the channel
// run's result comes on.
func startRun(ctx context.Context, t *testing.T, args []string, stderr io.Writer) (grpcAddr, httpAddr string, done <-chan error) {
	t.Helper()
	pr, pw := io.Pipe()
	res := make(chan error, 1)
	go func() {
		res <- run(ctx, args, env(), pw, stderr)
		pw.Close()
	}()
	grpcAddr, httpAddr = readAddrs(t, pr)
	go io.Copy(io.Discard, pr) //nolint:errcheck // drains stdout until run returns
	return grpcAddr, httpAddr, res
}

// checkHealthz fails t unless personad (who) answers /healthz at httpAddr.
func checkHealthz(t *testing.T, who, httpAddr string) {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/healthz")
	if err != nil {
		t.Errorf("%s: %v", who, err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s: /healthz %d, want 200", who, resp.StatusCode)
	}
}

func TestSeedDemo(t *testing.T) {
	log := zaptest.NewLogger(t)
	dir := filepath.Join(t.TempDir(), "data")
	if seeded, err := seedDemo(dir, world.SmallConfig(), log); err != nil || !seeded {
		t.Fatalf("seeding a new data dir: seeded %v, err %v", seeded, err)
	}
	rulesDir := filepath.Join(dir, "rules")
	ents, err := os.ReadDir(rulesDir)
	if err != nil || len(ents) == 0 {
		t.Fatalf("seeded %s: %v entries, err %v", rulesDir, len(ents), err)
	}
	// A second start leaves the world alone.
	marker := writeFile(t, rulesDir, "zz-planner.yaml", "campaigns: []\n")
	if seeded, err := seedDemo(dir, world.SmallConfig(), log); err != nil || seeded {
		t.Fatalf("a second start: seeded %v, err %v", seeded, err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("second seed touched the data dir: %v", err)
	}

	// A data dir holding only what is not a world (a log the shell
	// writes there, the lock file) is seeded, and those are kept; one
	// holding any of personad's own entries is served as is.
	other := t.TempDir()
	logFile := writeFile(t, other, "personad.log", "started\n")
	writeFile(t, other, lockFile, "")
	if seeded, err := seedDemo(other, world.SmallConfig(), log); err != nil || !seeded {
		t.Fatalf("a data dir holding a log file: seeded %v, err %v", seeded, err)
	}
	if _, err := os.Stat(filepath.Join(other, world.RulesFile)); err != nil {
		t.Errorf("a data dir holding only a log file was not seeded: %v", err)
	}
	if _, err := os.Stat(logFile); err != nil {
		t.Errorf("seeding removed the log file: %v", err)
	}
	for _, name := range worldEntries {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if seeded, err := seedDemo(dir, world.SmallConfig(), log); err != nil || seeded {
			t.Fatalf("a data dir holding %s/: seeded %v, err %v", name, seeded, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("a data dir holding %s/ was seeded: %d entries", name, len(ents))
		}
	}
}

// TestSeedDemoDiskFull: a seed cut short (here: the disk filled after
// the segments snapshot's temp file was begun) fails naming the cause
// and takes back what it made, so that once space is freed the next
// --demo seeds. Before, the segments/ it left made that start take the
// dir for a world, serve it as is and exit for want of rules.
func TestSeedDemoDiskFull(t *testing.T) {
	log := zaptest.NewLogger(t)
	dir := t.TempDir()
	writeFile(t, dir, "personad.log", "started\n")
	defer func() { seedWorld = world.Seed }()
	seedWorld = func(dataDir string, cfg world.Config) error {
		seg := filepath.Join(dataDir, world.SegmentsDir)
		if err := os.MkdirAll(seg, 0o755); err != nil {
			return err
		}
		tmp := filepath.Join(seg, ".segments.snap.tmp42")
		os.WriteFile(tmp, []byte("half a snapshot"), 0o644)
		return &os.PathError{Op: "write", Path: tmp, Err: syscall.ENOSPC}
	}
	_, err := seedDemo(dir, world.SmallConfig(), log)
	if err == nil || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), "--demo: seeding "+dir) {
		t.Fatalf("seeding a full disk: %v; want the --demo error naming the dir and the errno", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "personad.log" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("after the failed seed the data dir holds %v; want only personad.log", names)
	}
	seedWorld = world.Seed // the filler is deleted
	if seeded, err := seedDemo(dir, world.SmallConfig(), log); err != nil || !seeded {
		t.Fatalf("seeding again: seeded %v, err %v", seeded, err)
	}
}

// TestRunDataDirInUse: a second personad on a data dir another one is
// serving is refused (exit 2, naming the dir and the holder) instead of
// taking over the segment store and ledger under the first, and the
// first keeps serving. Once the first has stopped, the dir is free.
func TestRunDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	args := []string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", dir, "--rules", "testdata/rules.yaml"}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, httpAddr, done := startRun(ctx, t, args, &syncBuffer{})

	// The second: refused at once, or (without the lock) serving until
	// its context ends.
	ctx2, cancel2 := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel2()
	err := run(ctx2, args, env(), io.Discard, &syncBuffer{})
	if code := exitCode(err); code != 2 {
		t.Fatalf("second personad on %s: exit code %d (%v), want 2", dir, code, err)
	}
	want := fmt.Sprintf("--data-dir %s: in use by another personad (pid %d); give each server its own", dir, os.Getpid())
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to contain %q", err, want)
	}
	checkHealthz(t, "the first personad", httpAddr)

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("first run: %v", err)
	}
	ctx3, cancel3 := context.WithCancel(t.Context())
	_, httpAddr, done3 := startRun(ctx3, t, args, &syncBuffer{})
	checkHealthz(t, "the personad after the first", httpAddr)
	cancel3()
	if err := <-done3; err != nil {
		t.Fatalf("run after the first stopped: %v", err)
	}
}

// With --drain-delay, a stop first turns /healthz to 503 and goes on
// answering bid requests for the delay, so that a load balancer still
// routing to the node for a moment gets answers, not refused
// connections; HTTP answers close their connection meanwhile (no
// keep-alive); the listeners close after it. Without it (the default)
// they closed at once.
func TestRunDrainDelay(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const delay = 2 * time.Second
	_, httpAddr, done := startRun(ctx, t,
		[]string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--rules", "testdata/rules.yaml",
			"--drain-delay", delay.String()}, &syncBuffer{})
	checkHealthz(t, "personad", httpAddr)
	stopped := time.Now()
	cancel()
	for {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err != nil {
			t.Fatalf("/healthz during the drain delay: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		if time.Since(stopped) > delay/2 {
			t.Fatalf("/healthz %d a second after the stop, want 503", resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Health says not serving; bids are still answered.
	body := `{"id":"drain","imp":[{"id":"1","banner":{"w":300,"h":250}}],"site":{"domain":"example.com"},"user":{"id":"u1"}}`
	resp, err := http.Post("http://"+httpAddr+"/openrtb2/bid", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("bid during the drain delay: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		t.Errorf("bid during the drain delay: status %d, want an answer (200 or 204)", resp.StatusCode)
	}
	// It closes its connection, so that the client's next request opens
	// one, which a balancer sends to a node that serves.
	if !resp.Close {
		t.Error("bid during the drain delay: answered without Connection: close, keeping the client on the draining node")
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if took := time.Since(stopped); took < delay {
		t.Errorf("run returned %v after the stop, before the %v drain delay", took, delay)
	}
	if _, err := http.Get("http://" + httpAddr + "/healthz"); err == nil {
		t.Error("HTTP still served after run returned")
	}
}

// TestRunStopsAtOnce: a stop that comes as soon as personad prints its
// addresses (a SIGTERM right after start) is a clean stop, even when it
// comes before the gRPC server's Serve has begun.
func TestRunStopsAtOnce(t *testing.T) {
	dir := t.TempDir()
	for i := range 10 {
		ctx, cancel := context.WithCancel(t.Context())
		_, _, done := startRun(ctx, t,
			[]string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", dir, "--rules", "testdata/rules.yaml"}, &syncBuffer{})
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("start %d, stopped at once: %v", i, err)
		}
	}
}

// TestRunLedgerDirInUse: two servers with data dirs of their own but one
// --ledger directory would both write its log: the second is refused.
func TestRunLedgerDirInUse(t *testing.T) {
	led := t.TempDir()
	args := func() []string {
		return []string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--ledger", led, "--rules", "testdata/rules.yaml"}
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, httpAddr, done := startRun(ctx, t, args(), &syncBuffer{})

	ctx2, cancel2 := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel2()
	err := run(ctx2, args(), env(), io.Discard, &syncBuffer{})
	if code := exitCode(err); code != 2 {
		t.Fatalf("second personad on the ledger %s: exit code %d (%v), want 2", led, code, err)
	}
	if want := fmt.Sprintf("--ledger %s: in use by another personad (pid %d)", led, os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to contain %q", err, want)
	}
	checkHealthz(t, "the first personad", httpAddr)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("first run: %v", err)
	}
}

// A listen address that cannot be bound (here a busy port) fails the
// start with an error naming the flag, so that the operator knows which
// setting to look at, exit status 1.
func TestRunListenErrorNamesTheFlag(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	for _, tc := range []struct{ flag, other string }{{"--grpc-addr", "--http-addr"}, {"--http-addr", "--grpc-addr"}} {
		args := []string{"--data-dir", t.TempDir(), "--rules", "testdata/rules.yaml", tc.flag, addr, tc.other, "127.0.0.1:0"}
		err := run(t.Context(), args, env(), io.Discard, io.Discard)
		want := tc.flag + " (or PERSONAD_" + strings.ToUpper(strings.ReplaceAll(tc.flag[2:], "-", "_")) + "): listen tcp " + addr + ": bind: address already in use"
		if err == nil || err.Error() != want {
			t.Errorf("%s busy: err %v, want %q", tc.flag, err, want)
		}
		if got := exitCode(err); got != 1 {
			t.Errorf("%s busy: exit code %d, want 1", tc.flag, got)
		}
	}
}

// TestRunStoppedWhileLoading: a stop asked for before personad serves
// (SIGTERM during a long load) ends the start there, a clean stop: it
// binds no listener and prints no addresses (which a supervisor reads as
// serving), and the data dir is left as a failed start leaves it. So
// with a Redis --ledger, whose connection the stop cancels: nothing
// listens at 127.0.0.1:1, so no Redis is touched either way.
func TestRunStoppedWhileLoading(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"embedded ledger", nil},
		{"redis ledger", []string{"--ledger", "redis://127.0.0.1:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			var stdout, logs syncBuffer
			args := append([]string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", dir, "--rules", "testdata/rules.yaml"}, tc.extra...)
			if err := run(ctx, args, env(), &stdout, &logs); err != nil {
				t.Fatalf("stopped while loading: %v, want a clean stop", err)
			}
			if stdout.String() != "" || strings.Contains(logs.String(), `"msg":"serving"`) {
				t.Errorf("stopped while loading, it still announced itself serving:\nstdout: %q\nlogs:\n%s", stdout.String(), logs.String())
			}
			if !strings.Contains(logs.String(), `"msg":"stopped before serving"`) {
				t.Errorf("no \"stopped before serving\" log:\n%s", logs.String())
			}
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if e.Name() != lockFile {
					t.Errorf("the data dir holds %s after a start stopped before serving", e.Name())
				}
			}
		})
	}
}

// TestRunHTTPGzip: a bid answer is gzip for an exchange that accepts it,
// unless --http-gzip=false.
func TestRunHTTPGzip(t *testing.T) {
	body := `{"id":"gz","imp":[{"id":"1","banner":{"w":300,"h":250}}],"site":{"domain":"example.com"},` +
		`"user":{"id":"u1","data":[{"segment":[{"id":"title:cmo"}]}]}}`
	for _, tc := range []struct {
		flags []string
		want  string
	}{{nil, "gzip"}, {[]string{"--http-gzip=false"}, ""}} {
		t.Run(fmt.Sprint(tc.flags), func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			_, httpAddr, done := startRun(ctx, t, append([]string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
				"--data-dir", t.TempDir(), "--rules", "testdata/rules.yaml"}, tc.flags...), &syncBuffer{})
			req, err := http.NewRequest(http.MethodPost, "http://"+httpAddr+"/openrtb2/bid", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept-Encoding", "gzip")
			c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			c.CloseIdleConnections()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != tc.want {
				t.Errorf("status %d, Content-Encoding %q; want 200, %q", resp.StatusCode, resp.Header.Get("Content-Encoding"), tc.want)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("run: %v", err)
			}
		})
	}
}
