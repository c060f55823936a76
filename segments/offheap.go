package segments

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// The user dictionary's three arrays (id bytes, end offsets, hash table)
// hold no pointers and are most of a large store's memory: ~25 B of the
// ~26 B a 10M-user dictionary costs per user. Above minMapped bytes they
// live outside the Go heap, in anonymous memory mappings, so that they do
// not count towards the collector's heap goal: an upload that grows the
// dictionary by hundreds of megabytes then does not, by itself, start a
// collection of the whole heap. On a small machine such a collection takes
// a processor from decisions for tens of milliseconds (BENCHMARKS.md §2).
//
// A mapping is unmapped by a cleanup (runtime.AddCleanup) once nothing
// refers to it: every Dict holds the mappings behind its slices (Dict.mem)
// and every view of it copies them, so a published Dict's memory stays
// mapped while any reader holds the Dict. Memory replaced by growth is
// returned at the first collection after its last view is dropped, and
// since the growth itself no longer starts collections, that may be a
// while (Go collects at least every two minutes). Growth replaces
// tables, and the arena and the ends only where they cannot grow in
// place (growInPlace): growing by half at a time, the replaced tables add
// up to about twice the live one, so the mappings peak at about twice
// the dictionary during and after a large upload. Slices and strings
// taken from a Dict (Dict.ID, a commit's log record, dictWriter.pub) are
// valid while something holds the Dict or its mapping (runtime.KeepAlive
// in Store.Commit, dictWriter.pubMem).
//
// Race-detector builds, and builds for other systems than Linux, keep
// everything on the heap (offheap_heap.go): the detector does not watch
// mapped memory, and the code over the arrays is the same either way.

// minMapped is the smallest array, in bytes, given a mapping of its own.
const minMapped = 1 << 20

// mapping is one anonymous memory mapping. A growable one (for the arena
// and the ends, which only ever grow at their end) reserves address space
// for the largest array of its kind and makes only its first bytes usable,
// so that the array grows in place (growInPlace): nothing is copied, the
// views readers hold stay where they are, and only the new part is faulted
// in. The table cannot grow so: a larger table places every slot anew.
type mapping struct{ *region }

// region is a mapping's memory, apart from the mapping so that its cleanup
// can reach it.
type region struct {
	b        []byte // the usable bytes: read-write and faulted in
	reserved []byte // the whole reserved range (nil: b is all of it)
	// given is the capacity, in bytes, of the longest slice handed out
	// over b: the one slice that may grow in place (growInPlace). A Dict
	// handed to another writer (two stores serving one snapshot, an older
	// snapshot published again) has shorter slices, and copies instead.
	given atomic.Int64
}

// mappedBytes is the memory held in mappings, for tests and metrics.
var mappedBytes atomic.Int64

// MappedBytes is the memory the user dictionaries of this process hold
// outside the Go heap, in bytes: the live dictionaries' arrays, and the
// tables (and arrays that could not grow in place) growth replaced that
// await the next collection.
func MappedBytes() int64 { return mappedBytes.Load() }

// alloc returns a zeroed slice of n elements, and the mapping it lives
// in, or nil when it is on the Go heap.
func alloc[T byte | uint32 | uint64](n int) ([]T, *mapping) {
	size := n * int(unsafe.Sizeof(T(0)))
	if size < minMapped || !offHeap {
		return make([]T, n), nil
	}
	b, err := mmap(size)
	if err != nil {
		// Out of address space or mappings: the heap may still have room.
		return make([]T, n), nil
	}
	return mapped[T](&region{b: b}, n)
}

// allocGrowable is alloc for an array that may grow in place, up to most
// elements: its mapping reserves the address space for them.
func allocGrowable[T byte | uint32](n, most int) ([]T, *mapping) {
	size := n * int(unsafe.Sizeof(T(0)))
	if size < minMapped || !offHeap {
		return make([]T, n), nil
	}
	reserved, b, err := mmapReserve(size, most*int(unsafe.Sizeof(T(0))))
	if err != nil {
		return alloc[T](n) // no address space for it: a fixed mapping
	}
	r := &region{b: b, reserved: reserved}
	r.given.Store(int64(size))
	return mapped[T](r, n)
}

// mapped returns r's first n elements, with a new mapping of r that
// returns its memory once unreachable.
func mapped[T byte | uint32 | uint64](r *region, n int) ([]T, *mapping) {
	m := &mapping{r}
	mappedBytes.Add(int64(len(r.b)))
	runtime.AddCleanup(m, func(r *region) {
		mappedBytes.Add(-int64(len(r.b)))
		if r.reserved != nil {
			unmapReserved(r.reserved, len(r.b))
		} else {
			munmap(r.b)
		}
	}, r)
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(r.b))), n), m
}

// growInPlace returns s with a capacity of n elements, in the same
// memory, when s starts its mapping m, m reserved room for them
// (allocGrowable), and s is the longest slice handed out over m (its
// capacity is m's given); else it returns false. The elements past len(s)
// are zero, or were written past len(s) before, as in append's spare
// room. Views of s, shorter, are unaffected. Of writers holding equally
// long slices (two stores serving one built snapshot), the first to grow
// takes the mapping; the others' slices are then shorter than given.
func growInPlace[T byte | uint32](s []T, m *mapping, n int) ([]T, bool) {
	elem := int(unsafe.Sizeof(T(0)))
	size, have := n*elem, cap(s)*elem
	if m == nil || m.reserved == nil || size > len(m.reserved) || size <= have ||
		unsafe.Pointer(unsafe.SliceData(s)) != unsafe.Pointer(unsafe.SliceData(m.reserved)) ||
		!m.given.CompareAndSwap(int64(have), int64(size)) {
		return s, false
	}
	// s's holder is now m's only writer.
	if size > len(m.b) {
		b, err := extendReserved(m.reserved, len(m.b), size)
		if err != nil {
			m.given.CompareAndSwap(int64(size), int64(have))
			return s, false
		}
		mappedBytes.Add(int64(len(b) - len(m.b)))
		m.b = b
	}
	return unsafe.Slice(unsafe.SliceData(s), n)[:len(s)], true
}

// copyPieces is copy, a megabyte at a time. The runtime's memmove cannot
// be preempted: one copy of a grown array (hundreds of MB, tens of ms)
// would keep its processor from the scheduler throughout, and hold up a
// stop-the-world of the collector, which waits for every processor with
// every other goroutine (the decisions) already stopped.
func copyPieces[T byte | uint32 | uint64](dst, src []T) int {
	n := min(len(dst), len(src))
	piece := (1 << 20) / int(unsafe.Sizeof(T(0)))
	for i := 0; i < n; i += piece {
		copy(dst[i:n], src[i:min(i+piece, n)])
	}
	return n
}
