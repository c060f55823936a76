// Command personabench is personad's load-test harness: it drives seeded
// persona bid traffic at a personad.v1.Bidder server, open loop at a fixed
// rate, closed loop for the ceiling, or as a sweep of rising rates, and
// compares the result with an empty-handler server it starts itself.
//
// Usage:
//
//	personabench run      --addr 127.0.0.1:9090 --rps 5000 --duration 30s [--baseline] [--json]
//	personabench run      --addr 127.0.0.1:9090 --concurrency 16 --duration 30s
//	personabench sweep    --addr 127.0.0.1:9090 --start 2000 --step 2000 --max 40000 --p99-bound 5ms
//	personabench baseline --rps 5000 --duration 10s             # the transport floor alone
//	personabench baseline --compare --target 127.0.0.1:9090 --rps 5000
//	personabench baseline --serve-only --addr 127.0.0.1:9191    # for ghz or a second harness
//	personabench pace     --campaigns 1000                       # the pacing simulator, no server
//
// Run "personabench CMD -h" for every flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "personabench:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "personabench:", err)
		os.Exit(1)
	}
}

// usageError is a bad command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

const usage = `usage: personabench run|sweep|baseline|pace [flags]

  run       drive a server: open loop (--rps R) or closed loop (--concurrency C)
  sweep     rising open-loop rates until p99 or errors break a bound; reports the knee
  baseline  the same harness against an empty-handler gRPC server it starts itself
            (a child process; --baseline-inprocess runs it inside the harness)
            (--compare --target ADDR: target then baseline, with ratios;
             --serve-only --addr ADDR: just serve it, e.g. for ghz)
  pace      the deterministic pacing simulator: days of diurnal traffic against a
            real in-memory ledger, reporting delivery, pacing error, overspend

Run "personabench CMD -h" for the flags of CMD.
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("missing command")
	}
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], getenv, stdout, stderr)
	case "sweep":
		return cmdSweep(ctx, args[1:], getenv, stdout, stderr)
	case "baseline":
		return cmdBaseline(ctx, args[1:], getenv, stdout, stderr)
	case "pace":
		return cmdPace(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usagef("unknown command %q", args[0])
	}
}
