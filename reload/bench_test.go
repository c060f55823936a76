package reload

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/engine"
	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

// BenchmarkReloadOneChanged measures a whole reload through the Manager
// that changes one campaign's bid among n generated ones: api is Apply
// with an in-memory rule set (no DataDir, so nothing is persisted:
// compile, diff, segment warnings, swap); file rewrites the rules file and
// reloads it (read, parse the changed campaign entry, then the same;
// 10,000 campaigns only); dir does the same with the campaigns spread
// over 100 files in a rules directory, rewriting one of them (stat every
// file, read and parse the one that changed).
func BenchmarkReloadOneChanged(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		cfg := world.ReferenceConfig()
		cfg.Campaigns = n
		rs, err := world.GenerateRules(cfg)
		if err != nil {
			b.Fatal(err)
		}
		store := benchStore()
		newManager := func(b *testing.B, rs *rules.RuleSet) (*Manager, string) {
			text, err := rules.Marshal(rs)
			if err != nil {
				b.Fatal(err)
			}
			path := filepath.Join(b.TempDir(), "rules.yaml")
			if err := os.WriteFile(path, text, 0o644); err != nil {
				b.Fatal(err)
			}
			return benchManager(b, store, path, nil), path
		}
		b.Run(fmt.Sprintf("campaigns=%d/api", n), func(b *testing.B) {
			// Started from an empty file (100,000 campaigns of YAML exceed
			// rules.MaxFileSize), then the set applied once.
			m, _ := newManager(b, &rules.RuleSet{})
			if _, err := m.Apply(rs, ApplyOptions{Origin: "bench"}); err != nil {
				b.Fatal(err)
			}
			edited := *rs
			edited.Campaigns = slices.Clone(rs.Campaigns)
			base := edited.Campaigns[n/2].BidCPM
			i := 0
			step := func() {
				i++
				edited.Campaigns[n/2].BidCPM = base + float64(i%1000)/100
				res, err := m.Apply(&edited, ApplyOptions{Origin: "bench"})
				if err != nil {
					b.Fatal(err)
				}
				if len(res.Diff.CampaignsChanged) != 1 || !res.Stats.Patched {
					b.Fatalf("diff %+v, stats %+v: want one campaign changed, patched", res.Diff, res.Stats)
				}
			}
			warm(step)
			for b.Loop() {
				step()
			}
		})
		if n > 10_000 {
			continue
		}
		b.Run(fmt.Sprintf("campaigns=%d/file", n), func(b *testing.B) {
			m, path := newManager(b, rs)
			text, err := os.ReadFile(path)
			if err != nil {
				b.Fatal(err)
			}
			id, base := rs.Campaigns[n/2].ID, rs.Campaigns[n/2].BidCPM
			buf := make([]byte, 0, len(text)+64)
			i := 0
			var faults int64
			step := func() {
				b.StopTimer()
				i++
				buf = editBid(b, buf, text, id, base+float64(i%1000)/100)
				if err := os.WriteFile(path, buf, 0o644); err != nil {
					b.Fatal(err)
				}
				before := m.Status().Outcomes
				b.StartTimer()
				f0, _ := usage()
				m.ReloadFiles()
				f1, _ := usage()
				faults += f1 - f0
				if s := m.Status(); s.Outcomes != before+1 || s.LastRejected != nil {
					b.Fatalf("reload: %+v", s.LastRejected)
				}
			}
			warm(step)
			faults = 0
			for b.Loop() {
				step()
			}
			b.ReportMetric(float64(faults)/float64(b.N), "faults/op")
			if st := m.parser.Stats(); st.EntriesParsed != 1 {
				b.Fatalf("parse stats %+v: want one entry parsed", st)
			}
		})
		b.Run(fmt.Sprintf("campaigns=%d/dir", n), func(b *testing.B) {
			const files = 100
			dir := b.TempDir()
			texts := marshalFiles(b, rs, files)
			writeFiles(b, dir, texts)
			k := n / 2 / (n / files) // the file edited
			edited := texts[k]
			path := filepath.Join(dir, fileName(k))
			// The files' stats are trusted (and unchanged files not read)
			// once they were read when two seconds old: let them age, as
			// a server's files have.
			time.Sleep(2100 * time.Millisecond)
			m := benchManager(b, store, dir, nil)
			id, base := rs.Campaigns[n/2].ID, rs.Campaigns[n/2].BidCPM
			buf := make([]byte, 0, len(edited)+64)
			i := 0
			step := func() {
				b.StopTimer()
				i++
				buf = editBid(b, buf, edited, id, base+float64(i%1000)/100)
				if err := os.WriteFile(path, buf, 0o644); err != nil {
					b.Fatal(err)
				}
				before := m.Status().Outcomes
				b.StartTimer()
				m.ReloadFiles()
				if s := m.Status(); s.Outcomes != before+1 || s.LastRejected != nil {
					b.Fatalf("reload: %+v", s.LastRejected)
				}
			}
			warm(step)
			for b.Loop() {
				step()
			}
			if st := m.parser.Stats(); st.FilesRead != 1 || st.FilesParsed != 1 || st.EntriesParsed != 1 {
				b.Fatalf("parse stats %+v: want one file read and parsed, one entry parsed", st)
			}
		})
	}
}

// warm runs step, untimed, until the collector has run three times (at
// most 200 steps): a server's heap has grown to its working size, and
// without this the first timed steps take page faults growing it (~1,000
// a reload of one change among 10,000 campaigns, 15 µs each on this
// project's VMs), or do not, depending on what the benchmark's setup left.
func warm(step func()) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	for gcs, i := ms.NumGC, 0; ms.NumGC < gcs+3 && i < 200; i++ {
		step()
		runtime.ReadMemStats(&ms)
	}
}

// benchStore is a segment store holding every facet value of the
// reference world (one user each), so that no targeting draws a warning.
func benchStore() *segments.Store {
	sb := segments.NewBuilder()
	for f, vals := range world.Facets(world.ReferenceConfig()) {
		for _, v := range vals {
			sb.Add(f, v, "u1")
		}
	}
	return segments.NewStore(sb.Build(1))
}

// benchManager is a Manager of path (a rules file or directory), not
// watching it, over its own engine and store; comp nil is the Manager's
// own Compiler.
func benchManager(b *testing.B, store *segments.Store, path string, comp *engine.Compiler) *Manager {
	eng, err := engine.New(engine.Config{}, store)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(eng.Close)
	c := DefaultConfig()
	c.Engine, c.Compiler, c.Path, c.NoWatch, c.Segments = eng, comp, path, true, store
	return startManager(b, c)
}

// marshalFiles cuts rs into parts files of as many campaigns each (the
// content rules in the first) and marshals them.
func marshalFiles(b *testing.B, rs *rules.RuleSet, parts int) [][]byte {
	per := len(rs.Campaigns) / parts
	out := make([][]byte, parts)
	for j := range out {
		part := &rules.RuleSet{Campaigns: rs.Campaigns[j*per : (j+1)*per]}
		if j == 0 {
			part.ContentRules = rs.ContentRules
		}
		text, err := rules.Marshal(part)
		if err != nil {
			b.Fatal(err)
		}
		out[j] = text
	}
	return out
}

// writeFiles writes texts into dir as fileName(0), fileName(1), ….
func writeFiles(b *testing.B, dir string, texts [][]byte) {
	for j, text := range texts {
		if err := os.WriteFile(filepath.Join(dir, fileName(j)), text, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

func fileName(j int) string { return fmt.Sprintf("rules-%03d.yaml", j) }

// editBid returns text, a rules file as rules.Marshal writes it, with the
// bid of campaign id set to bid, written over dst's bytes: with a dst of
// enough capacity reused across iterations, the untimed edit leaves no
// garbage whose collection would land in the timed reload.
func editBid(b *testing.B, dst, text []byte, id string, bid float64) []byte {
	at := bytes.Index(text, []byte("  - id: "+id+"\n"))
	if at < 0 {
		b.Fatalf("campaign %s not found", id)
	}
	line := bytes.Index(text[at:], []byte("    bid_cpm: "))
	end := bytes.IndexByte(text[at+line:], '\n')
	if line < 0 || end < 0 {
		b.Fatalf("campaign %s: no bid_cpm", id)
	}
	out := append(dst[:0], text[:at+line]...)
	out = fmt.Appendf(out, "    bid_cpm: %v", bid)
	return append(out, text[at+line+end:]...)
}
