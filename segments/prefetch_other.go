//go:build !amd64

package segments

import "unsafe"

// prefetch loads one byte at each of addrs[:n]. Go has no prefetch
// instruction outside the runtime, and this package has one in assembly
// for amd64 only (prefetch_amd64.s): here the loads start the misses
// together, but each holds up the CPU until its line arrives.
func prefetch(addrs *[2 * lookupGroup]unsafe.Pointer, n int) {
	var sink uint64
	for _, p := range addrs[:n] {
		sink += uint64(*(*byte)(p))
	}
	keep(sink)
}

// keep consumes a value, so that the compiler cannot drop the loads that
// computed it: they are made only to bring memory into the cache.
//
//go:noinline
func keep(uint64) {}
