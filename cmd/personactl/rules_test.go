package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// Local validation of a rules directory names the file and the campaign's
// index in it, as the server does, not the index in the merged set.
func TestRulesValidateLocalDirectory(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", "campaigns:\n  - {id: a, bid_cpm: 1, creatives: [{id: a1, w: 300, h: 250, adm: x}]}\n")
	write("b.yaml", "campaigns:\n  - {id: b, bid_cpm: -1, creatives: [{id: b1, w: 300, h: 250, adm: x}]}\n")
	out, _, code := ctl(t, "127.0.0.1:1", "", false, "rules", "validate", "--local", dir)
	if code == 0 || !strings.Contains(out, "b.yaml: campaigns[0].bid_cpm") {
		t.Errorf("exit %d, output:\n%s\nwant an error at b.yaml: campaigns[0].bid_cpm", code, out)
	}
}

// TestPrintDiff: a list is printed with its count, which may exceed the
// ids the server listed, and with the first of them.
func TestPrintDiff(t *testing.T) {
	var ids []string
	for i := range 25 {
		ids = append(ids, fmt.Sprintf("c%02d", i))
	}
	for _, tc := range []struct {
		name string
		d    *personadpb.RulesDiff
		want string
	}{
		{"counted", &personadpb.RulesDiff{CampaignsRemoved: ids, CampaignsRemovedCount: 40000, CreativesAdded: ids[:2], CreativesAddedCount: 2},
			"campaigns removed  40000: " + strings.Join(ids[:20], ", ") + ", ... (39980 more)\ncreatives added    2: c00, c01\n"},
		{"uncounted", &personadpb.RulesDiff{CampaignsAdded: ids, ContentRulesChanged: true},
			"campaigns added    25: " + strings.Join(ids[:20], ", ") + ", ... (5 more)\ncontent rules changed\n"},
		{"none", &personadpb.RulesDiff{}, "no changes\n"},
	} {
		var b strings.Builder
		printDiff(&b, tc.d)
		if b.String() != tc.want {
			t.Errorf("%s:\n%s\nwant:\n%s", tc.name, b.String(), tc.want)
		}
	}
}
