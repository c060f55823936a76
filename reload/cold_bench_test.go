package reload

import (
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
)

// BenchmarkReloadCold measures the issue's "parse, validate, compile and
// swap n campaigns" through the Manager, nothing reused: two generated
// sets with different campaigns (seeds 1 and 2) are loaded in turn, with
// the compile cache off, so every campaign is parsed and compiled each
// time. file links the other set's rules file over the old one
// (untimed) and reloads it: read,
// parse, validate, compile, diff, segment warnings, swap; dir does the same
// with the set spread over 100 files (100,000 campaigns of YAML exceed
// one file's limit); api applies the in-memory set (no parse).
//
// Besides the mean (ns/op), it reports the median reload (median-ns): a
// reload during which the collector runs, or whose heap grows into
// memory the process has not touched before (a page fault each 4 KB),
// can take twice as long, and with a few reloads a run the mean moves
// with where those land. Untimed reloads first grow the heap to its
// working size (warm), as a server's has. It reports page faults too
// (faults/op, Linux only): on this project's VMs each costs 10-20 µs.
// applied-ns is the median time to the set's applied time, just before
// its swap, and before its diff is computed; cpu-ns the median CPU time
// the process spent during a reload (see reloadTimes.run).
//
//	go test ./reload -run '^$' -bench ReloadCold -benchtime 6x
func BenchmarkReloadCold(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		// The generated sets are made in each sub-benchmark, and only
		// api keeps them (its input) while it times: a server holds no
		// second copy of its rules, and two sets of 100,000 campaigns
		// beside the Manager's would make every collection during a
		// reload mark twice the heap.
		generate := func(b *testing.B, seed int) *rules.RuleSet {
			cfg := world.ReferenceConfig()
			cfg.Campaigns, cfg.Seed = n, int64(seed)
			rs, err := world.GenerateRules(cfg)
			if err != nil {
				b.Fatal(err)
			}
			return rs
		}
		store := benchStore()
		newManager := func(b *testing.B, path string) *Manager {
			comp, err := engine.NewCompiler(engine.CompilerConfig{}) // no cache
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(comp.Close)
			return benchManager(b, store, path, comp)
		}
		reload := func(b *testing.B, parts int) {
			// Each set's files are written once to a directory of their
			// own (so that no text stays on the heap either) and linked
			// into the rules directory before each reload, as an editor
			// renames a new file over the old one.
			var sources [2]string
			for i := range sources {
				sources[i] = b.TempDir()
				writeFiles(b, sources[i], marshalFiles(b, generate(b, i+1), parts))
			}
			dir := b.TempDir()
			linkFiles(b, sources[0], dir, parts)
			path := dir
			if parts == 1 {
				path = filepath.Join(dir, fileName(0))
			}
			m := newManager(b, path)
			runtime.GC()
			var t reloadTimes
			i := 0
			t.run(b, func() {
				b.StopTimer()
				i++
				linkFiles(b, sources[i%2], dir, parts)
				before := m.Status().Outcomes
				b.StartTimer()
				start := startReload()
				m.ReloadFiles()
				s := m.Status()
				t.add(start, s.AppliedAt)
				if s.Outcomes != before+1 || s.LastRejected != nil || s.Campaigns != n {
					b.Fatalf("reload: %d campaigns, %+v", s.Campaigns, s.LastRejected)
				}
			})
		}
		if n <= 10_000 {
			b.Run(fmt.Sprintf("campaigns=%d/file", n), func(b *testing.B) { reload(b, 1) })
		}
		b.Run(fmt.Sprintf("campaigns=%d/dir", n), func(b *testing.B) { reload(b, 100) })
		b.Run(fmt.Sprintf("campaigns=%d/api", n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "empty.yaml")
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				b.Fatal(err)
			}
			m := newManager(b, path)
			sets := [2]*rules.RuleSet{generate(b, 1), generate(b, 2)}
			runtime.GC()
			var t reloadTimes
			i := 0
			t.run(b, func() {
				i++
				start := startReload()
				res, err := m.Apply(sets[i%2], ApplyOptions{Origin: "bench"})
				if err != nil {
					b.Fatal(err)
				}
				t.add(start, res.AppliedAt)
				if res.Unchanged || res.Campaigns != n {
					b.Fatalf("apply: %+v", res)
				}
			})
		})
	}
}

// linkFiles replaces the first parts rules files of dir by links to
// those of from.
func linkFiles(b *testing.B, from, dir string, parts int) {
	for j := range parts {
		dst := filepath.Join(dir, fileName(j))
		if err := os.Remove(dst); err != nil && !os.IsNotExist(err) {
			b.Fatal(err)
		}
		if err := os.Link(filepath.Join(from, fileName(j)), dst); err != nil {
			b.Fatal(err)
		}
	}
}

// reloadTimes are the timed reloads' durations, their times to the
// applied time (just before the swap), the CPU time the process spent
// during each, and their page faults.
type reloadTimes struct {
	took, applied, cpu []time.Duration
	faults             int64
}

// reloadStart is the time and the process's usage when a reload started.
type reloadStart struct {
	at     time.Time
	faults int64
	cpu    time.Duration
}

func startReload() reloadStart {
	faults, cpu := usage()
	return reloadStart{time.Now(), faults, cpu}
}

// add records a reload that started at s and was applied at applied.
func (t *reloadTimes) add(s reloadStart, applied time.Time) {
	t.took = append(t.took, time.Since(s.at))
	faults, cpu := usage()
	t.faults += faults - s.faults
	t.cpu = append(t.cpu, cpu-s.cpu)
	t.applied = append(t.applied, applied.Sub(s.at))
}

// run warms the heap with step (see warm), then times it, and reports
// the median reload (median-ns), the median time to the applied time
// (applied-ns), the median CPU time of the process during a reload
// (cpu-ns, Linux only: every thread's, the collector's included; unlike
// the times, it does not grow when the VM's CPUs are shared with other
// work, and tells a change in work from one in waiting) and the page
// faults per reload (faults/op).
func (t *reloadTimes) run(b *testing.B, step func()) {
	warm(step)
	*t = reloadTimes{}
	for b.Loop() {
		step()
	}
	if len(t.took) == 0 {
		return
	}
	b.ReportMetric(float64(t.faults)/float64(len(t.took)), "faults/op")
	median := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Nanoseconds())
	}
	b.ReportMetric(median(t.took), "median-ns")
	b.ReportMetric(median(t.applied), "applied-ns")
	if cpu := median(t.cpu); cpu > 0 {
		b.ReportMetric(cpu, "cpu-ns")
	}
}
