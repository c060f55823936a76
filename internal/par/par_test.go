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

func TestClone(t *testing.T) {
	if Clone([]int(nil), 1) != nil {
		t.Error("Clone(nil) is not nil")
	}
	for _, n := range []int{0, 1, 1000, 100_003} {
		s := make([]*int, n)
		for i := range s {
			s[i] = new(int)
			*s[i] = i
		}
		c := Clone(s, 1024)
		if len(c) != n || n > 0 && &c[0] == &s[0] {
			t.Fatalf("n=%d: len %d, or the same array", n, len(c))
		}
		for i := range c {
			if c[i] != s[i] {
				t.Fatalf("n=%d: element %d differs", n, i)
			}
		}
	}
}
