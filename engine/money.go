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
