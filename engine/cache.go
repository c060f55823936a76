package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/personad/personad/internal/arena"
	"github.com/personad/personad/internal/par"
	"github.com/personad/personad/rules"
)

// CompilerConfig configures a Compiler. Start from DefaultCompilerConfig.
type CompilerConfig struct {
	// CacheSize is the number of compiled campaigns kept for reuse; 0
	// turns the cache off (the compiled rules are identical either way).
	CacheSize int64
}

// DefaultCompilerConfig caches 256Ki compiled campaigns: a few rule sets'
// worth of the largest expected ones.
func DefaultCompilerConfig() CompilerConfig {
	return CompilerConfig{CacheSize: 1 << 18}
}

// Compiler compiles rule sets, caching each compiled campaign by its
// content digest so that the next compilation reuses every campaign that
// did not change. The cache is lossy (ristretto may drop or evict an
// entry); a miss only costs a recompilation. A Compiler is safe for
// concurrent use; Close it to stop the cache's goroutines.
type Compiler struct {
	cache *ristretto.Cache[uint64, *unit]
	// last is the last rule set compiled, for the next compilation to
	// patch. Exact, not a cache: any compiled set is a valid base.
	last atomic.Pointer[linked]

	// seen is the campaigns hashed last, for the next hashing to skip
	// the unchanged ones; seenMu guards it.
	seenMu sync.Mutex
	seen   seen
}

// NewCompiler returns a Compiler with cfg's cache.
func NewCompiler(cfg CompilerConfig) (*Compiler, error) {
	if cfg.CacheSize < 0 {
		return nil, errors.New("engine: CompilerConfig.CacheSize must be >= 0")
	}
	c := &Compiler{}
	if cfg.CacheSize == 0 {
		return c, nil
	}
	cache, err := ristretto.NewCache(&ristretto.Config[uint64, *unit]{
		NumCounters:        cfg.CacheSize * 10,
		MaxCost:            cfg.CacheSize,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("engine: compile cache: %w", err)
	}
	c.cache = cache
	return c, nil
}

// Close stops the cache's goroutines. The Compiler must not be used
// afterwards.
func (cc *Compiler) Close() {
	if cc != nil && cc.cache != nil {
		cc.cache.Close()
	}
}

// cacheKey is the first half of the digest; an entry is used only when its
// campaign id and whole digest match too.
func cacheKey(d rules.Digest) uint64 { return binary.LittleEndian.Uint64(d[:8]) }

func (cc *Compiler) lookup(id string, d rules.Digest) *unit {
	if cc == nil || cc.cache == nil {
		return nil
	}
	u, ok := cc.cache.Get(cacheKey(d))
	if !ok || u.digest != d || u.id != id {
		return nil
	}
	return u
}

func (cc *Compiler) store(u *unit) {
	if cc != nil && cc.cache != nil {
		cc.cache.Set(cacheKey(u.digest), u, 1)
	}
}

// wait makes the entries stored so far visible to the next lookup.
func (cc *Compiler) wait() {
	if cc != nil && cc.cache != nil {
		cc.cache.Wait()
	}
}

func (cc *Compiler) previous() *linked {
	if cc == nil {
		return nil
	}
	return cc.last.Load()
}

func (cc *Compiler) remember(l *linked) {
	if cc != nil {
		cc.last.Store(l)
	}
}

// seen is the campaigns the Compiler hashed last, with their digests, so
// that the next compilation hashes only the campaigns that differ from the
// one at the same position. Their memory never changes: each campaign is
// either a structural copy the Compiler owns — every slice and nested
// struct copied (never shared with a rule set passed to Compile, whose
// campaigns callers may edit in place), only the string bytes shared, Go
// strings being immutable — or, from CompileImmutable, the rule set's own
// campaign, which its caller does not modify. So a slice of a new campaign
// that is one of them (same array, same length) holds what was hashed.
type seen struct {
	camps   []rules.Campaign
	digests []rules.Digest
	// borrowed is set when camps is the campaigns of the rule set last
	// given to CompileImmutable, not an array of the Compiler's own: the
	// next Compile, which writes its copies into camps, makes one first.
	borrowed bool
}

// digests returns rs's campaign digests, as rs.Digests does, reusing the
// digest of every campaign structurally equal to the one at the same
// position last time, and remembers rs's campaigns for the next call. A
// concurrent compilation hashes everything rather than wait.
func (cc *Compiler) digests(rs *rules.RuleSet, immutable bool) []rules.Digest {
	h := cc.startHashing(rs, immutable)
	if h == nil {
		d, _ := rs.Digests()
		return d
	}
	defer h.done()
	par.For(len(rs.Campaigns), 512, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			h.at(i)
		}
	})
	return h.digests
}

// hashing is one pass of a Compiler's hashing over a rule set: at(i)
// hashes campaign i, or reuses last time's digest, and may be called for
// different i at once; done ends the pass once at has been called for
// every campaign. The Compiler's seen is locked from start to done.
type hashing struct {
	cc      *Compiler
	rs      *rules.RuleSet
	prev    []rules.Campaign
	digests []rules.Digest
	// immutable is set when rs is from CompileImmutable: seen then
	// borrows rs.Campaigns itself, nothing copied (at 100,000 campaigns,
	// 32 MB of pointers fewer for each collection to scan). Else the
	// copies are cut from an arena per span of campaigns, as compile's
	// units are.
	immutable bool
	// fresh is set when seen.camps is a new array, into which every
	// campaign is copied, the unchanged ones from prev.
	fresh  bool
	arenas []span[copyArena]
}

// startHashing starts a pass, or returns nil when cc is nil or another
// compilation is hashing (the caller then hashes everything itself).
func (cc *Compiler) startHashing(rs *rules.RuleSet, immutable bool) *hashing {
	if cc == nil || !cc.seenMu.TryLock() {
		return nil
	}
	n := len(rs.Campaigns)
	h := &hashing{cc: cc, rs: rs, prev: cc.seen.camps, digests: make([]rules.Digest, n), immutable: immutable}
	if !immutable {
		h.arenas = spans[copyArena](n)
		if len(h.prev) != n || cc.seen.borrowed {
			cc.seen.camps, h.fresh = make([]rules.Campaign, n), true
		}
	}
	return h
}

// at sets h.digests[i].
func (h *hashing) at(i int) {
	s := &h.cc.seen
	c := &h.rs.Campaigns[i]
	switch {
	case i < len(h.prev) && sameCampaign(&h.prev[i], c):
		h.digests[i] = s.digests[i]
		if h.fresh {
			// Else s.camps is h.prev (a copy onto itself would write
			// every campaign's ~340 bytes for nothing), or will be
			// rs.Campaigns (done).
			s.camps[i] = h.prev[i]
		}
	case h.immutable:
		h.digests[i] = c.Digest()
	default:
		h.digests[i] = c.Digest()
		a := &h.arenas[i/arenaSpan]
		a.mu.Lock()
		s.camps[i] = a.arena.copy(c)
		a.mu.Unlock()
	}
}

func (h *hashing) done() {
	s := &h.cc.seen
	s.digests = h.digests // never written after: Rules may share it
	if h.immutable {
		s.camps, s.borrowed = h.rs.Campaigns, true
	} else {
		s.borrowed = false
	}
	h.cc.seenMu.Unlock()
}

func sameString(a, b string) bool {
	return len(a) == len(b) && (unsafe.StringData(a) == unsafe.StringData(b) || a == b)
}

// sameArray reports whether a and b are the same elements of one array
// (or both empty). With a from seen, b then holds what a held when it was
// hashed.
func sameArray[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || unsafe.SliceData(a) == unsafe.SliceData(b))
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	if sameArray(a, b) {
		return true
	}
	for i := range a {
		if !sameString(a[i], b[i]) {
			return false
		}
	}
	return true
}

func sameClauses(a, b []rules.Clause) bool {
	if len(a) != len(b) {
		return false
	}
	if sameArray(a, b) {
		return true
	}
	for i := range a {
		if !sameString(a[i].Facet, b[i].Facet) || !sameStrings(a[i].Any, b[i].Any) {
			return false
		}
	}
	return true
}

func sameFloat(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

// sameCampaign reports whether a and b have the same content: every field
// rules.(*Campaign).Digest encodes, compared as it encodes it (floats by their
// bits). TestCompileInPlaceEdits fails when a field is missed. a is from
// seen: a slice or Priority of b that is a's own (the same memory) holds
// the same values, and is not read (TestCompileImmutableShared).
func sameCampaign(a, b *rules.Campaign) bool {
	if !sameString(a.ID, b.ID) || !sameString(a.Advertiser, b.Advertiser) || !sameStrings(a.Adomain, b.Adomain) ||
		!sameString(a.Status, b.Status) || !sameString(a.Start, b.Start) || !sameString(a.End, b.End) ||
		(a.Priority == nil) != (b.Priority == nil) || (a.Priority != b.Priority && *a.Priority != *b.Priority) ||
		!sameFloat(a.BidCPM, b.BidCPM) || !sameString(a.Currency, b.Currency) ||
		!sameFloat(a.Budget.Daily, b.Budget.Daily) || !sameFloat(a.Budget.Total, b.Budget.Total) ||
		!sameString(a.Pacing, b.Pacing) ||
		a.FrequencyCap.Max != b.FrequencyCap.Max || !sameString(a.FrequencyCap.Window, b.FrequencyCap.Window) ||
		!sameStrings(a.Cat, b.Cat) ||
		!sameClauses(a.Targeting.All, b.Targeting.All) || !sameClauses(a.Targeting.None, b.Targeting.None) ||
		!sameStrings(a.Targeting.Channels, b.Targeting.Channels) ||
		len(a.Creatives) != len(b.Creatives) {
		return false
	}
	if sameArray(a.Creatives, b.Creatives) {
		return true
	}
	for i := range a.Creatives {
		x, y := &a.Creatives[i], &b.Creatives[i]
		if !sameString(x.ID, y.ID) || x.W != y.W || x.H != y.H ||
			!sameStrings(x.Channels, y.Channels) || !sameStrings(x.Cat, y.Cat) ||
			!sameClauses(x.Persona, y.Persona) || !sameString(x.Adm, y.Adm) {
			return false
		}
	}
	return true
}

// copyArena is the backing arrays seen's copies are cut from, as
// unitArena is units': each array holds up to about unitBatch copies' worth,
// shared by copies made one after another, a few allocations for them
// all instead of four per campaign. A copy keeps the arrays it was cut
// from alive, with the others' copies in them, until they are all
// replaced: seen holds at worst about unitBatch times the memory of its
// campaigns' structure (of a span's mean campaign: more for a small one
// in a span of large ones, see unitArena), when every campaign but one
// in each array has changed since it was hashed. An arena is for one
// goroutine at a time.
type copyArena struct {
	strs      []string
	clauses   []rules.Clause
	creatives []rules.Creative
	prios     []int32
	// sum is the size of the n copies made so far, for batchOf.
	sum copySize
	n   int
}

// copySize counts what a copy takes from a copyArena.
type copySize struct{ strs, clauses, creatives, prios int }

func (s *copySize) add(t copySize) {
	s.strs += t.strs
	s.clauses += t.clauses
	s.creatives += t.creatives
	s.prios += t.prios
}

// reserve makes room for a copy of size s, replacing each array with too
// little room left (as unitArena.reserve).
func (a *copyArena) reserve(s copySize) {
	a.sum.add(s)
	a.n++
	batch := func(sum int) int { return batchOf(sum, a.n) }
	arena.Refill(&a.strs, s.strs, batch(a.sum.strs))
	arena.Refill(&a.clauses, s.clauses, batch(a.sum.clauses))
	arena.Refill(&a.creatives, s.creatives, batch(a.sum.creatives))
	arena.Refill(&a.prios, s.prios, batch(a.sum.prios))
}

// copy copies c's structure, sharing only string bytes.
func (a *copyArena) copy(c *rules.Campaign) rules.Campaign {
	s := copySize{
		strs:      len(c.Adomain) + len(c.Cat) + len(c.Targeting.Channels),
		clauses:   len(c.Targeting.All) + len(c.Targeting.None),
		creatives: len(c.Creatives),
	}
	if c.Priority != nil {
		s.prios = 1
	}
	countClauses := func(cs []rules.Clause) {
		for _, cl := range cs {
			s.strs += len(cl.Any)
		}
	}
	countClauses(c.Targeting.All)
	countClauses(c.Targeting.None)
	for i := range c.Creatives {
		cr := &c.Creatives[i]
		s.strs += len(cr.Channels) + len(cr.Cat)
		s.clauses += len(cr.Persona)
		countClauses(cr.Persona)
	}
	a.reserve(s)
	// Empty stays empty and nil stays nil: the encoding does not tell them
	// apart, but a copy that does not either is simplest to trust.
	ss := func(src []string) []string {
		if src == nil {
			return nil
		}
		dst := arena.Cut(&a.strs, len(src))
		copy(dst, src)
		return dst
	}
	cs := func(src []rules.Clause) []rules.Clause {
		if src == nil {
			return nil
		}
		dst := arena.Cut(&a.clauses, len(src))
		for i, cl := range src {
			dst[i] = rules.Clause{Facet: cl.Facet, Any: ss(cl.Any)}
		}
		return dst
	}
	out := *c
	if c.Priority != nil {
		p := arena.Cut(&a.prios, 1)
		p[0] = *c.Priority
		out.Priority = &p[0]
	}
	out.Adomain = ss(c.Adomain)
	out.Cat = ss(c.Cat)
	out.Targeting = rules.Targeting{All: cs(c.Targeting.All), None: cs(c.Targeting.None), Channels: ss(c.Targeting.Channels)}
	if c.Creatives != nil {
		out.Creatives = arena.Cut(&a.creatives, len(c.Creatives))
		for i := range c.Creatives {
			cr := &c.Creatives[i]
			out.Creatives[i] = rules.Creative{
				ID: cr.ID, W: cr.W, H: cr.H, Adm: cr.Adm,
				Channels: ss(cr.Channels), Cat: ss(cr.Cat), Persona: cs(cr.Persona),
			}
		}
	}
	return out
}
