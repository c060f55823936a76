package main

import (
	"context"
	"errors"
	"io"
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
