package ledger

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// The frequency table counts impressions per (user, campaign) within the
// campaign's window. It is exact state, never a lossy cache: every error
// it makes is on the side of capping.
//
// Design: lock-striped shards, each a Go map from (user, campaign) to a
// fixed array of freqSlots (expiry second, count). Lock striping keeps the
// read path short (one uncontended mutex, one map probe, eight compares)
// and allocation-free; a lock-free structure would need either pointer
// entries (an allocation per new pair) or fixed open addressing sized for
// the worst case up front. Each slot holds impressions that leave the
// window at one second:
//
//   - caps up to freqSlots impressions keep one slot per impression, its
//     expiry rounded up to the next second: an exact sliding window;
//   - larger caps bucket impressions by expiry into windows of ceil(W/7)
//     seconds, rounded up, so at most 8 buckets are live.
//
// When no slot is free an impression merges into the latest-expiring slot,
// raising its expiry. Rounding and merging only ever make an impression
// expire later, so the count is never below the truth. Entries whose slots
// have all expired are swept incrementally by Tick; MaxFrequencyEntries
// bounds memory, and when the table is full a new pair is refused rather
// than let an unseen user through.
const freqSlots = 8

type freqKey struct {
	user uint64
	camp uint32
}

type freqEntry struct {
	exp [freqSlots]uint32 // unix seconds at which the slot's impressions leave the window
	n   [freqSlots]uint16
}

type freqShard struct {
	mu sync.Mutex
	m  map[freqKey]freqEntry
	_  cacheLine
}

type freqTable struct {
	shards   []freqShard
	mask     uint64
	max      int64
	entries  atomic.Int64
	refused  atomic.Int64
	sweepPos int // next shard to sweep; only Tick touches it
}

func (t *freqTable) init(shards, maxEntries int) {
	t.shards = make([]freqShard, shards)
	for i := range t.shards {
		t.shards[i].m = map[freqKey]freqEntry{}
	}
	t.mask = uint64(shards - 1)
	t.max = int64(maxEntries)
}

func (t *freqTable) shard(k freqKey) *freqShard {
	return &t.shards[splitmix64(k.user^uint64(k.camp)<<40^uint64(k.camp))&t.mask]
}

func secondsUp(ns int64) uint32 { return uint32((ns + int64(time.Second) - 1) / int64(time.Second)) }

func (e *freqEntry) count(nowSec uint32) int32 {
	var n int32
	for i := range e.exp {
		if e.exp[i] > nowSec {
			n += int32(e.n[i])
		}
	}
	return n
}

func (e *freqEntry) live(nowSec uint32) bool {
	for i := range e.exp {
		if e.n[i] > 0 && e.exp[i] > nowSec {
			return true
		}
	}
	return false
}

// expiryFor is the expiry second an impression at now gets under cap.
func expiryFor(now int64, max int32, window time.Duration) uint32 {
	exp := secondsUp(now + int64(window))
	if max <= freqSlots {
		return exp
	}
	w := uint32((window + time.Second - 1) / time.Second)
	width := (w + 6) / 7
	if width == 0 {
		width = 1
	}
	return (exp + width - 1) / width * width
}

// add records one impression expiring at exp; it returns the expiry of
// the slot that holds it (exp or later).
func (e *freqEntry) add(nowSec, exp uint32) uint32 {
	free, latest := -1, 0
	for i := range e.exp {
		if e.n[i] > 0 && e.exp[i] == exp && e.n[i] < 1<<16-1 {
			e.n[i]++
			return exp
		}
		if free < 0 && (e.n[i] == 0 || e.exp[i] <= nowSec) {
			free = i
		}
		if e.exp[i] > e.exp[latest] {
			latest = i
		}
	}
	if free >= 0 {
		e.exp[free], e.n[free] = exp, 1
		return exp
	}
	i := latest
	e.exp[i] = max(e.exp[i], exp)
	if e.n[i] < 1<<16-1 {
		e.n[i]++
	}
	return e.exp[i]
}

// remove takes back one impression recorded with expiry exp: from the
// earliest slot at or after exp (merges only move expiries later).
func (e *freqEntry) remove(exp uint32) {
	best := -1
	for i := range e.exp {
		if e.n[i] > 0 && e.exp[i] >= exp && (best < 0 || e.exp[i] < e.exp[best]) {
			best = i
		}
	}
	if best >= 0 {
		e.n[best]--
	}
}

// FrequencyOK reports whether user may see one more impression of c at
// now: fewer than the cap within the window, counted across all channels
// (and across nodes when a FrequencyShare is configured, whose counts
// only ever add). A campaign with no cap always passes; a capped campaign
// refuses user 0 (unknown user: it cannot be counted). It takes one short
// striped lock and does not allocate; a FrequencyShare is asked after
// that lock is released, and answers from what it holds (no I/O: see
// WarmFrequency).
func (l *Ledger) FrequencyOK(c *Campaign, user uint64, now int64) bool {
	lim := c.limits.Load()
	if lim.CapMax <= 0 {
		return true
	}
	if user == 0 {
		return false
	}
	n := l.freq.count(freqKey{user, c.key}, uint32(now/int64(time.Second)))
	if n >= lim.CapMax {
		return false
	}
	if fs := l.cfg.Frequency; fs != nil {
		return fs.Allow(c.id, user, n, lim.CapMax, lim.CapWindow, now)
	}
	return true
}

// WarmFrequency has a FrequencyShare that implements FrequencyWarmer read
// user's shared counts of caps before a decision, so that FrequencyOK
// finds them: it returns when they are read or ctx is done, whichever is
// first (the share bounds the wait further: redisledger's
// Options.FetchWait). The caller passes the capped campaigns the decision
// may ask about (engine.FrequencyCaps: those the request's persona,
// channel and sizes leave), calls it outside the decision, with a
// deadline that leaves the decision its time. Without such a share, for
// user 0, or with no caps it returns at once, and it does not allocate.
// The error is the share's (a timeout, Redis unreachable): FrequencyOK
// then caps a user the share does not know, as before.
func (l *Ledger) WarmFrequency(ctx context.Context, user uint64, caps []FrequencyCap, now int64) error {
	if l.warmer == nil || user == 0 || len(caps) == 0 {
		return nil
	}
	return l.warmer.Warm(ctx, user, caps, now)
}

// WarmsFrequency reports whether WarmFrequency can do anything: a
// FrequencyWarmer is configured. A caller can skip gathering caps and
// building a context for it otherwise.
func (l *Ledger) WarmsFrequency() bool { return l.warmer != nil }

// FrequencyCap returns c's frequency cap as WarmFrequency takes it, and
// whether c has one.
func (c *Campaign) FrequencyCap() (FrequencyCap, bool) {
	lim := c.limits.Load()
	if lim == nil || lim.CapMax <= 0 {
		return FrequencyCap{}, false
	}
	return FrequencyCap{Campaign: c.id, Window: lim.CapWindow}, true
}

// FrequencyCount returns the impressions of c counted for user in the
// window at now.
func (l *Ledger) FrequencyCount(c *Campaign, user uint64, now int64) int32 {
	return l.freq.count(freqKey{user, c.key}, uint32(now/int64(time.Second)))
}

func (t *freqTable) count(k freqKey, nowSec uint32) int32 {
	s := t.shard(k)
	s.mu.Lock()
	e, ok := s.m[k]
	s.mu.Unlock()
	if !ok {
		return 0
	}
	return e.count(nowSec)
}

// reserve counts one impression at now if the cap allows it; the caller
// passes the expiry expiryFor computed.
func (t *freqTable) reserve(k freqKey, now int64, exp uint32, max int32) (uint32, error) {
	nowSec := uint32(now / int64(time.Second))
	s := t.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[k]
	if !ok {
		if t.entries.Load() >= t.max {
			t.refused.Add(1)
			return 0, ErrFrequencyMem
		}
		t.entries.Add(1)
	} else if e.count(nowSec) >= max {
		return 0, ErrFrequency
	}
	got := e.add(nowSec, exp)
	s.m[k] = e
	return got, nil
}

// put records one impression unconditionally (replay, late bills).
func (t *freqTable) put(k freqKey, now int64, exp uint32) {
	nowSec := uint32(now / int64(time.Second))
	s := t.shard(k)
	s.mu.Lock()
	e, ok := s.m[k]
	if !ok {
		t.entries.Add(1)
	}
	e.add(nowSec, exp)
	s.m[k] = e
	s.mu.Unlock()
}

// set stores a whole entry (checkpoint load).
func (t *freqTable) set(k freqKey, e freqEntry) {
	s := t.shard(k)
	s.mu.Lock()
	if _, ok := s.m[k]; !ok {
		t.entries.Add(1)
	}
	s.m[k] = e
	s.mu.Unlock()
}

func (t *freqTable) remove(k freqKey, exp uint32) {
	s := t.shard(k)
	s.mu.Lock()
	if e, ok := s.m[k]; ok {
		e.remove(exp)
		s.m[k] = e
	}
	s.mu.Unlock()
}

// sweep drops expired entries from a sixteenth of the shards.
func (t *freqTable) sweep(now int64) {
	nowSec := uint32(now / int64(time.Second))
	n := max(1, len(t.shards)/16)
	for range n {
		s := &t.shards[t.sweepPos]
		t.sweepPos = (t.sweepPos + 1) % len(t.shards)
		s.mu.Lock()
		for k, e := range s.m {
			if !e.live(nowSec) {
				delete(s.m, k)
				t.entries.Add(-1)
			}
		}
		s.mu.Unlock()
	}
}

// each calls f for every live entry, shard by shard, under the shard lock.
func (t *freqTable) each(nowSec uint32, f func(freqKey, *freqEntry)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if e.live(nowSec) {
				f(k, &e)
			}
		}
		s.mu.Unlock()
	}
}
