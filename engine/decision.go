package engine

// Decision is the engine's answer to a Query. It is owned by the caller and
// reused across calls: Decide resets it first. Campaign and Creative
// pointers refer into the immutable compiled rules and stay valid for as
// long as the caller holds them.
type Decision struct {
	// Bids holds at most one bid per impression, in impression order.
	Bids []Bid
	// NoBid says why there is no bid at all; ReasonNone when len(Bids) > 0.
	NoBid Reason

	// RulesVersion and SegmentsVersion name the snapshots that decided.
	RulesVersion    string
	SegmentsVersion uint64
	// Channel is the channel the request was resolved to.
	Channel string

	// Persona and Trace are filled only for a Query with Debug set:
	// the user's targeted segments as "facet:value", and what happened to
	// every campaign.
	Persona []string
	Trace   []Trace
}

// Bid is the chosen creative for one impression.
type Bid struct {
	// Imp is the index of the impression in Query.Imps.
	Imp      int
	Campaign *Campaign
	Creative *Creative
	// PriceMicros is the bid price, CPM, in micro-units of Campaign.Currency.
	PriceMicros int64
	// ID is the ledger's id of the bid's reservation, which win, billing
	// and loss notices name; 0 when the engine runs without a ledger.
	ID uint64
}

// Trace says what happened to one campaign, for debug responses.
type Trace struct {
	Campaign string
	// Imp is the impression id the entry is about, empty for stages that do
	// not depend on the impression.
	Imp      string
	Stage    Stage
	Detail   string
	Creative string
}

// Reason is why a decision has no bid. The wire maps it to OpenRTB nbr.
type Reason uint8

const (
	ReasonNone Reason = iota
	// ReasonUnmatchedUser: no campaign's targeting (all and none clauses)
	// admits this user's persona, whatever the channel.
	ReasonUnmatchedUser
	// ReasonNoEligible: campaigns target the persona, but none can bid here
	// (channel, size, creative channel or persona, blocks, floor, flight,
	// status, currency, budget or pacing, frequency cap).
	ReasonNoEligible
	// ReasonDeadline: the latency budget ran out before a decision.
	ReasonDeadline
	// ReasonNoRules: no rule set is loaded.
	ReasonNoRules
)

var reasonNames = [...]string{"none", "unmatched_user", "no_eligible", "deadline", "no_rules"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// Stage names the filter that rejected a campaign, in decision order.
type Stage uint8

const (
	StageStatus     Stage = iota // paused
	StageFlight                  // outside the flight window
	StageChannel                 // targeting.channels excludes the channel
	StageTargeting               // persona fails targeting.all or matches targeting.none
	StageCurrency                // currency not accepted by the request
	StageBlocked                 // category or advertiser blocked (request or house rules)
	StageSize                    // no creative of an accepted size
	StageCreative                // no creative for this channel and persona
	StageFloor                   // price below the impression's floor
	StageBudget                  // budget spent, or even pacing held it back
	StageFrequency               // frequency cap reached for this user
	StageAlreadyBid              // the campaign bid on an earlier impression
	StageOutranked               // eligible, but another campaign ranked first
	StageDeadline                // not examined: the latency budget ran out
	StageChosen                  // won the impression
)

var stageNames = [...]string{
	"status", "flight", "channel", "targeting", "currency", "blocked", "size",
	"creative", "floor", "budget", "frequency", "already_bid", "outranked", "deadline", "chosen",
}

func (s Stage) String() string {
	if int(s) < len(stageNames) {
		return stageNames[s]
	}
	return "unknown"
}

func (d *Decision) reset() {
	bids, persona, trace := d.Bids[:0], d.Persona[:0], d.Trace[:0]
	*d = Decision{Bids: bids, Persona: persona, Trace: trace}
}
