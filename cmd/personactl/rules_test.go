package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
