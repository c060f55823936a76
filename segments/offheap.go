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
// while (Go collects at least every two minutes): growing by half at a
// time, the replaced arrays add up to about twice the live ones, so the
// mappings peak at about three times the dictionary during and after a
// large upload. Slices and strings taken from a Dict (Dict.ID, a commit's
// log record, dictWriter.pub) are valid while something holds the Dict
// or its mapping (runtime.KeepAlive in Store.Commit, dictWriter.pubMem).
//
// Race-detector builds, and builds for other systems than Linux, keep
// everything on the heap (offheap_heap.go): the detector does not watch
// mapped memory, and the code over the arrays is the same either way.

// minMapped is the smallest array, in bytes, given a mapping of its own.
const minMapped = 1 << 20

// mapping is one anonymous memory mapping.
type mapping struct{ b []byte }

// mappedBytes is the memory held in mappings, for tests and metrics.
var mappedBytes atomic.Int64

// MappedBytes is the memory the user dictionaries of this process hold
// outside the Go heap, in bytes: the live dictionaries' arrays, and the
// arrays growth replaced that await the next collection.
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
	m := &mapping{b: b}
	mappedBytes.Add(int64(len(b)))
	runtime.AddCleanup(m, func(b []byte) {
		munmap(b)
		mappedBytes.Add(-int64(len(b)))
	}, b)
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), n), m
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
