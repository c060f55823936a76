//go:build !race

package segments

import (
	"runtime"
	"testing"
	"time"
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

// resident reports whether every page of b is in memory (mincore).
func resident(t *testing.T, b []byte) bool {
	t.Helper()
	pages := (len(b) + unix.Getpagesize() - 1) / unix.Getpagesize()
	vec := make([]byte, pages)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	for _, v := range vec {
		if v&1 == 0 {
			return false
		}
	}
	return true
}

// TestGrowInPlace: an array from allocGrowable grows in place, its bytes
// and a view of it untouched, the new part zeroed, writable and faulted
// in, up to the most it reserved; other slices and mappings do not; and
// the whole reservation is returned once unreachable.
func TestGrowInPlace(t *testing.T) {
	runtime.GC()
	waitCleanups()
	before := MappedBytes()
	const most = 64 << 20
	func() {
		s, m := allocGrowable[uint32](minMapped, most/4) // 4 MB
		if m == nil || m.reserved == nil {
			t.Fatalf("allocGrowable gave mapping %+v, want a reservation", m)
		}
		for i := range s {
			s[i] = uint32(i)
		}
		view := s[:len(s):len(s)]
		base := &s[0]
		s, ok := growInPlace(s, m, 10<<20/4) // 10 MB
		if !ok || cap(s) != 10<<20/4 || len(s) != minMapped || &s[0] != base {
			t.Fatalf("growInPlace to 10 MB: ok %t, len %d, cap %d, moved %t", ok, len(s), cap(s), &s[0] != base)
		}
		if got := MappedBytes() - before; got != 10<<20 {
			t.Errorf("MappedBytes grew by %d, want %d", got, 10<<20)
		}
		grown := s[:cap(s)]
		if !resident(t, unsafe.Slice((*byte)(unsafe.Pointer(&grown[0])), 4*len(grown))) {
			t.Error("the grown part is not faulted in")
		}
		for i, v := range grown {
			if i < len(view) && (v != uint32(i) || view[i] != uint32(i)) {
				t.Fatalf("element %d is %d (view %d) after growing, want %d", i, v, view[i], i)
			}
			if i >= len(view) && v != 0 {
				t.Fatalf("new element %d is %d, want 0", i, v)
			}
		}
		grown[len(grown)-1] = 7
		if _, ok := growInPlace(s, m, most/4+1); ok {
			t.Error("grew past the reservation")
		}
		if _, ok := growInPlace(s[1:], m, 11<<20/4); ok {
			t.Error("grew a slice that does not start the mapping")
		}
		f, fm := alloc[uint32](minMapped)
		if _, ok := growInPlace(f, fm, 2*minMapped); ok {
			t.Error("grew a fixed mapping")
		}
		runtime.KeepAlive(m)
		runtime.KeepAlive(fm)
	}()
	for deadline := time.Now().Add(5 * time.Second); MappedBytes() > before && time.Now().Before(deadline); {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if left := MappedBytes() - before; left > 0 {
		t.Errorf("%d bytes still mapped 5 s after the arrays were dropped", left)
	}
}
