package rules_test

import (
	"bytes"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/rules"
)

// decodeCorpus holds campaign entries as a file's cut hands them to the
// decoder: what it decodes itself, and what it must leave to the tree.
var decodeCorpus = []string{
	"- id: a\n",
	"- id: a\n  bid_cpm: 1\n- id: b\n# c\n\n- id: c\n",
	"- id: a\n  advertiser: \"x\\ty\"\n  adomain: [a.com, 'b.com', \"c\"]\n  status: paused\n  priority: -3\n  bid_cpm: 4.25\n",
	"- id: a\n  priority: null\n  budget: ~\n  frequency_cap:\n  cat:\n  targeting:\n",
	"- id: a\n  priority: ~\n  budget:\n    daily: 1\n    total: 2.5\n  frequency_cap:\n    max: 3\n    window: 24h\n",
	"- id: a\n  cat:\n  - IAB1\n  - ~\n  - 'x'\n  pacing: asap\n",
	"- id: a\n  cat: []\n  adomain: [ ]\n  targeting:\n",
	"- id: a # note\n  bid_cpm: 2 # two\n\n  # between\n  end: \"2027-01-01T00:00:00Z\"\n",
	"- id: a\n  targeting:\n    all:\n      - facet: title\n        any: [cmo, cfo]\n      - facet: industry\n        any:\n          - fintech\n    none:\n    - facet: x\n      any: []\n    channels:\n      - web\n",
	"- id: a\n  creatives:\n    - id: c\n      w: 300\n      h: 250.0\n      channels: [web]\n      cat: [IAB1]\n      persona:\n        - facet: title\n          any: [cmo]\n      adm: <div class=\"x\">${AUCTION_PRICE}</div>\n    - id: d\n      w: 1\n      h: 1\n      adm: 'it''s'\n",
	"-   id: a\n    bid_cpm: 1\n-   id: b\n",
	"- id: é\n  advertiser: ünïcode ✓\n",
	// Left to the tree: errors, other types, forms the decoder does not read.
	"- id: a\n  id: b\n",
	"- id: a\n  bid_cmp: 1\n",
	"- id: 12\n",
	"- id: true\n",
	"- id: a\n  bid_cpm: '4.5'\n",
	"- id: a\n  bid_cpm: 0x1F\n",
	"- id: a\n  bid_cpm: 1e3\n",
	"- id: a\n  priority: 2147483648\n",
	"- id: a\n  priority: 1.5\n",
	"- id: a\n  start: 2026-01-01T00:00:00Z\n",
	"- id: a\n  cat: IAB1\n",
	"- id: a\n  cat: [[x]]\n",
	"- id: a\n  budget: 5\n",
	"- id: a\n  budget:\n    - 1\n",
	"- id: a\n  budget: {daily: 1}\n",
	"- id: a\n  targeting: {}\n",
	"- id: a\n- {id: c}\n",
	"- id: a\n  creatives: [{id: c}]\n",
	"- id: a\n  adm: |\n    x\n",
	"- id: a\n  advertiser: x\n   y\n",
	"- id: <<\n",
	"- ~\n",
	"- id: a\n- \n",
	"- id: a\n  targeting:\n    all:\n      - facet: t\n        any: [a: b]\n",
	"- id: a\n  cat:\n    - a: b\n",
}

// TestDecodeEntries checks the straight decoder against the tree on the
// corpus, and that it decodes what it should itself.
func TestDecodeEntries(t *testing.T) {
	for i, doc := range decodeCorpus {
		fastOK := checkDecode(t, []byte(doc))
		if want := i < 12; fastOK != want {
			t.Errorf("decodeEntries(%q) ok = %v, want %v", doc, fastOK, want)
		}
	}
}

// TestDecodeEntriesGenerated checks that every entry of generated rule
// sets, which planners' files resemble, is decoded straight from the
// text, and as the tree decodes it; also in batches of consecutive
// entries.
func TestDecodeEntriesGenerated(t *testing.T) {
	for _, cfg := range []world.Config{world.DemoConfig(), world.SmallConfig(), world.ReferenceConfig()} {
		cfg.Campaigns = min(cfg.Campaigns, 300)
		rs, data, entries := generatedEntries(t, cfg)
		for i, e := range entries {
			if !checkDecode(t, e) {
				t.Fatalf("entry %d left to the tree:\n%s", i, e)
			}
		}
		if !checkDecode(t, bytes.Join(entries, nil)) {
			t.Fatal("all entries as one batch left to the tree")
		}
		// The whole set, decoded straight, is the set.
		got, ok := rules.ParseSplit(data)
		if !ok {
			t.Fatal("ParseSplit refused a generated set")
		}
		if diff := cmp.Diff(rs, got); diff != "" {
			t.Fatalf("generated set (-want +got):\n%s", diff)
		}
	}
}

// generatedEntries generates a rule set, marshals it and cuts the text
// into its campaign entries.
func generatedEntries(t *testing.T, cfg world.Config) (rs *rules.RuleSet, data []byte, entries [][]byte) {
	t.Helper()
	rs, err := world.GenerateRules(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if data, err = rules.Marshal(rs); err != nil {
		t.Fatal(err)
	}
	entries, _, ok := rules.CutCampaigns(data)
	if !ok || len(entries) != len(rs.Campaigns) {
		t.Fatalf("cut: ok %v, %d entries, want %d", ok, len(entries), len(rs.Campaigns))
	}
	return rs, data, entries
}

// checkDecode decodes entries text both ways and compares them when the
// straight decoder accepts it. It reports whether it did.
func checkDecode(t *testing.T, text []byte) bool {
	t.Helper()
	// The entries are the lines that start with "- " at the first
	// line's indentation (the decoder must refuse any other count).
	indent := len(text) - len(bytes.TrimLeft(text, " "))
	n := 0
	for _, line := range strings.SplitAfter(string(text), "\n") {
		if len(line) > indent && strings.TrimLeft(line[:indent], " ") == "" && line[indent] == '-' {
			n++
		}
	}
	accepted := false
	for k := max(n-1, 0); k <= n+1; k++ {
		fast, fastOK, tree, treeOK := rules.DecodeEntries(text, k)
		if !fastOK {
			continue
		}
		accepted = true
		if !treeOK {
			t.Errorf("decodeEntries(%q, %d) accepts what the tree does not", text, k)
			continue
		}
		if diff := cmp.Diff(tree, fast, exactFloats); diff != "" {
			t.Errorf("decodeEntries(%q, %d) differs from the tree (-tree +fast):\n%s", text, k, diff)
		}
	}
	return accepted
}

// exactFloats compares floats bit for bit: -0 is not 0.
var exactFloats = cmp.Comparer(func(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) })

// TestDecodeEntriesReusedParser decodes with one parser, as a pooled one
// is used: a batch of entries, then one small entry. The first batch's
// campaigns stay as they were, and the small parse does not allocate
// (and keep alive) slabs sized for the batch before it.
func TestDecodeEntriesReusedParser(t *testing.T) {
	cfg := world.ReferenceConfig()
	cfg.Campaigns = 32
	rs, _, entries := generatedEntries(t, cfg)
	var p rules.FastParser
	batch, ok := rules.DecodeEntriesWith(&p, bytes.Join(entries, nil), len(entries))
	if !ok {
		t.Fatal("batch refused")
	}
	small := []byte("  - id: tiny\n    bid_cpm: -0.0\n    cat: [a]\n")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	got, ok := rules.DecodeEntriesWith(&p, small, 1)
	runtime.ReadMemStats(&after)
	if !ok {
		t.Fatal("small entry refused")
	}
	if diff := cmp.Diff([]rules.Campaign{{ID: "tiny", BidCPM: math.Copysign(0, -1), Cat: []string{"a"}}}, got, exactFloats); diff != "" {
		t.Errorf("small entry (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(rs.Campaigns, batch); diff != "" {
		t.Errorf("batch after the next parse (-want +got):\n%s", diff)
	}
	// Slabs of at most slabMin items each, and the campaign.
	if n := after.TotalAlloc - before.TotalAlloc; n > 8<<10 {
		t.Errorf("one small entry after a batch of %d allocated %d bytes", len(entries), n)
	}
}

// FuzzDecodeEntries checks the straight decoder against the tree on any
// text.
func FuzzDecodeEntries(f *testing.F) {
	for _, doc := range decodeCorpus {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		checkDecode(t, text)
	})
}

// TestDecodeEntriesOwnsText checks that decoded campaigns keep none of
// the text they were read from, which is the caller's (a file's read
// buffer, reused for the next read): overwriting it changes nothing.
func TestDecodeEntriesOwnsText(t *testing.T) {
	cfg := world.SmallConfig()
	cfg.Campaigns = 40
	rs, _, entries := generatedEntries(t, cfg)
	text := bytes.Join(entries, nil)
	text = append(text, "  - id: \"esc\\taped\"\n    advertiser: 'it''s'\n    cat: [\"x\", 'y', z]\n"...)
	got, ok, _, _ := rules.DecodeEntries(text, len(entries)+1)
	if !ok {
		t.Fatal("decodeEntries refused the entries")
	}
	want := rs.Campaigns
	want = append(want, rules.Campaign{ID: "esc\taped", Cat: []string{"x", "y", "z"}, Advertiser: "it's"})
	for i := range text {
		text[i] = '#'
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after the text was overwritten (-want +got):\n%s", diff)
	}
}
