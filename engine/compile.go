package engine

import (
	"cmp"
	"iter"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bits-and-blooms/bitset"

	"github.com/personad/personad/internal/arena"
	"github.com/personad/personad/internal/par"
	"github.com/personad/personad/ledger"
	"github.com/personad/personad/rules"
)

// Rules is a compiled, immutable rule set: campaigns in rank order and the
// targeting index over their ordinals. It is safe for concurrent use.
type Rules struct {
	version   string
	compiled  time.Time
	campaigns []Campaign // in rank order: ordinal = index
	digests   []rules.Digest
	stats     CompileStats

	// Terms are the (facet, value) pairs some campaign or creative refers
	// to, numbered grouped by facet so that a sorted persona lists one facet
	// after another.
	terms      []term
	termByFact map[Fact]uint32
	facets     []string // facet id -> name
	// vocab identifies the term table (terms' names and facets,
	// termByFact, facets): Rules patched from others share their vocab,
	// and what is keyed on it (the segment binding, cached personas)
	// stays valid across such a reload.
	vocab *vocab

	// constrained lists the facets some campaign's targeting.all names, each
	// with the campaigns that place no constraint on it.
	constrained []facetIndex
	idx         index

	channels      map[string]int // channel name -> id
	channelByHost map[string]int // site domain -> channel id
	channelByApp  map[string]int // app bundle -> channel id
	channelNames  []string
}

// vocab is an identity: one is allocated per term table.
type vocab struct{ _ byte } // not zero-size: distinct allocations, distinct pointers

type term struct {
	facet uint32
	name  string // "facet:value"
	// accept holds the campaigns whose targeting.all has a clause on this
	// term's facet naming this value; exclude those whose targeting.none
	// names it. Either may be nil.
	accept, exclude *bitset.BitSet
}

type facetIndex struct {
	facet         uint32
	unconstrained *bitset.BitSet
}

// index is the targeting index as dense bitsets over campaign ordinals, all
// of one length, which the decision combines in place without allocating.
type index struct {
	words int // 64-bit words per dense set

	live       *bitset.BitSet          // active and not blocked by house rules
	anyChannel *bitset.BitSet          // campaigns with no channel constraint
	byChannel  []*bitset.BitSet        // channel id -> campaigns listing it
	bySize     map[Size]*bitset.BitSet // campaigns with a creative of that size
}

// Campaign is a compiled campaign. Its exported fields are read-only.
type Campaign struct {
	ID         string
	Advertiser string
	Adomain    []string
	Currency   string
	// BidMicros is the bid, CPM, in micro-units of Currency.
	BidMicros int64
	Priority  int32
	Creatives []Creative
	// Limits are the campaign's budgets, pacing and frequency cap, which
	// the ledger enforces.
	Limits ledger.Limits

	ordinal      uint32
	active       bool
	start, end   int64 // unix nanoseconds, [start, end); open: math.MinInt64, math.MaxInt64
	all, none    [][]uint32
	clauseCount  int  // targeting.all clauses: the tie-breaker after price
	verify       bool // two all-clauses share a facet: the index over-approximates
	channels     []int
	houseBlocked string // why house rules block the campaign, or ""
}

// Creative is a compiled creative. Its exported fields are read-only.
type Creative struct {
	ID  string
	W   int32
	H   int32
	Adm string
	// Cat is the creative's categories (the campaign's when it sets none).
	Cat []string

	channels     []int // empty: every channel of the campaign
	persona      [][]uint32
	houseBlocked string
}

// CompileStats says what one compilation did.
type CompileStats struct {
	Campaigns int
	// Compiled campaigns were compiled from their rules; Reused ones were
	// taken from the Compiler's cache (an identical campaign compiled
	// before).
	Compiled, Reused int
	// Patched says the previous compilation was patched (few campaigns
	// changed) rather than linked afresh.
	Patched bool
	// Took is the whole compilation, validation included.
	Took time.Duration
}

// Compile validates rs and compiles it into Rules, with no cache: every
// campaign is compiled. version names the rule set in decisions and logs;
// empty means rs's content hash (rules.(*RuleSet).Version).
func Compile(rs *rules.RuleSet, version string) (*Rules, error) {
	return (*Compiler)(nil).Compile(rs, version)
}

// Compile validates rs and compiles it into Rules, reusing from the cache
// every campaign whose content (rules.Digest) was compiled before, so that
// a reload changing a few campaigns recompiles only those. When rs is the
// rule set this Compiler compiled last with a few campaigns changed (same
// campaign ids in the same order, same content rules, no term or channel
// appearing or vanishing), the previous Rules are patched: the changed
// campaigns are linked and moved to their new rank, and only the index
// words over the ordinals that moved are rebuilt, copy-on-write. Otherwise
// linking and the index are rebuilt for every campaign. Either way the
// result equals what the package-level Compile returns. A nil Compiler
// compiles without a cache. version is as for the package-level Compile.
func (cc *Compiler) Compile(rs *rules.RuleSet, version string) (*Rules, error) {
	return cc.compile(rs, version, false)
}

// CompileImmutable is Compile for a rule set that is never modified once
// passed — neither rs's campaigns nor any slice, string or Priority in
// them — such as the sets a rules.Parser returns, which share the memory
// of every campaign they reuse from one parse to the next. The Compiler
// then keeps rs's campaigns as they are, not a copy, to compare the next
// rule set with, and a campaign of the next set that shares a slice with
// them is known to hold the same values without reading them: after an
// edit of one campaign in a large file, the others' fields are compared,
// not their contents. Modifying rs afterwards may hide the change from a
// later compilation. The result is what Compile returns.
func (cc *Compiler) CompileImmutable(rs *rules.RuleSet, version string) (*Rules, error) {
	return cc.compile(rs, version, true)
}

func (cc *Compiler) compile(rs *rules.RuleSet, version string, immutable bool) (*Rules, error) {
	start := time.Now()
	n := len(rs.Campaigns)
	var digests []rules.Digest
	content := rs.ContentRules.Digest()
	finish := func(r *Rules, compiled int, patched bool) *Rules {
		if version == "" {
			version = rules.VersionOf(digests, content)
		}
		r.version = version
		r.digests = digests
		r.compiled = time.Now()
		r.stats = CompileStats{
			Campaigns: len(digests),
			Compiled:  compiled,
			Reused:    len(digests) - compiled,
			Took:      r.compiled.Sub(start),
			Patched:   patched,
		}
		return r
	}
	hashed := false
	if prev := cc.previous(); prev != nil && patchable(prev, rs, content) {
		// A patch needs every digest before it starts.
		digests = cc.digests(rs, immutable)
		hashed = true
		if r, l, compiled, ok := cc.patch(prev, rs, digests, content); ok {
			cc.remember(l)
			return finish(r, compiled, true), nil
		}
	}
	// One parallel pass over the campaigns hashes (unless done above),
	// looks up, validates and compiles each in turn while its memory is in
	// cache: three passes over a large set cost about twice as much, each
	// missing the cache on every campaign.
	var h *hashing
	if !hashed {
		if h = cc.startHashing(rs, immutable); h != nil {
			digests = h.digests
		} else {
			digests = make([]rules.Digest, n)
		}
	}
	units := make([]*unit, n)
	fresh := make([]bool, n)
	known := func(i int) bool {
		switch {
		case hashed:
		case h != nil:
			h.at(i)
		default:
			digests[i] = rs.Campaigns[i].Digest()
		}
		units[i] = cc.lookup(rs.Campaigns[i].ID, digests[i])
		return units[i] != nil
	}
	// Units are compiled into an arena per span of campaigns, which is one
	// goroutine's: ValidateThen hands its goroutines chunks of whole spans
	// (par.For chunks of 1024). The lock only keeps that an optimisation:
	// were a span shared, its goroutines would take turns.
	arenas := spans[unitArena](n)
	compile := func(i int) {
		a := &arenas[i/arenaSpan]
		a.mu.Lock()
		units[i] = compileUnit(&rs.Campaigns[i], digests[i], &a.arena)
		a.mu.Unlock()
		fresh[i] = true
	}
	err := rs.ValidateThen(known, compile)
	if h != nil {
		h.done()
	}
	if err != nil {
		return nil, err
	}
	compiled := 0
	for _, f := range fresh {
		if f {
			compiled++
		}
	}
	if cc != nil && cc.cache != nil {
		for i, u := range units {
			if fresh[i] {
				cc.store(u)
			}
		}
		cc.wait()
	}
	r, l := link(units, &rs.ContentRules)
	if cc != nil {
		l.content = content
		cc.remember(l)
	}
	return finish(r, compiled, false), nil
}

// unit is one campaign compiled on its own, independent of every other
// campaign and of the content rules: what the cache keeps and a reload
// reuses when the campaign's content is unchanged. It names facts and
// channels; linking maps them to the rule set's term and channel ids and
// places the campaign in rank order. A unit is immutable once stored.
type unit struct {
	id     string
	digest rules.Digest
	// Campaign's fields but the linked ones (Creatives, ordinal, all,
	// none, channels, houseBlocked), not a Campaign with those left zero:
	// a unit is about a third smaller.
	advertiser, currency string
	adomain              []string
	bidMicros            int64
	priority             int32
	active, verify       bool
	limits               ledger.Limits
	start, end           int64
	clauseCount          int
	creatives            []unitCreative

	facts     []Fact     // distinct facts of the campaign, first-seen order
	all, none [][]uint32 // clauses as indexes into facts
	channels  []string   // targeting.channels
}

// unitCreative is a creative as a unit keeps it: Creative's own fields,
// and its channels and persona unlinked.
type unitCreative struct {
	ID, Adm  string
	W, H     int32
	Cat      []string
	channels []string
	persona  [][]uint32 // clauses as indexes into the unit's facts
}

// flightNanos is a flight bound in unix nanoseconds: open for the zero
// time (no bound), else t clamped to what int64 nanoseconds hold (the
// years 1678 to 2262), so that an end in the year 9999, a planner's
// "forever", does not wrap into the past, and the Unix epoch is a time
// like any other.
func flightNanos(t time.Time, open int64) int64 {
	switch {
	case t.IsZero():
		return open
	case t.Before(minNanos):
		return math.MinInt64
	case t.After(maxNanos):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// minNanos and maxNanos are the earliest and latest times int64 unix
// nanoseconds hold.
var minNanos, maxNanos = time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64)

// compileUnit compiles c into a, which must be used by one goroutine at
// a time.
func compileUnit(c *rules.Campaign, d rules.Digest, a *unitArena) *unit {
	start, end := c.Flight()
	// A unit outlives the rule set it came from, whose slices the caller
	// may edit in place: it keeps copies of them (sharing the strings,
	// which are immutable), cut from the arena's backing arrays, shared
	// with the other units of a batch (see unitArena).
	var size unitSize
	size.creatives = len(c.Creatives)
	size.addStrings(c.Adomain, c.Cat, c.Targeting.Channels)
	size.addClauses(c.Targeting.All)
	size.addClauses(c.Targeting.None)
	for i := range c.Creatives {
		cr := &c.Creatives[i]
		size.addStrings(cr.Cat, cr.Channels)
		size.addClauses(cr.Persona)
	}
	a.reserve(size)
	a.units = append(a.units, unit{id: c.ID, digest: d})
	u := &a.units[len(a.units)-1]
	// Facts are interned into the arena's array in place, up to one per
	// clause value; only the distinct ones are kept.
	u.facts = a.facts[len(a.facts):len(a.facts):cap(a.facts)]
	u.advertiser = c.Advertiser
	u.adomain = a.clone(c.Adomain)
	u.currency = c.EffectiveCurrency()
	u.bidMicros = rules.Micros(c.BidCPM)
	u.priority = c.EffectivePriority()
	u.active = c.Active()
	u.clauseCount = len(c.Targeting.All)
	// rules.Validate has checked what LimitsFromRules checks; should the two
	// ever disagree, SetRules fails the campaign closed (it cannot spend).
	u.limits, _ = ledger.LimitsFromRules(c)
	u.start, u.end = flightNanos(start, math.MinInt64), flightNanos(end, math.MaxInt64)
	for i, cl := range c.Targeting.All {
		for _, prev := range c.Targeting.All[:i] {
			if prev.Facet == cl.Facet {
				u.verify = true
			}
		}
	}
	u.all = u.clauses(a, c.Targeting.All)
	u.none = u.clauses(a, c.Targeting.None)
	u.channels = a.clone(c.Targeting.Channels)
	campCat := a.clone(c.Cat)
	u.creatives = arena.Cut(&a.creatives, len(c.Creatives))
	for i := range c.Creatives {
		cr := &c.Creatives[i]
		cat := a.clone(cr.Cat)
		if len(cat) == 0 {
			cat = campCat
		}
		u.creatives[i] = unitCreative{
			ID: cr.ID, Adm: cr.Adm, W: cr.W, H: cr.H, Cat: cat,
			channels: a.clone(cr.Channels),
			persona:  u.clauses(a, cr.Persona),
		}
	}
	u.facts = arena.Cut(&a.facts, len(u.facts))
	a.nfacts += len(u.facts)
	return u
}

// unitSize counts what a unit takes from a unitArena: creatives, strings
// in string slices, clauses, and clause values (the ids in clauses, and
// at most as many facts).
type unitSize struct{ creatives, strs, clauses, values int }

func (s *unitSize) addStrings(ss ...[]string) {
	for _, x := range ss {
		s.strs += len(x)
	}
}

func (s *unitSize) addClauses(cs []rules.Clause) {
	s.clauses += len(cs)
	for _, c := range cs {
		s.values += len(c.Any)
	}
}

func (s *unitSize) add(t unitSize) {
	s.creatives += t.creatives
	s.strs += t.strs
	s.clauses += t.clauses
	s.values += t.values
}

// arenaSpan is the campaigns whose units a compilation cuts from one
// unitArena (and whose copies a hashing pass cuts from one copyArena): a
// divisor of the chunks par.For hands out there (1024 campaigns in
// rules.(*RuleSet).ValidateThen, 512 in Compiler.digests), so that a span
// is one goroutine's.
const arenaSpan = 512

// span is the arena of one span of campaigns, locked.
type span[A any] struct {
	mu    sync.Mutex
	arena A
}

// spans returns the spans of n campaigns.
func spans[A any](n int) []span[A] { return make([]span[A], (n+arenaSpan-1)/arenaSpan) }

// unitBatch is about how many units share each of a unitArena's arrays.
const unitBatch = 8

// unitArena is the backing arrays units and their slices are cut from:
// each array holds up to about unitBatch units' worth (see batchOf),
// shared by units compiled one after another, a few allocations for them
// all instead of several per unit (a cold compile of 100,000 campaigns
// made nearly a million). When one array has too little room left for the
// next unit, it alone is replaced; the few elements it had left stay
// unused. Nothing is written into what was cut, so the units stay
// immutable.
//
// A unit keeps the arrays it was cut from alive: a cached unit whose
// neighbours were evicted holds up to unitBatch units' worth of each, of
// the mean size of the units its span had compiled when the array was
// made (~9 KB at the reference world's ~1.1 KB a unit), so that the
// cache's memory is at worst about unitBatch times what its entries
// count when a span's units are alike, and more for a small unit whose
// span began with much larger ones.
// Neighbours come from one rule set, usually reused and replaced
// together, and a small batch keeps that worst case bounded: most of
// what sharing saves, allocations, is saved by the first few units of an
// array.
//
// An arena is for one goroutine at a time.
type unitArena struct {
	units     []unit
	creatives []unitCreative
	facts     []Fact
	strs      []string
	clauses   [][]uint32
	ids       []uint32
	// sum is the size of the n units reserved so far, and nfacts their
	// distinct facts (fewer than sum.values), for batchOf.
	sum    unitSize
	nfacts int
	n      int
}

// reserve makes room for a unit of size s, replacing each array with too
// little room left.
func (a *unitArena) reserve(s unitSize) {
	a.sum.add(s)
	a.n++
	batch := func(sum int) int { return batchOf(sum, a.n) }
	arena.Refill(&a.units, 1, min(a.n, unitBatch))
	arena.Refill(&a.creatives, s.creatives, batch(a.sum.creatives))
	arena.Refill(&a.strs, s.strs, batch(a.sum.strs))
	arena.Refill(&a.clauses, s.clauses, batch(a.sum.clauses))
	arena.Refill(&a.ids, s.values, batch(a.sum.values))
	arena.Refill(&a.facts, s.values, batch(a.nfacts))
}

// batchOf is room for the next arrays of an arena that has reserved n
// units (or copies) summing to sum in size: min(n, unitBatch) of the mean
// size, rounded up. An arena's first arrays are for its first unit alone,
// the next for two, then four, then unitBatch: a compilation of one or
// a few units (a patch, or a span with few campaigns changed) allocates
// little more than they take.
func batchOf(sum, n int) int { return (sum*min(n, unitBatch) + n - 1) / n }

// clone copies src into the arena; nil stays nil and empty stays empty,
// as with slices.Clone.
func (a *unitArena) clone(src []string) []string {
	if src == nil {
		return nil
	}
	lo := len(a.strs)
	a.strs = append(a.strs, src...)
	return a.strs[lo:len(a.strs):len(a.strs)]
}

// clauses interns cs's facts into u.facts and returns the clauses as
// indexes into them, in the arena.
func (u *unit) clauses(a *unitArena, cs []rules.Clause) [][]uint32 {
	if len(cs) == 0 {
		return nil
	}
	lo := len(a.clauses)
	for _, c := range cs {
		start := len(a.ids)
		for _, v := range c.Any {
			f := Fact{c.Facet, v}
			j := slices.Index(u.facts, f)
			if j < 0 {
				j = len(u.facts)
				u.facts = append(u.facts, f)
			}
			a.ids = append(a.ids, uint32(j))
		}
		a.clauses = append(a.clauses, a.ids[start:len(a.ids):len(a.ids)])
	}
	return a.clauses[lo:len(a.clauses):len(a.clauses)]
}

// linker turns units into Rules: it numbers terms and channels over the
// whole set, ranks the campaigns and builds the index.
type linker struct {
	r *Rules
	// local maps each unit's fact indexes to term ids: unit i's facts are
	// local[base[i]:base[i+1]].
	local []uint32
	base  []int
	// chanFirst is, by channel id, the first unit naming the channel: -1
	// for a channel of the content rules, math.MaxInt32 for one no unit
	// names. Channel ids are numbered in that order.
	chanFirst []int32
}

// linked is what a Compiler keeps of the last rule set it compiled, for
// the next compilation to patch. It is immutable once stored.
type linked struct {
	r       *Rules
	content rules.Digest
	units   []*unit  // in rule-set order
	ids     []string // the units' ids, side by side for a quick comparison
	order   []int32  // ordinal -> rule-set index
	ordOf   []int32  // rule-set index -> ordinal
	refs    []int32  // term id -> units naming the term
	// chanFirst is linker.chanFirst.
	chanFirst []int32
}

// compareRank orders campaigns by DESIGN.md's choice rule: lowest priority
// tier first, then highest price, then the campaign whose targeting matched
// more clauses (every targeting.all clause holds for an eligible campaign,
// so that is its clause count), then campaign id.
func compareRank(aPrio, bPrio int32, aBid, bBid int64, aClauses, bClauses int32, aID, bID string) int {
	// Not cmp.Or, which evaluates every comparison, the ids' included,
	// where the first one or two usually decide: sorting 100,000
	// campaigns makes millions of comparisons.
	if c := cmp.Compare(aPrio, bPrio); c != 0 {
		return c
	}
	if c := cmp.Compare(bBid, aBid); c != 0 {
		return c
	}
	if c := cmp.Compare(bClauses, aClauses); c != 0 {
		return c
	}
	return strings.Compare(aID, bID)
}

func compareUnits(a, b *unit) int {
	return compareRank(a.priority, b.priority, a.bidMicros, b.bidMicros,
		int32(a.clauseCount), int32(b.clauseCount), a.id, b.id)
}

func link(units []*unit, cr *rules.ContentRules) (*Rules, *linked) {
	r := &Rules{
		vocab:         &vocab{},
		channels:      map[string]int{},
		channelByHost: map[string]int{},
		channelByApp:  map[string]int{},
	}
	l := &linker{r: r}
	// Ranking and numbering terms and channels are independent: on two
	// CPUs, at once.
	var order, ordOf []int32
	var wg sync.WaitGroup
	wg.Go(func() { order, ordOf = rank(units) })
	l.internTerms(units)
	l.internChannels(units, cr)
	wg.Wait()
	r.campaigns = make([]Campaign, len(units))
	crOff := make([]int, len(units)+1) // ordinal -> its first creative in creatives
	for ord, i := range order {
		crOff[ord+1] = crOff[ord] + len(units[i].creatives)
	}
	creatives := make([]Creative, crOff[len(units)])
	// Link on every CPU: a campaign's links depend only on its unit and the
	// term and channel tables, which are complete (and only read) by now.
	par.For(len(units), 1024, func(lo, hi int) {
		var size linkSize
		for _, i := range order[lo:hi] {
			size.add(units[i])
		}
		a := size.arena()
		for ord := lo; ord < hi; ord++ {
			i := order[ord]
			crs := creatives[crOff[ord]:crOff[ord+1]:crOff[ord+1]]
			linkCampaign(r, &r.campaigns[ord], units[i], l.local[l.base[i]:l.base[i+1]], cr, crs, &a)
			r.campaigns[ord].ordinal = uint32(ord)
		}
	})
	l.buildIndex()
	refs := make([]int32, len(r.terms))
	for _, t := range l.local {
		refs[t]++ // a unit's facts are distinct: one reference per unit
	}
	ids := make([]string, len(units))
	for i, u := range units {
		ids[i] = u.id
	}
	return r, &linked{r: r, units: units, ids: ids, order: order, ordOf: ordOf, refs: refs, chanFirst: l.chanFirst}
}

// rank returns the units' rank order (ordinal -> unit index) and its
// inverse.
func rank(units []*unit) (order, ordOf []int32) {
	type rankKey struct {
		prio    int32
		clauses int32
		bid     int64
		id      string
		i       int32
	}
	keys := make([]rankKey, len(units))
	for i, u := range units {
		keys[i] = rankKey{u.priority, int32(u.clauseCount), u.bidMicros, u.id, int32(i)}
	}
	slices.SortFunc(keys, func(a, b rankKey) int {
		return compareRank(a.prio, b.prio, a.bid, b.bid, a.clauses, b.clauses, a.id, b.id)
	})
	order = make([]int32, len(units))
	ordOf = make([]int32, len(units))
	for ord := range keys {
		order[ord] = keys[ord].i
		ordOf[keys[ord].i] = int32(ord)
	}
	return order, ordOf
}

// linkSize counts what linking units puts in a linkArena.
type linkSize struct{ ids, clauses, chans int }

func (s *linkSize) add(u *unit) {
	count := func(cs [][]uint32) {
		s.clauses += len(cs)
		for _, c := range cs {
			s.ids += len(c)
		}
	}
	count(u.all)
	count(u.none)
	s.chans += len(u.channels)
	for j := range u.creatives {
		count(u.creatives[j].persona)
		s.chans += len(u.creatives[j].channels)
	}
}

func (s *linkSize) arena() linkArena {
	return linkArena{
		ids:     make([]uint32, 0, s.ids),
		clauses: make([][]uint32, 0, s.clauses),
		chans:   make([]int, 0, s.chans),
	}
}

// linkArena is the backing arrays of linked campaigns' slices — clauses'
// term ids, the clauses, channel ids — one of each for many campaigns
// instead of an allocation per slice. Sized by linkSize, they never grow
// (were one to, the slices handed out before would keep the old array:
// still correct).
type linkArena struct {
	ids     []uint32
	clauses [][]uint32
	chans   []int
}

// linkCampaign links unit u into c: local maps u's facts to term ids,
// creatives receives the compiled creatives (len(u.creatives) of them)
// and a the linked clauses and channel ids. c.ordinal is the caller's to
// set. It only reads r (its channel table).
func linkCampaign(r *Rules, c *Campaign, u *unit, local []uint32, house *rules.ContentRules, creatives []Creative, a *linkArena) {
	*c = Campaign{
		ID: u.id, Advertiser: u.advertiser, Adomain: u.adomain, Currency: u.currency,
		BidMicros: u.bidMicros, Priority: u.priority, Creatives: creatives, Limits: u.limits,
		active: u.active, start: u.start, end: u.end, clauseCount: u.clauseCount, verify: u.verify,
		all:      linkClauses(u.all, local, a),
		none:     linkClauses(u.none, local, a),
		channels: r.channelIDs(u.channels, a),
	}
	for j := range c.Creatives {
		ucr := &u.creatives[j]
		c.Creatives[j] = Creative{
			ID: ucr.ID, W: ucr.W, H: ucr.H, Adm: ucr.Adm, Cat: ucr.Cat,
			channels: r.channelIDs(ucr.channels, a),
			persona:  linkClauses(ucr.persona, local, a),
		}
	}
	// The house rules block as rules.DeliveryWarnings warns of them.
	dom, _, every := house.Blocks(c.Adomain, len(c.Creatives), func(j int) []string { return c.Creatives[j].Cat }, func(j, k int, _ string) {
		c.Creatives[j].houseBlocked = "house rules block category " + c.Creatives[j].Cat[k]
	})
	switch {
	case dom >= 0:
		c.houseBlocked = "house rules block adomain " + c.Adomain[dom]
	case every:
		c.houseBlocked = "house rules block the category of every creative"
	}
}

// internTerms numbers every fact the units name, sorted by facet then
// value, and records each unit's local fact -> term id map.
func (l *linker) internTerms(units []*unit) {
	r := l.r
	n := 0
	for _, u := range units {
		n += len(u.facts)
	}
	l.local = make([]uint32, 0, n)
	l.base = make([]int, len(units)+1)
	// First pass: provisional ids in first-seen order.
	byFact := make(map[Fact]uint32, 1024)
	var facts []Fact
	for i, u := range units {
		l.base[i] = len(l.local)
		for _, f := range u.facts {
			id, ok := byFact[f]
			if !ok {
				id = uint32(len(facts))
				byFact[f] = id
				facts = append(facts, f)
			}
			l.local = append(l.local, id)
		}
	}
	l.base[len(units)] = len(l.local)
	sorted := make([]uint32, len(facts))
	for i := range sorted {
		sorted[i] = uint32(i)
	}
	slices.SortFunc(sorted, func(a, b uint32) int {
		fa, fb := &facts[a], &facts[b]
		return cmp.Or(strings.Compare(fa.Facet, fb.Facet), strings.Compare(fa.Value, fb.Value))
	})
	final := make([]uint32, len(facts)) // provisional -> final
	r.terms = make([]term, len(facts))
	for id, p := range sorted {
		f := facts[p]
		if len(r.facets) == 0 || r.facets[len(r.facets)-1] != f.Facet {
			r.facets = append(r.facets, f.Facet)
		}
		r.terms[id] = term{facet: uint32(len(r.facets) - 1), name: f.Facet + ":" + f.Value}
		final[p] = uint32(id)
		byFact[f] = uint32(id)
	}
	for i, p := range l.local {
		l.local[i] = final[p]
	}
	r.termByFact = byFact
}

// linkClauses maps a unit's clauses to sorted, distinct term ids, in the
// arena.
func linkClauses(cs [][]uint32, local []uint32, a *linkArena) [][]uint32 {
	if len(cs) == 0 {
		return nil
	}
	lo := len(a.clauses)
	for _, c := range cs {
		start := len(a.ids)
		for _, f := range c {
			a.ids = append(a.ids, local[f])
		}
		ids := a.ids[start:len(a.ids):len(a.ids)]
		slices.Sort(ids)
		ids = slices.Compact(ids)
		a.ids = a.ids[:start+len(ids)]
		a.clauses = append(a.clauses, ids[:len(ids):len(ids)])
	}
	return a.clauses[lo:len(a.clauses):len(a.clauses)]
}

func (r *Rules) channelID(name string) int {
	id, ok := r.channels[name]
	if !ok {
		id = len(r.channelNames)
		r.channels[name] = id
		r.channelNames = append(r.channelNames, name)
	}
	return id
}

func (l *linker) internChannels(units []*unit, cr *rules.ContentRules) {
	r := l.r
	for _, m := range cr.ChannelMap {
		id := r.channelID(m.Channel)
		for _, d := range m.Domains {
			r.channelByHost[mapHost(strings.ToLower(d))] = id
		}
		for _, b := range m.Bundles {
			r.channelByApp[b] = id
		}
	}
	for range r.channelNames {
		l.chanFirst = append(l.chanFirst, -1)
	}
	named := func(i int, ch string) {
		if id := r.channelID(ch); id == len(l.chanFirst) {
			l.chanFirst = append(l.chanFirst, int32(i))
		}
	}
	for i, u := range units {
		for _, ch := range u.channels {
			named(i, ch)
		}
		for j := range u.creatives {
			for _, ch := range u.creatives[j].channels {
				named(i, ch)
			}
		}
	}
	named(math.MaxInt32, channelWeb)
	named(math.MaxInt32, channelApp)
}

// channelIDs maps channel names to sorted, distinct ids, in the arena.
func (r *Rules) channelIDs(names []string, a *linkArena) []int {
	if len(names) == 0 {
		return nil
	}
	start := len(a.chans)
	for _, n := range names {
		a.chans = append(a.chans, r.channels[n])
	}
	ids := a.chans[start:len(a.chans):len(a.chans)]
	slices.Sort(ids)
	ids = slices.Compact(ids)
	a.chans = a.chans[:start+len(ids)]
	return ids[:len(ids):len(ids)]
}

// buildIndex sets, for every campaign, its bit in each set of the index.
// It runs on every CPU, each taking chunks of ordinals that are whole
// 64-bit words, so that no two write one word. A set that only some
// campaigns need (a term's, a facet's) is made by whichever sets its first
// bit, through an atomic pointer; the size sets are made beforehand.
func (l *linker) buildIndex() {
	r := l.r
	n := uint(len(r.campaigns))
	words := int((n + 63) / 64)
	newSet := func() *bitset.BitSet { return bitset.From(make([]uint64, words)) }
	x := index{
		words:      words,
		live:       newSet(),
		anyChannel: newSet(),
		byChannel:  make([]*bitset.BitSet, len(r.channelNames)),
		bySize:     map[Size]*bitset.BitSet{},
	}
	for id := range x.byChannel {
		x.byChannel[id] = newSet()
	}
	for ord := range r.campaigns {
		for _, cr := range r.campaigns[ord].Creatives {
			if sz := (Size{cr.W, cr.H}); x.bySize[sz] == nil {
				x.bySize[sz] = newSet()
			}
		}
	}
	type lazySet = atomic.Pointer[bitset.BitSet]
	get := func(p *lazySet) *bitset.BitSet {
		if b := p.Load(); b != nil {
			return b
		}
		if b := newSet(); p.CompareAndSwap(nil, b) {
			return b
		}
		return p.Load()
	}
	accept := make([]lazySet, len(r.terms))
	exclude := make([]lazySet, len(r.terms))
	constrained := make([]lazySet, len(r.facets)) // facet -> campaigns constraining it
	const chunk = 1024                            // a multiple of 64: whole words
	par.For(len(r.campaigns), chunk, func(lo, hi int) {
		for ord := lo; ord < hi; ord++ {
			c := &r.campaigns[ord]
			o := uint(ord)
			if c.active && c.houseBlocked == "" {
				x.live.Set(o)
			}
			if len(c.channels) == 0 {
				x.anyChannel.Set(o)
			}
			for _, ch := range c.channels {
				x.byChannel[ch].Set(o)
			}
			for _, cr := range c.Creatives {
				x.bySize[Size{cr.W, cr.H}].Set(o)
			}
			for _, cl := range c.all {
				get(&constrained[r.terms[cl[0]].facet]).Set(o)
				for _, t := range cl {
					get(&accept[t]).Set(o)
				}
			}
			for _, cl := range c.none {
				for _, t := range cl {
					get(&exclude[t]).Set(o)
				}
			}
		}
	})
	for t := range r.terms {
		r.terms[t].accept, r.terms[t].exclude = accept[t].Load(), exclude[t].Load()
	}
	for f := range constrained {
		b := constrained[f].Load()
		if b == nil {
			continue
		}
		// The campaigns with no clause on f: the complement within n.
		un := newSet()
		for i, w := range b.Words() {
			un.Words()[i] = ^w
		}
		if rem := n % 64; rem != 0 {
			un.Words()[words-1] &= 1<<rem - 1
		}
		r.constrained = append(r.constrained, facetIndex{facet: uint32(f), unconstrained: un})
	}
	r.idx = x
}

// Version is the rule set's version.
func (r *Rules) Version() string { return r.version }

// Compiled is when the rules were compiled.
func (r *Rules) Compiled() time.Time { return r.compiled }

// Stats says how the rules were compiled.
func (r *Rules) Stats() CompileStats { return r.stats }

// Digests returns the content digest of every campaign, in the order of
// the rule set compiled (not rank order). The caller must not modify it.
func (r *Rules) Digests() []rules.Digest { return r.digests }

// Campaigns returns the compiled campaigns in rank order.
func (r *Rules) Campaigns() []Campaign { return r.campaigns }

// Facts yields every (facet, value) the rules refer to, in no order (and
// perhaps some that rules patched into these no longer do).
func (r *Rules) Facts() iter.Seq[Fact] { return maps.Keys(r.termByFact) }

// Naming is what a rule set's campaigns do with one segment: their ids,
// in rank order. A fact can also come with a bid request (its user's
// data segments), which the uploaded segment's absence does not change.
type Naming struct {
	// Targeting: campaigns whose targeting.all names the segment.
	Targeting []string
	// Personalizing: campaigns that name it in a creative's persona (and
	// not in targeting.all): it chooses which of their creatives shows.
	Personalizing []string
	// Excluding: campaigns whose targeting.none names it.
	Excluding []string
	// Paused: those of the above whose status is paused, which name the
	// segment to no effect until they are resumed.
	Paused []string
}

// Naming returns the campaigns of r that name the segment f (active or
// not). It walks every campaign: for the rare question (a segment's
// deletion), not for decisions.
func (r *Rules) Naming(f Fact) Naming {
	t, ok := r.termByFact[f]
	if !ok {
		return Naming{}
	}
	names := func(cs [][]uint32) bool {
		for _, cl := range cs {
			if slices.Contains(cl, t) {
				return true
			}
		}
		return false
	}
	var n Naming
	for i := range r.campaigns {
		c := &r.campaigns[i]
		targets, excludes := names(c.all), names(c.none)
		personalizes := !targets && slices.ContainsFunc(c.Creatives, func(cr Creative) bool { return names(cr.persona) })
		if targets {
			n.Targeting = append(n.Targeting, c.ID)
		}
		if personalizes {
			n.Personalizing = append(n.Personalizing, c.ID)
		}
		if excludes {
			n.Excluding = append(n.Excluding, c.ID)
		}
		if !c.active && (targets || personalizes || excludes) {
			n.Paused = append(n.Paused, c.ID)
		}
	}
	return n
}
