package rules_test

import (
	"fmt"
	"testing"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/rules"
)

// BenchmarkParse measures rules.Parse of generated rule sets written as
// YAML (rules.Marshal, block style as planners write it) and as JSON
// (rules.MarshalJSON, as `rules get` or a proto JSON export writes it).
func BenchmarkParse(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		cfg := world.ReferenceConfig()
		cfg.Campaigns = n
		rs, err := world.GenerateRules(cfg)
		if err != nil {
			b.Fatal(err)
		}
		for _, format := range []string{"yaml", "json"} {
			marshal := rules.Marshal
			if format == "json" {
				marshal = rules.MarshalJSON
			}
			data, err := marshal(rs)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("campaigns=%d/%s", n, format), func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				for b.Loop() {
					got, err := rules.Parse("bench."+format, data)
					if err != nil {
						b.Fatal(err)
					}
					if len(got.Campaigns) != n {
						b.Fatalf("%d campaigns, want %d", len(got.Campaigns), n)
					}
				}
			})
		}
	}
}
