//go:build !race

package segments

import "golang.org/x/sys/unix"

const offHeap = true

// mmap maps size bytes of zeroed memory, its pages faulted in up front
// (MAP_POPULATE): the kernel does it in one pass, where first touches
// fault one page at a time, and an upload's growth copies into most of
// each new array at once and fills the rest as it goes (the arrays it
// publishes are trimmed to their size, and a table is written all over). It made BenchmarkDecideDuringUpload's upload of 10M new ids
// ~40 % faster on a 2-CPU VM, 2.05 / 2.12 → 2.93 / 2.89 M ids/s. The
// kernel faults the pages in holding the memory-map lock for reading, so
// page faults elsewhere in the process do not wait for it, unless
// something maps or unmaps meanwhile (a cleanup's munmap, the runtime
// growing its heap): that waits for the lock for writing, and on kernels
// before 6.4 (no per-mapping fault locks) faults queue behind it. The
// unused tail of a grown array, up to a third of it, is resident too
// until the array is trimmed or dropped.
func mmap(size int) ([]byte, error) {
	return unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_POPULATE)
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
