package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/personad/personad/internal/rulespb"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/rules"
)

// The usage lines of the rules subcommands, for their -h and the
// group's.
const (
	usageValidate = "rules validate [--local] FILE|DIR|-"
	usageApply    = "rules apply [--dry-run] FILE|DIR|-"
	usageGet      = "rules get [--yaml]"
)

var rulesUsage = []string{usageValidate, usageApply, usageGet}

// runRules is `personactl rules validate|apply|get`.
func runRules(ctx context.Context, g *globals, e env, args []string) error {
	if len(args) == 0 {
		groupUsage(e.stderr, "rules", rulesUsage)
		return usagef("rules: want a subcommand: validate, apply or get")
	}
	if isHelp(args[0]) {
		groupUsage(e.stderr, "rules", rulesUsage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "validate":
		return rulesValidate(ctx, g, e, args[1:])
	case "apply":
		return rulesApply(ctx, g, e, args[1:])
	case "get":
		return rulesGet(ctx, g, e, args[1:])
	}
	return unknownSub(e.stderr, "rules", args[0], "validate, apply or get", rulesUsage)
}

// errInvalid is a rule set with errors; they are already printed.
var errInvalid = errors.New("rules: the rule set has errors")

// readRules reads and parses FILE (or a directory, as personad --rules
// does; - is stdin). It does not validate: the Origins it returns locate
// validation errors at the file and line, as the server does, and at
// the file of a directory they came from.
func readRules(e env, path string) (*rules.RuleSet, rules.Origins, error) {
	if path == "-" {
		data, err := io.ReadAll(io.LimitReader(e.stdin, rules.MaxFileSize+1))
		if err != nil {
			return nil, nil, err
		}
		rs, err := rules.Parse("stdin", data)
		return rs, rules.Origins{{File: "stdin", Data: data}}, err
	}
	files, err := rules.ReadFiles(path)
	if err != nil {
		return nil, nil, err
	}
	return rules.ParseFilesLocated(files)
}

func oneFile(name string, fs *flag.FlagSet, args []string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", usageError{err}
	}
	if fs.NArg() != 1 {
		return "", usagef("rules %s: want exactly one FILE (or directory, or - for stdin)", name)
	}
	return fs.Arg(0), nil
}

// rulesValidate checks FILE locally (parse and validate, every error by
// path), then asks the server, whose warnings know the live segments.
func rulesValidate(ctx context.Context, g *globals, e env, args []string) error {
	fs := flag.NewFlagSet("rules validate", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	setUsage(fs, usageValidate)
	local := fs.Bool("local", false, "validate locally only, without asking the server")
	path, err := oneFile("validate", fs, args)
	if err != nil {
		return err
	}
	rs, origins, err := readRules(e, path)
	if err != nil {
		return err
	}
	if err := origins.Locate(rs.Validate()); err != nil {
		printProblems(e.stdout, "error", rules.Problems(err))
		fmt.Fprintf(e.stdout, "%s: invalid (%d %s)\n", path, len(rs.Campaigns), plural(len(rs.Campaigns), "campaign", "campaigns"))
		return errInvalid
	}
	if *local {
		// The warnings that need no server: the segments are its.
		var ws rules.ValidationErrors
		if w := append(rs.CurrencyWarnings(), rs.DeliveryWarnings(time.Now())...); len(w) > 0 {
			ws = rules.Problems(origins.Locate(w))
		}
		printProblems(e.stdout, "warning", ws)
		fmt.Fprintf(e.stdout, "%s: valid, %d %s, version %s, %d %s (checked locally)\n", path, len(rs.Campaigns), plural(len(rs.Campaigns), "campaign", "campaigns"), rs.Version(), len(ws), plural(len(ws), "warning", "warnings"))
		return nil
	}
	pb := rulespb.ToProto(rs)
	resp, err := unary(ctx, g, func(ctx context.Context, conn *grpc.ClientConn) (*personadpb.RulesValidateResponse, error) {
		return personadpb.NewRulesClient(conn).Validate(ctx, &personadpb.RulesValidateRequest{RuleSet: pb})
	})
	if err != nil {
		return callError("rules validate", err)
	}
	printProblems(e.stdout, "warning", locate(origins, resp.Warnings))
	if len(resp.Errors) > 0 {
		printProblems(e.stdout, "error", locate(origins, resp.Errors))
		fmt.Fprintf(e.stdout, "%s: invalid (server)\n", path)
		return errInvalid
	}
	fmt.Fprintf(e.stdout, "%s: valid, %d %s, version %s, %d %s\n", path, resp.Campaigns, plural(int(resp.Campaigns), "campaign", "campaigns"), resp.Version, len(resp.Warnings), plural(len(resp.Warnings), "warning", "warnings"))
	return nil
}

// rulesApply sends FILE to the server's Apply and prints the diff and the
// new version.
func rulesApply(ctx context.Context, g *globals, e env, args []string) error {
	fs := flag.NewFlagSet("rules apply", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	setUsage(fs, usageApply)
	dryRun := fs.Bool("dry-run", false, "validate and print the diff against the active rules, without applying")
	path, err := oneFile("apply", fs, args)
	if err != nil {
		return err
	}
	rs, origins, err := readRules(e, path)
	if err != nil {
		return err
	}
	if err := origins.Locate(rs.Validate()); err != nil {
		printProblems(e.stdout, "error", rules.Problems(err))
		fmt.Fprintf(e.stdout, "%s: invalid; nothing applied\n", path)
		return errInvalid
	}
	pb := rulespb.ToProto(rs)
	resp, err := unary(ctx, g, func(ctx context.Context, conn *grpc.ClientConn) (*personadpb.RulesApplyResponse, error) {
		return personadpb.NewRulesClient(conn).Apply(ctx, &personadpb.RulesApplyRequest{RuleSet: pb, DryRun: *dryRun})
	})
	if err != nil {
		if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument {
			if n := printViolations(e.stdout, st, origins); n > 0 {
				fmt.Fprintf(e.stdout, "%s: rejected by the server (%d %s); nothing applied\n", path, n, plural(n, "error", "errors"))
				return errInvalid
			}
		}
		return callError("rules apply", err)
	}
	printProblems(e.stdout, "warning", locate(origins, resp.Warnings))
	printDiff(e.stdout, resp.Diff)
	switch {
	case resp.DryRun:
		fmt.Fprintf(e.stdout, "dry run: version %s would replace %s (%d %s); nothing applied\n", resp.Version, resp.PreviousVersion, resp.Campaigns, plural(int(resp.Campaigns), "campaign", "campaigns"))
	case resp.Unchanged:
		fmt.Fprintf(e.stdout, "unchanged: version %s is already active\n", resp.Version)
	default:
		fmt.Fprintf(e.stdout, "applied: version %s (was %s), %d %s, at %s\n", resp.Version, resp.PreviousVersion, resp.Campaigns, plural(int(resp.Campaigns), "campaign", "campaigns"),
			resp.AppliedAt.AsTime().Local().Format(time.RFC3339))
	}
	return nil
}

// rulesGet prints the active rules: version, when and how applied, the
// last rejection; --yaml dumps the set itself.
func rulesGet(ctx context.Context, g *globals, e env, args []string) error {
	fs := flag.NewFlagSet("rules get", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	setUsage(fs, usageGet)
	asYAML := fs.Bool("yaml", false, "print the active rule set as a rules file")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 {
		return usagef("rules get: unexpected argument %q", fs.Arg(0))
	}
	resp, err := unary(ctx, g, func(ctx context.Context, conn *grpc.ClientConn) (*personadpb.RulesGetResponse, error) {
		return personadpb.NewRulesClient(conn).Get(ctx, &personadpb.RulesGetRequest{IncludeRuleSet: *asYAML}, grpc.MaxCallRecvMsgSize(rules.MaxFileSize))
	})
	if err != nil {
		return callError("rules get", err)
	}
	if *asYAML {
		out, err := rules.Marshal(rulespb.FromProto(resp.RuleSet))
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "# personad rules version %s, applied %s from %s (%s)\n", resp.Version,
			resp.AppliedAt.AsTime().Local().Format(time.RFC3339), resp.Source, resp.Origin)
		_, err = e.stdout.Write(out)
		return err
	}
	fmt.Fprintf(e.stdout, "version:    %s\n", resp.Version)
	fmt.Fprintf(e.stdout, "applied:    %s\n", resp.AppliedAt.AsTime().Local().Format(time.RFC3339))
	fmt.Fprintf(e.stdout, "source:     %s (%s)\n", resp.Source, resp.Origin)
	fmt.Fprintf(e.stdout, "campaigns:  %d\n", resp.Campaigns)
	if r := resp.LastRejected; r != nil {
		fmt.Fprintf(e.stdout, "last rejected: %s from %s (%s), %d %s:\n", r.At.AsTime().Local().Format(time.RFC3339), r.Source, r.Origin, len(r.Errors), plural(len(r.Errors), "error", "errors"))
		for _, p := range r.Errors {
			printProblem(e.stdout, "  error", p.Path, p.Message)
		}
	}
	return nil
}

// locate maps the paths of the server's problems with a set read from a
// directory, which it was sent merged, to the files and the indexes in
// them, as origins.Locate does for the errors found locally.
func locate(origins rules.Origins, ps []*personadpb.RuleProblem) rules.ValidationErrors {
	if len(ps) == 0 {
		return nil
	}
	es := make(rules.ValidationErrors, len(ps))
	for i, p := range ps {
		es[i] = &rules.ValidationError{Path: p.Path, Msg: p.Message}
	}
	return rules.Problems(origins.Locate(es))
}

func printProblems(w io.Writer, kind string, es rules.ValidationErrors) {
	for _, p := range es {
		printProblem(w, kind, p.Path, p.Msg)
	}
}

func printProblem(w io.Writer, kind, path, msg string) {
	if path == "" {
		fmt.Fprintf(w, "%s: %s\n", kind, msg)
		return
	}
	fmt.Fprintf(w, "%s: %s: %s\n", kind, path, msg)
}

// printViolations prints the google.rpc.BadRequest field violations of st
// and returns how many there were.
// Their paths are located in the files of origins, as locate does.
func printViolations(w io.Writer, st *status.Status, origins rules.Origins) int {
	var ps []*personadpb.RuleProblem
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				ps = append(ps, &personadpb.RuleProblem{Path: v.Field, Message: v.Description})
			}
		}
	}
	printProblems(w, "error", locate(origins, ps))
	return len(ps)
}

func printDiff(w io.Writer, d *personadpb.RulesDiff) {
	// A list holds the first ids; its count, all of them (a server
	// without counts sends whole lists).
	changed := d.GetContentRulesChanged()
	line := func(what string, ids []string, count int32) {
		n := max(int(count), len(ids))
		if n == 0 {
			return
		}
		changed = true
		const show = 20
		shown := ids[:min(show, len(ids))]
		list := strings.Join(shown, ", ")
		if n > len(shown) {
			list += fmt.Sprintf(", ... (%d more)", n-len(shown))
		}
		fmt.Fprintf(w, "%-18s %d: %s\n", what, n, list)
	}
	line("campaigns added", d.GetCampaignsAdded(), d.GetCampaignsAddedCount())
	line("campaigns changed", d.GetCampaignsChanged(), d.GetCampaignsChangedCount())
	line("campaigns removed", d.GetCampaignsRemoved(), d.GetCampaignsRemovedCount())
	line("creatives added", d.GetCreativesAdded(), d.GetCreativesAddedCount())
	line("creatives changed", d.GetCreativesChanged(), d.GetCreativesChangedCount())
	line("creatives removed", d.GetCreativesRemoved(), d.GetCreativesRemovedCount())
	if d.GetContentRulesChanged() {
		fmt.Fprintln(w, "content rules changed")
	}
	if !changed {
		fmt.Fprintln(w, "no changes")
	}
}
