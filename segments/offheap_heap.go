//go:build !linux || race

package segments

import "errors"

// offHeap is false where mappings are not used: on systems other than
// Linux (the server's platform; elsewhere the code over the arrays is the
// same, on the heap), and under the race detector, which does not watch
// mapped memory.
const offHeap = false

func mmap(int) ([]byte, error) { return nil, errors.New("segments: no memory mappings here") }

func munmap([]byte) {}

func mmapReserve(int, int) ([]byte, []byte, error) {
	return nil, nil, errors.New("segments: no memory mappings here")
}

func extendReserved([]byte, int, int) ([]byte, error) {
	return nil, errors.New("segments: no memory mappings here")
}

func unmapReserved([]byte, int) {}
