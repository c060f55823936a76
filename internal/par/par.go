// Package par runs loops over index ranges on every CPU.
package par

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// For calls f over [0, n) split into consecutive chunks of at most chunk
// indexes, on up to GOMAXPROCS goroutines that take the next chunk when
// they finish one, and returns when every call has. With one chunk or
// one CPU it calls f(0, n) on the caller's goroutine.
func For(n, chunk int, f func(lo, hi int)) {
	if n <= 0 {
		return
	}
	chunk = max(chunk, 1)
	workers := min(runtime.GOMAXPROCS(0), (n+chunk-1)/chunk)
	if workers <= 1 {
		f(0, n)
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				lo := int(next.Add(int64(chunk))) - chunk
				if lo >= n {
					return
				}
				f(lo, min(lo+chunk, n))
			}
		})
	}
	wg.Wait()
}

// Clone returns a copy of s, copied on every CPU in pieces of at most
// chunk elements: for a large slice of large elements (a rule set's
// compiled campaigns), where one CPU's copy is bound by the time it
// waits for memory.
func Clone[S ~[]E, E any](s S, chunk int) S {
	if s == nil {
		return nil
	}
	c := make(S, len(s))
	For(len(s), chunk, func(lo, hi int) { copy(c[lo:hi], s[lo:hi]) })
	return c
}
