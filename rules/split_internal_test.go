package rules

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzCutWalk checks that cutting a document by its previous version's
// entries (walkEntries) cuts it as reading every line does, that the
// digests it returns are the entries', and that the previous entry it
// matches to each entry has the entry's digest (and that it matches none
// only where the previous version has no entry of that digest); and that
// it gives up the walk (no digests) only when none of the first
// walkGiveUp entries is one of the previous version's. walkGiveUp is 3
// here, so that small documents reach it.
func FuzzCutWalk(f *testing.F) {
	entry := func(id, bid string) string {
		return "  - id: " + id + "\n    bid_cpm: " + bid + "\n    creatives:\n      - {id: c" + id + ", w: 1, h: 1, adm: x}\n"
	}
	base := "campaigns:\n" + entry("a", "1") + entry("b", "2") + entry("c", "3") + "content_rules:\n  blocked_cat: [x]\n"
	for _, edited := range []string{
		base,
		strings.Replace(base, "bid_cpm: 2", "bid_cpm: 2.5", 1),                             // edited in place
		strings.Replace(base, entry("b", "2"), entry("b", "2")+entry("n", "9"), 1),         // inserted
		strings.Replace(base, entry("a", "1"), "", 1),                                      // removed
		strings.Replace(base, entry("a", "1"), entry("b", "2"), 1),                         // duplicated
		strings.Replace(base, "adm: x}\n  - id: b", "adm: x}\n    cat: [y]\n  - id: b", 1), // grown by a line
		strings.Replace(base, "  - id: b", "x: 1\n  - id: b", 1),                           // ended early
		strings.Replace(base, "  - id: b", " - id: b", 1),                                  // less indented
		strings.Replace(base, "  - id: c", "---\n  - id: c", 1),                            // a marker
		strings.TrimSuffix(strings.Replace(base, "content_rules:\n  blocked_cat: [x]\n", "", 1), "\n"),
		strings.ReplaceAll(base, "\n  ", "\n    "), // indented otherwise
		strings.Replace(base, "bid_cpm: 2\n", "bid_cpm: 2\r\n", 1),
		strings.Replace(base, "[x]", "[x]\r", 1),
	} {
		f.Add([]byte(base), []byte(edited))
	}
	// More entries moved than are looked for one by one (scanMax): the
	// rest, and the new one last, are looked for through a map.
	var forward, reversed string
	for i := range scanMax + 4 {
		forward += entry(strconv.Itoa(i), "1")
		reversed = entry(strconv.Itoa(i), "1") + reversed
	}
	f.Add([]byte("campaigns:\n"+forward), []byte("campaigns:\n"+reversed+entry("n", "9")))
	// More entries than the walk hashes ahead at first (aheadMin): it
	// reaches a window's end, and after an entry edited to another
	// length, finds the rest elsewhere than it foresaw.
	var many string
	for i := range 3 * aheadMin {
		many += entry(strconv.Itoa(i), "1")
	}
	f.Add([]byte("campaigns:\n"+many), []byte("campaigns:\n"+strings.Replace(many, entry("100", "1"), entry("100", "1.25"), 1)))
	// Rewritten: the walk gives up (walkGiveUp 3); and the same with a
	// known entry among the first three, so that it does not.
	rewritten := "campaigns:\n" + entry("x", "1") + entry("y", "1") + entry("z", "1")
	f.Add([]byte(base), []byte(rewritten+entry("a", "1")))
	f.Add([]byte(base), []byte(rewritten[:len(rewritten)-len(entry("z", "1"))]+entry("a", "1")+entry("z", "1")))
	defer func(n int) { walkGiveUp = n }(walkGiveUp)
	walkGiveUp = 3
	f.Fuzz(func(t *testing.T, old, data []byte) {
		prev, _, _, ok := cutCampaigns(old, nil)
		if !ok {
			return
		}
		texts := &entryTexts{indent: prev.indent}
		for _, e := range prev.entries {
			texts.lens = append(texts.lens, len(e))
			texts.digests = append(texts.digests, sum(e))
		}
		want, _, _, wantOK := cutCampaigns(data, nil)
		got, digests, matches, gotOK := cutCampaigns(data, texts)
		if gotOK != wantOK {
			t.Fatalf("cut by the previous entries: ok %v, by every line: %v", gotOK, wantOK)
		}
		if !gotOK {
			return
		}
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(split{})); diff != "" {
			t.Errorf("cut by the previous entries (-by every line +by entries):\n%s", diff)
		}
		if digests == nil && got.indent == prev.indent {
			if len(got.entries) < walkGiveUp {
				t.Fatalf("no digests from a cut by the previous entries, with %d entries", len(got.entries))
			}
			for i, e := range got.entries[:walkGiveUp] {
				if slices.Contains(texts.digests, sum(e)) {
					t.Fatalf("the walk gave up, but entry %d is one of the previous version's", i)
				}
			}
		}
		if digests != nil && (len(digests) != len(got.entries) || len(matches) != len(got.entries)) {
			t.Fatalf("%d digests and %d matches for %d entries", len(digests), len(matches), len(got.entries))
		}
		for i, d := range digests {
			if d != sum(got.entries[i]) {
				t.Errorf("entry %d: digest %v, want %v", i, d, sum(got.entries[i]))
			}
			switch j := matches[i]; {
			case j < -1 || j >= len(texts.digests):
				t.Errorf("entry %d: matches previous entry %d of %d", i, j, len(texts.digests))
			case j >= 0 && texts.digests[j] != d:
				t.Errorf("entry %d: matches previous entry %d, of another digest", i, j)
			case j < 0 && slices.Contains(texts.digests, d):
				t.Errorf("entry %d: matches no previous entry, though one has its digest", i)
			}
		}
	})
}
