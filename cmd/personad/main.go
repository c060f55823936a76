// Command personad is the personad server: it loads the rules and the
// segment store from a data directory and answers bid requests on gRPC
// (personad.v1.Bidder; planners' personad.v1.Segments, Rules, Reports;
// exchanges' personad.v1.Notices; grpc.health.v1; reflection) and on HTTP
// (OpenRTB JSON at /openrtb2/bid, notices at /notice/{win,bill,loss},
// /healthz, /metrics). A bid answer on HTTP is gzip-compressed for an
// exchange whose Accept-Encoding accepts gzip unless --http-gzip=false.
//
// Money: every bid reserves its price in the spend ledger (--ledger: by
// default the embedded durable ledger in <data-dir>/ledger; with
// redis://host:port[/db] budgets and frequency caps are shared with other
// nodes through Redis), daily budgets run in --budget-tz (default UTC),
// and bids carry nurl, burl and lurl under --notice-url (default
// http://<http-addr>) signed with the key in --notice-key-file (default
// <data-dir>/notice.key, created on first start). Exchanges call those
// URLs (GET /notice/win, /notice/bill, /notice/loss); the same notices are
// personad.v1.Notices on gRPC, and personad.v1.Reports reports spend
// (personactl report).
//
// Operators: --pprof serves Go profiles at /debug/pprof/ on --http-addr.
// A full or read-only data dir refuses only the writes that need it
// (uploads, rules applied through the API, notices, budget leases), bids
// go on, and /healthz stays 200 with a "degraded: " line for each durable
// log that cannot be written (the ledger's, the segment store's); a Redis
// --ledger is logged when its calls start failing ("Redis ledger calls
// fail", at most once a minute) and when they succeed again (README:
// Operations, Server flags).
//
// Every flag may also be given as an environment variable PERSONAD_<FLAG>,
// upper case with dashes as underscores (PERSONAD_GRPC_ADDR); a flag on the
// command line wins over the environment. Run personad -h for the list.
//
// Once both listeners are bound, personad writes one line to stdout naming
// the actual addresses (useful with port 0):
//
//	grpc=127.0.0.1:9090 http=127.0.0.1:8080
//
// Logs are JSON on stderr. Exit status: 0 after a clean stop (SIGTERM or
// SIGINT: health goes NOT_SERVING (grpc.health.v1 Watch streams are told
// so, then ended), requests are still answered for --drain-delay (default
// 0; HTTP without keep-alive meanwhile), then the listeners close, in-flight requests finish within
// --shutdown-timeout, then connections are closed; a second SIGTERM or
// SIGINT meanwhile ends the process at once, as kill would: what was
// acknowledged is durable), 2 for bad flags or
// environment or unreadable or invalid rules (one line naming the problem,
// then one line per rules error), 1 for any other failure.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal starts the graceful stop; a second one (another
	// Ctrl-C) gets the default action, ending the process at once, rather
	// than being swallowed until --shutdown-timeout has passed.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "personad: %v\n", err)
	}
	os.Exit(exitCode(err))
}
