// Command personactl is the campaign planners' CLI for a personad server:
// upload and inspect audience segments, validate and apply rules, explain a
// bid decision, read spend reports.
//
//	personactl [--addr HOST:PORT] [--timeout D] COMMAND [ARGS]
//
//	segments upload --facet F --value V [--replace | --mode add|remove|replace] [--key K]
//	    [--skip-invalid] [--header auto|yes|no] [--allow-empty] [--chunk-ids N] FILE|-
//	segments list [--facet F] | lookup USER_ID | delete --facet F --value V
//	rules validate [--local] FILE|DIR|- | apply [--dry-run] FILE|DIR|- | get [--yaml]
//	explain [--all | --campaign ID] [--json] [--keep] REQUEST.json|-
//	report [--campaign ID] [--json]
//
// Every command takes -h; `personactl segments -h` and `personactl rules
// -h` list their subcommands. --addr defaults to 127.0.0.1:9090 (env PERSONACTL_ADDR). Exit status: 0 on
// success, 1 when the server rejects the request or cannot be reached, 2 for
// bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], env{
		getenv: os.Getenv,
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
	})
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "personactl: %v\n", err)
	}
	os.Exit(exitCode(err))
}
