package rules

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// FuzzSyntaxErrorLocating checks the helpers that name a rules file's
// syntax error where yaml.v3 does not: blankTrailingCommas changes only
// commas, into spaces, keeping every offset; jsonSyntaxError names a
// line and column within the document; breakingLine a line of the text;
// and Parse of a .json file (the route of jsonSyntaxError) does not
// panic.
func FuzzSyntaxErrorLocating(f *testing.F) {
	f.Add([]byte(`{"campaigns": [{"id": "a",}, {"id": "b" "bid_cpm": 1}]}`))
	f.Add([]byte("\ufeff{\"a\": [1, 2,],\n \"b\": \"x\\\",\" \"c\"}"))
	f.Add([]byte("campaigns:\n  - id: a\n   bid_cpm: 2\n"))
	f.Add([]byte("[,]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out := blankTrailingCommas(data)
		if len(out) != len(data) {
			t.Fatalf("blankTrailingCommas: %d bytes, want %d", len(out), len(data))
		}
		for i := range data {
			if out[i] != data[i] && (data[i] != ',' || out[i] != ' ') {
				t.Fatalf("blankTrailingCommas: byte %d %q became %q", i, data[i], out[i])
			}
		}
		var n yaml.Node
		yerr := yaml.Unmarshal(data, &n)
		if yerr != nil {
			if line, col, msg, ok := jsonSyntaxError(data, yerr); ok {
				lines := 1 + bytes.Count(data, []byte("\n"))
				if line < 1 || line > lines || col < 1 || col > utf8.RuneCount(data)+1 || msg == "" {
					t.Fatalf("jsonSyntaxError: line %d, column %d, %q of a %d-line document", line, col, msg, lines)
				}
			}
			_, msg := yamlLine(yerr)
			if k := breakingLine(data, msg); k < 0 || k > 1+bytes.Count(data, []byte("\n")) {
				t.Fatalf("breakingLine: %d", k)
			}
		}
		if _, err := Parse("fuzz.json", data); err != nil && !strings.HasPrefix(err.Error(), "rules: fuzz.json: ") && !errors.Is(err, errFallback) {
			t.Fatalf("Parse: %v", err)
		}
	})
}
