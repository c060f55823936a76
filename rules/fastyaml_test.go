package rules_test

import (
	"fmt"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/rules"
)

// fastCorpus holds documents at the edges of the fast front end's
// subset, in and out.
var fastCorpus = []string{
	rules.DesignExample,
	"a: b\n",
	"a: b",
	"key: a: b\n",
	"- - x\n",
	"- 'it''s'\n",
	`- "\u00e9"` + "\n",
	`- "a\x41\U0001F600\N\_\L\P\t\"\\\/"` + "\n",
	"a: #c\nb: 1\n",
	"a: b #c\n",
	"a:b\n",
	"- a:b\n",
	"x: [a, [b]]\n",
	"x: [a, [b], {c: d}, ]\n",
	"x: [a: b]\n",
	"x: {a, b: c}\n",
	"x: {a: }\n",
	"x: {a:b}\n",
	"x: {\"a\":b, 'c':\"d\"}\n",
	"a: b   \nc:    \n",
	"a:\nb:\n",
	"a: null\nb: ~\nc: 0x1F\nd: 1_000\ne: .5\nf: -.inf\ng: 2026-01-01\nh: true\ni: True\nj: yes\nk: 012\nl: 1e3\nm: -0\nn: +1\no: 5.\np: 1.5\nq: 2026-01-01T00:00:00Z\nr: <<\n",
	"  a: 1\n  b: 2\n",
	"a: 1\n b: 2\n",
	"a:\n   b: 1\n   c: 2\nd: 3\n",
	"a:\n\tb: 1\n",
	"a: b\tc\n",
	"campaigns:\n- id: x\n  w: 1\n- id: y\ncontent_rules: {}\n",
	"campaigns:\n  - id: x\n    creatives:\n    - id: c\n      w: 1\n  - id: y\n",
	"- a\n- b\n  c\n",
	"a: b\n  c\n",
	"a: b\n# c\n  d\n",
	"a: 'b'\n  c\n",
	"a: [b,\n  c]\n",
	"a: [b,\nc]\n",
	"a: [b\n  , c]\n",
	"a: [b # c\n  , d]\n",
	"a: [b,#c\n  d]\n",
	"a: {b: c\n  }\n",
	"---\na: 1\n",
	"a: 1\n---\nb: 2\n",
	"a: 1\n...\n",
	"%YAML 1.2\n---\na: 1\n",
	"a: &x 1\nb: *x\n",
	"a: !!str 1\n",
	"a: |\n  x\n",
	"? a\n: b\n",
	"\"a\": b\n",
	"a: \"b\nc\"\n",
	"a: 'b\n  c'\n",
	"a: -\n",
	"a: - b\n",
	"-\n  a: 1\n",
	"- \n",
	"-x: 1\n",
	"a: -1\nb: [-1, -x, -.5]\n",
	"a: [a?b, c]\n",
	"a: b]\n",
	"a: b, c\n",
	"a: ]b\n",
	"a: x #\n",
	"a: x#y\n",
	"é: ü\nb: [é, {ö: ä}]\n",
	"[é, ü, {a: b}]\n",
	"{\"a\": [1, 2.5, \"x\"], \"b\": {\"c\": null}}",
	"{\n  \"a\": [\n    1\n  ]\n}\n",
	"[]",
	"{}",
	"[a]\n[b]\n",
	"a: 1\na: 2\n",
	"- a: 1\n  b: 2\n- c\n",
	"-   a: 1\n    b: 2\n",
	"- a: 1\n b: 2\n",
	"a:\n- b\n- c\nd: e\n",
	"a:\n  - b\n  - c\n d: e\n",
	"a:\n  - b\n  c: d\n",
	"a: 'x'#c\n",
	"a: \"x\" y\n",
	"a: [x] y\n",
	"a: [x]: y\n",
	"a: {x: y}#c\n",
	"a: \"\\ud800\"\n",
	"a: \"\\q\"\n",
	"a: \"\\\n b\"\n",
	"a: '''\n",
	"a: 'x''y''z'\n",
	"a  : b\n",
	"a b: c d\n",
	"a: b :c\n",
	"a: {b :c}\n",
	"a: [b :c]\n",
	"a: @x\n",
	"a: `x\n",
	"a: %x\n",
	"a:\n  b\n",
	"a:\n  [b]\n",
	"\xef\xbb\xbfa: 1\n",
	"a: 1\r\n",
	"a: \x00\n",
	"a: \u2028\n",
	"a: \xff\n",
	"#only\n",
	"",
	"\n\n",
	"a: 1 # c\n# d\n\n  # e\nb: 2\n",
	"a: [\n]\n",
	"[a, b\n]",
	"[a, b\n---]",
	"[a,\n...]",
	strings.Repeat("k", 1001) + ": v\n",
	"{\"" + strings.Repeat("k", 1001) + "\": v}\n",
	"a: " + strings.Repeat("v", 2000) + "\n",
	"- [" + strings.Repeat("v", 2000) + "]\n",
	"a:\n# c\n  b: 1\n",
	"a: # c\n  b: 1\n",
	"a:\n  b: 1\n  # c\n# d\nc: 2",
}

// FuzzFastYAML checks the fast front end against yaml.v3: whatever it
// accepts, yaml.v3 parses to an equal tree.
func FuzzFastYAML(f *testing.F) {
	for _, doc := range fastCorpus {
		f.Add([]byte(doc))
	}
	for _, doc := range equivalenceCorpus {
		f.Add([]byte(doc))
	}
	for _, doc := range generatedDocs(f, 3) {
		f.Add(doc)
	}
	var p rules.FastParser
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFast(t, &p, data)
	})
}

// generatedDocs returns generated rule sets of n campaigns, as YAML and
// as JSON.
func generatedDocs(tb testing.TB, n int) [][]byte {
	tb.Helper()
	cfg := world.ReferenceConfig()
	cfg.Campaigns = n
	rs, err := world.GenerateRules(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	y, err := rules.Marshal(rs)
	if err != nil {
		tb.Fatal(err)
	}
	j, err := rules.MarshalJSON(rs)
	if err != nil {
		tb.Fatal(err)
	}
	return [][]byte{y, j}
}

// checkFast parses data with both front ends and compares the trees
// when the fast one accepts it. It reports whether it did.
func checkFast(t *testing.T, p *rules.FastParser, data []byte) bool {
	t.Helper()
	got, ok := p.Parse(data)
	if !ok {
		return false
	}
	var want yaml.Node
	if err := yaml.Unmarshal(data, &want); err != nil {
		t.Fatalf("fast front end accepts %q; yaml.v3: %v", data, err)
	}
	if d := diffNodes(&want, got, "doc"); d != "" {
		t.Fatalf("fast front end differs from yaml.v3 on %q:\n%s", data, d)
	}
	return true
}

// diffNodes describes the first difference between two trees, ignoring
// comments.
func diffNodes(want, got *yaml.Node, at string) string {
	if want == nil || got == nil {
		if want != got {
			return fmt.Sprintf("%s: want %v, got %v", at, want, got)
		}
		return ""
	}
	type fields struct {
		Kind         yaml.Kind
		Style        yaml.Style
		Tag, Short   string
		Value        string
		Line, Column int
		Anchor       string
		Alias        bool
		Len          int
	}
	of := func(n *yaml.Node) fields {
		return fields{n.Kind, n.Style, n.Tag, n.ShortTag(), n.Value, n.Line, n.Column, n.Anchor, n.Alias != nil, len(n.Content)}
	}
	if w, g := of(want), of(got); w != g {
		return fmt.Sprintf("%s:\n  want %+v\n  got  %+v", at, w, g)
	}
	for i := range want.Content {
		if d := diffNodes(want.Content[i], got.Content[i], fmt.Sprintf("%s[%d]", at, i)); d != "" {
			return d
		}
	}
	return ""
}

// TestFastYAMLAccepts checks that the fast front end takes the documents
// it exists for — generated rules in YAML and JSON, the design example,
// the pieces the split parse makes — and gets them right.
func TestFastYAMLAccepts(t *testing.T) {
	var p rules.FastParser
	docs := append(generatedDocs(t, 20), []byte(rules.DesignExample))
	for _, doc := range docs {
		if !checkFast(t, &p, doc) {
			t.Errorf("fast front end falls back on %.200q", doc)
		}
	}
	entries, rest, ok := rules.CutCampaigns(docs[0])
	if !ok {
		t.Fatal("CutCampaigns: not cut")
	}
	for _, e := range entries {
		if !checkFast(t, &p, e) {
			t.Errorf("fast front end falls back on entry %.200q", e)
		}
	}
	if !checkFast(t, &p, rest) {
		t.Errorf("fast front end falls back on the rest %q", rest)
	}
}

// TestFastYAMLCorpus runs the seeds, so that a plain go test checks them.
func TestFastYAMLCorpus(t *testing.T) {
	var p rules.FastParser
	n := 0
	for _, doc := range fastCorpus {
		if checkFast(t, &p, []byte(doc)) {
			n++
		}
	}
	t.Logf("fast front end took %d of %d documents", n, len(fastCorpus))
	// Shapes inside the subset must stay there: a front end that fell
	// back on everything would pass the comparisons above.
	for _, doc := range []string{
		rules.DesignExample,
		"a: b\n", "a: b", "- 'it''s'\n", "a: b #c\n", "x: [a, [b]]\n",
		"x: {\"a\":b, 'c':\"d\"}\n", "a:\n   b: 1\n   c: 2\nd: 3\n",
		"campaigns:\n- id: x\n  w: 1\n- id: y\ncontent_rules: {}\n",
		"campaigns:\n  - id: x\n    creatives:\n    - id: c\n      w: 1\n  - id: y\n",
		"a: [b,\n  c]\n",
	} {
		if !checkFast(t, &p, []byte(doc)) {
			t.Errorf("fast front end fell back on %q, which is in its subset", doc)
		}
	}
}

// BenchmarkFastYAML measures the fast front end alone on a generated
// rules file of 1,000 campaigns, in YAML and JSON, on one core, beside
// yaml.v3 building the same tree.
func BenchmarkFastYAML(b *testing.B) {
	docs := generatedDocs(b, 1000)
	for i, format := range []string{"yaml", "json"} {
		b.Run(format+"/fast", func(b *testing.B) {
			var p rules.FastParser
			b.SetBytes(int64(len(docs[i])))
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := p.Parse(docs[i]); !ok {
					b.Fatal("not parsed")
				}
			}
		})
		b.Run(format+"/yaml.v3", func(b *testing.B) {
			b.SetBytes(int64(len(docs[i])))
			b.ReportAllocs()
			for b.Loop() {
				var doc yaml.Node
				if err := yaml.Unmarshal(docs[i], &doc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
