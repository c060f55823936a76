package redisledger

import (
	"strconv"
	"testing"
)

// TestSweepDoesNotStallAllow: the sweep of the frequency cache does not
// hold the lock that Allow, in the decision, and Warm take for the whole
// of its walk. It held it for the whole walk of a full cache (a million
// entries, MaxCached's default), 65 ms on a two-core machine (more under
// -race) every 15 s, in which every decision that asked about a capped
// campaign waited. It lets go every sweepBatch entries: the test checks
// that at each of those points the lock is free (another can take it),
// rather than timing an Allow against the sweep, which a loaded machine
// made fail (an Allow waited 512 ms of a 1.6 s sweep under -race).
// The test needs no Redis.
func TestSweepDoesNotStallAllow(t *testing.T) {
	c := &Client{opts: DefaultOptions(), cache: map[cacheKey]*cached{}, fetch: make(chan fetchReq, 1)}
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = "sweep-" + strconv.Itoa(i)
	}
	const entries = 64 * sweepBatch
	for u := range entries {
		c.cache[cacheKey{ids[u%len(ids)], uint64(u) + 1}] = &cached{}
	}
	yields, free := 0, 0
	testHookSweepYield = func(hc *Client) {
		yields++
		if hc.mu.TryLock() { // as an Allow would, between two batches
			free++
			hc.mu.Unlock()
		}
	}
	defer func() { testHookSweepYield = nil }()
	c.sweep()
	if yields != entries/sweepBatch || free != yields {
		t.Errorf("a sweep of %d entries let go of the lock %d times, free %d of them; want %d, all free (every %d entries)",
			entries, yields, free, entries/sweepBatch, sweepBatch)
	}
}
