package engine

import (
	"errors"

	"github.com/cespare/xxhash/v2"

	"github.com/personad/personad/ledger"
)

// spend asks the ledger whether campaign c may bid its price (per
// impression: CPM / 1000) now for user, and
// reserves the bid when it may: budget and pacing (Allow, lock-free), the
// frequency cap across channels, then an atomic reservation that never
// lets reserved plus settled spend pass a budget, in the campaign's
// currency as these rules price it (a bid priced by rules whose currency
// a reload is changing is refused: ledger.ErrCurrency). It returns the
// bid id, or the stage that stopped the campaign.
func (e *Engine) spend(m *ledger.Campaign, c *Campaign, user, rnd uint64, now int64, channel string) (uint64, Stage) {
	price := ImpressionMicros(c.BidMicros)
	if m == nil || !m.Allow(now, price, rnd) {
		return 0, StageBudget
	}
	if !e.ledger.FrequencyOK(m, user, now) {
		return 0, StageFrequency
	}
	id := e.ledger.NewBidID()
	if _, err := e.ledger.ReserveIn(m, c.Limits.Currency, id, user, price, now, e.ledger.TTL(channel)); err != nil {
		if errors.Is(err, ledger.ErrFrequency) || errors.Is(err, ledger.ErrFrequencyMem) || errors.Is(err, ledger.ErrNoUser) {
			return 0, StageFrequency
		}
		return 0, StageBudget
	}
	return id, StageChosen
}

// UserKey is the user's identity for frequency capping: a stable 64-bit
// hash of the buyer uid, else of the exchange's user id, so that the same
// person is counted across channels, restarts and nodes. 0 means unknown:
// a frequency-capped campaign never bids for an unknown user.
func UserKey(q *Query) uint64 {
	id := q.BuyerUID
	if id == "" {
		id = q.UserID
	}
	if id == "" {
		return 0
	}
	if k := xxhash.Sum64String(id); k != 0 {
		return k
	}
	return 1
}

// ImpressionMicros is what one impression costs at a CPM price: CPM / 1000,
// rounded up so that budgets err on the side of not overspending.
func ImpressionMicros(cpmMicros int64) int64 { return (cpmMicros + 999) / 1000 }

// FrequencyCaps appends to dst the frequency caps a decision of q may ask
// the ledger about, and returns it: those of the campaigns the targeting
// index leaves for q's persona, channel and sizes that pass the campaign
// filters (status, flight, channel, targeting, currency, blocked
// advertiser) and have a cap. The bidder gives them to
// ledger.WarmFrequency before Decide when a shared frequency store reads
// counts ahead of decisions, so that it reads the few a request can use,
// not every capped campaign's. It resolves the persona as Decide does
// (from the persona cache) and reserves nothing; without a ledger it
// returns dst as it is. It does not allocate beyond growing dst.
func (e *Engine) FrequencyCaps(q *Query, dst []ledger.FrequencyCap) []ledger.FrequencyCap {
	p := e.state.Load()
	if p.rules == nil || p.money == nil {
		return dst
	}
	r := p.rules
	s := getScratch(r)
	defer putScratch(s)
	s.channel, _ = r.resolveChannel(q)
	e.resolvePersona(e.bind(r, e.segs.Current()), q, s)
	if !r.candidates(s, q) {
		return dst
	}
	now, floor := q.Now.UnixNano(), minFloor(q)
	for o, ok := s.cand.NextSet(0); ok; o, ok = s.cand.NextSet(o + 1) {
		m := p.money[o]
		if m == nil {
			continue
		}
		fc, capped := m.FrequencyCap()
		if !capped {
			continue
		}
		c := &r.campaigns[o]
		if c.BidMicros < floor {
			continue
		}
		if st, _ := c.campaignStage(s, q, now, c.verify); st != StageChosen {
			continue
		}
		dst = append(dst, fc)
	}
	return dst
}

// minFloor is the lowest floor of q's impressions: a campaign bidding
// less is below every one, and Decide passes it over.
func minFloor(q *Query) int64 {
	if len(q.Imps) == 0 {
		return 0
	}
	f := q.Imps[0].FloorMicros
	for i := range q.Imps[1:] {
		f = min(f, q.Imps[i+1].FloorMicros)
	}
	return f
}
