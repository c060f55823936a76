package segments

import "unsafe"

// prefetch asks the CPU to bring the cache lines at addrs[:n] into the
// cache, without waiting for them: a PREFETCHT0 each. Unlike a load, a
// prefetch retires at once, so many can be in flight while the code goes
// on with other work (Dict.lookupBatch).
//
//go:noescape
func prefetch(addrs *[2 * lookupGroup]unsafe.Pointer, n int)
