package par

import (
	"sync/atomic"
	"testing"
)

// TestFor: every index is visited exactly once, in chunks of at most the
// size asked, whatever the sizes.
func TestFor(t *testing.T) {
	for _, n := range []int{0, 1, 7, 1000, 1025, 100_000} {
		for _, chunk := range []int{0, 1, 3, 1024, 1 << 20} {
			seen := make([]atomic.Int32, n)
			For(n, chunk, func(lo, hi int) {
				if lo < 0 || hi > n || lo >= hi || (chunk > 0 && hi-lo > chunk && hi-lo != n) {
					t.Errorf("n=%d chunk=%d: bad range [%d, %d)", n, chunk, lo, hi)
				}
				for i := lo; i < hi; i++ {
					seen[i].Add(1)
				}
			})
			for i := range seen {
				if got := seen[i].Load(); got != 1 {
					t.Fatalf("n=%d chunk=%d: index %d visited %d times", n, chunk, i, got)
				}
			}
		}
	}
}
