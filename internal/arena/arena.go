// Package arena cuts many small slices from a few shared backing arrays:
// one allocation for the lists of many campaigns, where each list alone
// would be one. The compiler's units and copies (engine) and the
// decoded campaigns of a rules file (rules) are cut this way; each
// caller decides how large the next array is.
//
// A slice cut from an array keeps the whole array alive, and ends at its
// own length: appending to it copies, never writing into its neighbours.
package arena

import "slices"

// Refill makes room for need more elements in *s: when it has less, *s
// becomes a new empty array with room for need, or size if more (or
// what the allocation's size class holds besides). The old array stays
// with the slices cut from it.
func Refill[T any](s *[]T, need, size int) {
	if cap(*s)-len(*s) < need {
		*s = slices.Grow([]T(nil), max(need, size))
	}
}

// Cut returns the next n elements of *s's array, which has room for them
// (see Refill), with no capacity beyond them, and moves *s past them.
func Cut[T any](s *[]T, n int) []T {
	lo := len(*s)
	*s = (*s)[:lo+n]
	return (*s)[lo : lo+n : lo+n]
}
