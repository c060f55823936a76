package segments

import (
	"flag"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"
)

var dictMemUsers = flag.Int("dictmem", 0, "also measure the dictionary's memory at this many users (e.g. 10000000)")

func TestDictInternLookup(t *testing.T) {
	b := NewBuilder()
	const n = 200_000
	for i := range n {
		got, err := b.Intern("id" + strconv.Itoa(i))
		if err != nil || got != uint32(i) {
			t.Fatalf("Intern(id%d) = %d, %v; want %d", i, got, err, i)
		}
	}
	// Interning again returns the same ids and adds nothing.
	for i := 0; i < n; i += 7 {
		if got, err := b.InternBytes([]byte("id" + strconv.Itoa(i))); err != nil || got != uint32(i) {
			t.Fatalf("second InternBytes(id%d) = %d, %v; want %d", i, got, err, i)
		}
	}
	if b.Users() != n {
		t.Fatalf("Users() = %d, want %d", b.Users(), n)
	}
	d := b.Build(1).Dict()
	for i := range n {
		id := "id" + strconv.Itoa(i)
		if got, ok := d.Lookup(id); !ok || got != uint32(i) {
			t.Fatalf("Lookup(%s) = %d, %v; want %d", id, got, ok, i)
		}
		if got, _ := d.ID(uint32(i)); got != id {
			t.Fatalf("ID(%d) = %q, want %q", i, got, id)
		}
	}
	if _, ok := d.ID(n); ok {
		t.Errorf("ID(%d) found, want not found", n)
	}
	if _, ok := d.Lookup("id-1"); ok {
		t.Error("Lookup(id-1) found")
	}
}

// heapGrowth returns the bytes of live heap and of the dictionaries'
// mapped memory (offheap.go) that build leaves behind: the mappings of the
// Snapshot it returns when it returns one (exactly, whatever other
// mappings come and go meanwhile), else the change in all mappings.
func heapGrowth(build func() any) (int, any) {
	var before, after runtime.MemStats
	runtime.GC()
	waitCleanups()
	runtime.ReadMemStats(&before)
	mapped := MappedBytes()
	v := build()
	runtime.GC()
	waitCleanups()
	runtime.ReadMemStats(&after)
	grew := int(after.HeapAlloc) - int(before.HeapAlloc)
	if snap, ok := v.(*Snapshot); ok {
		for _, m := range snap.Dict().mem {
			if m != nil {
				grew += len(m.b)
			}
		}
		return grew, v
	}
	return grew + int(MappedBytes()-mapped), v
}

// waitCleanups gives the cleanups of mappings a collection found
// unreachable time to run (on their own goroutine): it returns once the
// mapped total has not moved for 50 ms, or after 5 s.
func waitCleanups() {
	deadline := time.Now().Add(5 * time.Second)
	last, since := MappedBytes(), time.Now()
	for time.Now().Before(deadline) && time.Since(since) < 50*time.Millisecond {
		time.Sleep(5 * time.Millisecond)
		if now := MappedBytes(); now != last {
			last, since = now, time.Now()
		}
	}
}

func demoID(i int) string { return fmt.Sprintf("u%08d", i) }

// TestDictMemory measures bytes per user of the dictionary against the
// map[string]uint32 it replaced, with the demo world's 9-byte ids, and
// holds the dictionary to the 48 B/user budget.
func TestDictMemory(t *testing.T) {
	sizes := []int{1_000_000}
	if testing.Short() {
		sizes = []int{100_000}
	}
	if *dictMemUsers > 0 {
		sizes = append(sizes, *dictMemUsers)
	}
	for _, n := range sizes {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = demoID(i)
		}
		dictBytes, d := heapGrowth(func() any {
			b := NewBuilder()
			for _, id := range ids {
				b.Intern(id)
			}
			return b.Build(1)
		})
		mapBytes, m := heapGrowth(func() any {
			m := make(map[string]uint32)
			for i := range n {
				m[demoID(i)] = uint32(i) // its own copy of each id, as the map held
			}
			return m
		})
		runtime.KeepAlive(ids)
		perUser := float64(dictBytes) / float64(n)
		t.Logf("%d users: Dict %.1f B/user (MemoryBytes %.1f), map[string]uint32 %.1f B/user",
			n, perUser, float64(d.(*Snapshot).Dict().MemoryBytes())/float64(n), float64(mapBytes)/float64(n))
		runtime.KeepAlive(m)
		if perUser > 48 {
			t.Errorf("%d users: %.1f B/user, want <= 48", n, perUser)
		}
	}
}

func BenchmarkUserLookup(b *testing.B) {
	for _, n := range []int{1_000, 1_000_000} {
		bld := NewBuilder()
		bld.Grow(n)
		for i := range n {
			bld.Intern(demoID(i))
		}
		s := bld.Build(1)
		hits := make([]string, 4096)
		misses := make([]string, 4096)
		for i := range hits {
			hits[i] = demoID((i * 7919) % n)
			misses[i] = demoID(n + i)
		}
		b.Run(fmt.Sprintf("users=%d/hit", n), func(b *testing.B) {
			i := 0
			for b.Loop() {
				if _, ok := s.User(hits[i&4095]); !ok {
					b.Fatal("miss")
				}
				i++
			}
		})
		b.Run(fmt.Sprintf("users=%d/miss", n), func(b *testing.B) {
			i := 0
			for b.Loop() {
				if _, ok := s.User(misses[i&4095]); ok {
					b.Fatal("hit")
				}
				i++
			}
		})
	}
}

func TestLookupBatch(t *testing.T) {
	b := NewBuilder()
	for i := range 50_000 {
		b.Intern(demoID(i))
	}
	d := b.Build(1).Dict()
	var ids []string
	for i := range 120_000 {
		ids = append(ids, demoID((i*7919)%100_000)) // half known, half not
	}
	// Every length around the pipeline's groups and its depth (up to four
	// groups in flight), and a long one; each from a different place, into
	// outputs holding garbage.
	for _, n := range []int{0, 1, 2, 31, 32, 33, 63, 64, 65, 95, 96, 97, 127, 128, 129, 130, 161, 1000, 120_000} {
		at := (n * 31) % (len(ids) - n + 1)
		ids := ids[at : at+n]
		out, found, tags := make([]uint32, n), make([]bool, n), make([]uint32, n)
		for i := range n {
			out[i], found[i], tags[i] = math.MaxUint32, i%2 == 0, uint32(i)
		}
		d.lookupBatch(ids, out, found, tags)
		for i, id := range ids {
			want, ok := d.Lookup(id)
			if found[i] != ok || ok && out[i] != want {
				t.Fatalf("%d ids: lookupBatch(%s) = %d, %t; Lookup = %d, %t", n, id, out[i], found[i], want, ok)
			}
			if tags[i] != d.tag(id) {
				t.Fatalf("%d ids: lookupBatch(%s): tag %#x, want %#x", n, id, tags[i], d.tag(id))
			}
		}
	}
}

// BenchmarkLookupMany compares one-by-one and batched lookups of known ids
// in a dictionary of -dictusers users, and batched lookups of ids it does
// not hold (an upload's new ids). Each operation looks up 64K ids, the
// next 64K of a pool of up to 2M (in a random order of users), so that in
// a large dictionary the lookups miss the caches as an upload's do: the
// same 64K ids each time would keep their table slots, offsets and bytes
// (12 MB) in the last-level cache.
func BenchmarkLookupMany(b *testing.B) {
	users := *benchDictUsers
	bl := NewBuilder()
	bl.Grow(users)
	for i := range users {
		bl.Intern(demoID(i))
	}
	d := bl.Build(1).Dict()
	const n = 1 << 16
	pool := min(2<<20, max(n, users/n*n)) // whole operations
	known, unknown := make([]string, pool), make([]string, pool)
	for i := range pool {
		known[i] = demoID(int(uint64(i) * 2654435761 % uint64(users)))
		unknown[i] = demoID(users + i)
	}
	out, found, tags := make([]uint32, n), make([]bool, n), make([]uint32, n)
	run := func(name string, ids []string, lookup func(ids []string)) {
		b.Run(name, func(b *testing.B) {
			at := 0
			for b.Loop() {
				lookup(ids[at : at+n])
				at = (at + n) % len(ids)
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "ids/s")
		})
	}
	run("one", known, func(ids []string) {
		for i, id := range ids {
			out[i], found[i] = d.Lookup(id)
		}
	})
	run("batch", known, func(ids []string) { d.lookupBatch(ids, out, found, tags) })
	run("batch-miss", unknown, func(ids []string) { d.lookupBatch(ids, out, found, tags) })
}

var benchDictUsers = flag.Int("dictusers", 1_000_000, "users in BenchmarkLookupMany's dictionary")

// TestCopyPieces: copyPieces copies what copy does, around and across
// its piece size, into longer and shorter destinations.
func TestCopyPieces(t *testing.T) {
	const piece = (1 << 20) / 4 // uint32s
	for _, n := range []int{0, 1, piece - 1, piece, piece + 1, 3*piece + 7} {
		src := make([]uint32, n)
		for i := range src {
			src[i] = uint32(i + 1)
		}
		for _, m := range []int{n, n + 5, n / 2} {
			want, got := make([]uint32, m), make([]uint32, m)
			if w, g := copy(want, src), copyPieces(got, src); w != g || !slices.Equal(want, got) {
				t.Errorf("%d into %d: copied %d, want %d; contents equal: %v", n, m, g, w, slices.Equal(want, got))
			}
		}
	}
}
