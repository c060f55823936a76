package engine

import (
	"maps"
	"slices"

	"github.com/bits-and-blooms/bitset"

	"github.com/personad/personad/internal/par"
	"github.com/personad/personad/rules"
)

// maxPatched bounds the campaigns a patch relinks; with more changed,
// linking afresh costs about the same.
const maxPatched = 256

// cloneChunk is how many compiled campaigns one CPU copies at a time when
// a patch copies the previous set's (about 300 bytes each).
const cloneChunk = 2048

// patchable reports whether rs may be an edit patch can apply to prev's
// rule set: the same campaign ids in the same order and the same content
// rules. Only then is hashing every campaign before anything else worth
// it (a cold compile hashes in its pass over the campaigns).
func patchable(prev *linked, rs *rules.RuleSet, content rules.Digest) bool {
	if len(prev.units) != len(rs.Campaigns) || content != prev.content {
		return false
	}
	for i := range rs.Campaigns {
		if rs.Campaigns[i].ID != prev.ids[i] {
			return false
		}
	}
	return true
}

// patch compiles rs as an edit of prev, the last rule set compiled: it
// reports ok false, having changed nothing but the cache, whenever the
// edit is not one it can apply exactly (then the caller links afresh, and
// validates everything). The result equals a fresh compilation:
//
//   - the campaign ids are prev's in the same order, and the content rules
//     are unchanged, so no id is duplicated and every campaign whose digest
//     is unchanged is valid and compiles as before;
//   - each changed campaign passes validation on its own, and its creative
//     ids are distinct and were all its own before, so no creative id is
//     duplicated either;
//   - no term appears or loses its last reference, and every channel the
//     changed campaigns name was first named by an earlier, unchanged
//     campaign (or by the content rules), so term and channel ids and the
//     tables over them stay as they are;
//   - the changed campaigns are relinked and binary-inserted at their new
//     rank; the campaigns between the first and last ordinal that moved or
//     changed are placed again, and every index set gets new words over
//     that range only, copied on write: an untouched set is shared.
//
// The caller has checked that rs is patchable.
func (cc *Compiler) patch(prev *linked, rs *rules.RuleSet, digests []rules.Digest, content rules.Digest) (r *Rules, l *linked, compiled int, ok bool) {
	n := len(rs.Campaigns)
	var changed []int
	for i := range rs.Campaigns {
		if digests[i] != prev.units[i].digest {
			if len(changed) == maxPatched {
				return nil, nil, 0, false
			}
			changed = append(changed, i)
		}
	}
	r0 := prev.r

	// Compile what changed; validate what the cache did not know.
	units := slices.Clone(prev.units)
	var fresh []int
	for _, i := range changed {
		if u := cc.lookup(rs.Campaigns[i].ID, digests[i]); u != nil {
			units[i] = u
		} else {
			fresh = append(fresh, i)
		}
	}
	if rs.ValidateCampaigns(fresh) != nil {
		return nil, nil, 0, false // the full path lists every error
	}
	var a unitArena
	for _, i := range fresh {
		units[i] = compileUnit(&rs.Campaigns[i], digests[i], &a)
		cc.store(units[i])
	}
	compiled = len(fresh)
	for _, i := range changed {
		if !ownCreativeIDs(prev.units[i], units[i]) {
			return nil, nil, 0, false
		}
	}

	// Terms and channels must keep their ids.
	refs := prev.refs
	if len(changed) > 0 {
		refs = slices.Clone(prev.refs)
	}
	for _, i := range changed {
		for _, f := range prev.units[i].facts {
			refs[r0.termByFact[f]]--
		}
		for _, f := range units[i].facts {
			t, known := r0.termByFact[f]
			if !known {
				return nil, nil, 0, false
			}
			refs[t]++
		}
	}
	for _, i := range changed {
		for _, f := range prev.units[i].facts {
			if refs[r0.termByFact[f]] == 0 {
				return nil, nil, 0, false
			}
		}
		for _, u := range []*unit{prev.units[i], units[i]} {
			if !namedBefore(r0, prev.chanFirst, i, u.channels) {
				return nil, nil, 0, false
			}
			for j := range u.creatives {
				if !namedBefore(r0, prev.chanFirst, i, u.creatives[j].channels) {
					return nil, nil, 0, false
				}
			}
		}
	}

	// Rank: take the changed campaigns out and insert each at its place.
	isChanged := make([]bool, n)
	for _, i := range changed {
		isChanged[i] = true
	}
	order := make([]int32, 0, n)
	for _, i := range prev.order {
		if !isChanged[i] {
			order = append(order, i)
		}
	}
	for _, i := range changed {
		u := units[i]
		at, _ := slices.BinarySearchFunc(order, u, func(j int32, u *unit) int { return compareUnits(units[j], u) })
		order = slices.Insert(order, at, int32(i))
	}
	lo, hi := n, -1
	for o, i := range order {
		if i != prev.order[o] || isChanged[i] {
			lo = min(lo, o)
			hi = o
		}
	}

	r = &Rules{}
	*r = *r0
	if hi < 0 {
		return r, &linked{r: r, content: content, units: units, ids: prev.ids, order: prev.order, ordOf: prev.ordOf, refs: refs, chanFirst: prev.chanFirst}, compiled, true
	}
	r.campaigns = par.Clone(r0.campaigns, cloneChunk)
	ordOf := slices.Clone(prev.ordOf)
	house := &rs.ContentRules
	var local []uint32
	for o := lo; o <= hi; o++ {
		i := order[o]
		ordOf[i] = int32(o)
		c := &r.campaigns[o]
		if !isChanged[i] {
			*c = r0.campaigns[prev.ordOf[i]]
		} else {
			u := units[i]
			local = local[:0]
			for _, f := range u.facts {
				local = append(local, r0.termByFact[f])
			}
			var size linkSize
			size.add(u)
			a := size.arena()
			linkCampaign(r, c, u, local, house, make([]Creative, len(u.creatives)), &a)
		}
		c.ordinal = uint32(o)
	}
	if !r.patchIndex(r0, lo, hi) {
		return nil, nil, 0, false
	}
	return r, &linked{r: r, content: content, units: units, ids: prev.ids, order: order, ordOf: ordOf, refs: refs, chanFirst: prev.chanFirst}, compiled, true
}

// ownCreativeIDs reports whether u's creative ids are distinct and each
// was one of old's: then a rule set without duplicate creative ids, with
// old replaced by u, has none either.
func ownCreativeIDs(old, u *unit) bool {
	for j := range u.creatives {
		id := u.creatives[j].ID
		for k := range j {
			if u.creatives[k].ID == id {
				return false
			}
		}
		if !slices.ContainsFunc(old.creatives, func(c unitCreative) bool { return c.ID == id }) {
			return false
		}
	}
	return true
}

// namedBefore reports whether every channel of chs has an id and was
// first named before campaign i: then campaign i's edit cannot renumber it.
func namedBefore(r *Rules, chanFirst []int32, i int, chs []string) bool {
	for _, ch := range chs {
		id, ok := r.channels[ch]
		if !ok || chanFirst[id] >= int32(i) {
			return false
		}
	}
	return true
}

// patchIndex gives r, a copy of r0 whose campaigns changed or moved only
// within the ordinals [lo, hi], the index a fresh build would: every set
// has its words over the range rebuilt from those campaigns, and is
// shared with r0 when they come out the same, copied otherwise. It reports
// false when the change is not one a patch can make (a facet becomes
// constrained, or stops being): the caller then links afresh.
func (r *Rules) patchIndex(r0 *Rules, lo, hi int) bool {
	x0 := &r0.idx
	wlo, whi := lo>>6, hi>>6
	rw := whi - wlo + 1
	// mask[j] has the bits of word wlo+j that lie in [lo, hi].
	mask := make([]uint64, rw)
	for j := range mask {
		m := ^uint64(0)
		if j == 0 {
			m &= ^uint64(0) << (lo & 63)
		}
		if j == rw-1 {
			m &= ^uint64(0) >> (63 - hi&63)
		}
		mask[j] = m
	}
	// The range's words of every set, cleared over [lo, hi] (set, for the
	// complements in constrained).
	nt, nch := len(r0.terms), len(x0.byChannel)
	sizes := make([]Size, 0, len(x0.bySize))
	for sz := range x0.bySize {
		sizes = append(sizes, sz)
	}
	nsets := 2 + nch + len(sizes) + 2*nt + len(r0.constrained)
	arena := make([]uint64, 0, nsets*rw)
	span := func(b *bitset.BitSet, fill bool) []uint64 {
		w := arena[len(arena) : len(arena)+rw : len(arena)+rw]
		arena = arena[:len(arena)+rw]
		if b != nil {
			copy(w, b.Words()[wlo:whi+1])
		}
		for j := range w {
			if fill {
				w[j] |= mask[j]
			} else {
				w[j] &^= mask[j]
			}
		}
		return w
	}
	live, anyCh := span(x0.live, false), span(x0.anyChannel, false)
	byCh := make([][]uint64, nch)
	for ch, b := range x0.byChannel {
		byCh[ch] = span(b, false)
	}
	bySize := make(map[Size][]uint64, len(sizes))
	for _, sz := range sizes {
		bySize[sz] = span(x0.bySize[sz], false)
	}
	acc, exc := make([][]uint64, nt), make([][]uint64, nt)
	for t := range r0.terms {
		acc[t], exc[t] = span(r0.terms[t].accept, false), span(r0.terms[t].exclude, false)
	}
	facetPos := make([]int, len(r0.facets))
	for f := range facetPos {
		facetPos[f] = -1
	}
	uncon := make([][]uint64, len(r0.constrained))
	for k, fi := range r0.constrained {
		facetPos[fi.facet] = k
		uncon[k] = span(fi.unconstrained, true)
	}

	// Set the bits of the campaigns in the range, as buildIndex does.
	for o := lo; o <= hi; o++ {
		c := &r.campaigns[o]
		j, bit := (o>>6)-wlo, uint64(1)<<(o&63)
		if c.active && c.houseBlocked == "" {
			live[j] |= bit
		}
		if len(c.channels) == 0 {
			anyCh[j] |= bit
		}
		for _, ch := range c.channels {
			byCh[ch][j] |= bit
		}
		for _, cr := range c.Creatives {
			sz := Size{cr.W, cr.H}
			w := bySize[sz]
			if w == nil {
				w = make([]uint64, rw)
				bySize[sz] = w
			}
			w[j] |= bit
		}
		for _, cl := range c.all {
			k := facetPos[r.terms[cl[0]].facet]
			if k < 0 {
				return false
			}
			uncon[k][j] &^= bit
			for _, t := range cl {
				acc[t][j] |= bit
			}
		}
		for _, cl := range c.none {
			for _, t := range cl {
				exc[t][j] |= bit
			}
		}
	}

	// Commit: share what is unchanged, copy the rest.
	words := x0.words
	commit := func(old *bitset.BitSet, w []uint64, nilable bool) *bitset.BitSet {
		if old != nil && slices.Equal(old.Words()[wlo:whi+1], w) {
			return old
		}
		if old == nil && allZero(w) {
			return nil
		}
		nw := make([]uint64, words)
		if old != nil {
			copy(nw, old.Words())
		}
		copy(nw[wlo:], w)
		if nilable && allZero(nw) {
			return nil
		}
		return bitset.From(nw)
	}
	x := &r.idx
	x.live = commit(x0.live, live, false)
	x.anyChannel = commit(x0.anyChannel, anyCh, false)
	x.byChannel = slices.Clone(x0.byChannel)
	for ch := range x.byChannel {
		x.byChannel[ch] = commit(x0.byChannel[ch], byCh[ch], false)
	}
	var newSizes map[Size]*bitset.BitSet
	for sz, w := range bySize {
		old := x0.bySize[sz]
		b := commit(old, w, true)
		if b == old {
			continue
		}
		if newSizes == nil {
			newSizes = maps.Clone(x0.bySize)
		}
		if b == nil {
			delete(newSizes, sz)
		} else {
			newSizes[sz] = b
		}
	}
	if newSizes != nil {
		x.bySize = newSizes
	}
	r.terms = slices.Clone(r0.terms)
	for t := range r.terms {
		tm := &r.terms[t]
		tm.accept = commit(tm.accept, acc[t], true)
		tm.exclude = commit(tm.exclude, exc[t], true)
	}
	r.constrained = slices.Clone(r0.constrained)
	for k := range r.constrained {
		fi := &r.constrained[k]
		b := commit(fi.unconstrained, uncon[k], false)
		if b != fi.unconstrained && isFull(b.Words(), uint(len(r0.campaigns))) {
			return false // no campaign constrains the facet any more
		}
		fi.unconstrained = b
	}
	return true
}

func allZero(w []uint64) bool {
	for _, v := range w {
		if v != 0 {
			return false
		}
	}
	return true
}

// isFull reports whether w has every bit below n set.
func isFull(w []uint64, n uint) bool {
	for i, v := range w {
		want := ^uint64(0)
		if rest := n - uint(i)*64; rest < 64 {
			want = 1<<rest - 1
		}
		if v != want {
			return false
		}
	}
	return true
}
