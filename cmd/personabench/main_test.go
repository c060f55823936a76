package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/personad/personad/bench"
	"github.com/personad/personad/ledger/pacesim"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

// childEnv makes the test binary act as personabench when a test starts
// it as the baseline's child process (os.Executable is the test binary).
const childEnv = "PERSONABENCH_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
	}
	goleak.VerifyTestMain(m)
}

// nbrBidder answers no-bid 8 to everyone, as a server with no matching
// campaign would.
type nbrBidder struct {
	personadpb.UnimplementedBidderServer
}

func (nbrBidder) Bid(_ context.Context, req *personadpb.BidRequest) (*personadpb.BidResponse, error) {
	return &personadpb.BidResponse{Id: req.GetId(), Nbr: 8}, nil
}

func noenv(string) string { return "" }

func runCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(ctx, args, noenv, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

// An end-to-end smoke run: the open loop over a real loopback listener,
// JSON on stdout, progress on stderr. Its tests give requests a long
// --timeout: they check the command, not the machine (the 1 s default
// timed out 176 of 300 no-op requests at load average 14 on 2 cores).
func TestRunOpenLoopSmoke(t *testing.T) {
	srv, err := bench.StartServer("127.0.0.1:0", nbrBidder{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	out, errOut, err := runCmd(t, "run", "--addr", srv.Addr(), "--rps", "300", "--duration", "1s",
		"--warmup", "200ms", "--timeout", "10s", "--conns", "2", "--pool", "500", "--json", "--progress", "always", "--server-pid", "-1")
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, errOut)
	}
	var r bench.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("stdout is not a JSON report: %v\n%s", err, out)
	}
	if r.Mode != "open" || r.Rate != 300 || r.Conns != 2 {
		t.Errorf("mode %q rate %v conns %d", r.Mode, r.Rate, r.Conns)
	}
	if r.Sent != 300 || r.OK != 300 || r.NoBids["8"] != 300 || len(r.Errors) != 0 {
		t.Errorf("sent %d ok %d no-bids %v errors %v, want 300 no-bids 8", r.Sent, r.OK, r.NoBids, r.Errors)
	}
	if r.Latency.Count != 300 || r.Latency.P50 <= 0 || r.Latency.P99 < r.Latency.P50 || r.Latency.Max < r.Latency.P999 {
		t.Errorf("latency %+v", r.Latency)
	}
	if !strings.Contains(errOut, "sent ") {
		t.Errorf("no progress line on stderr: %q", errOut)
	}
}

// The baseline runs as a child process by default.
func TestRunClosedLoopWithBaselineText(t *testing.T) {
	t.Setenv(childEnv, "1")
	srv, err := bench.StartServer("127.0.0.1:0", nbrBidder{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	jsonPath := filepath.Join(t.TempDir(), "r.json")
	out, errOut, err := runCmd(t, "run", "--addr", srv.Addr(), "--concurrency", "2", "--duration", "300ms",
		"--warmup", "0s", "--pool", "100", "--baseline", "--progress", "never", "--out", jsonPath)
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, errOut)
	}
	for _, want := range []string{"baseline 127.0.0.1:", "target " + srv.Addr(), "closed loop, concurrency 2", "vs baseline", "p99.9"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var r bench.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Baseline == nil || r.Ratio == nil || r.Ratio.Throughput <= 0 {
		t.Fatalf("--out report has no baseline ratio: %s", b)
	}
	if c := r.Baseline.ServerCPU; c == nil || c.PID == os.Getpid() {
		t.Errorf("baseline server cpu %+v, want the child process's", c)
	}
}

func TestBaselineCommand(t *testing.T) {
	out, errOut, err := runCmd(t, "baseline", "--rps", "200", "--duration", "500ms", "--warmup", "0s", "--pool", "100", "--json", "--timeout", "10s",
		"--baseline-inprocess")
	if err != nil {
		t.Fatalf("baseline: %v\nstderr: %s", err, errOut)
	}
	var r bench.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Label != "baseline (in-process)" || r.OK != 100 || r.NoBids["0"] != 100 {
		t.Errorf("label %q ok %d no-bids %v", r.Label, r.OK, r.NoBids)
	}
}

func TestBaselineServeOnly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"baseline", "--serve-only", "--addr", "127.0.0.1:0"}, noenv, io.Discard, pw)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no serving line: %v", err)
	}
	_, rest, ok := strings.Cut(line, "serving on ")
	addr, _, _ := strings.Cut(rest, " ")
	if !ok || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("serving line %q", line)
	}
	// It really serves: a one-second run against it succeeds.
	out, errOut, err := runCmd(t, "run", "--addr", addr, "--rps", "100", "--duration", "200ms", "--warmup", "0s",
		"--pool", "10", "--json", "--server-pid", "-1", "--timeout", "10s")
	if err != nil || !strings.Contains(out, `"ok": 20`) {
		t.Errorf("run against serve-only: %v\n%s%s", err, out, errOut)
	}
	cancel()
	go io.Copy(io.Discard, pr)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// halfBidder fails every other request, as a server going down mid-run
// or behind a load balancer with one dead backend would.
type halfBidder struct {
	personadpb.UnimplementedBidderServer
	n atomic.Int64
}

func (h *halfBidder) Bid(_ context.Context, req *personadpb.BidRequest) (*personadpb.BidResponse, error) {
	if h.n.Add(1)%2 == 0 {
		return nil, status.Error(codes.Unavailable, "backend down")
	}
	return &personadpb.BidResponse{Id: req.GetId(), Nbr: 8}, nil
}

// A run whose requests fail at a rate above --max-error-rate (default 1%)
// still writes its report, on stdout and to --out, and then fails with a
// boundError (exit 3) naming the rate and the flag; a looser bound passes.
// It exited 0 on any error rate, and a script took the run for a success.
func TestRunErrorRateBound(t *testing.T) {
	t.Setenv(childEnv, "1")
	srv, err := bench.StartServer("127.0.0.1:0", &halfBidder{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	args := []string{"run", "--addr", srv.Addr(), "--rps", "200", "--duration", "500ms", "--warmup", "0s",
		"--timeout", "10s", "--pool", "100", "--json", "--progress", "never", "--server-pid", "-1"}
	outPath := filepath.Join(t.TempDir(), "r.json")
	out, errOut, err := runCmd(t, append(args, "--out", outPath)...)
	var be boundError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "target: error rate 50.00% (50 of 100 requests due failed or were dropped) is above --max-error-rate 0.01") {
		t.Fatalf("run with half the requests failing: err %v, want a boundError naming the rate and --max-error-rate\nstderr: %s", err, errOut)
	}
	for name, b := range map[string][]byte{"stdout": []byte(out), "--out": func() []byte { b, _ := os.ReadFile(outPath); return b }()} {
		var r bench.Report
		if err := json.Unmarshal(b, &r); err != nil || r.Errors["Unavailable"] != 50 {
			t.Errorf("%s: report %v, errors %v; want the report, written before the failure", name, err, r.Errors)
		}
	}
	if _, errOut, err := runCmd(t, append(args, "--max-error-rate", "0.5")...); err != nil {
		t.Errorf("--max-error-rate 0.5 with 50%% failing: %v, want success\nstderr: %s", err, errOut)
	}
	// With --baseline the target's rate is checked all the same.
	if _, _, err := runCmd(t, append(args, "--baseline")...); !errors.As(err, &be) {
		t.Errorf("--baseline: err %v, want a boundError", err)
	}
	// The process exits 3, which a script tells from a failed run (1).
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 3 || !strings.Contains(stderr.String(), "--max-error-rate") {
		t.Errorf("personabench run: %v, stderr %q; want exit status 3 naming --max-error-rate", err, stderr.String())
	}
}

// A sweep whose first step already breaks --max-error-rate has no knee:
// its report is written, and it fails with a boundError. (A first step
// over --p99-bound is a result, TestCPUProfile's sweep on a loaded
// machine among them.)
func TestSweepWithoutKnee(t *testing.T) {
	srv, err := bench.StartServer("127.0.0.1:0", &halfBidder{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	out, errOut, err := runCmd(t, "sweep", "--addr", srv.Addr(), "--start", "100", "--step", "100", "--max", "200",
		"--duration", "300ms", "--warmup", "0s", "--pool", "100", "--p99-bound", "5s", "--json", "--server-pid", "-1", "--timeout", "10s")
	if !errors.As(err, new(boundError)) || !strings.Contains(err.Error(), "sweep: the first step, 100 rps, had an error rate of 50.00% (15 of 30 requests due failed or were dropped), above --max-error-rate 0.001: no knee measured") {
		t.Fatalf("sweep against a server failing half its requests: err %v, want a boundError\nstderr: %s", err, errOut)
	}
	var sr bench.SweepReport
	if err := json.Unmarshal([]byte(out), &sr); err != nil || len(sr.Steps) != 1 || sr.Knee != 0 {
		t.Errorf("report %v: %d steps, knee %v; want the one step written", err, len(sr.Steps), sr.Knee)
	}
}

// The bounds are loose on purpose: this checks the command, not the
// machine (a shared 2-core machine under load has shown p99 near 1 s at
// 200 rps, and under the race detector achieved 93/s of 100/s, below
// --min-achieved's default 95%: dc9c14f).
func TestSweepCommand(t *testing.T) {
	srv, err := bench.StartServer("127.0.0.1:0", nbrBidder{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	out, errOut, err := runCmd(t, "sweep", "--addr", srv.Addr(), "--start", "100", "--step", "100", "--max", "200",
		"--duration", "300ms", "--warmup", "0s", "--pool", "100", "--p99-bound", "5s", "--min-achieved", "0", "--json", "--server-pid", "-1", "--timeout", "10s")
	if err != nil {
		t.Fatalf("sweep: %v\nstderr: %s", err, errOut)
	}
	var sr bench.SweepReport
	if err := json.Unmarshal([]byte(out), &sr); err != nil {
		t.Fatal(err)
	}
	if len(sr.Steps) != 2 || sr.Knee != 200 {
		t.Errorf("steps %d knee %v stop %q", len(sr.Steps), sr.Knee, sr.Stop)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"frobnicate"},
		{"run"},
		{"run", "--rps", "10", "--concurrency", "2"},
		{"run", "--rps", "10", "--bogus"},
		{"run", "--rps", "10", "--channels", "web=x"},
		{"run", "--rps", "NaN"},
		{"run", "--rps", "Inf"},
		{"run", "--rps", "10", "--duration", "0s"},
		{"run", "--rps", "10", "--warmup", "-1s"},
		{"run", "--rps", "10", "--timeout", "0s"},
		{"run", "--rps", "10", "--max-inflight", "0"},
		{"sweep", "--timeout", "0s"},
		{"run", "--rps", "10", "--channels", "social=NaN"},
		{"run", "--rps", "10", "--sizes", "300x250=Inf,728x90=1"},
		{"run", "--rps", "10", "--progress", "sometimes"},
		{"run", "--rps", "10", "extra"},
		{"run", "--rps", "10", "--max-error-rate", "1.5"},
		{"run", "--rps", "10", "--max-error-rate", "NaN"},
		{"baseline", "--rps", "10", "--max-error-rate", "-0.1"},
		{"pace", "--campaigns", "0"},
		{"pace", "--warmup-days", "-1"},
	} {
		_, _, err := runCmd(t, args...)
		if !errors.As(err, new(usageError)) {
			t.Errorf("%q: err %v, want a usage error", args, err)
		}
	}
	if _, _, err := runCmd(t, "run", "-h"); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

// Each command's -h begins with a usage line naming the command and its
// main flags, then lists its flags.
func TestCommandHelp(t *testing.T) {
	for _, tc := range []struct{ cmd, want, flag string }{
		{"run", "usage: personabench run [--wire grpc|http [--gzip]] [--addr HOST:PORT|URL] (--rps R | --concurrency C) [--duration D]", "  -wire string"},
		{"sweep", "usage: personabench sweep [--wire grpc|http [--gzip]] [--addr HOST:PORT|URL] [--start R] [--step R] [--max R] [--p99-bound D]", "  -p99-bound duration"},
		{"baseline", "usage: personabench baseline (--rps R | --concurrency C) [--compare [--target HOST:PORT]] [flags]\n       personabench baseline --serve-only [--addr HOST:PORT]\n", "  -serve-only"},
		{"pace", "usage: personabench pace [--campaigns N] [--warmup-days N] [--json]", "  -campaigns int"},
	} {
		stdout, stderr, err := runCmd(t, tc.cmd, "-h")
		if !errors.Is(err, flag.ErrHelp) || stdout != "" {
			t.Errorf("%s -h: err %v, stdout %q; want flag.ErrHelp and nothing", tc.cmd, err, stdout)
		}
		if !strings.HasPrefix(stderr, tc.want) || !strings.Contains(stderr, "\nflags:\n") || !strings.Contains(stderr, tc.flag) {
			t.Errorf("%s -h: stderr\n%s\nwant it to begin %q, then flags: with %q", tc.cmd, stderr, tc.want, tc.flag)
		}
	}
}

// The pacing simulator through the command: a small deterministic run, as
// JSON, one report per day, money invariants held.
func TestPaceCommand(t *testing.T) {
	out, _, err := runCmd(t, "pace", "--campaigns", "20", "--impressions", "1000", "--warmup-days", "1", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep pacesim.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(rep.Days) != 2 {
		t.Fatalf("%d days, want 2 (one warm-up, one measured)", len(rep.Days))
	}
	d := rep.Days[1]
	if d.Requests == 0 || d.Impressions == 0 || d.Sufficient == 0 {
		t.Errorf("empty day: %+v", d)
	}
	if d.Overspent != 0 || d.FrequencyViolations != 0 {
		t.Errorf("overspent %d, frequency violations %d", d.Overspent, d.FrequencyViolations)
	}
	again, _, err := runCmd(t, "pace", "--campaigns", "20", "--impressions", "1000", "--warmup-days", "1", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep2 pacesim.Report
	if err := json.Unmarshal([]byte(again), &rep2); err != nil {
		t.Fatal(err)
	}
	rep.Elapsed, rep2.Elapsed = 0, 0
	if !reflect.DeepEqual(rep, rep2) {
		t.Errorf("the same seed gave different days:\n%+v\n%+v", rep.Days, rep2.Days)
	}
}

// --out is checked before the run: a path that cannot be written is a
// usage error naming the flag at once, not the loss of the report after
// a run of --duration. The report is written whole (a temporary file
// renamed over --out), with nothing else left beside it.
func TestOutCheckedBeforeTheRun(t *testing.T) {
	srv, err := bench.StartServer("127.0.0.1:0", nbrBidder{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dir := t.TempDir()
	args := []string{"--addr", srv.Addr(), "--rps", "100", "--duration", "200ms", "--warmup", "0s",
		"--pool", "10", "--server-pid", "-1", "--timeout", "10s", "--progress", "never"}
	for _, tc := range []struct{ cmd, out string }{
		{"run", filepath.Join(dir, "missing", "r.json")},
		{"run", dir},
		{"sweep", filepath.Join(dir, "missing", "r.json")},
		{"baseline", filepath.Join(dir, "missing", "r.json")},
	} {
		a := append([]string{tc.cmd}, args...)
		if tc.cmd == "sweep" {
			a = append(a[:3], a[5:]...) // no --rps
			a = append(a, "--start", "100", "--step", "100", "--max", "100")
		}
		if tc.cmd == "baseline" {
			a = append(a[:1], a[3:]...) // no --addr: it serves its own
			a = append(a, "--baseline-inprocess")
		}
		out, errOut, err := runCmd(t, append(a, "--out", tc.out)...)
		if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "--out "+tc.out) {
			t.Errorf("%s --out %s: err %v, want a usage error naming --out\nstdout: %s\nstderr: %s", tc.cmd, tc.out, err, out, errOut)
		}
		if strings.Contains(out, "requests") {
			t.Errorf("%s --out %s: ran before refusing it:\n%s", tc.cmd, tc.out, out)
		}
	}

	path := filepath.Join(dir, "r.json")
	out, errOut, err := runCmd(t, append([]string{"run"}, append(args, "--out", path)...)...)
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, errOut)
	}
	if !strings.Contains(out, "requests") {
		t.Errorf("no text report on stdout:\n%s", out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r bench.Report
	if err := json.Unmarshal(b, &r); err != nil || r.Sent != 20 {
		t.Errorf("--out holds %d requests (%v), want 20:\n%s", r.Sent, err, b)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !reflect.DeepEqual(names, []string{"r.json"}) {
		t.Errorf("--out's directory holds %q, want only r.json", names)
	}
}

// --out is the file the report goes to, whatever it is: a link to a
// file is followed, not replaced by a file of its own; a FIFO or a
// device (/dev/stderr, a pipe into another program) is written to, not
// replaced by a regular file (root could then replace /dev/stderr); a
// file keeps its mode, and a new one gets os.Create's (0666 less the
// umask), not a temporary file's 0600. Every path here is in a test
// directory.
func TestOutIsWrittenWhereItPoints(t *testing.T) {
	srv, err := bench.StartServer("127.0.0.1:0", nbrBidder{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dir := t.TempDir()
	run := func(out string) {
		t.Helper()
		_, errOut, err := runCmd(t, "run", "--addr", srv.Addr(), "--rps", "100", "--duration", "200ms", "--warmup", "0s",
			"--pool", "10", "--server-pid", "-1", "--timeout", "10s", "--progress", "never", "--out", out)
		if err != nil {
			t.Fatalf("run --out %s: %v\nstderr: %s", out, err, errOut)
		}
	}
	isReport := func(what string, b []byte) {
		t.Helper()
		var r bench.Report
		if err := json.Unmarshal(b, &r); err != nil || r.Sent != 20 {
			t.Errorf("%s holds %d requests (%v), want the report of 20:\n%s", what, r.Sent, err, b)
		}
	}

	// A link to a report kept elsewhere.
	target := filepath.Join(dir, "reports", "latest.json")
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(target, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	run(link)
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("--out %s, a link: now %v (%v), want the link kept", link, fi.Mode(), err)
	}
	b, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	isReport("the link's target", b)
	if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("the existing report file's mode is %v (%v), want 0640 as it was", fi.Mode().Perm(), err)
	}

	// A new file: os.Create's mode, 0666 less the umask (the test's
	// umask is read back from a file made so).
	probe := filepath.Join(dir, "probe")
	f, err := os.Create(probe)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	pfi, err := os.Stat(probe)
	if err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(dir, "new.json")
	run(fresh)
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != pfi.Mode().Perm() {
		t.Errorf("a new --out file's mode is %v (%v), want %v as os.Create makes it", fi.Mode().Perm(), err, pfi.Mode().Perm())
	}

	// A FIFO. The test holds it open read-write, so that neither side's
	// open waits for the other; the report, a few KB, fits in the pipe.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	pipe, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pipe.Close()
	run(fifo)
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("--out %s, a FIFO: now %v (%v), want the FIFO written to, not replaced", fifo, fi.Mode(), err)
	}
	// The report is in the pipe by now (the command has returned); the
	// deadline only bounds a failure.
	if err := pipe.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var raw json.RawMessage
	if err := json.NewDecoder(pipe).Decode(&raw); err != nil {
		t.Fatalf("reading the report from the FIFO: %v", err)
	}
	isReport("the FIFO", raw)
}

// A bad flag is refused before anything is dialled or built, with an
// error that names the flag: the workload's flags (a NaN --zipf used to
// hang the pool's build for good, SIGTERM or not), the sweep's bounds
// (checked only after dialling, naming none), an --addr without its port
// (dialled at 443, "not ready" ten seconds later). Nothing listens at
// 127.0.0.1:1: a check made only after dialling fails differently.
func TestUsageErrorsNameTheFlag(t *testing.T) {
	run := []string{"run", "--addr", "127.0.0.1:1", "--rps", "10", "--duration", "1s", "--server-pid", "-1", "--timeout", "1s"}
	sweep := []string{"sweep", "--addr", "127.0.0.1:1", "--duration", "1s", "--server-pid", "-1", "--timeout", "1s"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(run, "--zipf", "NaN"), "--zipf NaN"},
		{append(run, "--zipf", "1"), "--zipf 1"},
		{append(run, "--users", "0"), "--users 0"},
		{append(run, "--floors", "1.5"), "--floors 1.5"},
		{append(run, "--blocks", "NaN"), "--blocks NaN"},
		{append(run, "--unknown-users", "-0.1"), "--unknown-users -0.1"},
		{append(run, "--sizes", "300x250x5=1"), `--sizes: size "300x250x5"`},
		{append(run, "--sizes", "300x0"), `--sizes: size "300x0"`},
		{append(run[:1:1], "--addr", "127.0.0.1", "--rps", "10"), `--addr "127.0.0.1"`},
		{[]string{"baseline", "--compare", "--target", "localhost", "--rps", "10"}, `--target "localhost"`},
		{append(sweep, "--start", "0"), "--start 0"},
		{append(sweep, "--step", "NaN"), "--step NaN"},
		{append(sweep, "--start", "200", "--max", "100"), "--max 100"},
		{append(sweep, "--max", "Inf"), "--max +Inf"},
		{append(sweep, "--p99-bound", "0s"), "--p99-bound 0s"},
		{append(sweep, "--max-error-rate", "-1"), "--max-error-rate -1"},
		{append(sweep, "--min-achieved", "NaN"), "--min-achieved NaN"},
		{append(run, "--wire", "tcp"), `--wire "tcp"`},
		{append(sweep, "--wire", "HTTP"), `--wire "HTTP"`},
		{append(run, "--gzip"), "--gzip: only with --wire http"},
		{append(run, "--wire", "http", "--baseline"), "--baseline: the empty-handler server speaks gRPC only"},
		{append(run, "--wire", "http", "--addr", "localhost"), `--addr "localhost"`},
		{append(sweep, "--wire", "http", "--addr", "ftp://h:1/x"), `--addr "ftp://h:1/x"`},
	} {
		type result struct {
			out string
			err error
		}
		done := make(chan result, 1)
		go func() {
			out, errOut, err := runCmd(t, tc.args...)
			done <- result{out + errOut, err}
		}()
		var r result
		select {
		case r = <-done:
		case <-time.After(time.Minute):
			t.Fatalf("%q: still running after a minute", tc.args)
		}
		if !errors.As(r.err, new(usageError)) || !strings.HasPrefix(r.err.Error(), tc.want) {
			t.Errorf("%q: err %v, want a usage error starting %q\n%s", tc.args, r.err, tc.want, r.out)
		}
	}
}

// --cpuprofile profiles the whole command, sweep included (it was
// ignored there), and a path that cannot be created is a usage error
// naming the flag before anything is dialled (nothing listens at
// 127.0.0.1:1).
func TestCPUProfile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing", "cpu.prof")
	_, _, err := runCmd(t, "run", "--addr", "127.0.0.1:1", "--rps", "10", "--duration", "1s", "--server-pid", "-1", "--cpuprofile", missing)
	if !errors.As(err, new(usageError)) || !strings.HasPrefix(err.Error(), "--cpuprofile "+missing) {
		t.Errorf("--cpuprofile in a missing directory: err %v, want a usage error naming --cpuprofile", err)
	}

	srv, err := bench.StartServer("127.0.0.1:0", nbrBidder{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	prof := filepath.Join(t.TempDir(), "sweep.prof")
	_, errOut, err := runCmd(t, "sweep", "--addr", srv.Addr(), "--start", "100", "--step", "100", "--max", "100",
		"--duration", "200ms", "--warmup", "0s", "--pool", "10", "--p99-bound", "5s", "--server-pid", "-1", "--timeout", "10s",
		"--progress", "never", "--cpuprofile", prof)
	if err != nil {
		t.Fatalf("sweep: %v\n%s", err, errOut)
	}
	b, err := os.ReadFile(prof)
	if err != nil {
		t.Fatalf("sweep --cpuprofile: %v", err)
	}
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("sweep --cpuprofile wrote %d bytes, not a gzipped profile", len(b))
	}
}

// A baseline child process that cannot serve (its --addr busy) fails the
// command with the child's error; it used to hang it for good (the
// child's one line was awaited a second time).
func TestBaselineChildFails(t *testing.T) {
	t.Setenv(childEnv, "1")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	done := make(chan error, 1)
	go func() {
		_, _, err := runCmd(t, "baseline", "--addr", busy.Addr().String(), "--rps", "10", "--duration", "200ms",
			"--warmup", "0s", "--pool", "10", "--progress", "never")
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("baseline with its --addr busy: still running after a minute")
	}
	if err == nil || !strings.Contains(err.Error(), "baseline process") || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("baseline with its --addr busy: err %v, want the child's listen error", err)
	}
}

// --wire http posts the workload as OpenRTB JSON to --addr's
// /openrtb2/bid (an http:// URL as given), with --gzip asking for gzip
// answers; the report counts the 204's nbr header and the decoded bids,
// and names its wire. The fake server answers a request that asks for
// gzip with a gzipped bid, any other with 204 nbr 8, and refuses a body
// that is not a BidRequest's protojson.
func TestRunHTTPWire(t *testing.T) {
	var paths atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths.Store(r.URL.Path)
		body, _ := io.ReadAll(r.Body)
		req := &personadpb.BidRequest{}
		if err := protojson.Unmarshal(body, req); err != nil || r.Header.Get("Content-Type") != "application/json" || req.GetId() == "" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if r.Header.Get("Accept-Encoding") != "gzip" {
			w.Header().Set("X-Personad-Nbr", "8")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		out, _ := protojson.Marshal(&personadpb.BidResponse{Id: req.GetId(), Seatbid: []*personadpb.SeatBid{{
			Bid: []*personadpb.Bid{{Id: "b1", Impid: req.GetImp()[0].GetId(), Price: 1.5, Crid: "cr1"}}}}})
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		zw.Write(out)
		zw.Close()
	}))
	defer srv.Close()
	hostPort := strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct {
		addr, wire, path string
		gzip             bool
	}{
		{hostPort, "http", "/openrtb2/bid", false},
		{srv.URL + "/x/bid", "http+gzip", "/x/bid", true},
	} {
		args := []string{"run", "--wire", "http", "--addr", tc.addr, "--rps", "200", "--duration", "300ms", "--warmup", "0s",
			"--timeout", "10s", "--pool", "50", "--json", "--progress", "never", "--server-pid", "-1"}
		if tc.gzip {
			args = append(args, "--gzip")
		}
		out, errOut, err := runCmd(t, args...)
		if err != nil {
			t.Fatalf("%q: %v\n%s", args, err, errOut)
		}
		var r bench.Report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatal(err)
		}
		if r.Wire != tc.wire || paths.Load() != tc.path || r.Completed != 60 || len(r.Errors) != 0 {
			t.Errorf("%q: wire %q path %v completed %d errors %v", args, r.Wire, paths.Load(), r.Completed, r.Errors)
		}
		if tc.gzip && r.Bids != 60 || !tc.gzip && r.NoBids["8"] != 60 {
			t.Errorf("%q: bids %d no-bids %v", args, r.Bids, r.NoBids)
		}
	}
}

// With --wire http and no --addr (nor PERSONABENCH_ADDR), the target is
// personad's default --http-addr, not the gRPC default.
func TestWireHTTPDefaultAddr(t *testing.T) {
	for _, tc := range []struct {
		env  string
		args []string
		want string
	}{
		{"", []string{"--wire", "http"}, defaultHTTPAddr},
		{"", []string{"--wire", "grpc"}, defaultAddr},
		{"", []string{"--wire", "http", "--addr", "10.0.0.1:80"}, "10.0.0.1:80"},
		{"10.0.0.2:81", []string{"--wire", "http"}, "10.0.0.2:81"},
	} {
		var c common
		getenv := func(string) string { return tc.env }
		fs := newFlagSet("run", io.Discard, getenv, &c)
		c.wireFlags(fs)
		if err := parse(fs, tc.args); err != nil {
			t.Fatal(err)
		}
		if err := c.checkWire(fs, tc.env); err != nil || c.addr != tc.want {
			t.Errorf("env %q %q: addr %q, %v; want %q", tc.env, tc.args, c.addr, err, tc.want)
		}
	}
}
