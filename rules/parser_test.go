package rules_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/rules"
)

// TestParserReparsesOnlyChanges checks that a Parser parses only the
// files, and in them the campaign entries, whose text changed, and that
// its results and errors are ParseFilesLocated's.
func TestParserReparsesOnlyChanges(t *testing.T) {
	gen, big := smallWorldText(t)
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
		want.FilesRead = want.Files // no ReadFiles: every file was read by the caller
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

	// Entries are found where they moved: two swapped, all shifted by one
	// inserted first, or all reversed (more than are searched for one by
	// one: through an index).
	entries, _, ok := rules.CutCampaigns(files[1].Data)
	if !ok {
		t.Fatal("the big file does not cut")
	}
	first := bytes.Index(files[1].Data, entries[0])
	end := first
	for _, e := range entries {
		end += len(e)
	}
	head, tail := files[1].Data[:first], files[1].Data[end:]
	rewrite := func(order ...[]byte) {
		files[1].Data = slices.Concat(head, slices.Concat(order...), tail)
	}
	rewrite(slices.Concat([][]byte{entries[1], entries[0]}, entries[2:])...)
	step("two swapped", rules.ParseStats{Files: 3, FilesParsed: 1, Entries: n})
	added := []byte("  - {id: added, bid_cpm: 1, creatives: [{id: cadded, w: 1, h: 1, adm: x}]}\n")
	rewrite(slices.Concat([][]byte{added}, entries)...)
	step("one inserted first", rules.ParseStats{Files: 3, FilesParsed: 1, Entries: n + 1, EntriesParsed: 1})
	reversed := slices.Clone(entries)
	slices.Reverse(reversed)
	rewrite(reversed...)
	step("all reversed", rules.ParseStats{Files: 3, FilesParsed: 1, Entries: n})

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

// TestParserReadFilesSkipsUnchanged checks that Parser.ReadFiles reads
// only files whose stat changed, and that a change its stat cannot tell
// (same size, within one tick of the file clock) is still seen while the
// file is recent.
func TestParserReadFilesSkipsUnchanged(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("stat keys are Linux only: elsewhere every file is read")
	}
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	camp := func(id string, bid int) string {
		return fmt.Sprintf("campaigns: [{id: %s, bid_cpm: %d, creatives: [{id: c%s, w: 1, h: 1, adm: x}]}]\n", id, bid, id)
	}
	for _, id := range []string{"a", "b", "c"} {
		write(id+".yaml", camp(id, 1))
	}
	p := rules.NewParser()
	step := func(name string, wantRead, wantParsed int) {
		t.Helper()
		files, err := p.ReadFiles(dir)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := p.ParseFiles(files)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := rules.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ref, got); diff != "" {
			t.Errorf("%s: rule set differs from Load (-want +got):\n%s", name, diff)
		}
		if st := p.Stats(); st.FilesRead != wantRead || st.FilesParsed != wantParsed {
			t.Errorf("%s: %+v, want %d files read, %d parsed", name, st, wantRead, wantParsed)
		}
	}
	// Just written: not trusted, read every time; a same-size edit is seen.
	step("first", 3, 3)
	step("recent", 3, 0)
	write("b.yaml", camp("b", 2))
	step("same-size edit of a recent file", 3, 1)

	p.SetRacy(-time.Hour) // as if every file were old enough to trust
	step("trusted from now on", 3, 0)
	step("unchanged", 0, 0)
	write("b.yaml", camp("b", 22))
	step("edited", 1, 1)
	tmp := filepath.Join(dir, ".tmp")
	if err := os.WriteFile(tmp, []byte(camp("c", 3)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "c.yaml")); err != nil {
		t.Fatal(err)
	}
	step("renamed over", 1, 1)
	write("d.yaml", camp("d", 1))
	step("new file", 1, 1)
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	step("removed file", 0, 0)
}

// TestParserReusesReadMemory checks that what a Parser parsed does not
// change when its next ReadFiles reads into the memory of the last one.
func TestParserReusesReadMemory(t *testing.T) {
	_, big := smallWorldText(t)
	for name, text := range map[string][]byte{
		"piecewise": big,
		"whole":     []byte("campaigns: [{id: a1, bid_cpm: 1, creatives: [{id: ca, w: 1, h: 1, adm: x}]}]\n"),
	} {
		path := filepath.Join(t.TempDir(), "rules.yaml")
		if err := os.WriteFile(path, text, 0o644); err != nil {
			t.Fatal(err)
		}
		p := rules.NewParser()
		files, err := p.ReadFiles(path)
		if err != nil {
			t.Fatal(err)
		}
		first, _, err := p.ParseFiles(files)
		if err != nil {
			t.Fatal(err)
		}
		want, err := rules.Parse(path, text)
		if err != nil {
			t.Fatal(err)
		}
		// The same size, every byte but the line breaks overwritten.
		other := bytes.Map(func(r rune) rune {
			if r == '\n' {
				return r
			}
			return 'x'
		}, text)
		if err := os.WriteFile(path, other, 0o644); err != nil {
			t.Fatal(err)
		}
		again, err := p.ReadFiles(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again[0].Data, other) || &again[0].Data[0] != &files[0].Data[0] {
			t.Fatalf("%s: the second read did not read the new text into the first read's memory", name)
		}
		if diff := cmp.Diff(want, first); diff != "" {
			t.Errorf("%s: the first set changed after the next read (-want +got):\n%s", name, diff)
		}
	}
}

// TestParserSetsStayUnchanged checks what the Parser's doc promises and
// engine.(*Compiler).CompileImmutable relies on: a rule set it returned
// never changes, however the files are edited and parsed afterwards —
// although the next sets share its campaigns' memory.
func TestParserSetsStayUnchanged(t *testing.T) {
	gen, err := world.GenerateRules(world.SmallConfig())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "rules.yaml")
	p := rules.NewParser()
	type parsed struct {
		what string
		text []byte
		rs   *rules.RuleSet
	}
	var sets []parsed
	step := func(what string, edit func(cs []rules.Campaign) []rules.Campaign) {
		t.Helper()
		gen.Campaigns = edit(gen.Campaigns)
		text, err := rules.Marshal(gen)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, text, 0o644); err != nil {
			t.Fatal(err)
		}
		files, err := p.ReadFiles(path)
		if err != nil {
			t.Fatal(err)
		}
		rs, _, err := p.ParseFiles(files)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if st := p.Stats(); len(sets) > 0 && st.EntriesParsed >= st.Entries {
			t.Fatalf("%s: stats %+v: no campaign reused, none shared", what, st)
		}
		sets = append(sets, parsed{what, text, rs})
	}
	step("first", func(cs []rules.Campaign) []rules.Campaign { return cs })
	step("a bid", func(cs []rules.Campaign) []rules.Campaign { cs[5].BidCPM++; return cs })
	step("nested values", func(cs []rules.Campaign) []rules.Campaign {
		c := &cs[7]
		c.Creatives = slices.Clone(c.Creatives)
		c.Creatives[0].Adm += "<!-- edited -->"
		c.Adomain = append(slices.Clip(c.Adomain), "edited.example")
		return cs
	})
	step("two swapped", func(cs []rules.Campaign) []rules.Campaign { cs[1], cs[2] = cs[2], cs[1]; return cs })
	step("the first removed", func(cs []rules.Campaign) []rules.Campaign { return slices.Clone(cs[1:]) })
	step("one inserted", func(cs []rules.Campaign) []rules.Campaign {
		c := cs[3]
		c.ID += "-copy"
		c.Creatives = slices.Clone(c.Creatives)
		for i := range c.Creatives {
			c.Creatives[i].ID += "-copy"
		}
		return slices.Insert(cs, 4, c)
	})
	step("the insertion removed, another bid changed", func(cs []rules.Campaign) []rules.Campaign {
		cs = slices.Delete(cs, 4, 5)
		cs[7-1].BidCPM++
		return cs
	})
	for _, s := range sets {
		want, err := rules.Parse(path, s.text)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, s.rs); diff != "" {
			t.Errorf("the set parsed after %q changed (-want +got):\n%s", s.what, diff)
		}
	}
}

// smallWorldText is the small generated world's rules and their YAML.
func smallWorldText(t *testing.T) (*rules.RuleSet, []byte) {
	t.Helper()
	gen, err := world.GenerateRules(world.SmallConfig())
	if err != nil {
		t.Fatal(err)
	}
	big, err := rules.Marshal(gen)
	if err != nil {
		t.Fatal(err)
	}
	return gen, big
}

// TestParserDigest checks the digest of the files a Parser parses: the
// same bytes give the same digest whether the file was read and parsed
// cold, walked by its previous version, or not read at all (its stat
// unchanged), and any edit gives another; a rewrite with the same bytes
// parses nothing.
func TestParserDigest(t *testing.T) {
	_, big := smallWorldText(t)
	big = append([]byte("# a comment before the entries\n"), big...)
	dir := t.TempDir()
	write := func(name string, text []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), text, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("big.yaml", big)
	write("flow.yaml", []byte("campaigns: [{id: a1, bid_cpm: 1, creatives: [{id: ca, w: 1, h: 1, adm: x}]}]\n"))
	write("rules.json", []byte(`{"content_rules": {"blocked_cat": ["IAB25"]}}`))
	// parse reads and parses dir with p, and returns its digest.
	parse := func(name string, p *rules.Parser, wantParsed int) rules.Digest {
		t.Helper()
		files, err := p.ReadFiles(dir)
		if err != nil {
			t.Fatal(err)
		}
		pre, known := rules.FilesDigest(files)
		if _, _, err := p.ParseFiles(files); err != nil {
			t.Fatal(err)
		}
		d := p.Digest()
		if st := p.Stats(); known && (st.FilesRead != 0 || pre != d) {
			t.Errorf("%s: every Sum known before the parse (%+v), digest %v, after it %v", name, st, pre, d)
		}
		if st := p.Stats(); st.FilesParsed != wantParsed {
			t.Errorf("%s: %+v, want %d files parsed", name, st, wantParsed)
		}
		return d
	}
	p := rules.NewParser()
	p.SetRacy(-time.Hour) // trust every file's stat once read
	want := parse("first", p, 3)
	// The same bytes, written again: read again (its stat changed: its
	// modification time is set apart, file clocks being coarse), the big
	// file walked by its previous version and found unchanged.
	write("big.yaml", big)
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(dir, "big.yaml"), later, later); err != nil {
		t.Fatal(err)
	}
	if d := parse("same bytes written again", p, 0); d != want {
		t.Errorf("same bytes written again: digest %v, want %v", d, want)
	}
	if st := p.Stats(); st.FilesRead != 1 {
		t.Errorf("same bytes written again: %+v, want big.yaml read (its stat changed)", st)
	}
	if d := parse("unchanged stat", p, 0); d != want {
		t.Errorf("unchanged stat: digest %v, want %v", d, want)
	}
	if st := p.Stats(); st.FilesRead != 0 {
		t.Errorf("unchanged stat: %+v, want no file read", st)
	}
	if d := parse("cold", rules.NewParser(), 3); d != want {
		t.Errorf("the same files parsed cold: digest %v, want %v", d, want)
	}

	// An edit anywhere in the big file, before its entries, in one, or
	// after them, changes the digest; the walked and the cold parse of
	// the edited file agree.
	first := bytes.Index(big, []byte("\n  - id: ")) + 1
	for _, at := range []int{3, first + 10, len(big) / 2, len(big) - 2} {
		edited := slices.Clone(big)
		edited[at] ^= 1 // ASCII stays ASCII; a broken document still has a digest
		write("big.yaml", big)
		p := rules.NewParser()
		parse("before the edit", p, 3)
		write("big.yaml", edited)
		files, err := p.ReadFiles(dir)
		if err != nil {
			t.Fatal(err)
		}
		p.ParseFiles(files) //nolint:errcheck // the edit may break the document: it still has a digest
		walked := p.Digest()
		files, err = rules.NewParser().ReadFiles(dir)
		if err != nil {
			t.Fatal(err)
		}
		cold := rules.NewParser()
		cold.ParseFiles(files) //nolint:errcheck // as above
		if walked == want || walked != cold.Digest() {
			t.Errorf("edit at byte %d of %d: digest %v (cold %v), unedited %v", at, len(big), walked, cold.Digest(), want)
		}
	}
}
