package engine

import "time"

// Query is the engine's own compact view of a bid request: the wire package
// translates OpenRTB messages into it, and the engine never sees the wire.
// A Query is owned by the caller and may be reused after Decide returns;
// the engine keeps no reference to it.
type Query struct {
	// Now is the decision time: flight windows are checked against it.
	Now time.Time
	// Deadline, when set, is when the decision must be done by; Decide
	// keeps the earlier of it and its context's deadline. A field rather
	// than context.WithTimeout, which costs a request 4 allocations.
	Deadline time.Time

	// BuyerUID and UserID identify the user; uploaded segments are looked
	// up by BuyerUID first, then UserID. Either may be empty.
	BuyerUID string
	UserID   string
	// Facts are persona facts carried by the request (user.data[].segment[]).
	// Facts on facets or values no campaign targets are ignored.
	Facts []Fact

	// Channel is the channel the request names (site.ext.channel or
	// app.ext.channel), lower case; empty lets the engine resolve it from
	// Domain or Bundle through the rules' channel map, falling back to "web"
	// for a site and "app" for an app. Domains are matched in any case and
	// with or without a leading "www."; bundles exactly.
	Channel string
	Domain  string
	Bundle  string
	App     bool

	Imps []Imp

	// BCat and BAdv are the request's blocked categories and advertiser
	// domains, added to the house content rules.
	BCat []string
	BAdv []string
	// BCatForeign says that BCat is written in a category taxonomy other
	// than the one creatives are (IAB Content Category Taxonomy 1.0): which
	// creatives it blocks cannot be told, so every creative counts as
	// blocked (stage blocked).
	BCatForeign bool
	// Currencies the exchange accepts; empty means USD.
	Currencies []string

	// Debug asks for Decision.Trace: what happened to every campaign.
	Debug bool
}

// Fact is one persona fact: the user has Value in Facet.
type Fact struct {
	Facet string
	Value string
}

// Imp is one impression of a Query.
type Imp struct {
	ID string
	// Sizes the placement accepts (banner.format, or banner.w x banner.h).
	Sizes []Size
	// FloorMicros is the bid floor, CPM, in micro-units of FloorCur.
	FloorMicros int64
	// FloorCur is the floor's currency; empty means USD.
	FloorCur string
}

// Size is a creative or placement size in pixels.
type Size struct{ W, H int32 }

// Reset empties q for reuse, keeping its slices' capacity.
func (q *Query) Reset() {
	facts, imps, bcat, badv, cur := q.Facts[:0], q.Imps[:0], q.BCat[:0], q.BAdv[:0], q.Currencies[:0]
	*q = Query{Facts: facts, Imps: imps, BCat: bcat, BAdv: badv, Currencies: cur}
}
