package engine

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/rules"
)

// TestCompileCacheIdentical compiles a sequence of edited rule sets with a
// cache and without one: the compiled rules must be identical, whatever
// the cache reused.
func TestCompileCacheIdentical(t *testing.T) {
	rs, err := world.GenerateRules(world.SmallConfig())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewCompiler(DefaultCompilerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	edits := []struct {
		name string
		edit func(rs *rules.RuleSet)
	}{
		{"unchanged", func(*rules.RuleSet) {}},
		{"bid", func(rs *rules.RuleSet) { rs.Campaigns[3].BidCPM += 10 }},
		{"new facet value", func(rs *rules.RuleSet) {
			rs.Campaigns[5].Targeting.All = append(rs.Campaigns[5].Targeting.All, rules.Clause{Facet: "zz_new", Any: []string{"v1", "v2"}})
		}},
		{"paused", func(rs *rules.RuleSet) { rs.Campaigns[7].Status = rules.StatusPaused }},
		{"removed", func(rs *rules.RuleSet) { rs.Campaigns = append(rs.Campaigns[:2:2], rs.Campaigns[3:]...) }},
		{"added", func(rs *rules.RuleSet) {
			c := rs.Campaigns[0]
			c.ID = "added"
			c.Creatives = []rules.Creative{{ID: "added-1", W: 300, H: 250, Channels: []string{"brand_new"}, Adm: "<b>x</b>"}}
			rs.Campaigns = append(rs.Campaigns, c)
		}},
		{"content rules", func(rs *rules.RuleSet) {
			rs.ContentRules.BlockedCat = append(rs.ContentRules.BlockedCat, "IAB19")
		}},
	}
	for _, e := range edits {
		e.edit(rs)
		cached, err := cc.Compile(rs, "")
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		plain, err := Compile(rs, "")
		if err != nil {
			t.Fatal(err)
		}
		if e.name != "unchanged" && cached.stats.Reused == 0 {
			t.Errorf("%s: nothing reused (%+v)", e.name, cached.stats)
		}
		if e.name == "unchanged" && cached.stats.Reused != 0 {
			t.Errorf("first compile reused %d campaigns", cached.stats.Reused)
		}
		cached.compiled, cached.stats = time.Time{}, CompileStats{}
		plain.compiled, plain.stats = time.Time{}, CompileStats{}
		if !reflect.DeepEqual(cached, plain) {
			t.Errorf("%s: rules compiled with the cache differ from rules compiled without", e.name)
		}
	}
}

// TestCompileRejectsInvalidCached: a campaign known valid from the cache
// still takes part in the checks across campaigns.
func TestCompileRejectsInvalidCached(t *testing.T) {
	rs, err := world.GenerateRules(world.SmallConfig())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewCompiler(DefaultCompilerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := cc.Compile(rs, ""); err != nil {
		t.Fatal(err)
	}
	rs.Campaigns = append(rs.Campaigns, rs.Campaigns[0])
	_, err = cc.Compile(rs, "")
	want := fmt.Sprintf("campaigns[%d].id: duplicate campaign id %q (also campaigns[0])", len(rs.Campaigns)-1, rs.Campaigns[0].ID)
	if es, ok := err.(rules.ValidationErrors); !ok || es[0].Error() != want {
		t.Errorf("duplicate of a cached campaign: %v, want %s first", err, want)
	}
}
