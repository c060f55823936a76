package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A server address without its port is a usage error naming where it
// came from (--addr or PERSONACTL_ADDR), not a dial of port 443 that
// reads as the server refusing; a gRPC target with a scheme is gRPC's.
func TestAddrChecked(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		envAddr string
		want    string // "" for no usage error
	}{
		{[]string{"--addr", "127.0.0.1"}, "", `--addr "127.0.0.1": want host:port`},
		{[]string{"--addr", "localhost:90x"}, "", `--addr "localhost:90x": want host:port`},
		{[]string{"--addr", ""}, "", `--addr "": want host:port`},
		{nil, "personad.internal", `PERSONACTL_ADDR "personad.internal": want host:port`},
		{[]string{"--addr", "127.0.0.1"}, "127.0.0.1:1", `--addr "127.0.0.1": want host:port`},
		{[]string{"--addr", "127.0.0.1:1"}, "", ""},
		{[]string{"--addr", "[::1]:1"}, "", ""},
		{[]string{"--addr", "dns:///127.0.0.1:1"}, "", ""},
		{[]string{"--addr", "unix:///nonexistent/personad.sock"}, "", ""},
	} {
		e := env{
			getenv: func(k string) string {
				if k == "PERSONACTL_ADDR" {
					return tc.envAddr
				}
				return ""
			},
			stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard,
		}
		args := append(tc.args, "--timeout", "5s", "segments", "list")
		err := run(context.Background(), args, e)
		var ue usageError
		isUsage := errors.As(err, &ue)
		switch {
		case tc.want == "" && isUsage:
			t.Errorf("%q (PERSONACTL_ADDR=%q): usage error %v, want the call tried", tc.args, tc.envAddr, err)
		case tc.want != "" && (!isUsage || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%q (PERSONACTL_ADDR=%q): err %v, want a usage error starting %q", tc.args, tc.envAddr, err, tc.want)
		}
	}
}

// The server address is checked where it is used: rules validate
// --local, which needs no server, runs whatever PERSONACTL_ADDR says (a
// CI job linting rules files may have it set for other steps), and a
// command that calls the server still refuses an address without its
// port, naming where it came from.
func TestAddrCheckedWhereUsed(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ok.yaml")
	if err := os.WriteFile(file, []byte("campaigns:\n  - {id: a, bid_cpm: 1, creatives: [{id: a1, w: 300, h: 250, adm: x}]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		envAddr string
		args    []string
		want    string // the usage error's start; "" for none
	}{
		{"personad.internal", []string{"rules", "validate", "--local", file}, ""},
		{"", []string{"--addr", "127.0.0.1", "rules", "validate", "--local", file}, ""},
		{"personad.internal", []string{"rules", "validate", file}, `PERSONACTL_ADDR "personad.internal": want host:port`},
		{"", []string{"--addr", "127.0.0.1", "rules", "apply", file}, `--addr "127.0.0.1": want host:port`},
		{"", []string{"--addr", "127.0.0.1", "segments", "list"}, `--addr "127.0.0.1": want host:port`},
		{"", []string{"--addr", "127.0.0.1", "report"}, `--addr "127.0.0.1": want host:port`},
		{"", []string{"--addr", "127.0.0.1", "segments", "delete", "--facet", "title", "--value", "cmo"}, `--addr "127.0.0.1": want host:port`},
		{"", []string{"--addr", "127.0.0.1", "rules", "get"}, `--addr "127.0.0.1": want host:port`},
		{"", []string{"--addr", "127.0.0.1", "segments", "upload", "--facet", "title", "--value", "cmo", "-"}, `--addr "127.0.0.1": want host:port`},
	} {
		var stdout strings.Builder
		e := env{
			getenv: func(k string) string {
				if k == "PERSONACTL_ADDR" {
					return tc.envAddr
				}
				return ""
			},
			stdin: strings.NewReader(""), stdout: &stdout, stderr: io.Discard,
		}
		err := run(context.Background(), append([]string{"--timeout", "5s"}, tc.args...), e)
		var ue usageError
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q (PERSONACTL_ADDR=%q): %v, want it run without a server\n%s", tc.args, tc.envAddr, err, stdout.String())
		case tc.want != "" && (!errors.As(err, &ue) || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%q (PERSONACTL_ADDR=%q): err %v, want a usage error starting %q", tc.args, tc.envAddr, err, tc.want)
		}
	}
}

// Every command and subcommand answers -h with exit status 0 and a usage
// line naming its arguments, as the README promises ("every command takes
// -h"): `segments -h` and `rules -h` list their subcommands, and each
// subcommand's -h starts "usage: personactl …" and lists its flags.
func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		want  []string // in stderr, in this order
		flags []string // each also in stderr, as "-name"
	}{
		{[]string{"-h"}, []string{"usage: personactl [--addr HOST:PORT]", "  explain [--all | --campaign ID] [--json] [--keep] REQUEST.json|-", "  report [--campaign ID] [--json]", `Run "personactl COMMAND -h"`}, []string{"addr", "timeout"}},
		{[]string{"segments", "-h"}, []string{"usage:\n", "  personactl segments upload --facet F --value V", "  personactl segments list [--facet F]\n", "  personactl segments lookup USER_ID", "  personactl segments delete --facet F --value V\n", `Run "personactl segments SUBCOMMAND -h" for its flags.`}, nil},
		{[]string{"segments", "--help"}, []string{"  personactl segments upload"}, nil},
		{[]string{"rules", "-h"}, []string{"usage:\n", "  personactl rules validate [--local] FILE|DIR|-\n", "  personactl rules apply [--dry-run] FILE|DIR|-\n", "  personactl rules get [--yaml]\n", `Run "personactl rules SUBCOMMAND -h" for its flags.`}, nil},
		{[]string{"rules", "help"}, []string{"  personactl rules get [--yaml]\n"}, nil},
		{[]string{"segments", "upload", "-h"}, []string{"usage: personactl segments upload --facet F --value V", "[--skip-invalid] [--header auto|yes|no] [--allow-empty] [--chunk-ids N] FILE|-\n"}, []string{"facet", "value", "replace", "mode", "key", "skip-invalid", "header", "allow-empty", "chunk-ids"}},
		{[]string{"segments", "list", "-h"}, []string{"usage: personactl segments list [--facet F]\n"}, []string{"facet"}},
		{[]string{"segments", "lookup", "-h"}, []string{"usage: personactl segments lookup USER_ID"}, nil},
		{[]string{"segments", "delete", "-h"}, []string{"usage: personactl segments delete --facet F --value V\n"}, []string{"facet", "value"}},
		{[]string{"rules", "validate", "-h"}, []string{"usage: personactl rules validate [--local] FILE|DIR|-\n"}, []string{"local"}},
		{[]string{"rules", "apply", "-h"}, []string{"usage: personactl rules apply [--dry-run] FILE|DIR|-\n"}, []string{"dry-run"}},
		{[]string{"rules", "get", "-h"}, []string{"usage: personactl rules get [--yaml]\n"}, []string{"yaml"}},
		{[]string{"explain", "-h"}, []string{"usage: personactl explain [--all | --campaign ID] [--json] [--keep] REQUEST.json|-\n"}, []string{"all", "campaign", "json", "keep"}},
		{[]string{"report", "-h"}, []string{"usage: personactl report [--campaign ID] [--json]\n"}, []string{"campaign", "json"}},
	} {
		// No server: help dials nothing.
		out, errOut, code := ctl(t, "127.0.0.1:1", "", false, tc.args...)
		name := strings.Join(tc.args, " ")
		if code != 0 || out != "" {
			t.Errorf("personactl %s: exit %d, stdout %q; want 0 and nothing (stderr %q)", name, code, out, errOut)
		}
		if !strings.HasPrefix(errOut, "usage:") {
			t.Errorf("personactl %s: stderr begins %.40q, want usage:", name, errOut)
		}
		rest := errOut
		for _, w := range tc.want {
			i := strings.Index(rest, w)
			if i < 0 {
				t.Errorf("personactl %s: stderr lacks %q (in order):\n%s", name, w, errOut)
				break
			}
			rest = rest[i+len(w):]
		}
		for _, f := range tc.flags {
			if !strings.Contains(errOut, "  -"+f+" ") && !strings.Contains(errOut, "  -"+f+"\n") {
				t.Errorf("personactl %s: stderr lacks flag -%s:\n%s", name, f, errOut)
			}
		}
	}
	// Without a subcommand, or with a flag the group does not take
	// (global flags go before it), the group's usage and a usage error
	// (exit 2).
	for _, group := range []string{"segments", "rules"} {
		_, errOut, code := ctl(t, "127.0.0.1:1", "", false, group)
		if code != 2 || !strings.HasPrefix(errOut, "usage:\n  personactl "+group+" ") || !strings.Contains(errOut, "personactl: "+group+": want a subcommand") {
			t.Errorf("personactl %s: exit %d, stderr %q; want 2, the usage and the error", group, code, errOut)
		}
		_, errOut, code = ctl(t, "127.0.0.1:1", "", false, group, "--addr", "127.0.0.1:9090", "list")
		if code != 2 || !strings.HasPrefix(errOut, "usage:\n  personactl "+group+" ") ||
			!strings.Contains(errOut, "personactl: "+group+": unknown flag --addr: the global flags (--addr, --timeout) go before \""+group+"\"") {
			t.Errorf("personactl %s --addr: exit %d, stderr %q; want 2, the usage and the error", group, code, errOut)
		}
	}
}
