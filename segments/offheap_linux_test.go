//go:build !race

package segments

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestMmapPopulated checks that mmap returns zeroed, writable memory whose
// pages are all resident already.
func TestMmapPopulated(t *testing.T) {
	const size = 3*populatePiece + 12345
	b, err := mmap(size)
	if err != nil {
		t.Fatal(err)
	}
	defer munmap(b)
	if len(b) != size {
		t.Fatalf("mapped %d bytes, want %d", len(b), size)
	}
	pages := (size + unix.Getpagesize() - 1) / unix.Getpagesize()
	vec := make([]byte, pages)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	for i, v := range vec {
		if v&1 == 0 {
			t.Fatalf("page %d of %d not resident after mmap", i, pages)
		}
	}
	for i := 0; i < size; i += 4093 {
		if b[i] != 0 {
			t.Fatalf("byte %d is %d, want 0", i, b[i])
		}
		b[i] = 1
	}
}
