// Command personabench is personad's load-test harness: it drives seeded
// persona bid traffic at a personad.v1.Bidder server (over gRPC, or with
// --wire http as OpenRTB JSON to its POST /openrtb2/bid), open loop at a
// fixed rate, closed loop for the ceiling, or as a sweep of rising rates, and
// compares the result with an empty-handler server it starts itself.
//
// Usage:
//
//	personabench run      --addr 127.0.0.1:9090 --rps 5000 --duration 30s [--baseline] [--json]
//	personabench run      --addr 127.0.0.1:9090 --concurrency 16 --duration 30s
//	personabench run      --wire http [--gzip] --addr 127.0.0.1:8080 --rps 1000   # OpenRTB JSON over HTTP
//	personabench sweep    --addr 127.0.0.1:9090 --start 2000 --step 2000 --max 40000 --p99-bound 5ms
//	personabench baseline --rps 5000 --duration 10s             # the transport floor alone
//	personabench baseline --compare --target 127.0.0.1:9090 --rps 5000
//	personabench baseline --serve-only --addr 127.0.0.1:9191    # for ghz or a second harness
//	personabench pace     --campaigns 1000                       # the pacing simulator, no server
//
// Run "personabench CMD -h" for every flag.
//
// Exit codes: 0 the measurement ran within its bounds; 1 it failed (the
// server could not be dialled, --out could not be written, …); 2 a bad
// command line; 3 it ran and wrote its report but broke a bound: run's
// or baseline's error rate above --max-error-rate (default 1%), or a
// sweep whose first step already broke its --max-error-rate (no knee).
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
	case errors.As(err, new(boundError)):
		fmt.Fprintln(os.Stderr, "personabench:", err)
		os.Exit(3)
	default:
		fmt.Fprintln(os.Stderr, "personabench:", err)
		os.Exit(1)
	}
}

// usageError is a bad command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// boundError is a measurement that ran and wrote its report but broke a
// bound it was given (--max-error-rate of a run or baseline, or of a
// sweep's first step): exit code 3, so that a script can tell it from a
// run that failed (1) or a bad command line (2).
type boundError struct{ msg string }

func (e boundError) Error() string { return e.msg }

const usage = `usage: personabench run|sweep|baseline|pace [flags]

  run       drive a server: open loop (--rps R) or closed loop (--concurrency C),
            over gRPC or (--wire http [--gzip]) OpenRTB JSON over HTTP
  sweep     rising open-loop rates until p99 or errors break a bound; reports the knee
  baseline  the same harness against an empty-handler gRPC server it starts itself
            (a child process; --baseline-inprocess runs it inside the harness)
            (--compare --target ADDR: target then baseline, with ratios;
             --serve-only --addr ADDR: just serve it, e.g. for ghz)
  pace      the deterministic pacing simulator: days of diurnal traffic against a
            real in-memory ledger, reporting delivery, pacing error, overspend

Run "personabench CMD -h" for the flags of CMD.

Exit status: 0 within bounds, 1 failure, 2 usage, 3 the report was written
but a bound was broken (--max-error-rate; for sweep, at its first step).
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
