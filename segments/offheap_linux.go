//go:build !race

package segments

import (
	"errors"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

const offHeap = true

// mmap maps size bytes of zeroed memory, backed by transparent huge
// pages where the kernel allows them (MADV_HUGEPAGE: with the common
// "madvise" setting, only mappings that ask get them), with its pages
// faulted in up front, populatePiece at a time (populate).
//
// Huge pages: a dictionary's table is probed at random, one slot per id,
// and with 4 KB pages nearly every probe of a table of hundreds of MB
// also missed the TLB; faulting a 2 MB page in is one fault where 4 KB
// pages took 512 (about 18 µs each on the VMs this was measured on).
//
// Up front: a new table is written all over at once (the growth places
// every slot anew), an array grown in place or by copying is filled as
// the upload goes (the growth asks for no more than it predicts), and
// the kernel faults a range in faster than first touches do. In pieces:
// the kernel holds the process's memory-map lock for reading while it
// faults a range in; MAP_POPULATE faulted a whole mapping of hundreds of
// MB under one hold, and when the Go runtime mapped more heap meanwhile
// (it does so holding its heap lock) it waited for the whole of it, and
// so did every goroutine that allocated: bids stalled for 0.2-0.9 s
// during an upload (bench/upload-under-load.sh, BENCHMARKS.md §2). A
// piece holds it for a few milliseconds where free huge pages (or small
// ones) are at hand; on a host whose memory is fragmented or short, the
// kernel may compact or reclaim while it faults a piece in (the
// transparent_hugepage "defrag" setting decides), and a piece can hold it
// longer.
//
// The unused tail of a grown array is resident too until the array is
// dropped: up to an eighth of an arena or ends grown in place (plus the
// rest of its last 2 MB), up to a third of one grown by copying.
func mmap(size int) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return nil, err
	}
	unix.Madvise(b, unix.MADV_HUGEPAGE) //nolint:errcheck // a hint
	populate(b)
	return b, nil
}

// populatePiece is how much of a mapping one call faults in: one huge
// page, or 512 small ones. A goroutine keeps its processor (P) through a
// system call until Go's monitor thread takes it back, up to 10 ms
// later, and meanwhile a decision readied on that P, or a timer on it,
// waits. A 4 MB piece took 2.5-10 ms on this project's VMs; in 2 MB
// pieces the largest stalls of decisions during an upload were gone
// (BENCHMARKS.md §2, twelfth session).
const populatePiece = 2 << 20

// populate faults b's pages in, populatePiece at a time
// (MADV_POPULATE_WRITE, Linux 5.14 and later; on older kernels, which
// reject it, by writing to each page, one fault each). On any other
// error (out of memory, above all) it stops: the pages left fault in
// when first touched, as without populating.
func populate(b []byte) {
	for off := 0; off < len(b); off += populatePiece {
		err := unix.Madvise(b[off:min(off+populatePiece, len(b))], unix.MADV_POPULATE_WRITE)
		if errors.Is(err, unix.EINVAL) {
			for i := off; i < len(b); i += 4096 {
				b[i] = 0
			}
			return
		}
		if err != nil {
			return
		}
	}
}

// munmap returns b's memory in two steps. Unmapping takes the process's
// memory-map lock for writing, and while it frees hundreds of MB of pages
// every page fault of every thread waits for it (decisions stalled for
// tens of ms in BenchmarkDecideDuringUpload); MADV_DONTNEED frees the
// pages under the lock held for reading, so the unmapping after it only
// removes an empty mapping.
func munmap(b []byte) {
	unix.Madvise(b, unix.MADV_DONTNEED) //nolint:errcheck // the munmap below frees them anyway
	unix.Munmap(b)                      //nolint:errcheck // nothing to do about it in a cleanup
}

// hugePage is the size of a transparent huge page on x86-64 and arm64
// with 4 KB pages.
const hugePage = 2 << 20

// mmapReserve reserves most bytes (at least size) of address space,
// aligned to a huge page, inaccessible and not committed memory
// (PROT_NONE, MAP_NORESERVE: only what is made usable counts, even under
// strict overcommit), and makes its first size bytes usable
// (extendReserved). Reserving costs the kernel a few hundred
// bytes, whatever the size.
func mmapReserve(size, most int) (reserved, usable []byte, err error) {
	if limited() {
		// Under a limit on the address space (ulimit -v), 20 GB of
		// reservations per dictionary would leave the Go heap too little
		// room: reserve for 4 times the array, then copy as before.
		most = min(most, 4*size)
	}
	most = roundUp(max(size, most), hugePage)
	// unix.Munmap only unmaps whole mappings unix.Mmap made, hence the
	// pointer calls.
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(most+hugePage), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
	if err != nil {
		return nil, nil, err
	}
	all := unsafe.Slice((*byte)(p), most+hugePage)
	// Trim to a huge-page boundary at both ends, so that every 2 MB of
	// the array can be one huge page.
	head := roundUp(int(uintptr(p)), hugePage) - int(uintptr(p))
	if head > 0 {
		unix.MunmapPtr(p, uintptr(head)) //nolint:errcheck // a few unused pages of address space
	}
	if tail := all[head+most:]; len(tail) > 0 {
		unix.MunmapPtr(unsafe.Pointer(&tail[0]), uintptr(len(tail))) //nolint:errcheck // as above
	}
	reserved = all[head : head+most : head+most]
	unix.Madvise(reserved, unix.MADV_HUGEPAGE) //nolint:errcheck // a hint
	usable, err = extendReserved(reserved, 0, size)
	if err != nil {
		unmapReserved(reserved, 0)
		return nil, nil, err
	}
	return reserved, usable, nil
}

// extendReserved makes reserved[:size] usable, of which the first used
// bytes are already: it makes the rest read-write, in whole huge pages
// (so that it can be backed by them), and faults it in (populate). It
// returns the usable bytes, size or more.
func extendReserved(reserved []byte, used, size int) ([]byte, error) {
	size = min(roundUp(size, hugePage), len(reserved))
	if size <= used {
		return reserved[:used], nil
	}
	if err := unix.Mprotect(reserved[used:size], unix.PROT_READ|unix.PROT_WRITE); err != nil {
		return nil, err
	}
	populate(reserved[used:size])
	return reserved[:size], nil
}

// unmapReserved returns a reservation's memory, of which the first used
// bytes were usable, as munmap does.
func unmapReserved(reserved []byte, used int) {
	unix.Madvise(reserved[:used], unix.MADV_DONTNEED)                    //nolint:errcheck // the munmap below frees them anyway
	unix.MunmapPtr(unsafe.Pointer(&reserved[0]), uintptr(len(reserved))) //nolint:errcheck // nothing to do about it in a cleanup
}

// limited reports whether the process's address space is limited
// (RLIMIT_AS).
var limited = sync.OnceValue(func() bool {
	var l unix.Rlimit
	return unix.Getrlimit(unix.RLIMIT_AS, &l) == nil && l.Cur != unix.RLIM_INFINITY
})

func roundUp(n, to int) int { return (n + to - 1) / to * to }
