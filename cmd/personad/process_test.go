package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// buildBinary builds cmd/personad into a temp dir, as a user would.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "personad")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestProcess starts the real binary on port 0 with a temp data dir, bids
// through a real gRPC client, checks /healthz and /metrics, and stops it
// with SIGTERM.
func TestProcess(t *testing.T) {
	bin := buildBinary(t)
	rulesPath, err := filepath.Abs("testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--rules", rulesPath)
	cmd.Env = append(os.Environ(), "PERSONAD_LOG_LEVEL=debug")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("personad stderr:\n%s", stderr.String())
		}
	}()
	br := bufio.NewReader(stdout)
	grpcAddr, httpAddr := readAddrs(t, br)
	go func() {
		io.Copy(io.Discard, br) //nolint:errcheck // drain stdout until exit
		exited <- cmd.Wait()
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := personadpb.NewBidderClient(conn).Bid(ctx, &personadpb.BidRequest{
		Id:   "proc-1",
		Imp:  []*personadpb.Imp{{Id: "1", Banner: &personadpb.Banner{Format: []*personadpb.Format{{W: 300, H: 250}}}}},
		Site: &personadpb.Site{Domain: "news.example"},
		User: &personadpb.User{Id: "ex-42", Data: []*personadpb.Data{{Segment: []*personadpb.Segment{{Id: "title:cmo"}}}}},
		Tmax: 200,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Seatbid) != 1 || len(resp.Seatbid[0].Bid) != 1 || resp.Seatbid[0].Bid[0].Crid != "cr-acme-cmo" {
		t.Errorf("Bid = %v, want the CMO creative", resp)
	}
	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hc.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health %v, %v; want SERVING", hc, err)
	}

	get := func(path string) (int, string) {
		r, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz %d %q, want 200 ok", code, body)
	}
	code, metrics := get("/metrics")
	if code != http.StatusOK {
		t.Errorf("/metrics %d", code)
	}
	for _, want := range []string{`personad_bid_requests_total{outcome="bid",wire="grpc"} 1`, "go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	conn.Close()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("personad did not exit within 30s of SIGTERM")
	}
	logs := stderr.String()
	for _, want := range []string{`"msg":"serving"`, `"msg":"stopping"`, `"msg":"stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s", want)
		}
	}
	if strings.Contains(logs, "ex-42") {
		t.Error("logs carry a user id")
	}
}

// TestProcessExitCodes: a bad flag and invalid rules exit 2 with the
// problem on stderr, the first line naming it.
func TestProcessExitCodes(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct {
		args  []string
		first string
		lines int
	}{
		{[]string{"--bogus"}, "personad: flag provided but not defined: -bogus", 1},
		{[]string{"--data-dir", t.TempDir(), "--rules", "testdata/invalid.yaml"}, "personad: loading rules from testdata/invalid.yaml: rules: 3 errors", 4},
	} {
		cmd := exec.Command(bin, tc.args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v: %v, want exit status 2", tc.args, err)
		}
		lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		if lines[0] != tc.first || len(lines) != tc.lines {
			t.Errorf("%v: stderr %q, want %d lines starting %q", tc.args, stderr.String(), tc.lines, tc.first)
		}
	}
}

// TestProcessSecondSignal: a stop waits up to --shutdown-timeout for
// in-flight requests, here an upload whose client sends nothing more; a
// second SIGTERM or SIGINT (an operator's second Ctrl-C) must end the
// process at once rather than be swallowed until the timeout.
func TestProcessSecondSignal(t *testing.T) {
	bin := buildBinary(t)
	rulesPath, err := filepath.Abs("testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, bin, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--rules", rulesPath, "--shutdown-timeout", "60s")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up, err := personadpb.NewSegmentsClient(n.conn).Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Send(&personadpb.UploadRequest{Msg: &personadpb.UploadRequest_Header{Header: &personadpb.UploadHeader{
		Facet: "title", Value: "cmo", Mode: personadpb.UploadMode_UPLOAD_MODE_ADD,
	}}}); err != nil {
		t.Fatal(err)
	}
	// The upload is in flight once the server has it: a bid on the same
	// connection is answered after the header arrived.
	if _, err := n.bidder.Bid(ctx, moneyRequest("second-signal", 300, 250, 100)); err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(n.stderr.String(), `"msg":"stopping"`) {
		select {
		case err := <-n.exited:
			t.Fatalf("exited before the second signal: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := n.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.exited:
		n.conn.Close() // node.kill closes it only for a process still running
	case <-time.After(5 * time.Second):
		t.Fatal("personad still running 5s after a second signal (--shutdown-timeout 60s)")
	}
}
