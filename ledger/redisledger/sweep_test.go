package redisledger

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// TestSweepDoesNotStallAllow: the sweep of a full cache (a million
// entries, MaxCached's default) does not hold the lock that Allow, in
// the decision, and Warm take for the whole of it. It held it for the
// whole walk, 65 ms on a two-core machine (more under -race) every 15 s,
// in which every decision that asked about a capped campaign waited.
// The test needs no Redis: Allow answers from the cache.
func TestSweepDoesNotStallAllow(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: fills a cache of a million entries")
	}
	c := &Client{opts: DefaultOptions(), cache: map[cacheKey]*cached{}, fetch: make(chan fetchReq, 1)}
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = "sweep-" + strconv.Itoa(i)
	}
	for u := range 1 << 20 {
		c.cache[cacheKey{ids[u%len(ids)], uint64(u) + 1}] = &cached{}
	}
	now := time.Now().UnixNano()
	var stop atomic.Bool
	var longest atomic.Int64
	started := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; !stop.Load(); i++ {
			t0 := time.Now()
			c.Allow(ids[0], 1, 0, 3, time.Hour, now)
			if d := int64(time.Since(t0)); d > longest.Load() {
				longest.Store(d)
			}
			if i == 0 {
				close(started)
			}
		}
	}()
	<-started // Allow is looping
	t0 := time.Now()
	c.sweep()
	sweep := time.Since(t0)
	stop.Store(true)
	<-done
	if w := time.Duration(longest.Load()); w > sweep/4 {
		t.Errorf("an Allow waited %v during a sweep of %d entries that took %v: the sweep holds the lock for most of its walk", w, len(c.cache), sweep)
	}
}
