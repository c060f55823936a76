package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/personad/personad/ledger/redisledger"
)

// docMetric is one row of the README's table of metrics: its type, and
// for each label the values it may take (nil: a value the rules or the
// ledger bound, described in words).
type docMetric struct {
	Type   string
	Labels map[string][]string
}

var (
	docRow    = regexp.MustCompile("^\\| `(personad_[a-z_]+)` \\| ([a-z]+) \\|([^|]*)\\|")
	docLabel  = regexp.MustCompile("`([a-z_]+)` \\(([^()]*)\\)")
	docValue  = regexp.MustCompile("^`([a-z_]+)`$")
	promLabel = regexp.MustCompile(`([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"`)
)

// readDocMetrics reads the README's table of metrics.
func readDocMetrics(t *testing.T) map[string]docMetric {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n## Metrics\n")
	if start < 0 {
		t.Fatal("README.md has no \"## Metrics\" section")
	}
	section := text[start+1:]
	if end := strings.Index(section[1:], "\n## "); end >= 0 {
		section = section[:end+1]
	}
	docs := map[string]docMetric{}
	for line := range strings.Lines(section) {
		m := docRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		d := docMetric{Type: m[2], Labels: map[string][]string{}}
		for _, l := range docLabel.FindAllStringSubmatch(m[3], -1) {
			var values []string
			for v := range strings.SplitSeq(l[2], ", ") {
				vm := docValue.FindStringSubmatch(v)
				if vm == nil { // described in words: not a fixed set
					values = nil
					break
				}
				values = append(values, vm[1])
			}
			d.Labels[l[1]] = values
		}
		if _, dup := docs[m[1]]; dup {
			t.Errorf("README.md lists %s twice", m[1])
		}
		docs[m[1]] = d
	}
	return docs
}

// exported is what a scrape shows of one metric: its type and, for each
// label, the values its series have.
type exported struct {
	Type   string
	Labels map[string][]string
}

// parseExposition reads the personad_ metrics of a Prometheus text
// exposition.
func parseExposition(t *testing.T, r io.Reader) map[string]*exported {
	t.Helper()
	got := map[string]*exported{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" && strings.HasPrefix(f[2], "personad_") {
			got[f[2]] = &exported{Type: f[3], Labels: map[string][]string{}}
			continue
		}
		if !strings.HasPrefix(line, "personad_") {
			continue
		}
		name, labels, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		e := got[name]
		if e == nil {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if e = got[strings.TrimSuffix(name, suffix)]; e != nil && strings.HasSuffix(name, suffix) {
					break
				}
				e = nil
			}
		}
		if e == nil {
			t.Errorf("sample %q without a TYPE line", line)
			continue
		}
		for _, l := range promLabel.FindAllStringSubmatch(labels, -1) {
			if l[1] == "le" && e.Type == "histogram" {
				continue
			}
			if !slices.Contains(e.Labels[l[1]], l[2]) {
				e.Labels[l[1]] = append(e.Labels[l[1]], l[2])
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestMetricsDocumented: every metric a running personad exports is in
// the README's table of metrics, with its type and labels, and every
// metric there is exported (those of a Redis --ledger by the collectors
// such a ledger adds); a label whose values the table lists takes
// only those, so none comes from a request, an id or an error.
func TestMetricsDocumented(t *testing.T) {
	docs := readDocMetrics(t)
	if len(docs) == 0 {
		t.Fatal("README.md's Metrics section lists no metric")
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stderr := &syncBuffer{}
	_, httpAddr, done := startRun(ctx, t,
		[]string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--rules", "testdata/rules.yaml"}, stderr)
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	got := parseExposition(t, resp.Body)
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}

	// A Redis --ledger's collectors, on a client that never dialled.
	reg := prometheus.NewRegistry()
	redisMetrics(reg, new(redisledger.Client))
	n, err := testutil.GatherAndCount(reg)
	if err != nil || n == 0 {
		t.Fatalf("Redis metrics: %d, %v", n, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		e := &exported{Type: strings.ToLower(mf.GetType().String()), Labels: map[string][]string{}}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				e.Labels[l.GetName()] = append(e.Labels[l.GetName()], l.GetValue())
			}
		}
		got[mf.GetName()] = e
	}

	for name, e := range got {
		d, ok := docs[name]
		if !ok {
			t.Errorf("%s (%s) is exported but not in README.md's Metrics table", name, e.Type)
			continue
		}
		if d.Type != e.Type {
			t.Errorf("%s: README.md says %s, exported as %s", name, d.Type, e.Type)
		}
		for l, vs := range e.Labels {
			want, ok := d.Labels[l]
			switch {
			case !ok:
				t.Errorf("%s: label %s (values %q) is not in README.md", name, l, vs)
			case want != nil:
				for _, v := range vs {
					if !slices.Contains(want, v) {
						t.Errorf("%s{%s=%q}: README.md lists only %q", name, l, v, want)
					}
				}
			}
		}
		for l := range d.Labels {
			if _, ok := e.Labels[l]; !ok {
				t.Errorf("%s: README.md names label %s, not exported", name, l)
			}
		}
	}
	for name := range docs {
		if _, ok := got[name]; !ok {
			t.Errorf("%s is in README.md's Metrics table but not exported", name)
		}
	}
}
