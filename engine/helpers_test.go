package engine

import (
	"testing"

	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

type segmentsSnapshot = segments.Snapshot

func mustParse(t testing.TB, yaml string) *rules.RuleSet {
	t.Helper()
	rs, err := rules.Parse("test", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func newEmptyStore() *segments.Store { return segments.NewStore(segments.NewBuilder().Build(1)) }
