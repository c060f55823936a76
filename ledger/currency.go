package ledger

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrCurrency refuses a reservation priced in a currency other than the
// campaign's recorded one (ReserveIn): the bid was priced by rules from
// before a currency change.
var ErrCurrency = errors.New("ledger: bid priced in a currency other than the campaign's")

// CurrencyConflict is a currency change refused because the campaign
// holds money in its current currency.
type CurrencyConflict struct {
	ID       string
	From, To string
	// SpentMicros is its reserved plus settled spend, all time, in From
	// (CampaignReport.TotalSpentMicros).
	SpentMicros int64
	// Bids is the number of its bids the ledger remembers (reserved, or
	// finished within Retention): a win or a bill for one still counts
	// money priced in From.
	Bids int
}

// CurrencyError is the refusal of SetCurrencies (or of Campaign, for a
// currency change): every campaign whose currency it would change while
// it holds money in the old one, sorted by id.
type CurrencyError struct {
	Conflicts []CurrencyConflict
}

func (e *CurrencyError) Error() string {
	var b strings.Builder
	b.WriteString("ledger: refused currency change")
	for i, c := range e.Conflicts {
		if i > 0 {
			b.WriteByte(';')
		}
		fmt.Fprintf(&b, " campaign %q from %s to %s: spent %d micros, %d bids remembered", c.ID, c.From, c.To, c.SpentMicros, c.Bids)
	}
	return b.String()
}

// SetCurrencies records the currency of each campaign in want (by id) that
// the ledger knows with another recorded currency, all or nothing: when
// one of them has spent or holds a bid in its recorded currency (see
// CurrencyConflict), it changes nothing and returns a *CurrencyError
// listing each such campaign. Campaigns the ledger does not know, or
// knows without a recorded currency, are left to Campaign, which records
// theirs; an empty currency changes nothing.
//
// The decision is atomic with reservations: from the moment a change is
// decided, ReserveIn refuses bids priced in the old currency (ErrCurrency),
// so no bid priced by the rules being replaced books spend that the new
// currency would count. Call it before the rules in the new currency
// start deciding, and call it again with the returned was to undo the
// change if they never do: was holds the currency each changed campaign
// had.
func (l *Ledger) SetCurrencies(want map[string]string) (was map[string]string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var cs []*Campaign
	for id, cur := range want {
		if c := l.byID[id]; c != nil && cur != "" && c.Currency() != "" && c.Currency() != cur {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		return nil, nil
	}
	to := make([]string, len(cs))
	for i, c := range cs {
		to[i] = want[c.id]
	}
	return l.switchCurrenciesLocked(cs, to)
}

// CurrencyConflicts returns what SetCurrencies(want) would refuse now,
// changing nothing (nil when it would record every change).
func (l *Ledger) CurrencyConflicts(want map[string]string) []CurrencyConflict {
	l.mu.Lock()
	defer l.mu.Unlock()
	var (
		cs       []*Campaign
		from, to []string
	)
	for id, cur := range want {
		if c := l.byID[id]; c != nil && cur != "" && c.Currency() != "" && c.Currency() != cur {
			cs, from, to = append(cs, c), append(from, c.Currency()), append(to, cur)
		}
	}
	if len(cs) == 0 {
		return nil
	}
	return conflicts(cs, from, to, l.countBids(cs))
}

// switchCurrenciesLocked changes the recorded currency of each cs[i] to
// to[i], all or nothing, under l.mu. It publishes the new currencies
// first, so that from then on ReserveIn refuses bids priced in the old
// ones; then counts each campaign's remembered bids shard by shard, under
// each reservation shard's lock, which is also a barrier: a reservation
// checks the currency and adds its spend and its bid under its shard's
// lock, so one that saw an old currency has finished, its spend and its
// bid visible, once every shard's lock has been taken. A campaign with
// spend or bids then puts every old currency back (and refuses, with the
// conflicts); otherwise the new ones are logged.
func (l *Ledger) switchCurrenciesLocked(cs []*Campaign, to []string) (map[string]string, error) {
	was := make(map[string]string, len(cs))
	olds := make([]*string, len(cs))
	from := make([]string, len(cs))
	for i, c := range cs {
		olds[i] = c.currency.Load()
		from[i] = c.Currency()
		was[c.id] = from[i]
		cur := strings.Clone(to[i])
		c.currency.Store(&cur)
	}
	if bad := conflicts(cs, from, to, l.countBids(cs)); len(bad) > 0 {
		for i, c := range cs {
			c.currency.Store(olds[i])
		}
		return nil, &CurrencyError{Conflicts: bad}
	}
	if l.log != nil {
		for _, c := range cs {
			l.log.appendCampaign(c.key, c.id, c.Currency())
		}
	}
	return was, nil
}

// countBids returns how many bids the ledger remembers for each of cs,
// by index, taking every reservation shard's lock in turn.
func (l *Ledger) countBids(cs []*Campaign) []int {
	idx := make(map[uint32]int, len(cs))
	for i, c := range cs {
		idx[c.key] = i
	}
	n := make([]int, len(cs))
	for i := range l.resv.shards {
		s := &l.resv.shards[i]
		s.mu.Lock()
		for _, r := range s.m {
			if j, ok := idx[r.key]; ok {
				n[j]++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// conflicts are the campaigns among cs, going from from[i] to to[i],
// that hold money in from[i] (spend, or remembered bids: bids[i]),
// sorted by id.
func conflicts(cs []*Campaign, from, to []string, bids []int) []CurrencyConflict {
	var out []CurrencyConflict
	for i, c := range cs {
		if spent := max(c.totalUsed.Load(), c.settledTotal.Load()); spent > 0 || bids[i] > 0 {
			out = append(out, CurrencyConflict{ID: c.id, From: from[i], To: to[i], SpentMicros: spent, Bids: bids[i]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
