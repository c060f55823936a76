package segments

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var openUsers = flag.Int("openusers", 1_000_000, "users in BenchmarkOpen's snapshot (6 memberships each)")

// bigSnapshot builds users users ("u%08d"), each in 6 of 200 segments
// chosen with a skew (a few segments are huge, most small), like the
// demo world.
func bigSnapshot(tb testing.TB, users int) *Snapshot {
	tb.Helper()
	r := rand.New(rand.NewPCG(42, 42))
	b := NewBuilder()
	b.Grow(users)
	var buf []byte
	for i := range users {
		buf = fmt.Appendf(buf[:0], "u%08d", i)
		if _, err := b.InternBytes(buf); err != nil {
			tb.Fatal(err)
		}
	}
	const segs = 200
	lists := make([][]uint32, segs)
	flush := func() {
		for s, l := range lists {
			if len(l) > 0 {
				b.AddIDs(fmt.Sprintf("f%d", s%5), fmt.Sprintf("v%03d", s), l...)
				lists[s] = l[:0]
			}
		}
	}
	for i := range users {
		for range 6 {
			s := min(r.IntN(segs), r.IntN(segs), r.IntN(segs)) // skewed to low numbers
			if l := lists[s]; len(l) == 0 || l[len(l)-1] != uint32(i) {
				lists[s] = append(l, uint32(i))
			}
		}
		if i%65536 == 65535 {
			flush()
		}
	}
	flush()
	return b.BuildAt(1, testTime)
}

func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	start := time.Now()
	snap := bigSnapshot(b, *openUsers)
	built := time.Since(start)
	start = time.Now()
	if err := WriteSnapshot(dir, snap); err != nil {
		b.Fatal(err)
	}
	written := time.Since(start)
	fi, err := os.Stat(filepath.Join(dir, SnapshotFile))
	if err != nil {
		b.Fatal(err)
	}
	var members uint64
	for _, s := range snap.Segments() {
		members += s.Users.GetCardinality()
	}
	b.Logf("%d users, %d segments, %d memberships: built in %v, written in %v, %d bytes",
		snap.Dict().Len(), snap.Len(), members, built, written, fi.Size())
	snap = nil
	b.SetBytes(fi.Size())
	b.ResetTimer()
	for b.Loop() {
		st, err := Open(Config{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		st.Close()
	}
}

var openKeyed = flag.Int("openkeyed", 10_000, "keyed uploads in the log BenchmarkOpenKeyed replays")

// BenchmarkOpenKeyed recovers a store whose log holds openkeyed keyed
// uploads since its last snapshot (one new user each, so each also
// changes the dictionary): replay puts every such upload's key into the
// remembered keys, twice, and each put must cost O(1), not a search of
// the maxKeys remembered.
func BenchmarkOpenKeyed(b *testing.B) {
	dir := b.TempDir()
	st, err := Open(Config{Dir: dir, SnapshotInterval: time.Hour, SnapshotLogBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for i := range *openKeyed {
		upload(b, st, "title", "cmo", Add, fmt.Sprint("key-", i), fmt.Sprint("u", i))
	}
	b.Logf("%d keyed uploads committed in %v", *openKeyed, time.Since(start))
	crash(st)
	b.ResetTimer()
	for b.Loop() {
		st, err := Open(Config{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		if n := st.Current().Dict().Len(); n != *openKeyed {
			b.Fatalf("recovered %d users; want %d", n, *openKeyed)
		}
		crash(st) // no snapshot: the next Open replays the same log
	}
}
