//go:build unix && !race

package segments

import "golang.org/x/sys/unix"

const offHeap = true

func mmap(size int) ([]byte, error) {
	return unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
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
