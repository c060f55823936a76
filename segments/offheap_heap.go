//go:build !unix || race

package segments

import "errors"

// offHeap is false where mappings are not used: on systems without mmap,
// and under the race detector, which does not watch mapped memory.
const offHeap = false

func mmap(int) ([]byte, error) { return nil, errors.New("segments: no memory mappings here") }

func munmap([]byte) {}
