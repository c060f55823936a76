package engine

import (
	"cmp"
	"slices"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/dgraph-io/ristretto/v2"

	"github.com/personad/personad/segments"
)

// binding ties compiled rules to a segment snapshot: for every term of the
// rules, the uploaded segment holding it (nil when none), and the order in
// which a cache miss tests them. It depends on the rules only through
// their term table, so it is rebuilt when the segments or the term table
// change (not when a reload patches campaigns but keeps the terms), which
// is rare next to decisions; a binding is immutable once published.
type binding struct {
	rules *Rules
	seg   *segments.Snapshot
	bms   []*roaring.Bitmap // term id -> users, or nil
	// groups hold the terms that have a segment, one group per facet, each
	// ordered by segment size, largest first. An exclusive group's segments
	// are pairwise disjoint in this snapshot (every user has at most one
	// title, say), so resolution stops at its first hit; with sizes skewed
	// that is usually one of the first few tests instead of all of them.
	groups   []termGroup
	analyzed bool // exclusivity has been computed (set on a copy)

	// epoch names what the cached personas resolved under this binding
	// hold: it changes only when a term's segment does (or the term
	// table), so an upload to a segment no rule refers to keeps every
	// cached persona. A persona of the previous epoch, prev, is current
	// once the terms in changed (those whose segment differs) are tested
	// again: an upload costs each cached user a test per changed segment,
	// not a new resolution. prev is 0 when there is no such epoch.
	epoch, prev uint64
	changed     []uint32
}

type termGroup struct {
	terms     []uint32
	exclusive bool
}

// bind returns the binding of r and seg, publishing a new one when the
// published binding is of other rules' terms or another snapshot.
func (e *Engine) bind(r *Rules, seg *segments.Snapshot) *binding {
	for {
		old := e.binding.Load()
		if old != nil && old.rules.vocab == r.vocab && old.seg == seg {
			return old
		}
		// The first decision after a change binds, and only the binding
		// published starts the (costly) exclusivity analysis. A decision
		// that loses the race looks again: another decision may have
		// published this very binding, or old's analysed copy replaced
		// old (analyze), and a binding not published would leave the
		// published one behind the snapshot until the next decision. A
		// decision holding rules or a snapshot already replaced uses its
		// binding once and publishes nothing.
		b := newBinding(r, seg)
		e.succeed(b, old)
		if p := e.state.Load(); (p.rules != nil && p.rules.vocab != r.vocab) || e.segs.Current() != seg {
			return b
		}
		if e.binding.CompareAndSwap(old, b) {
			e.analyze(b)
			return b
		}
	}
}

func newBinding(r *Rules, seg *segments.Snapshot) *binding {
	b := &binding{rules: r, seg: seg, bms: make([]*roaring.Bitmap, len(r.terms))}
	if seg == nil {
		return b
	}
	card := make([]uint64, len(r.terms))
	for f, t := range r.termByFact {
		if s := seg.Segment(f.Facet, f.Value); s != nil {
			b.bms[t] = s.Users
			card[t] = s.Users.GetCardinality()
		}
	}
	// Term ids are grouped by facet already.
	for t := 0; t < len(r.terms); {
		facet := r.terms[t].facet
		var g termGroup
		for ; t < len(r.terms) && r.terms[t].facet == facet; t++ {
			if b.bms[t] != nil {
				g.terms = append(g.terms, uint32(t))
			}
		}
		if len(g.terms) > 0 {
			slices.SortStableFunc(g.terms, func(x, y uint32) int { return cmp.Compare(card[y], card[x]) })
			b.groups = append(b.groups, g)
		}
	}
	return b
}

// succeed gives b its epoch, following old (the binding it replaces, or
// nil): old's epoch when every term has the segment it had in old, else a
// new one whose prev is old's when the term table is the same.
func (e *Engine) succeed(b, old *binding) {
	if old == nil || old.rules.vocab != b.rules.vocab {
		b.epoch = e.epochs.Add(1)
		return
	}
	var changed []uint32
	for t := range b.bms {
		// A published segment is immutable and a commit builds a new one
		// for what it changes, so an unchanged segment is the same pointer.
		if b.bms[t] != old.bms[t] {
			changed = append(changed, uint32(t))
		}
	}
	if len(changed) == 0 {
		b.epoch, b.prev, b.changed = old.epoch, old.prev, old.changed
		return
	}
	b.epoch, b.prev, b.changed = e.epochs.Add(1), old.epoch, changed
}

// analyze works out, off the decision path, which groups of b are
// exclusive, and publishes the analysed copy if b is still current. It
// costs a union per facet (tens of milliseconds on ten million users), so
// it runs in a goroutine the engine owns; decisions meanwhile use b, which
// gives the same answers, only slower on a cache miss.
func (e *Engine) analyze(b *binding) {
	if b.seg == nil || len(b.groups) == 0 {
		return
	}
	e.analyzing.Lock()
	defer e.analyzing.Unlock()
	if e.closed {
		return
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		a := &binding{rules: b.rules, seg: b.seg, bms: b.bms, analyzed: true, groups: slices.Clone(b.groups),
			epoch: b.epoch, prev: b.prev, changed: b.changed}
		for i := range a.groups {
			if e.closing() {
				return
			}
			a.groups[i].exclusive = disjoint(a.bms, a.groups[i].terms)
		}
		e.binding.CompareAndSwap(b, a)
	}()
}

// disjoint reports whether the segments of terms share no user: the size
// of their union is the sum of their sizes.
func disjoint(bms []*roaring.Bitmap, terms []uint32) bool {
	if len(terms) < 2 {
		return true
	}
	sets := make([]*roaring.Bitmap, len(terms))
	var sum uint64
	for i, t := range terms {
		sets[i] = bms[t]
		sum += bms[t].GetCardinality()
	}
	return roaring.FastOr(sets...).GetCardinality() == sum
}

// personaEntry is a user's uploaded persona as term ids of one term table
// (shared by the rules versions a reload patched), resolved in one binding
// epoch. It is immutable.
type personaEntry struct {
	vocab *vocab
	epoch uint64
	terms []uint32
}

func newPersonaCache(size int64) (*ristretto.Cache[uint64, *personaEntry], error) {
	if size == 0 {
		return nil, nil
	}
	return ristretto.NewCache(&ristretto.Config[uint64, *personaEntry]{
		NumCounters:        size * 10,
		MaxCost:            size,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
}

// resolvePersona fills s.persona (a bitset over term ids) and s.terms (the
// same ids in ascending order, hence grouped by facet) with the user's
// uploaded segments and the request's facts, restricted to the terms the
// rules refer to.
func (e *Engine) resolvePersona(b *binding, q *Query, s *scratch) {
	r := b.rules
	clear(s.persona)
	if uid, ok := e.lookupUser(b.seg, q); ok {
		for _, t := range e.uploadedTerms(b, uid, s) {
			s.persona[t>>6] |= 1 << (t & 63)
		}
	}
	for _, f := range q.Facts {
		if t, ok := r.termByFact[f]; ok {
			s.persona[t>>6] |= 1 << (t & 63)
		}
	}
	s.terms = s.terms[:0]
	for w, word := range s.persona {
		for word != 0 {
			bit := uint32(trailingZeros(word))
			s.terms = append(s.terms, uint32(w)<<6|bit)
			word &= word - 1
		}
	}
}

func (e *Engine) lookupUser(seg *segments.Snapshot, q *Query) (uint32, bool) {
	if seg == nil {
		return 0, false
	}
	if q.BuyerUID != "" {
		if uid, ok := seg.User(q.BuyerUID); ok {
			return uid, true
		}
	}
	if q.UserID != "" {
		return seg.User(q.UserID)
	}
	return 0, false
}

// uploadedTerms returns the terms of the segments uid belongs to, from the
// cache when it holds an entry for these rules in this binding's epoch, or
// in the previous one with the changed terms tested again. On a miss it
// tests only the segments the rules refer to.
func (e *Engine) uploadedTerms(b *binding, uid uint32, s *scratch) []uint32 {
	terms := s.uploaded[:0]
	if e.cache != nil {
		p, ok := e.cache.Get(uint64(uid))
		switch {
		case !ok || p.vocab != b.rules.vocab:
		case p.epoch == b.epoch:
			return p.terms
		case b.prev != 0 && p.epoch == b.prev:
			for _, t := range p.terms {
				if _, changed := slices.BinarySearch(b.changed, t); !changed {
					terms = append(terms, t)
				}
			}
			for _, t := range b.changed {
				if bm := b.bms[t]; bm != nil && bm.Contains(uid) {
					terms = append(terms, t)
				}
			}
			return e.remember(b, uid, terms, s)
		}
	}
	for _, g := range b.groups {
		for _, t := range g.terms {
			if b.bms[t].Contains(uid) {
				terms = append(terms, t)
				if g.exclusive {
					break
				}
			}
		}
	}
	return e.remember(b, uid, terms, s)
}

// remember sorts terms, uid's persona in b's epoch, keeps them as
// s.uploaded and caches a copy.
func (e *Engine) remember(b *binding, uid uint32, terms []uint32, s *scratch) []uint32 {
	slices.Sort(terms)
	s.uploaded = terms
	if e.cache != nil {
		// The entry must own its terms: s.uploaded is reused.
		e.cache.Set(uint64(uid), &personaEntry{vocab: b.rules.vocab, epoch: b.epoch, terms: append([]uint32(nil), terms...)}, 1)
	}
	return terms
}
