package segments

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var testTime = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// testSnapshot builds a seeded snapshot: users ids "user-N" (with a few
// longer, odd ones), and segments of every density from empty to full.
func testSnapshot(t testing.TB, users int, seed uint64) *Snapshot {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	b := NewBuilder()
	b.Grow(users)
	for i := range users {
		id := fmt.Sprintf("user-%d", i)
		if i%97 == 0 {
			id += "-" + strings.Repeat("x", i%200) + "@example.com"
		}
		if n, err := b.Intern(id); err != nil || int(n) != i {
			t.Fatalf("Intern(%q) = %d, %v; want %d", id, n, err, i)
		}
	}
	facets := map[string][]string{
		"title":    {"cmo", "cfo", "marketing-coordinator", "it-director"},
		"industry": {"fintech", "healthcare", "saas"},
		"region":   {"emea", "apac"},
	}
	density := []float64{0.5, 0.1, 0.01, 0.9}
	var ids []uint32
	k := 0
	for facet, values := range facets {
		for _, v := range values {
			p := density[k%len(density)]
			k++
			ids = ids[:0]
			for i := range users {
				if r.Float64() < p {
					ids = append(ids, uint32(i))
				}
			}
			b.AddIDs(facet, v, ids...)
		}
	}
	b.Add("title", "ceo") // an empty segment
	if users > 0 {
		b.AddIDs("all", "everyone", 0)
		b.segment("all", "everyone").Users.AddRange(0, uint64(users)) // one run
	}
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	return b.BuildAt(7, testTime)
}

// diffSnapshots describes how two snapshots differ, or returns "".
func diffSnapshots(got, want *Snapshot) string {
	var diffs []string
	if got.Version() != want.Version() {
		diffs = append(diffs, fmt.Sprintf("Version() = %d, want %d", got.Version(), want.Version()))
	}
	type segInfo struct {
		Facet, Value string
		Version      uint64
		Updated      time.Time
		Card         uint64
	}
	info := func(s *Snapshot) []segInfo {
		var out []segInfo
		for _, seg := range s.Segments() {
			out = append(out, segInfo{seg.Facet, seg.Value, seg.Version, seg.Updated, seg.Users.GetCardinality()})
		}
		return out
	}
	if d := cmp.Diff(info(want), info(got)); d != "" {
		diffs = append(diffs, "segments (-want +got):\n"+d)
	}
	for _, w := range want.Segments() {
		if g := got.Segment(w.Facet, w.Value); g != nil && !g.Users.Equals(w.Users) {
			diffs = append(diffs, fmt.Sprintf("segment %s:%s: bitmaps differ", w.Facet, w.Value))
		}
	}
	if got.Dict().Len() != want.Dict().Len() {
		diffs = append(diffs, fmt.Sprintf("users = %d, want %d", got.Dict().Len(), want.Dict().Len()))
	}
	for i := range want.Dict().Len() {
		id, _ := want.Dict().ID(uint32(i))
		if n, ok := got.User(id); !ok || n != uint32(i) {
			diffs = append(diffs, fmt.Sprintf("User(%q) = %d, %v; want %d, true", id, n, ok, i))
			break
		}
		if gid, _ := got.Dict().ID(uint32(i)); gid != id {
			diffs = append(diffs, fmt.Sprintf("ID(%d) = %q, want %q", i, gid, id))
			break
		}
	}
	return strings.Join(diffs, "\n")
}

func encode(t testing.TB, s *Snapshot) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := s.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo returned %d, wrote %d bytes", n, buf.Len())
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	for _, users := range []int{0, 1, 1000, 100_000} {
		t.Run(fmt.Sprint(users), func(t *testing.T) {
			want := testSnapshot(t, users, uint64(users))
			dir := t.TempDir()
			if err := WriteSnapshot(dir, want); err != nil {
				t.Fatal(err)
			}
			st, err := Open(Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			got := st.Current()
			if d := diffSnapshots(got, want); d != "" {
				t.Error(d)
			}
			// Writing what was read gives the same bytes: the format has a
			// single encoding per snapshot.
			file, err := os.ReadFile(filepath.Join(dir, SnapshotFile))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(encode(t, got), file) {
				t.Error("re-encoding the loaded snapshot differs from the file")
			}
			if got, err := ReadSnapshot(bytes.NewReader(file)); err != nil {
				t.Errorf("ReadSnapshot: %v", err)
			} else if d := diffSnapshots(got, want); d != "" {
				t.Errorf("ReadSnapshot: %s", d)
			}
		})
	}
}

func TestUnknownUser(t *testing.T) {
	s := testSnapshot(t, 1000, 1)
	for _, id := range []string{"", "user-1000", "user-", "USER-1", "user-1 ", strings.Repeat("u", 300)} {
		if n, ok := s.User(id); ok {
			t.Errorf("User(%q) = %d, true; want not found", id, n)
		}
	}
	if n, ok := s.User("user-999"); !ok || n != 999 {
		t.Errorf("User(user-999) = %d, %v; want 999, true", n, ok)
	}
}

func TestEmptyStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "segments")
	st, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s := st.Current()
	if s == nil || s.Version() != 0 || s.Len() != 0 || s.Dict().Len() != 0 {
		t.Fatalf("empty store serves %+v, want version 0 with nothing", s)
	}
	if _, ok := s.User("u1"); ok {
		t.Error("empty store knows user u1")
	}
	if seg := s.Segment("title", "cmo"); seg != nil {
		t.Errorf("empty store has segment %+v", seg)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// The empty snapshot round-trips too.
	if err := WriteSnapshot(dir, s); err != nil {
		t.Fatal(err)
	}
	st, err = Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if d := diffSnapshots(st.Current(), s); d != "" {
		t.Error(d)
	}
	if NewStore(nil).Current() == nil {
		t.Error("NewStore(nil).Current() = nil")
	}
}

// TestOpenRemovesTemps: the temp file of a snapshot write that a crash
// (or a full disk, then a crash) cut short goes at the next start. The
// snapshot is written through atomicfile.Write, whose temp files are
// "." + base + ".tmp" + digits; removeTemps looked for the name without
// the dot only, so such a file (as large as a snapshot) stayed for good.
func TestOpenRemovesTemps(t *testing.T) {
	dir := t.TempDir()
	var stale []string
	for _, name := range []string{"." + SnapshotFile + ".tmp2603395650", SnapshotFile + ".tmp123"} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("half a snapshot"), 0o600); err != nil {
			t.Fatal(err)
		}
		stale = append(stale, path)
	}
	st, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	for _, path := range stale {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stale temp file %s still there: %v", filepath.Base(path), err)
		}
	}
}

func TestOpenBadConfig(t *testing.T) {
	if _, err := Open(Config{}); err == nil || !strings.HasPrefix(err.Error(), "segments: ") {
		t.Errorf("Open(Config{}) = %v, want a segments: error", err)
	}
}

// TestCorruption flips every byte of a small snapshot in turn: each flip
// must be reported as a *CorruptError naming the file, never a panic and
// never a silently different snapshot.
func TestCorruption(t *testing.T) {
	good := encode(t, testSnapshot(t, 300, 3))
	dir := t.TempDir()
	path := filepath.Join(dir, SnapshotFile)
	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0x5a
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(Config{Dir: dir})
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Fatalf("byte %d flipped: Open = %v, want a *CorruptError", i, err)
		}
		if !strings.HasPrefix(err.Error(), "segments: "+path+": ") || !strings.Contains(err.Error(), "offset") {
			t.Fatalf("byte %d flipped: error %q does not name the file and offset", i, err)
		}
	}
}

func TestCorruptionMessage(t *testing.T) {
	good := encode(t, testSnapshot(t, 300, 3))
	bad := bytes.Clone(good)
	bad[len(bad)-40] ^= 1 // inside the last segment's bitmap
	_, err := ReadSnapshot(bytes.NewReader(bad))
	want := "segments: snapshot: segment title:marketing-coordinator at offset"
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("got %v, want %q… checksum mismatch", err, want)
	}
}

func TestTruncated(t *testing.T) {
	good := encode(t, testSnapshot(t, 300, 4))
	dir := t.TempDir()
	path := filepath.Join(dir, SnapshotFile)
	for n := range len(good) {
		if err := os.WriteFile(path, good[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := ReadSnapshotFile(path)
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Fatalf("first %d of %d bytes: got %v, want a *CorruptError", n, len(good), err)
		}
		if _, err := ReadSnapshot(bytes.NewReader(good[:n])); !errors.As(err, &ce) {
			t.Fatalf("first %d of %d bytes, as a stream: got %v, want a *CorruptError", n, len(good), err)
		}
	}
	if _, err := ReadSnapshot(bytes.NewReader(append(bytes.Clone(good), 0))); err == nil || !strings.Contains(err.Error(), "data after the end section") {
		t.Errorf("trailing byte: got %v, want data after the end section", err)
	}
}

func TestBuilderErrors(t *testing.T) {
	b := NewBuilder()
	b.Add("title", "cmo", "u1", "", "u2")
	b.AddIDs("title", "cfo", 0, 5)
	err := b.Err()
	if !errors.Is(err, ErrBadUserID) {
		t.Errorf("Err() = %v, want ErrBadUserID", err)
	}
	s := b.Build(1)
	if got := s.Segment("title", "cmo").Users.ToArray(); !cmp.Equal(got, []uint32{0, 1}) {
		t.Errorf("title:cmo = %v, want [0 1]", got)
	}
	if got := s.Segment("title", "cfo").Users.ToArray(); !cmp.Equal(got, []uint32{0}) {
		t.Errorf("title:cfo = %v, want [0] (5 is not interned)", got)
	}
	if _, err := NewBuilder().Intern(strings.Repeat("x", MaxIDLen+1)); !errors.Is(err, ErrBadUserID) {
		t.Errorf("Intern(257 bytes) = %v, want ErrBadUserID", err)
	}
}

// TestNoAllocs proves the hot-path reads allocate nothing.
func TestNoAllocs(t *testing.T) {
	s := testSnapshot(t, 10_000, 5)
	long := "user-9991-" + strings.Repeat("x", 9991%200) + "@example.com"
	tests := []struct {
		name string
		f    func()
	}{
		{"User hit", func() { s.User("user-4242") }},
		{"User hit long id", func() { s.User(long) }},
		{"User miss", func() { s.User("nobody") }},
		{"Segment hit", func() { s.Segment("title", "cmo") }},
		{"Segment miss", func() { s.Segment("title", "nobody") }},
		{"Dict.ID", func() { s.Dict().ID(77) }},
	}
	for _, tt := range tests {
		if got := testing.AllocsPerRun(1000, tt.f); got != 0 {
			t.Errorf("%s: %v allocations per run, want 0", tt.name, got)
		}
	}
}

// FuzzReadSnapshot decodes arbitrary bytes: it must return a snapshot or
// an error, never panic. Checksums are skipped (a mutated input would
// almost never pass them) so that the parsers behind them are reached; a
// snapshot that decodes must re-encode and decode to the same thing.
func FuzzReadSnapshot(f *testing.F) {
	f.Add(encode(f, testSnapshot(f, 0, 0)))
	f.Add(encode(f, testSnapshot(f, 3, 1)))
	f.Add(encode(f, testSnapshot(f, 100, 2)))
	f.Add([]byte(snapMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := &decoder{r: bufioReader(data), size: int64(len(data))}
		snap, err := d.snapshot()
		if err != nil {
			return
		}
		again, err := ReadSnapshot(bytes.NewReader(encode(t, snap)))
		if err != nil {
			t.Fatalf("re-encoded snapshot does not decode: %v", err)
		}
		if d := diffSnapshots(again, snap); d != "" {
			t.Fatal(d)
		}
		if _, err := ReadSnapshot(bytes.NewReader(data)); err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("checked decode: %v, want a *CorruptError", err)
			}
		}
	})
}

func bufioReader(data []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(data)) }
