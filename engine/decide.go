package engine

import (
	"context"
	"math/bits"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/bits-and-blooms/bitset"

	"github.com/personad/personad/segments"
)

// scratch is one decision's working memory, pooled and sized to the rules.
type scratch struct {
	words    int
	cand     *bitset.BitSet // candidate campaign ordinals
	tmp      *bitset.BitSet
	persona  []uint64 // term bitset
	terms    []uint32 // persona term ids, ascending
	uploaded []uint32
	channel  int
	// moneyStages records, for debug queries only, the campaigns the ledger
	// stopped after every other filter passed.
	moneyStages []moneyStage
}

type moneyStage struct {
	ordinal uint32
	imp     int
	stage   Stage
}

var scratchPool sync.Pool

func getScratch(r *Rules) *scratch {
	s, _ := scratchPool.Get().(*scratch)
	if s == nil {
		s = &scratch{}
	}
	if s.words != r.idx.words || s.cand == nil {
		s.words = r.idx.words
		s.cand = bitset.From(make([]uint64, r.idx.words))
		s.tmp = bitset.From(make([]uint64, r.idx.words))
	}
	if n := (len(r.terms) + 63) / 64; len(s.persona) != n {
		s.persona = make([]uint64, n)
	}
	return s
}

func putScratch(s *scratch) {
	s.terms, s.uploaded, s.moneyStages = s.terms[:0], s.uploaded[:0], s.moneyStages[:0]
	scratchPool.Put(s)
}

func trailingZeros(w uint64) int { return bits.TrailingZeros64(w) }

// deadlineEvery is how many candidates are examined between deadline checks.
const deadlineEvery = 64

// Decide answers q into d (reset first). It never blocks and never fails:
// when its deadline (the earlier of ctx's and q.Deadline) passes
// mid-decision it stops with ReasonDeadline rather than answer late.
//
// The candidates come from the targeting index: bitmap AND/OR/ANDNOT over
// campaign ordinals for the persona's facets, the channel and the
// impressions' sizes. Ordinals are in rank order, so for each impression
// the first candidate that passes every filter is the winner and the scan
// stops there.
func (e *Engine) Decide(ctx context.Context, q *Query, d *Decision) {
	p, seg := e.begin(d)
	if p == nil {
		return
	}
	r := p.rules
	deadline, hasDeadline := ctx.Deadline()
	if !q.Deadline.IsZero() && (!hasDeadline || q.Deadline.Before(deadline)) {
		deadline, hasDeadline = q.Deadline, true
	}
	late := func() bool { return hasDeadline && !time.Now().Before(deadline) }

	s := getScratch(r)
	defer putScratch(s)
	s.channel, d.Channel = r.resolveChannel(q)
	e.resolvePersona(e.bind(r, seg), q, s)
	if q.Debug {
		defer e.explain(r, s, q, d)
	}
	if !r.candidates(s, q) {
		d.NoBid = ReasonUnmatchedUser
		return
	}
	if late() {
		d.NoBid = ReasonDeadline
		return
	}
	now := q.Now.UnixNano()
	var user, rnd uint64
	if p.money != nil {
		user, rnd = UserKey(q), rand.Uint64()
	}
	n := 0
	for i := range q.Imps {
		imp := &q.Imps[i]
		for o, ok := s.cand.NextSet(0); ok; o, ok = s.cand.NextSet(o + 1) {
			if n++; n%deadlineEvery == 0 && late() {
				// Stop now rather than answer late; bids already reserved
				// are decided and go out.
				if len(d.Bids) == 0 {
					d.NoBid = ReasonDeadline
				}
				return
			}
			c := &r.campaigns[o]
			if c.BidMicros < imp.FloorMicros {
				// Below the floor (or, in another currency, not comparable
				// to it): so is every later campaign of this tier.
				o = uint(p.tierEnd[o]) - 1
				continue
			}
			if st, _ := c.campaignStage(s, q, now, c.verify); st != StageChosen {
				s.cand.Clear(o) // fails for every impression
				continue
			}
			cr, st := c.impStage(s, q, imp)
			if st != StageChosen {
				continue
			}
			if len(d.Bids) > 0 && c.Currency != d.Bids[0].Campaign.Currency {
				// A response has one currency, that of its first bid: the
				// campaign cannot bid on any impression of this request.
				s.cand.Clear(o)
				if q.Debug {
					s.moneyStages = append(s.moneyStages, moneyStage{ordinal: uint32(o), imp: i, stage: StageCurrency})
				}
				continue
			}
			var id uint64
			if p.money != nil {
				if id, st = e.spend(p.money[o], c, user, rnd^uint64(o)*0x9e3779b97f4a7c15, now, d.Channel); st != StageChosen {
					s.cand.Clear(o) // money does not change between impressions
					if q.Debug {
						s.moneyStages = append(s.moneyStages, moneyStage{ordinal: uint32(o), imp: i, stage: st})
					}
					continue
				}
			}
			d.Bids = append(d.Bids, Bid{Imp: i, Campaign: c, Creative: cr, PriceMicros: c.BidMicros, ID: id})
			s.cand.Clear(o) // a campaign bids on at most one impression
			break
		}
	}
	if len(d.Bids) == 0 {
		d.NoBid = ReasonNoEligible
	}
}

// begin resets d for a decision and names in it the rules and segment
// versions it is made with: the published state and segment snapshot it
// returns, or nil (and ReasonNoRules) while no rules are loaded.
func (e *Engine) begin(d *Decision) (*published, *segments.Snapshot) {
	d.reset()
	p := e.state.Load()
	if p.rules == nil {
		d.NoBid = ReasonNoRules
		return nil, nil
	}
	seg := e.segs.Current()
	d.RulesVersion = p.rules.version
	if seg != nil {
		d.SegmentsVersion = seg.Version()
	}
	return p, seg
}

// Expired answers q as Decide does when its deadline passed before the
// decision began: a no-bid with ReasonDeadline (ReasonNoRules without
// rules) naming the rules and segment versions, and for a debug query the
// channel, the persona and a deadline entry for every campaign. No
// campaign is considered and nothing is reserved. For the caller that
// knows the time is already out (tmax within the network margin); it may
// allocate, as a debug decision does.
func (e *Engine) Expired(q *Query, d *Decision) {
	p, seg := e.begin(d)
	if p == nil {
		return
	}
	r := p.rules
	d.NoBid = ReasonDeadline
	s := getScratch(r)
	defer putScratch(s)
	s.channel, d.Channel = r.resolveChannel(q)
	if q.Debug {
		e.resolvePersona(e.bind(r, seg), q, s)
		e.explain(r, s, q, d)
	}
}

// candidates leaves in s.cand the campaigns whose index entries admit the
// request: live, targeting.all and targeting.none satisfied by the persona,
// the channel targeted, a creative of one of the impressions' sizes. It
// reports false when the persona alone leaves no campaign, live or not: a
// persona only paused or house-blocked campaigns target is not an
// unmatched user.
func (r *Rules) candidates(s *scratch, q *Query) bool {
	x := &r.idx
	fillCampaigns(s.cand, len(r.campaigns))
	terms := s.terms
	for _, f := range r.constrained {
		for len(terms) > 0 && r.terms[terms[0]].facet < f.facet {
			terms = terms[1:]
		}
		f.unconstrained.Copy(s.tmp)
		for len(terms) > 0 && r.terms[terms[0]].facet == f.facet {
			if a := r.terms[terms[0]].accept; a != nil {
				s.tmp.InPlaceUnion(a)
			}
			terms = terms[1:]
		}
		s.cand.InPlaceIntersection(s.tmp)
	}
	for _, t := range s.terms {
		if ex := r.terms[t].exclude; ex != nil {
			s.cand.InPlaceDifference(ex)
		}
	}
	if s.cand.None() {
		return false
	}
	s.cand.InPlaceIntersection(x.live)
	x.anyChannel.Copy(s.tmp)
	if s.channel >= 0 {
		s.tmp.InPlaceUnion(x.byChannel[s.channel])
	}
	s.cand.InPlaceIntersection(s.tmp)

	s.tmp.ClearAll()
	for i := range q.Imps {
		for _, sz := range q.Imps[i].Sizes {
			if b := x.bySize[sz]; b != nil {
				s.tmp.InPlaceUnion(b)
			}
		}
	}
	s.cand.InPlaceIntersection(s.tmp)
	return true
}

// fillCampaigns sets the bits of ordinals 0 to n-1 of b, which is sized to
// the rules, and clears the rest.
func fillCampaigns(b *bitset.BitSet, n int) {
	w := b.Words()
	for i := range w {
		w[i] = ^uint64(0)
	}
	if rem := n % 64; rem != 0 {
		w[len(w)-1] = 1<<rem - 1
	}
}
