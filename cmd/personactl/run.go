package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/personad/personad/internal/grpctarget"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// env is the process environment a command runs in; tests fake it.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	// isTerminal reports whether stderr is a terminal (progress bars).
	isTerminal bool
}

// globals are the flags before the command.
type globals struct {
	addr    string
	timeout time.Duration
	// addrErr is the usage error of an addr that is not host:port
	// (grpctarget.Check), which dial returns.
	addrErr error
}

// command is one subcommand: it parses its own flags from args.
type command struct {
	name  string
	usage string
	run   func(ctx context.Context, g *globals, e env, args []string) error
}

func commands() []command {
	return []command{
		{"segments", "segments upload|list|lookup|delete ...", runSegments},
		{"rules", "rules validate|apply|get ...", runRules},
		{"explain", usageExplain, runExplain},
		{"report", usageReport, runReport},
	}
}

// usageError is bad usage: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// setUsage makes fs's -h (and a bad flag) print "usage: personactl
// LINE", then the flags fs defines.
func setUsage(fs *flag.FlagSet, line string) {
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: personactl "+line)
		fs.PrintDefaults()
	}
}

// isHelp reports whether arg asks a command group (segments, rules) for
// its help rather than naming a subcommand.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// unknownSub is the usage error of a group given sub, which names none
// of its subcommands (want lists them). A flag there (segments --addr X
// list) is one the group does not take: it prints the group's usage, as
// a subcommand's unknown flag prints the subcommand's.
func unknownSub(w io.Writer, group, sub, want string, lines []string) error {
	if strings.HasPrefix(sub, "-") {
		groupUsage(w, group, lines)
		return usagef("%s: unknown flag %s: the global flags (--addr, --timeout) go before %q, a subcommand's flags after the subcommand (%s)", group, sub, group, want)
	}
	return usagef("%s: unknown subcommand %q (want %s)", group, sub, want)
}

// groupUsage prints the usage of each subcommand of a group.
func groupUsage(w io.Writer, group string, lines []string) {
	fmt.Fprintln(w, "usage:")
	for _, l := range lines {
		fmt.Fprintln(w, "  personactl "+l)
	}
	fmt.Fprintf(w, "\nRun \"personactl %s SUBCOMMAND -h\" for its flags.\n", group)
}

func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	}
	return 1
}

func run(ctx context.Context, args []string, e env) error {
	g := &globals{}
	fs := flag.NewFlagSet("personactl", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	addr := e.getenv("PERSONACTL_ADDR")
	if addr == "" {
		addr = "127.0.0.1:9090"
	}
	fs.StringVar(&g.addr, "addr", addr, "personad's gRPC address, host:port (env PERSONACTL_ADDR)")
	fs.DurationVar(&g.timeout, "timeout", 30*time.Second, "timeout of each call (uploads: of each stall, of the input or of the server; slow but steady input is sent as it comes, so it does not stall, but ids read up to a second, or a quarter of this, before a stall wait with it; personad ends an upload idle for its --segments-upload-idle-timeout, 2m by default, whatever this says)")
	fs.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: personactl [--addr HOST:PORT] [--timeout D] COMMAND [ARGS]\n\ncommands:")
		for _, c := range commands() {
			fmt.Fprintf(e.stderr, "  %s\n", c.usage)
		}
		fmt.Fprintln(e.stderr, "\nRun \"personactl COMMAND -h\" for a command's subcommands and flags.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return usagef("no command")
	}
	if g.timeout <= 0 {
		return usagef("--timeout %v: want a duration above 0, e.g. 30s", g.timeout)
	}
	if grpctarget.Check(g.addr) != nil {
		from := "--addr"
		fromFlag := false
		fs.Visit(func(f *flag.Flag) { fromFlag = fromFlag || f.Name == "addr" })
		if !fromFlag {
			from = "PERSONACTL_ADDR" // the default is valid
		}
		// Refused where it is dialled (dial): rules validate --local
		// needs no server, whatever PERSONACTL_ADDR says.
		g.addrErr = usagef("%s %q: want host:port of personad's gRPC listener, e.g. 127.0.0.1:9090", from, g.addr)
	}
	name := fs.Arg(0)
	i := slices.IndexFunc(commands(), func(c command) bool { return c.name == name })
	if i < 0 {
		return usagef("unknown command %q (want %s)", name, strings.Join(commandNames(), ", "))
	}
	if f, ok := e.stderr.(*os.File); ok && e.stderr == os.Stderr {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			e.isTerminal = true
		}
	}
	return commands()[i].run(ctx, g, e, fs.Args()[1:])
}

func commandNames() []string {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	return names
}

// dial connects to the server. The connection is lazy: errors surface on
// the first call, as gRPC status errors; an address that is not host:port
// is a usage error at once.
func (g *globals) dial() (*grpc.ClientConn, error) {
	if g.addrErr != nil {
		return nil, g.addrErr
	}
	conn, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", g.addr, err)
	}
	return conn, nil
}

// unary dials the server and makes one call, bounded by --timeout; the
// connection is closed when it returns. Callers wrap the error (callError).
func unary[Resp any](ctx context.Context, g *globals, call func(context.Context, *grpc.ClientConn) (Resp, error)) (Resp, error) {
	conn, err := g.dial()
	if err != nil {
		var zero Resp
		return zero, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	return call(ctx, conn)
}

// callError turns a gRPC error into one line for the planner.
func callError(what string, err error) error {
	if errors.As(err, new(usageError)) { // dial's: it names the flag
		return err
	}
	if s, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: %s: %s", what, s.Code(), s.Message())
	}
	return fmt.Errorf("%s: %w", what, err)
}
