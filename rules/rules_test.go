package rules

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// example is DESIGN.md's rules file ("Rules file" section), verbatim.
var example = func() string {
	b, err := os.ReadFile(filepath.Join("testdata", "design.yaml"))
	if err != nil {
		panic(err)
	}
	return string(b)
}()

// TestDesignExample parses the rules file of DESIGN.md verbatim.
func TestDesignExample(t *testing.T) {
	rs, err := Parse("design.yaml", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Validate(); err != nil {
		t.Fatal(err)
	}
	c := rs.Campaigns[0]
	if c.EffectivePriority() != 5 || c.BidCPM != 4.5 || c.FrequencyCap.Window != "24h" ||
		len(c.Targeting.All) != 2 || c.Creatives[0].Persona[0].Any[0] != "cmo" ||
		rs.ContentRules.ChannelMap[0].Domains[2] != "reddit.com" {
		t.Errorf("parsed %+v", rs)
	}
}

// TestProtoMapping checks that the rules file maps 1:1 onto the RuleSet
// proto message: the same document decodes with protojson into the proto
// and back to the same rules, and every proto field has a rules field of
// the same name (and the reverse).
func TestProtoMapping(t *testing.T) {
	rs, err := Parse("design.yaml", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	js, err := MarshalJSON(rs)
	if err != nil {
		t.Fatal(err)
	}
	var pb personadpb.RuleSet
	if err := protojson.Unmarshal(js, &pb); err != nil {
		t.Fatalf("rules JSON is not a RuleSet: %v\n%s", err, js)
	}
	back, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(&pb)
	if err != nil {
		t.Fatal(err)
	}
	rs2, err := Parse("proto", back)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rs, rs2); diff != "" {
		t.Errorf("rules -> proto -> rules changed (-before +after):\n%s", diff)
	}
	compareFields(t, reflect.TypeFor[RuleSet](), (&personadpb.RuleSet{}).ProtoReflect().Descriptor())
}

func compareFields(t *testing.T, gt reflect.Type, md protoreflect.MessageDescriptor) {
	t.Helper()
	goFields := map[string]reflect.Type{}
	for f := range gt.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		goFields[name] = f.Type
	}
	var protoNames []string
	for i := range md.Fields().Len() {
		fd := md.Fields().Get(i)
		name := string(fd.Name())
		protoNames = append(protoNames, name)
		ft, ok := goFields[name]
		if !ok {
			t.Errorf("%s.%s: no field in rules.%s", md.FullName(), name, gt.Name())
			continue
		}
		if fd.Kind() == protoreflect.MessageKind {
			for ft.Kind() == reflect.Slice || ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			compareFields(t, ft, fd.Message())
		}
	}
	for name := range goFields {
		if !slices.Contains(protoNames, name) {
			t.Errorf("rules.%s.%s: no field in %s", gt.Name(), name, md.FullName())
		}
	}
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // every error, in order
	}{
		{"empty campaign", `campaigns: [{}]`, []string{
			"campaigns[0].id: required",
			"campaigns[0].bid_cpm: 0 must be > 0 and <= 10000",
			"campaigns[0].creatives: a campaign needs at least one creative",
		}},
		{"bad fields", `
campaigns:
  - id: a
    status: running
    start: "2027-01-01T00:00:00Z"
    end: "2026-01-01T00:00:00Z"
    bid_cpm: -1
    currency: usd
    pacing: fast
    budget: {daily: -5}
    frequency_cap: {max: 3, window: 1d}
    targeting:
      all: [{facet: Title, any: []}]
      channels: [Social]
    creatives:
      - {id: c, w: 0, h: 250, adm: "<b>${AUCTION_PRICE} ${CLICK_URL} ${AUCTION_ID</b>"}
      - {id: c, w: 300, h: 250, adm: " "}
`, []string{
			`campaigns[0].status: unknown status "running", want active or paused`,
			"campaigns[0].end: 2026-01-01T00:00:00Z must be after start 2027-01-01T00:00:00Z",
			"campaigns[0].bid_cpm: -1 must be > 0 and <= 10000",
			`campaigns[0].currency: "usd" is not an ISO-4217 code such as USD`,
			"campaigns[0].budget.daily: -5 must be >= 0 and <= 100000000 (0: no daily limit)",
			`campaigns[0].pacing: unknown pacing mode "fast", want even or asap`,
			`campaigns[0].frequency_cap.window: "1d" is not a duration such as 24h`,
			`campaigns[0].targeting.all[0].facet: "Title" must match ^[a-z][a-z0-9_]{0,31}$`,
			"campaigns[0].targeting.all[0].any: a clause needs at least one value",
			`campaigns[0].targeting.channels[0]: "Social" must match ^[a-z][a-z0-9_-]{0,31}$`,
			"campaigns[0].creatives[0].w: 0 must be > 0 and <= 10000",
			"campaigns[0].creatives[0].adm: unknown macro ${CLICK_URL}",
			`campaigns[0].creatives[0].adm: unterminated macro: "${" without "}"`,
			"campaigns[0].creatives[1].adm: required",
			`campaigns[0].creatives[1].id: duplicate creative id "c" (also campaigns[0].creatives[0])`,
		}},
		{"money limits", `
campaigns:
  - id: big
    bid_cpm: 1
    budget: {daily: 300000000, total: 2e12}
    frequency_cap: {max: 1, window: 9000h}
    creatives: [{id: c, w: 1, h: 1, adm: x}]
`, []string{
			"campaigns[0].budget.daily: 3e+08 must be >= 0 and <= 100000000 (0: no daily limit)",
			"campaigns[0].budget.total: 2e+12 must be >= 0 and <= 1000000000000 (0: no total limit)",
			`campaigns[0].frequency_cap.window: "9000h" must be at most 8784h0m0s`,
		}},
		{"currency of two letters", `
campaigns:
  - {id: a, bid_cpm: 1, currency: US, creatives: [{id: c, w: 1, h: 1, adm: x}]}
  - {id: b, bid_cpm: 1, currency: E, creatives: [{id: d, w: 1, h: 1, adm: x}]}
  - {id: c, bid_cpm: 1, currency: EURO, creatives: [{id: e, w: 1, h: 1, adm: x}]}
`, []string{
			`campaigns[0].currency: "US" is not an ISO-4217 code such as USD`,
			`campaigns[1].currency: "E" is not an ISO-4217 code such as USD`,
			`campaigns[2].currency: "EURO" is not an ISO-4217 code such as USD`,
		}},
		{"frequency cap max and window both wrong", `
campaigns:
  - id: capped
    bid_cpm: 1
    frequency_cap: {max: -1, window: 1d}
    creatives: [{id: c, w: 1, h: 1, adm: x}]
`, []string{
			"campaigns[0].frequency_cap.max: -1 must be >= 0",
			`campaigns[0].frequency_cap.window: "1d" is not a duration such as 24h`,
		}},
		{"amounts below a millionth", `
campaigns:
  - id: tiny
    bid_cpm: 0.0000004
    budget: {daily: 0.0000001, total: 0.0000004}
    creatives: [{id: c, w: 1, h: 1, adm: x}]
  - id: least
    bid_cpm: 0.0000005
    budget: {daily: 0.000001, total: 0.0000005}
    creatives: [{id: d, w: 1, h: 1, adm: x}]
`, []string{
			"campaigns[0].bid_cpm: 0.0000004 rounds to 0 (amounts count in millionths): the least is 0.000001",
			"campaigns[0].budget.daily: 0.0000001 rounds to 0, which means no daily limit (amounts count in millionths): the least limit is 0.000001",
			"campaigns[0].budget.total: 0.0000004 rounds to 0, which means no total limit (amounts count in millionths): the least limit is 0.000001",
		}},
		{"duplicate campaign", `
campaigns:
  - {id: a, bid_cpm: 1, creatives: [{id: x, w: 1, h: 1, adm: a}]}
  - {id: a, bid_cpm: 1, creatives: [{id: y, w: 1, h: 1, adm: a}]}
content_rules:
  channel_map:
    - {channel: social, domains: [x.com]}
    - {channel: web, domains: [x.com]}
`, []string{
			`campaigns[1].id: duplicate campaign id "a" (also campaigns[0])`,
			`content_rules.channel_map[1].domains[0]: "x.com" is already mapped to channel "social"`,
		}},
		{"channel map domains in any case, with or without www", `
campaigns:
  - {id: a, bid_cpm: 1, creatives: [{id: x, w: 1, h: 1, adm: a}]}
content_rules:
  channel_map:
    - {channel: social, domains: [x.com, y.com]}
    - {channel: web, domains: [WWW.X.com, Y.COM]}
`, []string{
			`content_rules.channel_map[1].domains[0]: "WWW.X.com" is already mapped to channel "social"`,
			`content_rules.channel_map[1].domains[1]: "Y.COM" is already mapped to channel "social"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Parse("t.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			err = rs.Validate()
			var got []string
			if es, ok := err.(ValidationErrors); ok {
				for _, e := range es {
					got = append(got, e.Error())
				}
			} else if err != nil {
				t.Fatalf("error of type %T: %v", err, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"campaigns: [{id: a, bid_cmp: 3}]", `rules: t.yaml: line 1: campaigns[0]: unknown field "bid_cmp"`},
		{"campaigns: [{id: a, bid_cpm: cheap}]", `rules: t.yaml: line 1: campaigns[0].bid_cpm: cannot use string "cheap" here, want a number`},
		{"campaigns: {id: a}", "rules: t.yaml: line 1: campaigns: cannot use a mapping here, want a list"},
		{"campaigns:\n  - id: a\n    creatives:\n      - {id: c, w: 1.5}", "rules: t.yaml: line 4: campaigns[0].creatives[0].w: cannot use number 1.5 here, want a whole number within ±2^31"},
		{"campaigns:\n  - id: a\n    ID: b", `rules: t.yaml: line 3: campaigns[0]: unknown field "ID" (field names are case-sensitive: "id")`},
		{"campaigns:\n  - id: a\n    id: b", `rules: t.yaml: line 3: campaigns[0]: mapping key "id" already defined at line 2`},
		// yaml.v3 names the line where the campaigns block began; the
		// entry that fails alone is named instead, and the line its own
		// error gives, counted in the file; for a line indented wrongly,
		// the line where the entry breaks (TestParseIndentationErrors).
		{"campaigns:\n  - id: a\n    bid_cpm: 1\n   bad", "rules: t.yaml: campaigns[0] (the entry from line 2): yaml: line 4: did not find expected '-' indicator (check the indentation of line 4 and of the lines above it: each key as deep as the keys beside it, each list item's - as deep as the others)"},
		{"# rules\ncampaigns:\n  - id: a\n  - id: b\n    bid_cpm: 3\n    creatives:\n   advertiser: x\n  - id: c\n",
			"rules: t.yaml: campaigns[1] (the entry from line 4): yaml: line 7: did not find expected '-' indicator (check the indentation of line 7 and of the lines above it: each key as deep as the keys beside it, each list item's - as deep as the others)"},
		{"campaigns:\n  - id: a\n  - id: b\n    bid_cpm: [3\n    creatives: []\n", "rules: t.yaml: campaigns[1] (the entry from line 3): yaml: line 3: did not find expected ',' or ']'"},
		{"campaigns: [{id: a]\n", "rules: t.yaml: yaml: did not find expected ',' or '}'"}, // not cut into entries
		// An entry that fails alone only for an alias of an earlier one's
		// anchor is not the one to blame.
		{"campaigns:\n  - id: a\n    creatives: &cr []\n  - id: b\n    creatives: *cr\n  - id: c\n    bid_cpm: [3\n",
			"rules: t.yaml: campaigns[2] (the entry from line 6): yaml: line 6: did not find expected ',' or ']'"},
		{"campaigns: [{id: no, bid_cpm: 1, creatives: [{id: y, w: 1, h: 1, adm: x}]}]\n---\ncampaigns: []", "rules: t.yaml: more than one YAML document"},
	}
	for _, tt := range tests {
		_, err := Parse("t.yaml", []byte(tt.yaml))
		if err == nil || err.Error() != tt.want {
			t.Errorf("Parse(%q) = %v, want %s", tt.yaml, err, tt.want)
		}
	}
	if rs, err := Parse("empty.yaml", nil); err != nil || len(rs.Campaigns) != 0 {
		t.Errorf("empty file: %v, %v", rs, err)
	}
}

// manyFailingEntries is a rules file whose error locating parses the
// campaign entries one by one: 8 MB of comments, then 20,000 entries,
// each entry (parsing alone, or failing alone without a line, as an
// alias of an anchor in an earlier entry does), then an unclosed flow
// sequence.
func manyFailingEntries(entry string) []byte {
	var b strings.Builder
	for range 1 << 17 {
		b.WriteString("# " + strings.Repeat("x", 60) + "\n")
	}
	b.WriteString("campaigns:\n- &a {id: x}\n")
	for range 20000 {
		b.WriteString(entry)
	}
	b.WriteString("- {id: [}\n")
	return []byte(b.String())
}

// TestSyntaxErrorManyFailingEntries: entries that fail alone without a
// line (an alias) do not stop the search: the error is the file's, the
// unclosed sequence's.
func TestSyntaxErrorManyFailingEntries(t *testing.T) {
	_, err := Parse("t.yaml", manyFailingEntries("- *a\n"))
	if err == nil || !strings.Contains(err.Error(), "did not find expected node content") || strings.Contains(err.Error(), "anchor") {
		t.Fatalf("Parse = %v, want the unclosed sequence's error, not an alias's", err)
	}
}

// BenchmarkSyntaxErrorManyFailingEntries: locating the error counted,
// at each entry that fails alone without a line, the lines from the
// file's start, quadratic in the file: with such entries (aliased) it
// took 2.8 s against 0.3 s for entries that parse alone; with the lines
// counted entry by entry (74f7d77) the two take about as long (0.48 s
// alone, 0.41 s aliased, -benchtime 2x, a loaded 2-core VM).
func BenchmarkSyntaxErrorManyFailingEntries(b *testing.B) {
	for _, bc := range []struct{ name, entry string }{{"alone", "- {id: y}\n"}, {"aliased", "- *a\n"}} {
		data := manyFailingEntries(bc.entry)
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := Parse("t.yaml", data); err == nil {
					b.Fatal("Parse took an unclosed flow sequence")
				}
			}
		})
	}
}

// TestParseIndentationErrorBigEntry: the bisection that names a faulty
// indentation's line parses a prefix of the text per halving of its
// lines, with the reload's lock held; a campaign entry larger than
// maxBreakSearch (a long adomain list: 2 MB took 1.6 s against 0.4 s
// without it) keeps yaml.v3's line, as a file that large does.
func TestParseIndentationErrorBigEntry(t *testing.T) {
	var b strings.Builder
	b.WriteString("campaigns:\n  - id: a\n    bid_cpm: 2\n    adomain:\n")
	for i := 0; b.Len() <= maxBreakSearch; i++ {
		fmt.Fprintf(&b, "      - d%d.example.com\n", i)
	}
	b.WriteString("     - bad.example.com\n    creatives: []\n")
	doc := b.String()
	_, err := Parse("t.yaml", []byte(doc))
	if err == nil {
		t.Fatal("Parse took a faulty indentation")
	}
	if msg := err.Error(); strings.Contains(msg, "check the indentation") || !strings.Contains(msg, "campaigns[0] (the entry from line 2): yaml: line ") {
		t.Errorf("entry of %d bytes: %v, want yaml.v3's line, not the bisection's", len(doc), err)
	}
	// The same fault in an entry within the bound is named at its line.
	small := "campaigns:\n  - id: a\n    bid_cpm: 2\n    adomain:\n      - d.example.com\n     - bad.example.com\n    creatives: []\n"
	_, err = Parse("t.yaml", []byte(small))
	if err == nil || !strings.Contains(err.Error(), "yaml: line 6: did not find expected key (check the indentation of line 6") {
		t.Errorf("small entry: %v, want line 6 with the hint", err)
	}
}

// TestParseIndentationErrors: a line indented one or two spaces more or
// less than it should be is named at its line, the next (where a key too
// shallow shows) or the next key beside it (where a block's first key
// too deep shows), with a hint: yaml.v3 names the line where the
// enclosing block began, up to four lines before (or line 1).
func TestParseIndentationErrors(t *testing.T) {
	base := strings.Split(`campaigns:
  - id: c1
    bid_cpm: 2
    budget:
      daily: 10
      total: 100
    targeting:
      all:
        - facet: title
          any: [cmo]
      none:
        - facet: title
          any: [cfo]
    creatives:
      - id: x
        w: 300
        h: 250
        adm: hi
  - id: c2
    bid_cpm: 2
    creatives:
      - id: y
        w: 300
        h: 250
        adm: hi
`, "\n")
	tried := 0
	for fault := 3; fault <= 20; fault++ {
		for _, shift := range []int{-2, -1, 1, 2} {
			lines := slices.Clone(base)
			text := strings.TrimLeft(lines[fault-1], " ")
			indent := len(lines[fault-1]) - len(text) + shift
			if indent < 0 {
				continue
			}
			lines[fault-1] = strings.Repeat(" ", indent) + text
			_, err := Parse("t.yml", []byte(strings.Join(lines, "\n")))
			if err == nil {
				continue
			}
			_, rest, ok := strings.Cut(err.Error(), "yaml: line ")
			if !ok {
				continue // a valid document of another meaning: unknown field, wrong type
			}
			tried++
			// The fault shows at its line, the next, or the next line
			// as deep as it was (a block's first key indented wrongly
			// sets the block's depth: the next key disagrees).
			last := fault + 1
			for j := fault + 1; j <= len(base); j++ {
				if b := base[j-1]; b != "" && len(b)-len(strings.TrimLeft(b, " ")) <= indent-shift {
					last = max(last, j)
					break
				}
			}
			num, _, _ := strings.Cut(rest, ":")
			if l, _ := strconv.Atoi(num); l < fault || l > last {
				t.Errorf("line %d indented %+d: %v, want line %d to %d", fault, shift, err, fault, last)
			} else if !strings.Contains(err.Error(), fmt.Sprintf("(check the indentation of line %d and of the lines above it", l)) {
				t.Errorf("line %d indented %+d: %v, want a hint", fault, shift, err)
			}
		}
	}
	if tried < 30 {
		t.Errorf("%d documents fail to parse: the test tests too little", tried)
	}
}

// TestParseJSONSyntaxErrors: for a document written as JSON, yaml.v3
// names the line where the innermost flow collection began (a
// campaign's brace, or line 1) and no column; the fault's own line and
// column are named instead.
func TestParseJSONSyntaxErrors(t *testing.T) {
	const head = "{\n  \"campaigns\": [\n    {\n      \"id\": \"a\",\n"
	tests := []struct{ name, json, want string }{
		{"missing comma", head + "      \"bid_cpm\": 2\n      \"creatives\": []\n    }\n  ]\n}\n",
			`rules: t.json: json: line 6, column 7: invalid character '"' after object key:value pair (a comma missing before it?)`},
		{"wrong bracket", head + "      \"bid_cpm\": 2,\n      \"creatives\": [}\n    }\n  ]\n}\n",
			"rules: t.json: json: line 6, column 21: invalid character '}' looking for beginning of value"},
		{"missing comma in a list", head + "      \"cat\": [\"IAB1\"\n \"IAB2\"],\n      \"creatives\": []\n    }\n  ]\n}\n",
			`rules: t.json: json: line 6, column 2: invalid character '"' after array element (a comma missing before it?)`},
		// A trailing comma, which YAML takes, is not the fault; nor is
		// one after a string ending in an escaped backslash.
		{"after trailing commas", head + "      \"adm\": \"x\\\\\",\n    },\n    {\n      \"id\": \"b\",\n      \"bid_cpm\": 2,,\n    },\n  ]\n}\n",
			"rules: t.json: json: line 9, column 20: invalid character ',' looking for beginning of object key string"},
		{"multi-byte characters", head + "      \"advertiser\": \"Überall\" \"x\"\n    }\n  ]\n}\n",
			`rules: t.json: json: line 5, column 31: invalid character '"' after object key:value pair (a comma missing before it?)`},
		// A byte order mark, which yaml.v3 reads as none, is not the
		// fault, nor counted in the column.
		{"byte order mark", "\ufeff" + `{"campaigns": [{"id": "a" "bid_cpm": 2}]}`,
			`rules: t.json: json: line 1, column 27: invalid character '"' after object key:value pair (a comma missing before it?)`},
		{"byte order mark, lines", "\ufeff" + head + "      \"bid_cpm\": 2\n      \"creatives\": []\n    }\n  ]\n}\n",
			`rules: t.json: json: line 6, column 7: invalid character '"' after object key:value pair (a comma missing before it?)`},
		// A fault in the last byte (a minified file, no line break at
		// its end): its Offset is the document's length, as that of
		// one that ends too soon.
		{"wrong last bracket", `{"campaigns": [{"id": "a", "bid_cpm": 2, "creatives": []}}`,
			"rules: t.json: json: line 1, column 58: invalid character '}' after array element (a comma missing before it?)"},
		// A collection left open: JSON can only name the end of the
		// file; yaml.v3's line stands.
		{"unclosed", head + "      \"bid_cpm\": 2\n    }\n  ]\n",
			"rules: t.json: yaml: line 7: did not find expected ',' or '}'"},
		// A document in YAML's flow style (an unquoted key) is not JSON
		// before its fault, which yaml.v3 places after that: its line
		// stands.
		{"yaml flow style", "{\n  campaigns: [\n    {id: a},\n    {\n      \"id\": \"b\"\n      \"bid_cpm\": 2\n    }\n  ]\n}\n",
			"rules: t.json: yaml: line 3: did not find expected ',' or '}'"},
	}
	for _, tt := range tests {
		_, err := Parse("t.json", []byte(tt.json))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s: Parse(%q) = %v,\nwant %s", tt.name, tt.json, err, tt.want)
		}
	}
}

// TestParseJSONSyntaxErrorsOnlyInJSONFiles: a YAML file written in flow
// style, with what YAML takes and JSON does not (a comment, single
// quotes) before its fault, keeps yaml.v3's message: encoding/json would
// name the comment. A .json file with the same is told that its comment
// is not JSON (the first of its faults as JSON).
func TestParseJSONSyntaxErrorsOnlyInJSONFiles(t *testing.T) {
	const doc = "{\n  \"campaigns\": [\n    {\n      # the CMO campaign\n      \"id\": 'a',\n      \"bid_cpm\": 2\n      \"creatives\": []\n    }\n  ]\n}\n"
	for name, want := range map[string]string{
		"t.yaml": "rules: t.yaml: yaml: line 2: did not find expected ',' or '}'",
		"t.YML":  "rules: t.YML: yaml: line 2: did not find expected ',' or '}'",
		"t.JSON": "rules: t.JSON: json: line 4, column 7: invalid character '#' looking for beginning of object key string",
	} {
		if _, err := Parse(name, []byte(doc)); err == nil || err.Error() != want {
			t.Errorf("Parse(%s) = %v,\nwant %s", name, err, want)
		}
	}
}

// TestParseJSONTrailingComma: a .json rules file is read as YAML, whose
// flow style takes a trailing comma; that it does is kept (files that
// were served keep being served).
func TestParseJSONTrailingComma(t *testing.T) {
	with, err := Parse("t.json", []byte(`{"campaigns": [{"id": "a", "bid_cpm": 2, "cat": ["IAB1",], "creatives": [{"id": "c", "w": 1, "h": 1, "adm": "x,]"},],},],}`))
	if err != nil {
		t.Fatal(err)
	}
	without, err := Parse("t.json", []byte(`{"campaigns": [{"id": "a", "bid_cpm": 2, "cat": ["IAB1"], "creatives": [{"id": "c", "w": 1, "h": 1, "adm": "x,]"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(without, with); diff != "" {
		t.Errorf("trailing commas (-without +with):\n%s", diff)
	}
}

func TestLoadDirectory(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("b.yaml", "campaigns: [{id: b, bid_cpm: 1, creatives: [{id: cb, w: 1, h: 1, adm: x}]}]")
	write("a.json", `{"campaigns": [{"id": "a", "bid_cpm": 2, "creatives": [{"id": "ca", "w": 1, "h": 1, "adm": "x"}]}], "content_rules": {"blocked_cat": ["IAB25"]}}`)
	write("notes.txt", "ignored")
	write(".hidden.yaml", "not: yaml: at: all")
	write(".hidden.YAML", "not: yaml: at: all")
	// Upper-case extensions, as some editors and spreadsheet exports
	// write them, are rules files too.
	write("c.YAML", "campaigns: [{id: c, bid_cpm: 1, creatives: [{id: cc, w: 1, h: 1, adm: x}]}]")
	write("d.Json", `{"campaigns": [{"id": "d", "bid_cpm": 1, "creatives": [{"id": "cd", "w": 1, "h": 1, "adm": "x"}]}]}`)
	write("e.YML", "campaigns: [{id: e, bid_cpm: 1, creatives: [{id: ce, w: 1, h: 1, adm: x}]}]")
	rs, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range rs.Campaigns {
		ids = append(ids, c.ID)
	}
	// Name order, byte-wise: upper-case C.YAML would come before a.json.
	if diff := cmp.Diff([]string{"a", "b", "c", "d", "e"}, ids); diff != "" || rs.ContentRules.BlockedCat[0] != "IAB25" {
		t.Errorf("campaigns (-want +got):\n%s", diff)
	}
	write("f.yaml", "campaigns: [{id: a, bid_cpm: 1, creatives: [{id: cf, w: 1, h: 1, adm: x}]}]")
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), `f.yaml: line 1: campaigns[0].id: duplicate campaign id "a" (also `+filepath.Join(dir, "a.json")+`: line 1: campaigns[0])`) {
		t.Errorf("duplicate across files: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing path: no error")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte(`{"campaigns": [{"id": "a", "bid_cpm": 1e308}]}`))
	f.Add([]byte("campaigns: [{id: a, priority: -1, creatives: [{id: b, adm: '${'}]}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Parse("fuzz", data)
		if err != nil {
			return
		}
		if err := rs.Validate(); err != nil {
			if _, ok := err.(ValidationErrors); !ok {
				t.Fatalf("Validate returned %T", err)
			}
			return
		}
		// A valid set survives a round trip unchanged.
		out, err := Marshal(rs)
		if err != nil {
			t.Fatal(err)
		}
		rs2, err := Parse("again", out)
		if err != nil {
			t.Fatalf("re-parse: %v\n%s", err, out)
		}
		if err := rs2.Validate(); err != nil {
			t.Fatalf("re-validate: %v", err)
		}
	})
}

func TestOriginsLocate(t *testing.T) {
	files := []File{
		{Name: "a.yaml", Data: []byte("campaigns: [{id: a, bid_cpm: 1, creatives: [{id: ca, w: 1, h: 1, adm: x}]}, {id: b, bid_cpm: 1, creatives: [{id: cb, w: 1, h: 1, adm: x}]}]")},
		{Name: "broken.yaml", Data: []byte("campaigns: [{id: a, bid_cpm: -3, creatives: [{id: cc, w: 1, h: 1, adm: x}]}]")},
		{Name: "house.yaml", Data: []byte("content_rules: {blocked_cat: [IAB25], channel_map: [{channel: social, domains: [x.com]}]}")},
		{Name: "more-house.yaml", Data: []byte("content_rules: {blocked_cat: [IAB26, IAB 7], blocked_adomain: [''], channel_map: [{channel: web, domains: [y.com, x.com]}]}")},
	}
	rs, origins, err := ParseFilesLocated(files)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range origins.Locate(rs.Validate()).(ValidationErrors) {
		got = append(got, e.Error())
	}
	want := []string{
		"broken.yaml: line 1: campaigns[0].bid_cpm: -3 must be > 0 and <= 10000",
		`broken.yaml: line 1: campaigns[0].id: duplicate campaign id "a" (also a.yaml: line 1: campaigns[0])`,
		// The content rules of several files merge too: their errors name
		// the file and the index in it.
		`more-house.yaml: line 1: content_rules.blocked_cat[1]: "IAB 7" is not an IAB category such as IAB19`,
		"more-house.yaml: line 1: content_rules.blocked_adomain[0]: empty domain",
		`more-house.yaml: line 1: content_rules.channel_map[0].domains[1]: "x.com" is already mapped to channel "social"`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("located errors (-want +got):\n%s", diff)
	}
	// No files (a set sent through the API): paths stay as they are.
	if err := Origins(nil).Locate(rs.Validate()); !strings.Contains(err.Error(), "\n  campaigns[2].bid_cpm") {
		t.Errorf("no files: %v", err)
	}
}

// TestLocateLines: the errors of a set read from one file name the file
// and the line of the field (the planner's file is one of hundreds of
// campaigns; "campaigns[180].budget.daily" alone sends them counting),
// or, for a field left out, the line of its campaign; in a file large
// enough to be cut at its campaign entries too, and in one a Parser
// knew unchanged (its Data not read again).
func TestLocateLines(t *testing.T) {
	const good = `  - id: ok-%d
    bid_cpm: 1
    creatives:
      - {id: ok-%d-cr, w: 300, h: 250, adm: x}
`
	const bad = `  - id: bad
    bid_cpm: 2
    budget:
      daily: -200
    frequency_cap: {max: 3, window: 1d}
    targeting:
      all:
        - facet: title
          any: [cmo, "Vp Marketing"]
    creatives: [{id: bad-cr, w: 300, h: 250, adm: x}]
  - id: empty
    bid_cpm: 1
content_rules:
  blocked_cat:
    - IAB25
    - "IAB 26"
`
	for _, tc := range []struct {
		name string
		n    int // good campaigns before the bad ones
	}{{"small", 2}, {"cut", 5000}} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			b.WriteString("# house rules\ncampaigns:\n")
			for i := range tc.n {
				fmt.Fprintf(&b, good, i, i)
			}
			b.WriteString(bad)
			data := []byte(b.String())
			first := 3 + 4*tc.n // the line of "- id: bad"
			files := []File{{Name: "b2b.yaml", Data: data}}
			rs, origins, err := ParseFilesLocated(files)
			if err != nil {
				t.Fatal(err)
			}
			want := []string{
				fmt.Sprintf("b2b.yaml: line %d: campaigns[%d].budget.daily: -200 must be >= 0 and <= 100000000 (0: no daily limit)", first+3, tc.n),
				fmt.Sprintf(`b2b.yaml: line %d: campaigns[%d].frequency_cap.window: "1d" is not a duration such as 24h`, first+4, tc.n),
				fmt.Sprintf(`b2b.yaml: line %d: campaigns[%d].targeting.all[0].any[1]: "Vp Marketing" must match ^[a-z0-9][a-z0-9._-]{0,63}$`, first+8, tc.n),
				fmt.Sprintf("b2b.yaml: line %d: campaigns[%d].creatives: a campaign needs at least one creative", first+10, tc.n+1),
				fmt.Sprintf(`b2b.yaml: line %d: content_rules.blocked_cat[1]: "IAB 26" is not an IAB category such as IAB19`, first+15),
			}
			located := func(err error) []string {
				var got []string
				for _, e := range Problems(err) {
					got = append(got, e.Error())
				}
				return got
			}
			if diff := cmp.Diff(want, located(origins.Locate(rs.Validate()))); diff != "" {
				t.Errorf("located errors (-want +got):\n%s", diff)
			}
			// A Parser's second call reads nothing of an unchanged file:
			// its lines come from the file on disk.
			dir := t.TempDir()
			path := filepath.Join(dir, "b2b.yaml")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			p := NewParser()
			p.SetRacy(-1)
			for range 2 {
				files, err := p.ReadFiles(dir)
				if err != nil {
					t.Fatal(err)
				}
				rs, origins, err = p.ParseFiles(files)
				if err != nil {
					t.Fatal(err)
				}
			}
			if p.Stats().FilesRead != 0 {
				t.Fatalf("the Parser read the unchanged file again: %+v", p.Stats())
			}
			for i := range want {
				want[i] = path + strings.TrimPrefix(want[i], "b2b.yaml")
			}
			if diff := cmp.Diff(want, located(origins.Locate(rs.Validate()))); diff != "" {
				t.Errorf("located errors of an unchanged file (-want +got):\n%s", diff)
			}
		})
	}
}
