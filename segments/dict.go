package segments

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// Limits of the user dictionary.
const (
	// MaxUsers is the most users a Dict holds. Internal ids are uint32;
	// the table reserves one value to mark empty slots.
	MaxUsers = math.MaxUint32 - 1
	// MaxDictBytes bounds the bytes of all external ids together: the
	// dictionary keeps uint32 offsets into one arena. At 36-byte UUIDs that
	// is about 110M users; at the demo's 9-byte ids, 470M.
	MaxDictBytes = math.MaxUint32
	// MaxIDLen is the longest external user id, in bytes.
	MaxIDLen = 256
)

// Errors of the user dictionary.
var (
	// ErrDictFull is returned when a new user would exceed MaxUsers or
	// MaxDictBytes.
	ErrDictFull = errors.New("segments: user dictionary full")
	// ErrBadUserID is returned for an empty id or one longer than MaxIDLen,
	// and by uploads for an id holding a control character (see
	// UserIDProblem).
	ErrBadUserID = errors.New("segments: user id must be 1 to 256 bytes without control characters")
)

// Dict maps external user ids to dense internal ids, assigned in order of
// first appearance. Ids are never reassigned. What a Dict reachable from
// a published Snapshot holds never changes (uploads append past its end
// and store slots it ignores, see "Growing under readers"), so it is safe
// for concurrent use; Lookup and ID never allocate and take no lock.
//
// Layout: every external id's bytes, in internal-id order, in one arena;
// ends[n] is where id n ends (it starts at ends[n-1], or 0); an
// open-addressing hash table of uint64 slots, each holding a 32-bit hash tag
// and id+1 (0 marks an empty slot), probed linearly from the tag's position
// (tag × len(slots) >> 32). The tag both places a slot and filters
// candidates, so a miss compares no id bytes in all but 1 in 2^32 probes,
// and the table can be resized without rehashing any id.
//
// Memory, per user: len(id) + 4 (ends) + 8/load (table). The load is 0.7
// after Open, and 0.56–0.7 after a Builder (Build shrinks a table the
// doubling left emptier). Arrays of 1 MB and more are outside the Go heap
// (offheap.go). Measured by TestDictMemory (growth of the heap plus the
// mapped memory per user, 9-byte ids such as "u00000042"; go test -run TestDictMemory -v
// ./segments -dictmem=10000000):
//
//	users   Dict          map[string]uint32 (the first version)
//	1M      26.1 B/user   71.8 B/user
//	10M     26.6 B/user   60.7 B/user
//
// so the dictionary meets the durability issue's 48 B/user budget with
// room for 20 more bytes of id: a 36-byte UUID costs about 51 B/user.
// (Mapped arrays take whole 2 MB huge pages, up to 4 MB more per
// dictionary: 1.7 B/user at 1M users, 24.4 without.) Grown by uploads
// instead (the stage grows its table by half when full, its arrays by an
// eighth), 10M users added by ten 1M-id uploads hold 25.8 B/user
// (MemoryBytes, TestUploadMemory; 30.1 when the arrays grew by half).
//
// # Growing under readers
//
// Uploads add users to a published dictionary without copying it (the
// store's stage, see stage.go; log replay uses a dictWriter): the new
// users' bytes and ends are appended past the end of the published
// slices, into the spare capacity of the writer's own (a published view
// ends at its length: Dict.view), and their slots are stored atomically
// into the same table. A Dict is a view: len(ends) is how many
// users it holds, and Lookup ignores any slot whose id is beyond it (or a
// tombstone, a slot taken back), so readers of the older view never see
// the newer users, and the newer view shares every byte of the old one.
// When the arena or the ends run out of room they grow in place, their
// mappings having reserved the address space for the largest dictionary
// (offheap.go), so nothing is copied; they are copied on the heap (see
// offheap.go), by a writer that does not hold the mapping (growInPlace),
// and under a limit on the address space. When the table runs out of
// room it is rebuilt, larger by half (or, for an upload that said how
// many ids to expect, at once to the size its first new ids predict), so
// interning n new users into a store of N costs O(n) amortized, not
// O(N).
type Dict struct {
	seed  maphash.Seed
	arena []byte
	ends  []uint32
	slots []uint64
	// tombs counts the table's tombstones: slots of users an upload
	// interned and then took back (see stage.rollback). They keep the
	// probe chains through them intact and count towards the load; grow
	// drops them.
	tombs int
	// mem are the mappings arena, ends and slots live in (nil: the Go
	// heap), held so that they stay mapped while the Dict is (see
	// offheap.go).
	mem [3]*mapping
}

// The arrays' indexes in Dict.mem.
const (
	memArena = iota
	memEnds
	memSlots
)

// view returns a Dict sharing d's memory: the same users, for readers
// while d grows, and for publishing. Its arena and ends end at their
// length: whoever extends a view (a store serving it) appends nothing
// into d's spare room, which d's writer fills, but grows first, by
// copying unless it takes over d's mappings (growInPlace).
func (d *Dict) view() *Dict {
	v := d.continued()
	v.arena, v.ends = d.arena[:len(d.arena):len(d.arena)], d.ends[:len(d.ends):len(d.ends)]
	return v
}

// continued returns a Dict sharing d's memory, spare room included, for
// d's own writer to continue: replay's next record, or the store that
// recovered d. Anyone else extends a view.
func (d *Dict) continued() *Dict {
	return &Dict{seed: d.seed, arena: d.arena, ends: d.ends, slots: d.slots, mem: d.mem}
}

// reserve makes room for users more users with bytes more id bytes,
// growing the arena and ends to at least that: in place where their
// mappings have room (growInPlace), by an eighth; else into new arrays,
// by half.
func (d *Dict) reserve(users, bytes int) {
	d.arena, d.mem[memArena] = reserveArray(d.arena, d.mem[memArena], bytes, MaxDictBytes)
	d.ends, d.mem[memEnds] = reserveArray(d.ends, d.mem[memEnds], users, MaxUsers)
}

// reserveArray returns s, which lives in m, with room for more elements
// more, and its mapping; most is the longest s can be.
func reserveArray[T byte | uint32](s []T, m *mapping, more, most int) ([]T, *mapping) {
	need := len(s) + more
	if need <= cap(s) {
		return s, m
	}
	if n := min(max(need, cap(s)+cap(s)/8), most); n >= need {
		if g, ok := growInPlace(s, m, n); ok {
			return g, m
		}
	}
	g, m := allocGrowable[T](max(need, cap(s)*3/2), most)
	return g[:copyPieces(g, s)], m
}

// tombstone is the low half of a slot whose user was taken back: as an
// internal id + 1 it names no user (ids are below MaxUsers), so every
// probe passes over it.
const tombstone = math.MaxUint32

// newDict returns an empty dictionary with room for n users.
func newDict(n int) *Dict {
	d := &Dict{seed: maphash.MakeSeed()}
	if n > 0 {
		d.reserve(n, 0)
		d.slots, d.mem[memSlots] = alloc[uint64](tableSize(n))
	}
	return d
}

// home is the first slot of tag's probe sequence in a table of n slots:
// tag × n / 2^32, so the tags' order is the slots' order.
func home(tag uint32, n uint64) uint64 {
	hi, _ := bits.Mul64(uint64(tag)<<32, n)
	return hi
}

// tag is id's 32-bit hash tag: the high half of its seeded hash.
func (d *Dict) tag(id string) uint32 { return uint32(maphash.String(d.seed, id) >> 32) }

// tableSize is the table length for n users at a load factor of 0.7.
func tableSize(n int) int { return max(16, n+n*3/7+1) }

// Lookup returns the internal id of an external user id.
func (d *Dict) Lookup(id string) (uint32, bool) {
	if d == nil || len(d.slots) == 0 {
		return 0, false
	}
	return d.lookupTag(id, d.tag(id))
}

// lookupTag is Lookup with id's tag already computed.
func (d *Dict) lookupTag(id string, tag uint32) (uint32, bool) {
	n := uint64(len(d.slots))
	users := uint32(len(d.ends))
	for i := home(tag, n); ; {
		// Atomic: the store's stage (or, at recovery, a dictWriter) may
		// be storing newer users' slots into this table; they are beyond
		// users and skipped.
		s := atomic.LoadUint64(&d.slots[i])
		if s == 0 {
			return 0, false
		}
		if uint32(s>>32) == tag {
			if u := uint32(s) - 1; u < users && d.bytes(u) == id {
				runtime.KeepAlive(d) // its mapped memory, until compared (offheap.go)
				return u, true
			}
		}
		if i++; i == n {
			i = 0
		}
	}
}

// ID returns the external id of internal id n. The string shares the
// dictionary's memory, which may be outside the Go heap (offheap.go): it
// is valid while the caller holds d, and must be copied to outlive it.
func (d *Dict) ID(n uint32) (string, bool) {
	if d == nil || int(n) >= len(d.ends) {
		return "", false
	}
	return d.bytes(n), true
}

// bytes returns id n as a string over the arena, without copying: the
// arena's bytes below len(arena) are never written again.
func (d *Dict) bytes(n uint32) string {
	var start uint32
	if n > 0 {
		start = d.ends[n-1]
	}
	b := d.arena[start:d.ends[n]]
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// Len is the number of users.
func (d *Dict) Len() int {
	if d == nil {
		return 0
	}
	return len(d.ends)
}

// MemoryBytes is the memory the dictionary holds, in bytes.
func (d *Dict) MemoryBytes() int {
	if d == nil {
		return 0
	}
	return cap(d.arena) + 4*cap(d.ends) + 8*cap(d.slots)
}

// intern returns id's internal id, adding it when new. It is for a Dict
// nobody else reads yet (a Builder's); the store's stage, and dictWriter
// at recovery, extend a published one.
func (d *Dict) intern(id string) (uint32, error) {
	u, _, err := d.internSlot(id, d.tag(id), func() { d.grow(max(2*len(d.slots), 16)) })
	return u, err
}

// internSlot is intern, also returning the table slot it stored a new
// user in (-1 when id was known), with the table growth policy given.
func (d *Dict) internSlot(id string, tag uint32, grow func()) (uint32, int, error) {
	if len(id) == 0 || len(id) > MaxIDLen {
		return 0, -1, fmt.Errorf("%w: got %d bytes", ErrBadUserID, len(id))
	}
	if (len(d.ends)+d.tombs+1)*10 > len(d.slots)*7 {
		grow()
	}
	n := uint64(len(d.slots))
	i := home(tag, n)
	for ; ; i++ {
		if i == n {
			i = 0
		}
		s := d.slots[i]
		if s == 0 {
			break
		}
		if uint32(s>>32) == tag {
			if u := uint32(s) - 1; u < uint32(len(d.ends)) && d.bytes(u) == id {
				return u, -1, nil
			}
		}
	}
	u := len(d.ends)
	if u >= MaxUsers || len(d.arena)+len(id) > MaxDictBytes {
		return 0, -1, fmt.Errorf("%w: %d users, %d bytes of ids", ErrDictFull, u, len(d.arena))
	}
	if len(d.arena)+len(id) > cap(d.arena) {
		d.reserve(0, max(len(id), 64))
	}
	if len(d.ends) == cap(d.ends) {
		d.reserve(16, 0)
	}
	d.arena = append(d.arena, id...)
	d.ends = append(d.ends, uint32(len(d.arena)))
	atomic.StoreUint64(&d.slots[i], uint64(tag)<<32|uint64(u+1))
	return uint32(u), int(i), nil
}

// dictWriter adds users to a published Dict without copying it (see
// "Growing under readers" on Dict), one log record at a time: recovery
// replays the log with it before the store serves (uploads intern into
// the store's stage instead). One writer runs at a time, always over the
// newest Dict, so the spare capacity it appends into belongs to no
// reader, and abort undoes it exactly. It is not safe for concurrent use.
type dictWriter struct {
	d    *Dict    // the new view, sharing memory with the published one
	base int      // users in the published Dict
	pub  []uint64 // the published table while d still shares it, else nil
	// pubMem keeps pub's memory mapped (offheap.go) once d has grown
	// away from it, until clearPublished is done with it.
	pubMem *mapping
	// stored are the slots this writer filled in pub, in order, so that
	// they can be cleared.
	stored []int
}

// extend returns a writer adding users to d. The writer continues d
// (continued): replay extends each record's dictionary, one after the
// other, and nothing else writes to them meanwhile.
func (d *Dict) extend() *dictWriter {
	w := &dictWriter{
		d:    d.continued(),
		base: len(d.ends),
	}
	if len(d.slots) > 0 {
		w.pub, w.pubMem = d.slots, d.mem[memSlots]
	}
	return w
}

// intern returns id's internal id, adding it when new.
func (w *dictWriter) intern(id string) (uint32, error) {
	return w.internTag(id, w.d.tag(id))
}

// internTag is intern with id's tag already computed.
func (w *dictWriter) internTag(id string, tag uint32) (uint32, error) {
	u, slot, err := w.d.internSlot(id, tag, w.grow)
	if slot >= 0 && w.pub != nil {
		w.stored = append(w.stored, slot)
	}
	return u, err
}

// grow moves the writer to a table of its own, 1.5 times larger, and
// clears what it stored in the published one.
func (w *dictWriter) grow() {
	w.d.grow(max(len(w.d.slots)*3/2, tableSize(len(w.d.ends)+1), 16))
	w.clearPublished()
}

// clearPublished empties the slots this writer stored in the published
// table, newest first, and stops writing to it. Undoing linear-probing
// inserts in reverse order restores the table exactly: no probe chain of
// an older user runs through a newer user's slot, so no lookup in the
// published view can miss meanwhile.
func (w *dictWriter) clearPublished() {
	for i := len(w.stored) - 1; i >= 0; i-- {
		atomic.StoreUint64(&w.pub[w.stored[i]], 0)
	}
	w.pub, w.pubMem, w.stored = nil, nil, nil
}

// abort undoes the writer's changes to the published Dict. Only its table
// was written in place (bytes and ends past a view's length are never
// read), so abort clears the slots the writer stored there.
func (w *dictWriter) abort() { w.clearPublished() }

// grow rebuilds the table with size slots, dropping tombstones and slots
// of users beyond len(d.ends). Tags place slots, so no id is hashed again.
func (d *Dict) grow(size int) {
	old, oldMem := d.slots, d.mem[memSlots]
	defer runtime.KeepAlive(oldMem) // old may be mapped, and d was its last holder
	d.slots, d.mem[memSlots] = alloc[uint64](size)
	d.tombs = 0
	n := uint64(size)
	for _, s := range old {
		if s == 0 || uint32(s) > uint32(len(d.ends)) {
			continue // empty, a tombstone, or a user beyond this view
		}
		i := home(uint32(s>>32), n)
		for d.slots[i] != 0 {
			if i++; i == n {
				i = 0
			}
		}
		d.slots[i] = s
	}
}

// index builds the table over arena and ends as loaded from a snapshot
// file, reporting the first duplicate id.
func (d *Dict) index() error {
	d.slots, d.mem[memSlots] = alloc[uint64](tableSize(len(d.ends)))
	n := uint64(len(d.slots))
	for u := range d.ends {
		id := d.bytes(uint32(u))
		tag := d.tag(id)
		i := home(tag, n)
		for ; ; i++ {
			if i == n {
				i = 0
			}
			s := d.slots[i]
			if s == 0 {
				break
			}
			if uint32(s>>32) == tag && d.bytes(uint32(s)-1) == id {
				return fmt.Errorf("user %d repeats user %d", u, uint32(s)-1)
			}
		}
		d.slots[i] = uint64(tag)<<32 | uint64(u+1)
	}
	return nil
}

// compact returns the dictionary with its arena and ends trimmed to size,
// for publishing: a Builder's growth leaves up to an eighth of them
// unused (in place), or up to a third (by copying).
func (d *Dict) compact() *Dict {
	c := &Dict{seed: d.seed, slots: d.slots}
	c.mem[memSlots] = d.mem[memSlots]
	c.reserve(len(d.ends), len(d.arena))
	c.arena = c.arena[:copyPieces(c.arena[:len(d.arena)], d.arena)]
	c.ends = c.ends[:copyPieces(c.ends[:len(d.ends)], d.ends)]
	if want := tableSize(len(d.ends)); len(d.slots) > want+want/4 {
		c.grow(want) // back to a load of 0.7, from as little as 0.35
	}
	return c
}

// lookupGroup is how many ids lookupBatch moves through each step at
// once.
const lookupGroup = 32

// lookupBatch is Lookup for many ids at once: out[i] is ids[i]'s internal
// id when found[i], and tags[i] its hash tag either way (for interning it
// later without hashing it again). A big dictionary's lookups are bound
// by memory latency, not by instructions: each may miss the cache (and
// the TLB) on its table slot, on its end offsets and on its bytes, one
// after the other, as each address comes from the load before.
//
// So lookupBatch is a software pipeline over groups of lookupGroup ids:
// in each round, one group is hashed and its first slots prefetched, the
// previous group probes its slots (now in the cache) to a candidate and
// prefetches its end offsets, the one before reads those and prefetches
// its bytes (their first and last cache lines), and the one before that
// compares them. Each step's first load of each kind was prefetched a
// round earlier (a probe's further slots follow in the hardware's
// prefetch of the next lines), and the prefetches of all three kinds
// overlap, so the misses of about a hundred ids are in flight at
// once, instead of one, or of one kind for one group as when each group
// went through every step before the next (the version before, which
// loaded instead of prefetching: BENCHMARKS.md §2).
func (d *Dict) lookupBatch(ids []string, out []uint32, found []bool, tags []uint32) {
	if d == nil || len(d.slots) == 0 {
		clear(found[:len(ids)])
		if d != nil {
			for i, id := range ids {
				tags[i] = d.tag(id)
			}
		}
		return
	}
	const group = lookupGroup
	n := uint64(len(d.slots))
	users := uint32(len(d.ends))
	// Each step's state, by group number modulo the rounds it is kept.
	var (
		pos        [2][group]uint64 // first slot: hashed → probed
		cand       [3][group]uint32 // internal id + 1 of the first tag match, 0: none: probed → compared
		miss       [3][group]bool   // no tag match before an empty slot
		start, end [2][group]uint32 // the candidate's bytes: read → compared
		addrs      [2 * group]unsafe.Pointer
	)
	groups := (len(ids) + group - 1) / group
	span := func(g int) (int, int) { return g * group, min(g*group+group, len(ids)) }
	for g := 0; g < groups+3; g++ {
		if g < groups { // hash group g; prefetch its first slots
			lo, hi := span(g)
			p := &pos[g%2]
			for i, id := range ids[lo:hi] {
				t := d.tag(id)
				tags[lo+i], p[i] = t, home(t, n)
				addrs[i] = unsafe.Pointer(&d.slots[p[i]])
			}
			prefetch(&addrs, hi-lo)
		}
		if k := g - 1; k >= 0 && k < groups { // probe group k; prefetch its end offsets
			lo, hi := span(k)
			p, c, ms := &pos[k%2], &cand[k%3], &miss[k%3]
			na := 0
			for i := range hi - lo {
				tag, at := tags[lo+i], p[i]
				c[i], ms[i] = 0, false
				// Scan on to the first tag match or empty slot: the slots
				// after the first are in its cache line or the next ones,
				// which the hardware prefetches. Atomic: the store's stage
				// may be storing newer users' slots, which users skips.
				for {
					s := atomic.LoadUint64(&d.slots[at])
					if s == 0 {
						ms[i] = true
						break
					}
					if uint32(s>>32) == tag && uint32(s)-1 < users {
						c[i] = uint32(s)
						break
					}
					if at++; at == n {
						at = 0
					}
				}
				if u := c[i]; u != 0 {
					addrs[na] = unsafe.Pointer(&d.ends[u-1])
					na++
					if u > 1 && uintptr(addrs[na-1])%64 < 4 { // ends[u-2] is in the line before
						addrs[na] = unsafe.Pointer(&d.ends[u-2])
						na++
					}
				}
			}
			prefetch(&addrs, na)
		}
		if k := g - 2; k >= 0 && k < groups { // read group k's end offsets; prefetch its bytes
			lo, hi := span(k)
			c, st, en := &cand[k%3], &start[k%2], &end[k%2]
			na := 0
			for i := range hi - lo {
				u := c[i]
				if u == 0 {
					continue
				}
				st[i], en[i] = 0, d.ends[u-1]
				if u > 1 {
					st[i] = d.ends[u-2]
				}
				if st[i] >= en[i] {
					continue // no bytes; only a corrupt dictionary has an empty id
				}
				first, last := unsafe.Pointer(&d.arena[st[i]]), unsafe.Pointer(&d.arena[en[i]-1])
				addrs[na] = first
				na++
				if uintptr(first)/64 != uintptr(last)/64 {
					addrs[na] = last
					na++
				}
			}
			prefetch(&addrs, na)
		}
		if k := g - 3; k >= 0 { // compare group k
			lo, hi := span(k)
			c, ms, st, en := &cand[k%3], &miss[k%3], &start[k%2], &end[k%2]
			for i, id := range ids[lo:hi] {
				o := lo + i
				if u := c[i]; u != 0 {
					if string(d.arena[st[i]:en[i]]) == id {
						out[o], found[o] = u-1, true
						continue
					}
				} else if ms[i] {
					found[o] = false
					continue
				}
				out[o], found[o] = d.lookupTag(id, tags[o]) // a tag collision (1 in 2^32)
			}
		}
	}
}
