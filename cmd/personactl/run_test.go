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
