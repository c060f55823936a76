package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/personad/personad/bench"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

// baseline runs the same load against an empty-handler server. By default
// the server is a child process (this binary, "baseline --serve-only"), so
// that it competes for the CPUs and pays for its syscalls as a real server
// does, and its CPU per request is measured alone; with
// --baseline-inprocess it runs inside the harness, sharing its runtime.
func (c *common) baseline(ctx context.Context, listen string, reqs []*personadpb.BidRequest) (*bench.Report, error) {
	opts := c.opts
	opts.ServerPID = 0
	var addr string
	if c.inProcess {
		srv, err := bench.StartBaseline(listen)
		if err != nil {
			return nil, err
		}
		defer srv.Close()
		addr = srv.Addr()
	} else {
		child, err := startChild(ctx, listen)
		if err != nil {
			return nil, err
		}
		defer child.stop()
		addr = child.addr
		if c.serverPID >= 0 {
			opts.ServerPID = child.pid
		}
	}
	b, err := c.drive(ctx, addr, reqs, opts)
	if err != nil {
		return nil, err
	}
	b.Label = "baseline"
	if c.inProcess {
		b.Label = "baseline (in-process)"
	}
	return b, nil
}

// child is a "baseline --serve-only" process.
type child struct {
	cmd  *exec.Cmd
	addr string
	pid  int
}

// startChild starts this executable as an empty-handler server on listen
// and waits for the line that says where it serves.
func startChild(ctx context.Context, listen string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("baseline process: %w", err)
	}
	cmd := exec.Command(exe, "baseline", "--serve-only", "--addr", listen)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("baseline process: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("baseline process: %w", err)
	}
	ch := &child{cmd: cmd, pid: cmd.Process.Pid}
	type result struct {
		line string
		err  error
	}
	lines := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(stderr).ReadString('\n')
		lines <- result{line, err}
	}()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	var got result
	read := false // the line, or the failure to read one, was received
	select {
	case got = <-lines:
		read = true
	case <-timer.C:
		got.err = errors.New("no address within 10s")
	case <-ctx.Done():
		got.err = ctx.Err()
	}
	if got.err == nil {
		// "personabench: empty-handler … serving on ADDR (pid N); …"
		_, rest, ok := strings.Cut(got.line, "serving on ")
		addr, _, _ := strings.Cut(rest, " ")
		if !ok || addr == "" {
			got.err = fmt.Errorf("unexpected output %q", strings.TrimSpace(got.line))
		}
		ch.addr = addr
	}
	if got.err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if !read {
			<-lines // the reader ends with the pipe
		}
		return nil, fmt.Errorf("baseline process: %w", got.err)
	}
	return ch, nil
}

// stop interrupts the child and waits for it.
func (c *child) stop() {
	_ = c.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}
