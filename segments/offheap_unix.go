//go:build unix && !race

package segments

import "golang.org/x/sys/unix"

const offHeap = true

func mmap(size int) ([]byte, error) {
	return unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
}

func munmap(b []byte) { unix.Munmap(b) } //nolint:errcheck // nothing to do about it in a cleanup
