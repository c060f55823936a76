package ledger

import (
	"sort"
	"time"
)

// CampaignReport is one campaign's money and pacing at a moment, in
// micro-units of its currency. Spend counts reserved (not yet settled)
// bids at their bid price: it is what the budget check sees.
type CampaignReport struct {
	ID                   string
	Currency             string    // as last recorded (Limits.Currency); "" if never
	Day                  time.Time // start of the current budget day
	SpentTodayMicros     int64     // reserved + settled, today
	SettledTodayMicros   int64
	ReservedMicros       int64 // outstanding reservations
	TotalSpentMicros     int64 // reserved + settled, all time
	SettledTotalMicros   int64
	DailyBudgetMicros    int64 // 0: no limit
	TotalBudgetMicros    int64 // 0: no limit
	RemainingTodayMicros int64 // -1: no limit
	RemainingTotalMicros int64 // -1: no limit
	Pacing               Pacing
	PacingRate           float64 // even pacing's pass-through rate
	// LeasedTodayMicros and LeasedTotalMicros are the lease this node holds
	// (how far it may spend before asking its log or Redis for more).
	LeasedTodayMicros int64
	LeasedTotalMicros int64
	// CrashCountedMicros was counted as spent at recovery because the log
	// could not prove it unspent; LateBilledMicros was billed after its
	// reservation had been released.
	CrashCountedMicros int64
	LateBilledMicros   int64
}

// NoCurrency is CurrencyLabel's name for the currency of a campaign the
// ledger never recorded one for (it left the rules before personad
// recorded currencies).
const NoCurrency = "unrecorded"

// CurrencyLabel is cur, a campaign's recorded currency, as the key of an
// amount per currency in logs and metrics: NoCurrency for "". Amounts in
// different currencies are never summed.
func CurrencyLabel(cur string) string {
	if cur == "" {
		return NoCurrency
	}
	return cur
}

// Report returns every campaign's state at now, sorted by id. It reads
// atomics only and may run beside the hot path.
func (l *Ledger) Report(now time.Time) []CampaignReport {
	start, _, day := l.days.bounds(now.UnixNano())
	camps := *l.campaigns.Load()
	out := make([]CampaignReport, 0, len(camps))
	for _, c := range camps {
		lim := c.Limits()
		r := CampaignReport{
			ID:                 c.id,
			Currency:           c.Currency(),
			Day:                time.Unix(0, start).In(l.loc),
			ReservedMicros:     c.reserved.Load(),
			TotalSpentMicros:   c.totalUsed.Load(),
			SettledTotalMicros: c.settledTotal.Load(),
			DailyBudgetMicros:  lim.DailyMicros,
			TotalBudgetMicros:  lim.TotalMicros,
			Pacing:             lim.Pacing,
			PacingRate:         c.Rate(),
			LeasedTotalMicros:  c.ceilTotal.Load(),
			CrashCountedMicros: c.crashMicros.Load(),
			LateBilledMicros:   c.lateMicros.Load(),
		}
		r.SpentTodayMicros, _ = on(c.dayUsed.Load(), day)
		r.SettledTodayMicros, _ = on(c.settledDay.Load(), day)
		r.LeasedTodayMicros, _ = on(c.ceilDay.Load(), day)
		r.RemainingTodayMicros, r.RemainingTotalMicros = -1, -1
		if lim.DailyMicros > 0 {
			r.RemainingTodayMicros = max(0, lim.DailyMicros-r.SpentTodayMicros)
		}
		if lim.TotalMicros > 0 {
			r.RemainingTotalMicros = max(0, lim.TotalMicros-r.TotalSpentMicros)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Stats are the ledger's event counts since it opened (replay included:
// the log's records, and the reservations still open in a checkpoint,
// whose outcomes count from then on).
type Stats struct {
	Reserved, RefusedBudget, RefusedLease, RefusedFrequency int64
	Wins, Bills, Losses, Expired, ExpiredWon                int64
	// Duplicates are repeated notices (and reservations) that changed
	// nothing; Conflicts contradict an earlier notice; Unknown name no bid
	// the ledger remembers; BadPrice were bills above the bid or negative;
	// Late were wins or bills after a release; Forged failed token verification.
	Duplicates, Conflicts, Unknown, BadPrice, Late, Forged int64
	// UnknownBilledMicros is the clearing prices of the bills among
	// Unknown: money charged for bids the ledger no longer remembers
	// (billed more than Retention after the reservation's deadline, or
	// lost in a crash), which no campaign's spend counts.
	UnknownBilledMicros                int64
	LeaseFailures                      int64
	FrequencyEntries, FrequencyRefused int64
	// LogWriteFailures counts the durable log's writes, and creations
	// of its next segment, that failed (a full or read-only disk), one
	// per attempt; see LogErr for the log's state now.
	LogWriteFailures int64
}

// Stats returns the ledger's counters.
func (l *Ledger) Stats() Stats {
	s := &l.stats
	st := Stats{
		Reserved: s.reserved.Load(), RefusedBudget: s.refusedBudget.Load(),
		RefusedLease: s.refusedLease.Load(), RefusedFrequency: s.refusedFreq.Load(),
		Wins: s.wins.Load(), Bills: s.bills.Load(), Losses: s.losses.Load(),
		Expired: s.expired.Load(), ExpiredWon: s.expiredWon.Load(),
		Duplicates: s.duplicates.Load(), Conflicts: s.conflicts.Load(),
		Unknown: s.unknown.Load(), BadPrice: s.badPrice.Load(), Late: s.late.Load(),
		UnknownBilledMicros: s.unknownBilled.Load(),
		Forged:              l.signer.Forged(),
		LeaseFailures:       l.leases.failures.Load(),
		FrequencyEntries:    l.freq.entries.Load(), FrequencyRefused: l.freq.refused.Load(),
	}
	if l.log != nil {
		st.LogWriteFailures = l.log.writeFailures.Load()
	}
	return st
}

// LogErr reports the durable log's trouble, nil when it writes: an error
// wrapping ErrNotDurable that names the file and the system's error. A
// write error lasts until a later write succeeds (records that could
// not be written are kept, in order, and written then); an fsync error
// lasts until a restart. Notices and leases are not acknowledged
// meanwhile, so budgeted campaigns stop bidding once their lease is
// spent. It is safe for concurrent use.
func (l *Ledger) LogErr() error {
	if l.log == nil {
		return nil
	}
	return l.log.trouble()
}

// LimitsUsedToday returns c's reserved plus settled spend for the day of
// now: what its daily budget is checked against.
func LimitsUsedToday(c *Campaign, now time.Time) int64 {
	v, _ := on(c.dayUsed.Load(), c.l.days.day(now.UnixNano()))
	return v
}

// LeasedToday returns how far c may spend today on this node before it
// needs a new lease.
func LeasedToday(c *Campaign, now time.Time) int64 {
	v, _ := on(c.ceilDay.Load(), c.l.days.day(now.UnixNano()))
	return v
}
