package engine

import (
	"github.com/RoaringBitmap/roaring/v2"
	"github.com/dgraph-io/ristretto/v2"

	"github.com/personad/personad/segments"
)

// binding ties compiled rules to a segment snapshot: for every term of the
// rules, the uploaded segment holding it (nil when none). It is rebuilt
// when either side changes, which is rare next to decisions.
type binding struct {
	rules *Rules
	seg   *segments.Snapshot
	bms   []*roaring.Bitmap // term id -> users, or nil
}

func (e *Engine) bind(r *Rules, seg *segments.Snapshot) *binding {
	if b := e.binding.Load(); b != nil && b.rules == r && b.seg == seg {
		return b
	}
	b := &binding{rules: r, seg: seg, bms: make([]*roaring.Bitmap, len(r.terms))}
	if seg != nil {
		for f, t := range r.termByFact {
			if s := seg.Segment(f.Facet, f.Value); s != nil {
				b.bms[t] = s.Users
			}
		}
	}
	e.binding.Store(b) // a racing decision may store its own equal binding: harmless
	return b
}

// personaEntry is a user's uploaded persona as term ids of one rules
// version, resolved against one segment snapshot. It is immutable.
type personaEntry struct {
	rules *Rules
	seg   uint64
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
// cache when it holds an entry for these rules and this segment version.
// On a miss it tests only the segments the rules refer to.
func (e *Engine) uploadedTerms(b *binding, uid uint32, s *scratch) []uint32 {
	segVersion := b.seg.Version()
	if e.cache != nil {
		if p, ok := e.cache.Get(uint64(uid)); ok && p.rules == b.rules && p.seg == segVersion {
			return p.terms
		}
	}
	terms := s.uploaded[:0]
	for t, bm := range b.bms {
		if bm != nil && bm.Contains(uid) {
			terms = append(terms, uint32(t))
		}
	}
	s.uploaded = terms
	if e.cache != nil {
		// The entry must own its terms: s.uploaded is reused.
		e.cache.Set(uint64(uid), &personaEntry{rules: b.rules, seg: segVersion, terms: append([]uint32(nil), terms...)}, 1)
	}
	return terms
}
