package bench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The bench/*.sh scripts start servers, build binaries, write files of
// millions of ids and use a Redis database: -h must print their usage
// (the comment at their top: what they measure and their environment)
// and do none of that, and an argument they do not take is refused,
// exit 2, rather than run the benchmark. The environment points every
// binary, Redis and port at nothing, so that a script that ran anyway
// fails at once instead of loading the machine.
func TestScriptsUsage(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	scripts, err := filepath.Glob("*.sh")
	if err != nil {
		t.Fatal(err)
	}
	nothing := filepath.Join(t.TempDir(), "nothing")
	env := append(os.Environ(),
		"BIN="+nothing, "BINS="+nothing, "PERSONABENCH="+filepath.Join(nothing, "personabench"),
		"START_SERVER=0", "REDIS_URL=redis://127.0.0.1:1", "RESULTS="+t.TempDir(),
		"IDS=10", "UPLOAD_IDS=10", "ROUNDS=1", "DURATION=1s", "BASE_PORT=1")
	script := func(name string, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", append([]string{name}, args...)...)
		cmd.Env = env
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			code = ee.ExitCode()
		default:
			t.Fatalf("%s %q: %v", name, args, err)
		}
		return o.String(), e.String(), code
	}
	ran := 0
	for _, name := range scripts {
		if name == "lib.sh" {
			if _, stderr, code := script(name, "-h"); code != 2 || !strings.Contains(stderr, "sourced") {
				t.Errorf("bash lib.sh -h: exit %d, stderr %q; want 2 and that it is sourced, not run", code, stderr)
			}
			continue
		}
		ran++
		for _, h := range []string{"-h", "--help"} {
			stdout, stderr, code := script(name, h)
			if code != 0 || !strings.Contains(stdout, "Environment:") || !strings.Contains(stdout, "bench/"+name) || strings.HasPrefix(stdout, "#") || strings.Contains(stdout, "\n#") {
				t.Errorf("bash %s %s: exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit 0 and the usage comment, uncommented", name, h, code, stdout, stderr)
			}
		}
		bad := []string{"--rps=100"}
		if name == "scenarios.sh" {
			bad = []string{"127.0.0.1:9090", "extra"} // takes one ADDR
		}
		if stdout, stderr, code := script(name, bad...); code != 2 || !strings.Contains(stderr, "unexpected argument") {
			t.Errorf("bash %s %q: exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit 2, unexpected argument", name, bad, code, stdout, stderr)
		}
	}
	if ran == 0 {
		t.Fatal("no bench/*.sh scripts found")
	}
}

// scenarios.sh builds personabench (unless PERSONABENCH is given) and,
// when nothing listens at ADDR, personad, into a temporary directory, and
// removes it on exit, also when the server it started exits at once. A
// fake go on PATH "builds" binaries that exit 1, so that the script runs
// its whole start-up path in a moment.
func TestScenariosLeavesNoTempDir(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	fake := t.TempDir()
	goScript := "#!/bin/sh\n# go build -o OUT PKG\nmkdir -p \"$(dirname \"$3\")\"\nprintf '#!/bin/sh\\nexit 1\\n' >\"$3\"\nchmod +x \"$3\"\n"
	if err := os.WriteFile(filepath.Join(fake, "go"), []byte(goScript), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "scenarios.sh", "127.0.0.1:1") // nothing listens there
	cmd.Env = append(os.Environ(), "PATH="+fake+string(os.PathListSeparator)+os.Getenv("PATH"),
		"TMPDIR="+tmp, "RESULTS="+t.TempDir(), "PERSONABENCH=", "START_SERVER=auto")
	out, err := cmd.CombinedOutput()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "personad exited") {
		t.Fatalf("scenarios.sh: %v\n%s\nwant exit 1, personad exited", err, out)
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("scenarios.sh left %s in TMPDIR", filepath.Join(tmp, e.Name()))
	}
}

// frequency-across-nodes.sh refuses a Redis database that is not empty
// (it flushes it when done); a Redis that does not answer is said to be
// that, not "not empty", which sent the operator looking for an empty
// database. Port 1 has no Redis.
func TestFrequencyScriptRedisDown(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("no redis-cli")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "frequency-across-nodes.sh")
	cmd.Env = append(os.Environ(), "REDIS_URL=redis://127.0.0.1:1", "BIN="+filepath.Join(t.TempDir(), "nothing"), "BASE_PORT=1")
	out, err := cmd.CombinedOutput()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 1 ||
		!strings.Contains(string(out), "does not answer") || strings.Contains(string(out), "not empty") {
		t.Errorf("frequency-across-nodes.sh with Redis down: %v\n%s\nwant exit 1, Redis does not answer", err, out)
	}
}

// upload-under-load.sh runs each round's loaded window in the
// background; a personabench that failed there (status 1: not a broken
// bound) must end the script, also with TRACE, whose trace download is
// waited for beside it: `wait A B` has the status of B alone. Fake
// personad, personactl, personabench and curl make a round take a
// moment.
func TestUploadUnderLoadBackgroundFailure(t *testing.T) {
	bin, fake, write := fakeCommands(t)
	write(filepath.Join(bin, "personad"), "exec sleep 60\n")
	write(filepath.Join(bin, "personactl"), "exit 0\n")
	// personabench run … --out FILE: the upload window fails.
	write(filepath.Join(bin, "personabench"), `out=
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
case "$out" in */upload-*) echo "personabench: failed" >&2; exit 1 ;; esac
echo '{"latency": {"p50": 1, "p99": 2}, "errors": {}}' >"$out"
`)
	write(filepath.Join(fake, "curl"), "sleep 0.2\nexit 0\n")
	for _, trace := range []string{"", "1"} {
		out, err := runWithFakes(t, "upload-under-load.sh", bin, fake, "ROUNDS=1", "UPLOAD_IDS=10", "DURATION=1s", "BASE_PORT=1", "TRACE="+trace)
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("upload-under-load.sh with TRACE=%q and its loaded window failing: %v\n%s\nwant exit 1", trace, err, out)
		}
	}
}

// The scripts that start their own personad take WIRE, personabench's
// wire: grpc (the default, at the server's gRPC port BASE_PORT), http or
// http+gzip (--wire http [--gzip] at its HTTP port BASE_PORT+1); another
// is refused, exit 2, before any server starts. Fake personad,
// personactl, personabench (which records its flags) and curl make a
// run take a moment.
func TestScriptsWire(t *testing.T) {
	bin, fake, write := fakeCommands(t)
	started := filepath.Join(t.TempDir(), "started")
	// personad --demo --data-dir DIR …: a demo rules file, then nothing;
	// healthy (curl) once it is written.
	write(filepath.Join(bin, "personad"), `while [ $# -gt 0 ]; do [ "$1" = --data-dir ] && dir=$2; shift; done
mkdir -p "$dir/rules" && echo 'bid_cpm: 1' >"$dir/rules/demo.yaml"
touch `+started+`
exec sleep 60
`)
	write(filepath.Join(bin, "personactl"), "exit 0\n")
	write(filepath.Join(bin, "personabench"), `echo "$*" >>"$ARGS"
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
echo '{"latency": {"p50": 1, "p99": 2}, "errors": {}}' >"$out"
`)
	write(filepath.Join(fake, "curl"), "[ -e "+started+" ]\n")
	for _, name := range []string{"reload-under-load.sh", "upload-under-load.sh"} {
		for wire, want := range map[string]string{
			"":          " --addr 127.0.0.1:1 ",
			"grpc":      " --addr 127.0.0.1:1 ",
			"http":      " --wire http --addr 127.0.0.1:2 ",
			"http+gzip": " --wire http --gzip --addr 127.0.0.1:2 ",
			"https":     "",
		} {
			args := filepath.Join(t.TempDir(), "args")
			os.Remove(started)
			out, err := runWithFakes(t, name, bin, fake, "ROUNDS=1", "UPLOAD_IDS=10", "DURATION=1s", "INTERVAL=0.1",
				"BASE_PORT=1", "WIRE="+wire, "ARGS="+args)
			if want == "" {
				_, serr := os.Stat(started)
				if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), `WIRE must be grpc, http or http+gzip, not "https"`) || serr == nil {
					t.Errorf("%s with WIRE=%s: %v, personad started: %v\n%s\nwant exit 2 naming WIRE, no personad", name, wire, err, serr == nil, out)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s with WIRE=%q: %v\n%s", name, wire, err, out)
				continue
			}
			got, err := os.ReadFile(args)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(got)), "\n") {
				if !strings.HasPrefix(line, "run"+want) {
					t.Errorf("%s with WIRE=%q ran personabench %s, want run%s…", name, wire, line, want)
				}
			}
		}
	}
}

// fakeCommands makes two directories for fake commands, bin (the
// scripts' BIN: personad, personactl, personabench) and fake (put first
// on PATH: curl), and write, which writes a shell script as one of them.
// Without bash the test is skipped: the scripts are bash scripts.
func fakeCommands(t *testing.T) (bin, fake string, write func(path, script string)) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	return t.TempDir(), t.TempDir(), func(path, script string) {
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// runWithFakes runs bench/NAME from the repository root, within a
// minute, with fakeCommands' bin as BIN and fake first on PATH, its
// RESULTS in a temporary directory, and env added.
func runWithFakes(t *testing.T, name, bin, fake string, env ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "bench/"+name)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), append([]string{"PATH=" + fake + string(os.PathListSeparator) + os.Getenv("PATH"),
		"BIN=" + bin, "RESULTS=" + t.TempDir()}, env...)...)
	return cmd.CombinedOutput()
}
