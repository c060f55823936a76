package reload

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/engine"
	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

// BenchmarkReloadOneChanged measures a whole reload through the Manager
// that changes one campaign's bid among n generated ones: api is Apply
// with an in-memory rule set (no DataDir, so nothing is persisted:
// compile, diff, facet warnings, swap); file rewrites the rules file and
// reloads it (read, YAML parse, then the same; 10,000 campaigns only).
func BenchmarkReloadOneChanged(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		cfg := world.ReferenceConfig()
		cfg.Campaigns = n
		rs, err := world.GenerateRules(cfg)
		if err != nil {
			b.Fatal(err)
		}
		sb := segments.NewBuilder()
		for f, vals := range world.Facets(cfg) {
			for _, v := range vals {
				sb.Add(f, v, "u1")
			}
		}
		store := segments.NewStore(sb.Build(1))
		newManager := func(b *testing.B, rs *rules.RuleSet) (*Manager, string) {
			text, err := rules.Marshal(rs)
			if err != nil {
				b.Fatal(err)
			}
			path := filepath.Join(b.TempDir(), "rules.yaml")
			if err := os.WriteFile(path, text, 0o644); err != nil {
				b.Fatal(err)
			}
			eng, err := engine.New(engine.Config{}, store)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(eng.Close)
			c := DefaultConfig()
			c.Engine, c.Path, c.NoWatch, c.Segments = eng, path, true, store
			m, err := New(c)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { m.Close() })
			return m, path
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
			for b.Loop() {
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
		})
		if n > 10_000 {
			continue
		}
		b.Run(fmt.Sprintf("campaigns=%d/file", n), func(b *testing.B) {
			m, path := newManager(b, rs)
			edited := *rs
			edited.Campaigns = slices.Clone(rs.Campaigns)
			base := edited.Campaigns[n/2].BidCPM
			i := 0
			for b.Loop() {
				b.StopTimer()
				i++
				edited.Campaigns[n/2].BidCPM = base + float64(i%1000)/100
				text, err := rules.Marshal(&edited)
				if err != nil {
					b.Fatal(err)
				}
				if err := os.WriteFile(path, text, 0o644); err != nil {
					b.Fatal(err)
				}
				before := m.Status().Outcomes
				b.StartTimer()
				m.ReloadFiles()
				if s := m.Status(); s.Outcomes != before+1 || s.LastRejected != nil {
					b.Fatalf("reload: %+v", s.LastRejected)
				}
			}
		})
	}
}
