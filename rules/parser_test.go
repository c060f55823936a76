package rules_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/rules"
)

// TestParserReparsesOnlyChanges checks that a Parser parses only the
// files, and in them the campaign entries, whose text changed, and that
// its results and errors are ParseFilesLocated's.
func TestParserReparsesOnlyChanges(t *testing.T) {
	gen, err := world.GenerateRules(world.SmallConfig())
	if err != nil {
		t.Fatal(err)
	}
	big, err := rules.Marshal(gen)
	if err != nil {
		t.Fatal(err)
	}
	files := []rules.File{
		{Name: "a.yaml", Data: []byte("campaigns: [{id: a1, bid_cpm: 1, creatives: [{id: ca, w: 1, h: 1, adm: x}]}]")},
		{Name: "big.yaml", Data: big},
		{Name: "c.json", Data: []byte(`{"content_rules": {"blocked_cat": ["IAB25"]}}`)},
	}
	p := rules.NewParser()
	step := func(name string, want rules.ParseStats) {
		t.Helper()
		got, gotOrigins, err := p.ParseFiles(files)
		ref, refOrigins, refErr := rules.ParseFilesLocated(files)
		if (err == nil) != (refErr == nil) || err != nil && err.Error() != refErr.Error() {
			t.Fatalf("%s: error %v, ParseFilesLocated: %v", name, err, refErr)
		}
		if diff := cmp.Diff(ref, got); diff != "" {
			t.Errorf("%s: rule set differs from ParseFilesLocated (-want +got):\n%s", name, diff)
		}
		if diff := cmp.Diff(refOrigins, gotOrigins); diff != "" {
			t.Errorf("%s: origins (-want +got):\n%s", name, diff)
		}
		if st := p.Stats(); st != want {
			t.Errorf("%s: stats %+v, want %+v", name, st, want)
		}
	}
	n := len(gen.Campaigns)
	// a.yaml is a flow sequence, parsed whole; big.yaml piecewise.
	step("first", rules.ParseStats{Files: 3, FilesParsed: 3, Entries: n, EntriesParsed: n})
	step("same bytes", rules.ParseStats{Files: 3})

	// One campaign's bid changes in the big file: one entry is parsed.
	i := n / 2
	bid := strings.Index(string(big), "\n  - id: "+gen.Campaigns[i].ID+"\n")
	edited := strings.Replace(string(big[bid:]), "bid_cpm: ", "bid_cpm: 1", 1)
	files[1].Data = append(big[:bid:bid], edited...)
	step("one campaign", rules.ParseStats{Files: 3, FilesParsed: 1, Entries: n, EntriesParsed: 1})

	// A broken file fails the whole set; restoring it parses nothing (its
	// good version is still remembered); another change parses it alone.
	good := files[2].Data
	files[2].Data = []byte(`{"content_rules": {"blocked_cats": ["IAB25"]}}`)
	step("broken", rules.ParseStats{Files: 3, FilesParsed: 1})
	files[2].Data = good
	step("restored", rules.ParseStats{Files: 3})
	files[2].Data = []byte(`{"content_rules": {"blocked_cat": ["IAB26"]}}`)
	step("changed", rules.ParseStats{Files: 3, FilesParsed: 1})

	// A removed file is forgotten: bringing it back parses it again.
	all := files
	files = files[:2]
	step("removed", rules.ParseStats{Files: 2})
	files = all
	step("back", rules.ParseStats{Files: 3, FilesParsed: 1})
}
