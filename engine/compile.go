package engine

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/bits-and-blooms/bitset"

	"github.com/personad/personad/rules"
)

// Rules is a compiled, immutable rule set: campaigns in rank order and the
// targeting index over their ordinals. It is safe for concurrent use.
type Rules struct {
	version   string
	compiled  time.Time
	campaigns []Campaign // in rank order: ordinal = index

	// Terms are the (facet, value) pairs some campaign or creative refers
	// to, numbered grouped by facet so that a sorted persona lists one facet
	// after another.
	terms      []term
	termByFact map[Fact]uint32
	facets     []string // facet id -> name

	// constrained lists the facets some campaign's targeting.all names, each
	// with the campaigns that place no constraint on it.
	constrained []facetIndex
	idx         index

	channels      map[string]int // channel name -> id
	channelByHost map[string]int // site domain -> channel id
	channelByApp  map[string]int // app bundle -> channel id
	channelNames  []string
}

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

// index holds the targeting index twice: as roaring bitmaps over campaign
// ordinals (the compact form, for inspection and size accounting) and as
// dense bitsets of identical length, which the decision combines in place
// without allocating.
type index struct {
	n     uint // campaigns
	words int  // 64-bit words per dense set

	live       *bitset.BitSet             // active and not blocked by house rules
	anyChannel *bitset.BitSet             // campaigns with no channel constraint
	byChannel  []*bitset.BitSet           // channel id -> campaigns listing it
	bySize     map[Size]*bitset.BitSet    // campaigns with a creative of that size
	roaring    map[string]*roaring.Bitmap // every set above, by name, compact
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

	ordinal      uint32
	active       bool
	start, end   int64 // unix nanoseconds; 0: open
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

// Compile validates rs and compiles it into Rules. version names the rule
// set in decisions and logs; empty means rs's content hash (see Hash).
func Compile(rs *rules.RuleSet, version string) (*Rules, error) {
	if err := rs.Validate(); err != nil {
		return nil, err
	}
	if version == "" {
		version = Hash(rs)
	}
	r := &Rules{
		version:       version,
		compiled:      time.Now(),
		termByFact:    map[Fact]uint32{},
		channels:      map[string]int{},
		channelByHost: map[string]int{},
		channelByApp:  map[string]int{},
	}
	r.internTerms(rs)
	r.internChannels(rs)

	order := make([]int, len(rs.Campaigns))
	for i := range order {
		order[i] = i
	}
	bids := make([]int64, len(rs.Campaigns))
	for i := range rs.Campaigns {
		bids[i] = Micros(rs.Campaigns[i].BidCPM)
	}
	// Rank order, DESIGN.md's choice rule: lowest priority tier first, then
	// highest price, then the campaign whose targeting matched more clauses
	// (every targeting.all clause holds for an eligible campaign, so that is
	// its clause count), then campaign id.
	slices.SortFunc(order, func(a, b int) int {
		ca, cb := &rs.Campaigns[a], &rs.Campaigns[b]
		return cmp.Or(
			cmp.Compare(ca.EffectivePriority(), cb.EffectivePriority()),
			cmp.Compare(bids[b], bids[a]),
			cmp.Compare(len(cb.Targeting.All), len(ca.Targeting.All)),
			cmp.Compare(ca.ID, cb.ID),
		)
	})
	house := newBlocklist(rs.ContentRules.BlockedCat, rs.ContentRules.BlockedAdomain)
	r.campaigns = make([]Campaign, len(order))
	for ord, i := range order {
		r.campaigns[ord] = r.compileCampaign(&rs.Campaigns[i], uint32(ord), bids[i], house)
	}
	r.buildIndex()
	return r, nil
}

// Hash is the content hash of a rule set: the first 12 hex digits of the
// SHA-256 of its canonical JSON.
func Hash(rs *rules.RuleSet) string {
	js, err := json.Marshal(rs)
	if err != nil { // plain data: cannot happen
		panic(fmt.Sprintf("engine: hash rules: %v", err))
	}
	sum := sha256.Sum256(js)
	return hex.EncodeToString(sum[:6])
}

// Micros converts a currency amount to integer micro-units, rounding to
// the nearest micro.
func Micros(v float64) int64 { return int64(math.Round(v * 1e6)) }

func (r *Rules) internTerms(rs *rules.RuleSet) {
	facts := map[Fact]bool{}
	addClauses := func(cs []rules.Clause) {
		for _, c := range cs {
			for _, v := range c.Any {
				facts[Fact{c.Facet, v}] = true
			}
		}
	}
	for i := range rs.Campaigns {
		c := &rs.Campaigns[i]
		addClauses(c.Targeting.All)
		addClauses(c.Targeting.None)
		for j := range c.Creatives {
			addClauses(c.Creatives[j].Persona)
		}
	}
	sorted := make([]Fact, 0, len(facts))
	for f := range facts {
		sorted = append(sorted, f)
	}
	slices.SortFunc(sorted, func(a, b Fact) int {
		return cmp.Or(cmp.Compare(a.Facet, b.Facet), cmp.Compare(a.Value, b.Value))
	})
	r.terms = make([]term, len(sorted))
	for i, f := range sorted {
		if len(r.facets) == 0 || r.facets[len(r.facets)-1] != f.Facet {
			r.facets = append(r.facets, f.Facet)
		}
		r.terms[i] = term{facet: uint32(len(r.facets) - 1), name: f.Facet + ":" + f.Value}
		r.termByFact[f] = uint32(i)
	}
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

func (r *Rules) internChannels(rs *rules.RuleSet) {
	for _, m := range rs.ContentRules.ChannelMap {
		id := r.channelID(m.Channel)
		for _, d := range m.Domains {
			r.channelByHost[strings.ToLower(d)] = id
		}
		for _, b := range m.Bundles {
			r.channelByApp[b] = id
		}
	}
	for i := range rs.Campaigns {
		c := &rs.Campaigns[i]
		for _, ch := range c.Targeting.Channels {
			r.channelID(ch)
		}
		for j := range c.Creatives {
			for _, ch := range c.Creatives[j].Channels {
				r.channelID(ch)
			}
		}
	}
	r.channelID(channelWeb)
	r.channelID(channelApp)
}

func (r *Rules) clauses(cs []rules.Clause) [][]uint32 {
	if len(cs) == 0 {
		return nil
	}
	out := make([][]uint32, len(cs))
	for i, c := range cs {
		ids := make([]uint32, 0, len(c.Any))
		for _, v := range c.Any {
			ids = append(ids, r.termByFact[Fact{c.Facet, v}])
		}
		slices.Sort(ids)
		out[i] = slices.Compact(ids)
	}
	return out
}

func (r *Rules) channelIDs(names []string) []int {
	if len(names) == 0 {
		return nil
	}
	ids := make([]int, len(names))
	for i, n := range names {
		ids[i] = r.channels[n]
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

func (r *Rules) compileCampaign(c *rules.Campaign, ord uint32, bid int64, house *blocklist) Campaign {
	start, end := c.Flight()
	cc := Campaign{
		ID:          c.ID,
		Advertiser:  c.Advertiser,
		Adomain:     c.Adomain,
		Currency:    c.EffectiveCurrency(),
		BidMicros:   bid,
		Priority:    c.EffectivePriority(),
		ordinal:     ord,
		active:      c.Active(),
		all:         r.clauses(c.Targeting.All),
		none:        r.clauses(c.Targeting.None),
		clauseCount: len(c.Targeting.All),
		channels:    r.channelIDs(c.Targeting.Channels),
	}
	if !start.IsZero() {
		cc.start = start.UnixNano()
	}
	if !end.IsZero() {
		cc.end = end.UnixNano()
	}
	seen := map[string]bool{}
	for _, cl := range c.Targeting.All {
		if seen[cl.Facet] {
			cc.verify = true
		}
		seen[cl.Facet] = true
	}
	if d, ok := house.blockedDomain(c.Adomain); ok {
		cc.houseBlocked = "house rules block adomain " + d
	}
	cc.Creatives = make([]Creative, len(c.Creatives))
	usable := 0
	for i := range c.Creatives {
		cr := &c.Creatives[i]
		cat := cr.Cat
		if len(cat) == 0 {
			cat = c.Cat
		}
		ccr := Creative{
			ID: cr.ID, W: cr.W, H: cr.H, Adm: cr.Adm, Cat: cat,
			channels: r.channelIDs(cr.Channels),
			persona:  r.clauses(cr.Persona),
		}
		if b, ok := house.blockedCat(cat); ok {
			ccr.houseBlocked = "house rules block category " + b
		} else {
			usable++
		}
		cc.Creatives[i] = ccr
	}
	if cc.houseBlocked == "" && usable == 0 {
		cc.houseBlocked = "house rules block the category of every creative"
	}
	return cc
}

func (r *Rules) buildIndex() {
	n := uint(len(r.campaigns))
	rb := map[string]*roaring.Bitmap{}
	get := func(name string) *roaring.Bitmap {
		b := rb[name]
		if b == nil {
			b = roaring.New()
			rb[name] = b
		}
		return b
	}
	get("live")
	get("channel:*")
	constrained := map[uint32]bool{}
	for i := range r.campaigns {
		c := &r.campaigns[i]
		for _, cl := range c.all {
			constrained[r.terms[cl[0]].facet] = true
		}
	}
	for i := range r.campaigns {
		c := &r.campaigns[i]
		o := c.ordinal
		if c.active && c.houseBlocked == "" {
			get("live").Add(o)
		}
		if len(c.channels) == 0 {
			get("channel:*").Add(o)
		}
		for _, ch := range c.channels {
			get("channel:" + r.channelNames[ch]).Add(o)
		}
		for j := range c.Creatives {
			cr := &c.Creatives[j]
			get(fmt.Sprintf("size:%dx%d", cr.W, cr.H)).Add(o)
		}
		onFacet := map[uint32]bool{}
		for _, cl := range c.all {
			onFacet[r.terms[cl[0]].facet] = true
			for _, t := range cl {
				get("accept:" + r.terms[t].name).Add(o)
			}
		}
		for f := range constrained {
			if !onFacet[f] {
				get("unconstrained:" + r.facets[f]).Add(o)
			}
		}
		for _, cl := range c.none {
			for _, t := range cl {
				get("exclude:" + r.terms[t].name).Add(o)
			}
		}
	}
	words := int((n + 63) / 64)
	dense := func(name string) *bitset.BitSet {
		b := rb[name]
		if b == nil {
			return nil
		}
		b.RunOptimize()
		buf := make([]uint64, words)
		b.WriteDenseTo(buf)
		return bitset.From(buf)
	}
	empty := bitset.From(make([]uint64, words))
	orEmpty := func(b *bitset.BitSet) *bitset.BitSet {
		if b == nil {
			return empty
		}
		return b
	}
	r.idx = index{
		n:          n,
		words:      words,
		live:       dense("live"),
		anyChannel: dense("channel:*"),
		byChannel:  make([]*bitset.BitSet, len(r.channelNames)),
		bySize:     map[Size]*bitset.BitSet{},
		roaring:    rb,
	}
	for id, name := range r.channelNames {
		r.idx.byChannel[id] = orEmpty(dense("channel:" + name))
	}
	for name := range rb {
		var w, h int32
		if _, err := fmt.Sscanf(name, "size:%dx%d", &w, &h); err == nil {
			r.idx.bySize[Size{w, h}] = dense(name)
		}
	}
	for i := range r.terms {
		t := &r.terms[i]
		t.accept = dense("accept:" + t.name)
		t.exclude = dense("exclude:" + t.name)
	}
	for f := range r.facets {
		if constrained[uint32(f)] {
			r.constrained = append(r.constrained, facetIndex{
				facet:         uint32(f),
				unconstrained: orEmpty(dense("unconstrained:" + r.facets[f])),
			})
		}
	}
}

// Version is the rule set's version.
func (r *Rules) Version() string { return r.version }

// Compiled is when the rules were compiled.
func (r *Rules) Compiled() time.Time { return r.compiled }

// Campaigns returns the compiled campaigns in rank order.
func (r *Rules) Campaigns() []Campaign { return r.campaigns }

// Facts returns every (facet, value) the rules refer to, in term order.
func (r *Rules) Facts() []string {
	out := make([]string, len(r.terms))
	for i := range r.terms {
		out[i] = r.terms[i].name
	}
	return out
}

// IndexBytes is the size of the targeting index's roaring bitmaps, in bytes.
func (r *Rules) IndexBytes() uint64 {
	var n uint64
	for _, b := range r.idx.roaring {
		n += b.GetSizeInBytes()
	}
	return n
}
