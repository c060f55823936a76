package rules_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/rules"
)

// equivalenceCorpus holds documents that exercise what the node walker
// resolves itself and what it leaves to the generic route.
var equivalenceCorpus = []string{
	"",
	"# only a comment\n",
	"---\n",
	"~",
	"campaigns: ~",
	"campaigns: []",
	"campaigns: [~]",
	"campaigns: [{}]",
	"campaigns: [{id: no, bid_cpm: 1, creatives: [{id: y, w: 1, h: 1, adm: x}]}]",
	// Unquoted dates and date-times become RFC 3339 text.
	"campaigns: [{id: a, start: 2026-01-01T00:00:00Z, end: 2027-01-01}]",
	"campaigns: [{id: a, start: 2026-01-01 10:00:00.5 +02:00}]",
	// Numbers in every form yaml.v3 resolves.
	"campaigns: [{id: a, bid_cpm: 0x1F, priority: 0o17, budget: {daily: 1_000, total: 1e3}}]",
	"campaigns: [{id: a, bid_cpm: +4.5, priority: -3, frequency_cap: {max: 3.0, window: 24h}}]",
	"campaigns: [{id: a, bid_cpm: 012, priority: 012}]",
	"campaigns: [{id: a, bid_cpm: 99999999999999999999999, creatives: [{w: 3e2, h: 250.0}]}]",
	"campaigns: [{id: a, bid_cpm: 18446744073709551615}]",
	"campaigns: [{id: a, priority: 2147483647}]",
	"campaigns: [{id: a, priority: 2147483648}]",
	"campaigns: [{id: a, priority: -2147483649}]",
	"campaigns: [{id: a, priority: 1e-7}]",
	"campaigns: [{id: a, priority: -0.0}]",
	"campaigns: [{id: a, bid_cpm: .inf}]",
	"campaigns: [{id: a, adm_note: .nan}]",
	"campaigns: [{id: a, bid_cpm: .5}]",
	"campaigns: [{id: a, bid_cpm: 5.}]",
	// Nulls and empties.
	"campaigns: [{id: a, priority: null, budget: ~, cat: [~, x], targeting: {all: [{facet: title, any: []}]}}]",
	"campaigns: [{id: a, adomain: [], creatives: [~]}]",
	"campaigns: [{id: ~, advertiser: }]",
	// Strings.
	`campaigns: [{id: "12", advertiser: '3.5', status: !!str 12}]`,
	`campaigns: [{id: "\ud800x\xff", adm: "a\u2028b\0c"}]`,
	"campaigns: [{id: a, adm: |\n    <div>\n    ${AUCTION_PRICE}\n    </div>\n}]",
	"campaigns:\n  - id: a\n    adm: >\n      folded\n      text\n",
	"campaigns: [{id: <<}]",
	// Type errors.
	"campaigns: [{id: 12}]",
	"campaigns: [{id: true}]",
	"campaigns: [{id: [a]}]",
	"campaigns: [{id: a, bid_cpm: '4.5'}]",
	"campaigns: [{id: a, bid_cpm: true}]",
	"campaigns: [{id: a, bid_cpm: 2026-01-01}]",
	"campaigns: [{id: a, cat: IAB1}]",
	"campaigns: [{id: a, budget: [1]}]",
	"campaigns: [{id: a, budget: 5}]",
	"campaigns: {id: a}",
	"campaigns: 3",
	"[1, 2]",
	"just a string",
	"12",
	// Unknown and duplicate fields.
	"campaigns: [{id: a, bid_cmp: 3}]",
	"campaigns: [{id: a, id: b}]",
	"campaigns: [{id: a, budget: {daily: 1, daily: 2}}]",
	"content_rules: {blocked_cat: [a], blocked_cat: [b]}",
	"campaigns: [{id: a, 1: x}]",
	"campaigns: [{id: a, null: x}]",
	"campaigns: [{id: a, ? [k] : x}]",
	"campaigns: [{id: a, '<<': x}]",
	"other: 1",
	// Aliases, merge keys and explicit tags: the generic route.
	"x: &c {id: a, bid_cpm: 1}\ncampaigns: [*c]",
	"campaigns:\n  - &c {id: a, bid_cpm: 1}\n  - *c",
	"campaigns:\n  - &c {id: a, bid_cpm: 1}\n  - {<<: *c, id: b}",
	"campaigns:\n  - &c {id: a, bid_cpm: 1}\n  - &d {id: d, cat: [x]}\n  - {<<: [*c, *d], id: b}",
	"campaigns:\n  - {<<: {id: a}, id: b}",
	"campaigns: !!seq [{id: a}]",
	"campaigns: [!!map {id: a}]",
	"campaigns: [{id: !custom a}]",
	"campaigns: [{id: !!binary YWJj}]",
	"campaigns: [{id: a, bid_cpm: !!float 3}]",
	"campaigns: [{id: a, bid_cpm: !!int '3'}]",
	"campaigns: [{id: a, bid_cpm: !!int x}]",
	"campaigns: [{!!str id: a}]",
	// Syntax errors and several documents.
	"campaigns:\n  - id: a\n    bid_cpm: 1\n   bad",
	"campaigns: [{id: a}]\n---\ncampaigns: []",
	"campaigns: [{id: a",
	"\t- x",
	"\xff",
	// Shapes the piecewise parse of large files cuts, and ones it must not.
	"campaigns:\n- id: a\n  bid_cpm: 1\n- id: b\n# c\n\n- {id: c}\ncontent_rules: {blocked_cat: [x]}\n",
	"content_rules:\n  blocked_cat: [x]\ncampaigns:\n  # first\n\n  - id: a\n    advertiser: |\n      <b>\n      - x\n  -\n    id: b\n  - id: c\n",
	"campaigns:\n  - id: a\n- id: b\n",
	"campaigns:\n  - id: a\n   - id: b\n",
	"campaigns:\n  x: 1\n  - id: a\n",
	"campaigns:\n\tfoo\n  - id: a\n",
	"campaigns:\n  - id: a\ncampaigns:\n  - id: b\n",
	"campaigns:\n  - id: a\n---\ncampaigns:\n  - id: b\n",
	"content_rules: {blocked_cat: [\"foo\ncampaigns:\n  - id: a\n\"]}\n",
	"content_rules: {blocked_cat: [foo,\ncampaigns:\n  - id: a\n]}\n",
	"x: \"foo\ncampaigns:\n  - id: a\nbar\"\n",
	"campaigns:\n  - id: \"a\n  - id: b\"\n",
	"campaigns:\n  - id: [a,\n  - b]\n",
	"campaigns:\n  - &x {id: a}\n  - *x\n",
	"campaigns:\n  - id: a\n    bid_cpm: 1\n  - id: b\n    bid_cmp: 1\n",
	"campaigns:\r\n  - id: a\r\n",
	"campaigns: \n  - id: a\n",
	"campaigns:\n  - id: a\n...\n",
	"%YAML 1.2\n---\ncampaigns:\n  - id: a\n",
	"campaigns:\n  - id: a\nx",
	"campaigns:\n  - id: a\n    adm: >-\n\n      x\n\n  - id: b",
	// JSON, with the content rules.
	`{"campaigns": [{"id": "a", "bid_cpm": 2, "priority": 3, "creatives": [{"id": "ca", "w": 1, "h": 1, "adm": "x\/y"}]}], "content_rules": {"blocked_cat": ["IAB25"], "channel_map": [{"channel": "social", "domains": ["x.com"], "bundles": []}]}}`,
	`{"campaigns": [{"id": "a", "id": "b"}]}`,
	`{"content_rules": {"blocked_adomain": null, "channel_map": [null]}}`,
}

// TestParseEquivalence checks that Parse (the node walker) and the
// generic route it replaced agree on every document: the same RuleSet,
// or both an error. The one deliberate difference is that field names are
// case-sensitive now.
func TestParseEquivalence(t *testing.T) {
	docs := slices.Clone(equivalenceCorpus)
	for _, cfg := range []world.Config{world.DemoConfig(), world.SmallConfig()} {
		rs, err := world.GenerateRules(cfg)
		if err != nil {
			t.Fatal(err)
		}
		y, err := rules.Marshal(rs)
		if err != nil {
			t.Fatal(err)
		}
		j, err := rules.MarshalJSON(rs)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(y), string(j))
	}
	for _, doc := range docs {
		checkEquivalent(t, []byte(doc))
	}
}

func checkEquivalent(t *testing.T, data []byte) {
	t.Helper()
	got, err := rules.Parse("t.yaml", data)
	want, wantErr := rules.ParseViaJSON("t.yaml", data)
	short := string(data)
	if len(short) > 200 {
		short = short[:200] + "..."
	}
	split, ok := rules.ParseSplit(data)
	// The same, with the lines read in chunks (on every CPU).
	if chunked, cok := rules.ParseSplitChunked(data, 8); cok != ok || !cmp.Equal(split, chunked) {
		t.Errorf("ParseSplit(%q) = %v; read in chunks, %v", short, ok, cok)
	}
	if ok {
		if wantErr != nil {
			t.Errorf("ParseSplit(%q) accepts it; the generic route: %v", short, wantErr)
		} else if diff := cmp.Diff(want, split); diff != "" {
			t.Errorf("ParseSplit(%q) differs from the generic route (-generic +split):\n%s", short, diff)
		}
	}
	switch {
	case err != nil && wantErr != nil:
	case err != nil && strings.Contains(err.Error(), "field names are case-sensitive"):
	case err != nil:
		t.Errorf("Parse(%q): %v; the generic route accepts it", short, err)
	case wantErr != nil:
		t.Errorf("Parse(%q) accepts it; the generic route: %v", short, wantErr)
	default:
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Parse(%q) differs from the generic route (-generic +Parse):\n%s", short, diff)
		}
	}
}

// TestParseErrorLines checks that errors found by the walker name the
// line and the field path.
func TestParseErrorLines(t *testing.T) {
	doc := `campaigns:
  - id: a
    bid_cpm: 1
    creatives:
      - id: c
        w: 300
        h: 250
        adm: x
  - id: b
    bid_cpm: 2
    targeting:
      all:
        - facet: title
          anyy: [cmo]
`
	_, err := rules.Parse("f.yaml", []byte(doc))
	want := `rules: f.yaml: line 14: campaigns[1].targeting.all[0]: unknown field "anyy"`
	if err == nil || err.Error() != want {
		t.Errorf("Parse = %v, want %s", err, want)
	}
}

// FuzzParseEquivalence runs the equivalence check on any document.
func FuzzParseEquivalence(f *testing.F) {
	for _, doc := range equivalenceCorpus {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkEquivalent(t, data)
	})
}

// TestParseSplitCuts checks which documents the piecewise parse takes
// (the equivalence tests check that what it takes, it gets right).
func TestParseSplitCuts(t *testing.T) {
	rs, generated := smallWorldText(t)
	tests := []struct {
		doc  string
		want bool
	}{
		{string(generated), true},
		{"campaigns:\n- id: a\n  bid_cpm: 1\n- id: b\n# c\n\n- {id: c}\ncontent_rules: {blocked_cat: [x]}\n", true},
		{"content_rules:\n  blocked_cat: [x]\ncampaigns:\n  # first\n\n  - id: a\n    advertiser: |\n      <b>\n      - x\n  -\n    id: b\n  - id: c\n", true},
		{"campaigns:\n  - id: a\n- id: b\n", false},
		{"campaigns:\n  - id: a\ncampaigns:\n  - id: b\n", false},
		{"content_rules: {blocked_cat: [\"foo\ncampaigns:\n  - id: a\n\"]}\n", false},
		{"x: \"foo\ncampaigns:\n  - id: a\nbar\"\n", false},
		{"campaigns:\n  - id: \"a\n  - id: b\"\n", false},
		{"campaigns:\n  - &x {id: a}\n  - *x\n", false},
		{"campaigns:\n  - id: a\n    bid_cmp: 1\n", false},
		{"campaigns:\r\n  - id: a\r\n", false},
		{"campaigns:\n  - id: a\n---\ncampaigns:\n  - id: b\n", false},
	}
	for _, tt := range tests {
		got, ok := rules.ParseSplit([]byte(tt.doc))
		if ok != tt.want {
			t.Errorf("ParseSplit(%.60q) ok = %v, want %v", tt.doc, ok, tt.want)
		}
		if ok && tt.doc == string(generated) {
			if diff := cmp.Diff(rs, got); diff != "" {
				t.Errorf("generated set (-want +got):\n%s", diff)
			}
		}
	}
}

// Documents with aliases, merge keys or tags take the generic route; it
// is as strict about field names as the node walker: exact case only.
func TestParseGenericRouteCaseSensitive(t *testing.T) {
	for doc, want := range map[string]string{
		"campaigns: [{bid_cpm: !!float 3, ID: a}]":                        `campaigns[0].ID: unknown field "ID" (field names are case-sensitive: "id")`,
		"campaigns: [{bid_cpm: !!float 3, id: a, creatives: [{W: 300}]}]": `campaigns[0].creatives[0].W: unknown field "W"`,
		"campaigns: [{bid_cpm: !!float 3, id: a, bogus: 1}]":              `campaigns[0].bogus: unknown field "bogus"`,
	} {
		if _, err := rules.Parse("t.yaml", []byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %s", doc, err, want)
		}
	}
	rs, err := rules.Parse("t.yaml", []byte("campaigns: [{bid_cpm: !!float 3, id: a}]"))
	if err != nil || len(rs.Campaigns) != 1 || rs.Campaigns[0].ID != "a" || rs.Campaigns[0].BidCPM != 3 {
		t.Errorf("a tagged document: %+v, %v", rs, err)
	}
}

// TestParseFilesFirstError: of several bad files, the error is the first
// one's, through a Parser too.
func TestParseFilesFirstError(t *testing.T) {
	good := []byte("campaigns:\n  - id: a\n    bid_cpm: 1\n")
	var files []rules.File
	for i := range 40 {
		data := good
		if i == 7 || i == 30 {
			data = []byte(fmt.Sprintf("campaigns:\n  - id: x%d\n    bid_cpmm: 1\n", i))
		}
		files = append(files, rules.File{Name: fmt.Sprintf("f%02d.yaml", i), Data: data})
	}
	_, _, err := rules.ParseFilesLocated(files)
	if err == nil || !strings.Contains(err.Error(), "f07.yaml") {
		t.Fatalf("ParseFilesLocated: %v, want the error of f07.yaml", err)
	}
	_, _, err = rules.NewParser().ParseFiles(files)
	if err == nil || !strings.Contains(err.Error(), "f07.yaml") {
		t.Fatalf("Parser.ParseFiles: %v, want the error of f07.yaml", err)
	}
}

// TestMarshalByEntries checks that Marshal, which encodes a set campaign
// by campaign, writes what yaml.v3 writes for the whole set.
func TestMarshalByEntries(t *testing.T) {
	whole := func(rs *rules.RuleSet) string {
		var b strings.Builder
		enc := yaml.NewEncoder(&b)
		enc.SetIndent(2)
		if err := enc.Encode(rs); err != nil {
			t.Fatal(err)
		}
		if err := enc.Close(); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	cfg := world.ReferenceConfig()
	cfg.Campaigns = 50
	generated, err := world.GenerateRules(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sets := []*rules.RuleSet{
		{},
		{Campaigns: []rules.Campaign{}},
		{ContentRules: rules.ContentRules{BlockedCat: []string{}}},
		{ContentRules: rules.ContentRules{BlockedCat: []string{"IAB25"}}},
		{Campaigns: []rules.Campaign{{ID: "a"}}},
		{Campaigns: []rules.Campaign{{ID: "a"}, {ID: "- b", Cat: []string{}}}, ContentRules: rules.ContentRules{ChannelMap: []rules.ChannelMapping{{Channel: "web"}}}},
		generated,
	}
	design, err := rules.Parse("design.yaml", []byte(rules.DesignExample))
	if err != nil {
		t.Fatal(err)
	}
	sets = append(sets, design)
	for i, rs := range sets {
		got, err := rules.Marshal(rs)
		if err != nil {
			t.Fatal(err)
		}
		if want := whole(rs); string(got) != want {
			t.Errorf("set %d: Marshal =\n%s\nwant\n%s", i, got, want)
		}
	}
}

// TestMarshalPlainNumbers: amounts are written as planners write them,
// never in exponent notation (yaml.v3's shortest form wrote a total
// budget of a million as 1e+06), and read back the same.
func TestMarshalPlainNumbers(t *testing.T) {
	rs := &rules.RuleSet{Campaigns: []rules.Campaign{{ID: "a", BidCPM: 0.000001}, {ID: "b", BidCPM: 2.5}}}
	rs.Campaigns[0].Budget = rules.Budget{Daily: 1_000_000, Total: 123_456_789.123456}
	rs.Campaigns[1].Budget = rules.Budget{Daily: 25_000_000.5, Total: 200_000_000}
	b, err := rules.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"e+", "e-", "!!"} {
		if bytes.Contains(b, []byte(bad)) {
			t.Errorf("Marshal wrote %q:\n%s", bad, b)
		}
	}
	for _, want := range []string{"bid_cpm: 0.000001", "daily: 1000000\n", "total: 123456789.123456", "daily: 25000000.5", "total: 200000000\n"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("Marshal wrote no %q:\n%s", want, b)
		}
	}
	back, err := rules.Parse("back.yaml", b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rs.Campaigns, back.Campaigns); diff != "" {
		t.Errorf("read back (-want +got):\n%s", diff)
	}
}
