package bidder

import (
	"math"
	"strings"
	"time"

	"github.com/personad/personad/engine"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/rules"
)

// translate fills q, which must be reset, from a validated request. It
// reuses q's slices (and each Imp's Sizes) so that a pooled Query
// translates without allocating. Strings in q alias the request's.
func translate(req *personadpb.BidRequest, now time.Time, q *engine.Query) {
	q.Now = now
	if u := req.User; u != nil {
		q.BuyerUID, q.UserID = u.Buyeruid, u.Id
		for _, d := range u.Data {
			for _, s := range d.GetSegment() {
				if f, ok := segmentFact(s); ok {
					q.Facts = append(q.Facts, f)
				}
			}
		}
	}
	switch {
	case req.Site != nil:
		q.Channel = strings.ToLower(req.Site.GetExt().GetChannel())
		q.Domain = req.Site.Domain
	case req.App != nil:
		q.App = true
		q.Channel = strings.ToLower(req.App.GetExt().GetChannel())
		q.Domain, q.Bundle = req.App.Domain, req.App.Bundle
	}

	n := len(req.Imp)
	if cap(q.Imps) < n {
		// Grow keeping the old elements, whose Sizes capacity is reused.
		q.Imps = append(q.Imps[:cap(q.Imps)], make([]engine.Imp, n-cap(q.Imps))...)
	}
	q.Imps = q.Imps[:n]
	for i, imp := range req.Imp {
		qi := &q.Imps[i]
		sizes := qi.Sizes[:0]
		b := imp.Banner
		for _, f := range b.Format {
			if !flexFormat(f) {
				sizes = append(sizes, engine.Size{W: f.W, H: f.H})
			}
		}
		if len(sizes) == 0 && b.W > 0 && b.H > 0 {
			sizes = append(sizes, engine.Size{W: b.W, H: b.H})
		}
		*qi = engine.Imp{ID: imp.Id, Sizes: sizes, FloorMicros: floorToMicros(imp.Bidfloor), FloorCur: imp.Bidfloorcur}
	}
	q.BCat = append(q.BCat, req.Bcat...)
	// Creatives' categories are IAB Content Category Taxonomy 1.0 codes
	// (cattax 1, OpenRTB's default): blocks in any other taxonomy cannot
	// be compared with them, and block every creative.
	q.BCatForeign = len(req.Bcat) > 0 && req.Cattax > cattaxIAB10
	q.BAdv = append(q.BAdv, req.Badv...)
	q.Currencies = append(q.Currencies, req.Cur...)
	q.Debug = req.GetExt().GetDebug()
}

// cattaxIAB10 is IAB Content Category Taxonomy 1.0 in AdCOM's list of
// category taxonomies: the taxonomy of creatives' cat, and of bcat when
// the request's cattax is unset (0).
const cattaxIAB10 = 1

// flexFormat reports whether a validated format is a flex ad's (wratio,
// hratio and wmin, no w and h): personad serves exact sizes only, so it
// offers none. An impression whose formats are all flex takes banner.w x
// banner.h when set, as one without formats does, else has no size and
// gets no bid.
func flexFormat(f *personadpb.Format) bool { return f.W == 0 && f.H == 0 }

// segmentFact reads one persona fact from an OpenRTB segment: name is the
// facet and value its value ("title", "cmo"), or id is "facet:value". Both
// are compared in lower case. A segment that is neither, or whose facet or
// value is not a valid name (rules.IsFacet, rules.IsValue), is not a fact:
// exchanges send all kinds of segments, and those are ignored, not errors.
func segmentFact(s *personadpb.Segment) (engine.Fact, bool) {
	if s.Name != "" && s.Value != "" {
		f, v := strings.ToLower(s.Name), strings.ToLower(s.Value)
		if rules.IsFacet(f) && rules.IsValue(v) {
			return engine.Fact{Facet: f, Value: v}, true
		}
	}
	if f, v, ok := strings.Cut(s.Id, ":"); ok {
		f, v = strings.ToLower(f), strings.ToLower(v)
		if rules.IsFacet(f) && rules.IsValue(v) {
			return engine.Fact{Facet: f, Value: v}, true
		}
	}
	return engine.Fact{}, false
}

// floorToMicros converts a validated floor CPM (finite, >= 0) to integer
// micro-units, rounding up: a bid must never fall below the exchange's
// floor by a fraction of a micro. The tolerance absorbs the float's binary
// error, so that 1.1 is 1_100_000 and not 1_100_001. A floor whose
// micro-units would not fit an int64 saturates at math.MaxInt64: no
// campaign meets it either way (bids are at most rules.MaxBidCPM).
func floorToMicros(cpm float64) int64 {
	if cpm >= saturatedFloorCPM {
		return math.MaxInt64
	}
	return int64(math.Ceil(cpm*1e6 - 1e-6))
}

// saturatedFloorCPM is a floor from which floorToMicros saturates: its
// micro-units, 9e18, are just below math.MaxInt64 (9.22e18).
const saturatedFloorCPM = 9e12

// microsToCPM converts integer micro-units to a CPM price.
func microsToCPM(micros int64) float64 { return float64(micros) / 1e6 }
