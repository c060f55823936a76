package rules_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
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

// TestParserReadMemory checks what becomes of the memory ReadFiles reads
// a file into: a file parsed whole (every campaign anew) gives its memory
// to the rule set, whose strings point into it, and the next read is
// into new memory; a file of which only some campaigns are parsed copies
// those, and the next read is into the same memory. Either way, no set
// the Parser returned changes when the file is rewritten (with other
// bytes of the same size) and read and parsed again.
func TestParserReadMemory(t *testing.T) {
	_, big := smallWorldText(t)
	// bigOther is big with every id and adm rewritten, the same size: no
	// entry has its text.
	bigOther := rewriteValues(big, "id: ", "adm: ")
	if len(bigOther) != len(big) || bytes.Equal(bigOther, big) {
		t.Fatal("rewriteValues changed the size, or nothing")
	}
	// bigEdited is bigOther with one campaign's bid changed, the same size.
	at := bytes.Index(bigOther, []byte("bid_cpm: ")) + len("bid_cpm: ")
	bigEdited := slices.Clone(bigOther)
	bigEdited[at] = '1' + (bigEdited[at]-'0')%8 // its first digit to another one, not 0
	type version struct {
		text []byte
		// reread says that this version is read into the memory of the
		// one before (whose parse left it to the Parser).
		reread  bool
		entries int // campaign entries parsed
	}
	n := bytes.Count(big, []byte("\n  - id: "))
	for _, tc := range []struct {
		name     string
		versions []version
	}{
		{"whole", []version{
			{text: []byte("campaigns: [{id: a1, bid_cpm: 1, creatives: [{id: ca, w: 1, h: 1, adm: x}]}]\n")},
			{text: []byte("campaigns: [{id: b2, bid_cpm: 2, creatives: [{id: cb, w: 2, h: 2, adm: y}]}]\n")},
			{text: []byte("campaigns: [{id: c3, bid_cpm: 3, creatives: [{id: cc, w: 3, h: 3, adm: z}]}]\n")},
		}},
		{"piecewise", []version{
			{text: big, entries: n},               // never seen: cold
			{text: bigOther, entries: n},          // no entry reused: cold again
			{text: bigEdited, entries: 1},         // one entry parsed, copied
			{text: big, reread: true, entries: n}, // into the last read's memory
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rules.yaml")
			p := rules.NewParser()
			type parsed struct {
				rs, copied *rules.RuleSet
			}
			var sets []parsed
			var last []byte
			for v, ver := range tc.versions {
				if err := os.WriteFile(path, ver.text, 0o644); err != nil {
					t.Fatal(err)
				}
				files, err := p.ReadFiles(path)
				if err != nil {
					t.Fatal(err)
				}
				data := files[0].Data
				if !bytes.Equal(data, ver.text) {
					t.Fatalf("version %d: read other bytes", v)
				}
				if reread := last != nil && &data[0] == &last[0]; reread != ver.reread {
					t.Errorf("version %d: read into the last read's memory: %v, want %v", v, reread, ver.reread)
				}
				last = data
				rs, _, err := p.ParseFiles(files)
				if err != nil {
					t.Fatalf("version %d: %v", v, err)
				}
				if st := p.Stats(); ver.entries > 0 && st.EntriesParsed != ver.entries {
					t.Errorf("version %d: %d entries parsed, want %d", v, st.EntriesParsed, ver.entries)
				}
				// The set as parsed, in memory of its own.
				copied := deepCopy(rs)
				if diff := cmp.Diff(mustParse(t, path, ver.text), copied); diff != "" {
					t.Fatalf("version %d: the set differs from Parse's (-want +got):\n%s", v, diff)
				}
				sets = append(sets, parsed{rs, copied})
				for u, s := range sets[:v] {
					if diff := cmp.Diff(s.copied, s.rs); diff != "" {
						t.Fatalf("the set of version %d changed at the read of version %d (-want +got):\n%s", u, v, diff)
					}
				}
			}
		})
	}
}

// TestParseCopiesCallersBytes checks that the rule sets of Parse and of a
// Parser given bytes it did not read point into no memory of the
// caller's, which the caller may reuse.
func TestParseCopiesCallersBytes(t *testing.T) {
	_, big := smallWorldText(t)
	for name, text := range map[string][]byte{
		"piecewise": big,
		"whole":     []byte("campaigns: [{id: a1, bid_cpm: 1, creatives: [{id: ca, w: 1, h: 1, adm: x}]}]\n"),
	} {
		overwrite := func(b []byte) {
			for i := range b {
				b[i] = 'x'
			}
		}
		data := slices.Clone(text)
		rs := mustParse(t, name, data)
		copied := deepCopy(rs)
		overwrite(data)
		if diff := cmp.Diff(copied, rs); diff != "" {
			t.Errorf("%s: Parse's set changed with its input (-want +got):\n%s", name, diff)
		}
		data = slices.Clone(text)
		rs, _, err := rules.NewParser().ParseFiles([]rules.File{{Name: name, Data: data}})
		if err != nil {
			t.Fatal(err)
		}
		copied = deepCopy(rs)
		overwrite(data)
		if diff := cmp.Diff(copied, rs); diff != "" {
			t.Errorf("%s: Parser.ParseFiles' set changed with its input (-want +got):\n%s", name, diff)
		}
	}
}

func mustParse(t *testing.T, name string, text []byte) *rules.RuleSet {
	t.Helper()
	rs, err := rules.Parse(name, text)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// rewriteValues returns text with every letter and digit of the values of
// the lines whose content starts with one of keys (after "- ") changed,
// keeping the size and the YAML's shape.
func rewriteValues(text []byte, keys ...string) []byte {
	out := slices.Clone(text)
	for off := 0; off < len(out); {
		end := bytes.IndexByte(out[off:], '\n')
		if end < 0 {
			end = len(out)
		} else {
			end += off
		}
		line := bytes.TrimLeft(out[off:end], " ")
		line = bytes.TrimPrefix(line, []byte("- "))
		for _, k := range keys {
			if v, ok := bytes.CutPrefix(line, []byte(k)); ok {
				for i, c := range v {
					switch {
					case c >= 'a' && c < 'z', c >= '0' && c < '9':
						v[i] = c + 1
					case c == 'z':
						v[i] = 'a'
					case c == '9':
						v[i] = '0'
					}
				}
			}
		}
		off = end + 1
	}
	return out
}

// deepCopy returns a copy of v that shares no memory with it.
func deepCopy[T any](v *T) *T {
	var c T
	copyValue(reflect.ValueOf(&c).Elem(), reflect.ValueOf(v).Elem())
	return &c
}

// copyValue sets dst, of src's type and zero, to a copy of src: strings
// and slices copied, pointers to copies.
func copyValue(dst, src reflect.Value) {
	switch src.Kind() {
	case reflect.String:
		dst.SetString(strings.Clone(src.String()))
	case reflect.Slice:
		if src.IsNil() {
			return
		}
		dst.Set(reflect.MakeSlice(src.Type(), src.Len(), src.Len()))
		for i := range src.Len() {
			copyValue(dst.Index(i), src.Index(i))
		}
	case reflect.Pointer:
		if src.IsNil() {
			return
		}
		dst.Set(reflect.New(src.Type().Elem()))
		copyValue(dst.Elem(), src.Elem())
	case reflect.Struct:
		for i := range src.NumField() {
			copyValue(dst.Field(i), src.Field(i))
		}
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		dst.Set(src)
	default:
		panic("copyValue: a " + src.Kind().String())
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
