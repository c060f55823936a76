package rules

import (
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzPlainTag checks plainTag's shortcuts against yaml.v3's resolver.
func FuzzPlainTag(f *testing.F) {
	for _, v := range []string{"", "a", "true", "True", "TRUE", "yes", "no", "n", "null", "Null", "~", "<<", "<", "0",
		"12", "-12", "+12", "012", "0x1F", "0o17", "0b101", "-0b1", "1_000", "1e3", "1E-3", "-1.5e+3", "1.5", "-0.0",
		"5.", ".5", "-.5", ".inf", "-.inf", "+.Inf", ".nan", "-.nan", "2026-01-01", "2026-01-01T00:00:00Z",
		"2026-1-2 3:4:5.5 +02:00", "2026.5", "24h", "168h", "1200x627", "99999999999999999999", "18446744073709551615",
		"-9223372036854775808", "1:20", "-", "+", "-x", "0.1.2", "1__0", "0xg", "1e", "infinity", "-inf", "NaN",
		"<div>", "<<<", "~x", "~~"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		want := (&yaml.Node{Kind: yaml.ScalarNode, Value: v}).ShortTag()
		if got := plainTag(v); got != want {
			t.Errorf("plainTag(%q) = %s, yaml.v3 resolves %s", v, got, want)
		}
	})
}
