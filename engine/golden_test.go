package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/tools/txtar"

	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

var update = flag.Bool("update", false, "rewrite the want sections of engine/testdata/*.txtar")

// TestGolden runs the decision scenarios in testdata/*.txtar. Each archive
// holds rules.yaml, segments (one "facet:value user user ..." per line) and
// pairs of "request NAME" (a JSON Query) and "want NAME" (the rendered
// decision with its trace). Run with -update to rewrite the wants, and read
// the diff in review.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txtar")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			sections := map[string][]byte{}
			for _, f := range ar.Files {
				sections[f.Name] = f.Data
			}
			rs, err := rules.Parse(file, sections["rules.yaml"])
			if err != nil {
				t.Fatal(err)
			}
			compiled, err := Compile(rs, "golden")
			if err != nil {
				t.Fatal(err)
			}
			for _, cacheSize := range []int64{0, 1000} {
				e := newTestEngine(t, compiled, parseSegments(t, sections["segments"]), cacheSize)
				changed := false
				for i, f := range ar.Files {
					name, ok := strings.CutPrefix(f.Name, "request ")
					if !ok {
						continue
					}
					got := decideAndRender(t, e, f.Data)
					wantName := "want " + name
					want, ok := sections[wantName]
					if *update && cacheSize == 0 {
						if ok {
							for j := range ar.Files {
								if ar.Files[j].Name == wantName {
									ar.Files[j].Data = []byte(got)
								}
							}
						} else {
							ar.Files = append(ar.Files[:i+1], append([]txtar.File{{Name: wantName, Data: []byte(got)}}, ar.Files[i+1:]...)...)
						}
						changed = true
						continue
					}
					if diff := cmp.Diff(string(want), got); diff != "" {
						t.Errorf("%s (cache %d): decision mismatch (-want +got):\n%s", name, cacheSize, diff)
					}
				}
				if changed {
					if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

func newTestEngine(t testing.TB, r *Rules, snap *segments.Snapshot, cacheSize int64) *Engine {
	t.Helper()
	cfg := DefaultConfig()
	cfg.PersonaCacheSize = cacheSize
	e, err := New(cfg, segments.NewStore(snap))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	e.SetRules(r)
	return e
}

func parseSegments(t testing.TB, data []byte) *segments.Snapshot {
	t.Helper()
	b := segments.NewBuilder()
	for i, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		facet, value, ok := strings.Cut(fields[0], ":")
		if !ok {
			t.Fatalf("segments line %d: want facet:value user...", i+1)
		}
		b.Add(facet, value, fields[1:]...)
	}
	return b.Build(1)
}

// goldenNow is the decision time of every golden request without "Now".
var goldenNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func decideAndRender(t *testing.T, e *Engine, reqJSON []byte) string {
	t.Helper()
	var q Query
	dec := json.NewDecoder(bytes.NewReader(reqJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		t.Fatalf("request: %v", err)
	}
	if q.Now.IsZero() {
		q.Now = goldenNow
	}
	// Decide twice: without debug, then with. Debug must not change the
	// decision, only explain it.
	var plain, debug Decision
	e.Decide(context.Background(), &q, &plain)
	q.Debug = true
	e.Decide(context.Background(), &q, &debug)
	if diff := cmp.Diff(renderBids(&q, &plain), renderBids(&q, &debug)); diff != "" {
		t.Errorf("debug changed the decision (-plain +debug):\n%s", diff)
	}
	var b strings.Builder
	b.WriteString(renderBids(&q, &debug))
	fmt.Fprintf(&b, "persona: %s\n", strings.Join(debug.Persona, " "))
	for _, tr := range debug.Trace {
		fmt.Fprintf(&b, "  %s", tr.Campaign)
		if tr.Imp != "" {
			fmt.Fprintf(&b, " imp=%s", tr.Imp)
		}
		fmt.Fprintf(&b, " %s", tr.Stage)
		if tr.Creative != "" {
			fmt.Fprintf(&b, " crid=%s", tr.Creative)
		}
		if tr.Detail != "" {
			fmt.Fprintf(&b, ": %s", tr.Detail)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func renderBids(q *Query, d *Decision) string {
	var b strings.Builder
	fmt.Fprintf(&b, "channel: %s\n", d.Channel)
	for _, bid := range d.Bids {
		fmt.Fprintf(&b, "bid imp=%s cid=%s crid=%s %dx%d price=%s %s\n", q.Imps[bid.Imp].ID,
			bid.Campaign.ID, bid.Creative.ID, bid.Creative.W, bid.Creative.H, formatMicros(bid.PriceMicros), bid.Campaign.Currency)
	}
	if len(d.Bids) == 0 {
		fmt.Fprintf(&b, "nobid: %s\n", d.NoBid)
	}
	return b.String()
}
