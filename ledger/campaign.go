package ledger

import (
	"math"
	"sync/atomic"
	"time"
)

// Daily counters pack the day number (days since 1970-01-01 in the ledger's
// Location, modulo 2^16) above a 48-bit amount, so one compare-and-swap
// both rolls a counter over to a new day and reserves on it.
const (
	usedBits = 48
	usedMask = 1<<usedBits - 1
)

func pack(day int32, v int64) uint64 { return uint64(uint16(day))<<usedBits | uint64(v)&usedMask }

// on returns the amount w holds for day: 0 when w is from an earlier day;
// ok is false when w is from a later day (the caller's clock is behind).
func on(w uint64, day int32) (v int64, ok bool) {
	switch d := int16(uint16(day) - uint16(w>>usedBits)); {
	case d == 0:
		return int64(w & usedMask), true
	case d > 0:
		return 0, true
	default:
		return 0, false
	}
}

func dayOfWord(w uint64) uint16 { return uint16(w >> usedBits) }

// cacheLine pads hot atomics apart so that unrelated writers do not
// invalidate each other's lines.
type cacheLine [64]byte

// Campaign is the live money, pacing and frequency state of one campaign.
// Get it from Ledger.Campaign and keep it in compiled rules; a reload binds
// the same *Campaign again. Allow is lock-free and allocation-free.
// A Campaign is safe for concurrent use.
type Campaign struct {
	l      *Ledger
	key    uint32 // dense, stable for the life of the log
	id     string
	limits atomic.Pointer[Limits]
	// currency is the last Limits.Currency recorded for the campaign, in
	// this process or in the log; nil if none was. Stored under l.mu.
	currency atomic.Pointer[string]

	_ cacheLine
	// dayUsed and totalUsed are reserved plus settled spend, for the
	// current day and for all time: the amounts checked against budgets.
	dayUsed   atomic.Uint64 // packed(day, micros)
	totalUsed atomic.Int64
	reserved  atomic.Int64 // outstanding reservations, for reports
	_         cacheLine
	reqs      atomic.Int64 // Allow calls since the controller last looked
	_         cacheLine
	// rate is the even-pacing pass-through probability as a threshold on
	// the top 53 bits of the caller's random number: 1<<53 passes all.
	rate atomic.Uint64
	// ceilDay and ceilTotal are the leases: how far dayUsed and totalUsed
	// may go before the node asks its leaser (durable log or Redis) for
	// more. Meaningless when the ledger is not leased.
	ceilDay   atomic.Uint64 // packed(day, micros)
	ceilTotal atomic.Int64
	needLease atomic.Bool
	// leaseIdle is when (Unix nanoseconds) bids may next ask for a lease,
	// after the Leaser granted nothing (Config.LeaseRetry).
	leaseIdle atomic.Int64
	// leaseAgain is set by a release that finds a lease request pending:
	// the grant may have read the spend before the release.
	leaseAgain atomic.Bool
	// shrink is set by a change of the limits that lowers a budget: the
	// next grant gives back all unspent lease and leases anew under the
	// new budget.
	shrink   atomic.Bool
	maxPrice atomic.Int64 // the highest price refused for want of a lease

	settledDay   atomic.Uint64 // packed(day, micros)
	settledTotal atomic.Int64
	crashMicros  atomic.Int64 // counted as spent on recovery without a record
	lateMicros   atomic.Int64 // billed after the reservation was released
}

const rateOne = 1 << 53

func newCampaign(l *Ledger, key uint32, id string) *Campaign {
	c := &Campaign{l: l, key: key, id: id}
	c.rate.Store(rateOne)
	return c
}

// ID returns the campaign id.
func (c *Campaign) ID() string { return c.id }

// Currency returns the currency last recorded for the campaign
// (Limits.Currency), in this process or in its log; "" if none was.
func (c *Campaign) Currency() string {
	if p := c.currency.Load(); p != nil {
		return *p
	}
	return ""
}

// Limits returns the limits currently applied.
func (c *Campaign) Limits() Limits {
	if p := c.limits.Load(); p != nil {
		return *p
	}
	return Limits{}
}

// Rate returns the even-pacing pass-through rate in [MinRate, 1].
func (c *Campaign) Rate() float64 { return float64(c.rate.Load()) / rateOne }

func (c *Campaign) setRate(p float64) {
	c.rate.Store(uint64(math.Round(p * rateOne)))
}

// Allow reports whether the campaign may bid priceMicros at now (unix
// nanoseconds): reserved plus settled spend plus the price within the
// daily and total budgets (and the lease this node holds), and, for even
// pacing, r (a uniformly random number the caller draws) under the
// pass-through rate. It counts the call as traffic for the pacing
// controller. Allow does not reserve: Reserve does, atomically. It is
// lock-free and does not allocate.
func (c *Campaign) Allow(now, priceMicros int64, r uint64) bool {
	c.reqs.Add(1)
	lim := c.limits.Load()
	if lim == nil {
		return false // known from the log but not yet bound to rules
	}
	if lim.DailyMicros|lim.TotalMicros != 0 && c.room(lim, now, c.l.days.day(now), priceMicros) != nil {
		return false
	}
	if lim.Pacing == PacingEven && lim.DailyMicros > 0 && r>>11 >= c.rate.Load() {
		return false
	}
	return true
}

// room checks, without reserving, that price fits today's budgets.
func (c *Campaign) room(lim *Limits, now int64, day int32, price int64) error {
	if lim.TotalMicros > 0 {
		t := c.totalUsed.Load()
		if t+price > lim.TotalMicros {
			return ErrBudget
		}
		if c.l.leased() && t+price > c.ceilTotal.Load() {
			c.wantLease(price, now)
			return ErrNoLease
		}
	}
	if lim.DailyMicros > 0 {
		used, ok := on(c.dayUsed.Load(), day)
		if !ok {
			return ErrStaleClock
		}
		if used+price > lim.DailyMicros {
			return ErrBudget
		}
		if c.l.leased() {
			ceil, _ := on(c.ceilDay.Load(), day)
			if used+price > ceil {
				c.wantLease(price, now)
				return ErrNoLease
			}
		}
	}
	return nil
}

// reserveBudget adds price to the campaign's spend if it fits: a CAS loop
// on the total counter, then one on the day counter (undoing the first if
// the second fails). Neither counter ever passes its limit, so reserved
// plus settled never passes a budget; a concurrent reservation may be
// refused spuriously while an undo is pending, which errs on the safe side.
func (c *Campaign) reserveBudget(lim *Limits, now int64, day int32, price int64) error {
	leased := c.l.leased()
	if lim.TotalMicros > 0 {
		limit := lim.TotalMicros
		if leased {
			limit = min(limit, c.ceilTotal.Load())
		}
		for {
			t := c.totalUsed.Load()
			if t+price > limit {
				if t+price > lim.TotalMicros {
					return ErrBudget
				}
				c.wantLease(price, now)
				return ErrNoLease
			}
			if c.totalUsed.CompareAndSwap(t, t+price) {
				break
			}
		}
	} else {
		c.totalUsed.Add(price)
	}
	limit := int64(usedMask)
	if lim.DailyMicros > 0 {
		limit = lim.DailyMicros
		if leased {
			ceil, _ := on(c.ceilDay.Load(), day)
			limit = min(limit, ceil)
		}
	}
	for {
		w := c.dayUsed.Load()
		used, ok := on(w, day)
		var err error
		switch {
		case !ok:
			err = ErrStaleClock
		case used+price > limit && lim.DailyMicros > 0 && used+price > lim.DailyMicros:
			err = ErrBudget
		case used+price > limit:
			err = ErrNoLease
		}
		if err != nil {
			c.totalUsed.Add(-price)
			if err == ErrNoLease {
				c.wantLease(price, now)
			}
			return err
		}
		if c.dayUsed.CompareAndSwap(w, pack(day, used+price)) {
			break
		}
	}
	c.maybeLease(lim, now, day)
	return nil
}

// wantLease notes price (so that the next lease covers it) and asks for
// a lease, unless the Leaser granted nothing less than LeaseRetry ago.
func (c *Campaign) wantLease(price, now int64) {
	if price > c.maxPrice.Load() {
		c.maxPrice.Store(price)
	}
	if now >= c.leaseIdle.Load() {
		c.l.leases.request(c)
	}
}

// maybeLease asks for a new lease when the headroom left runs below half a
// lease (unless the Leaser granted nothing less than LeaseRetry ago).
func (c *Campaign) maybeLease(lim *Limits, now int64, day int32) {
	if !c.l.leased() || c.needLease.Load() || now < c.leaseIdle.Load() {
		return
	}
	if lim.DailyMicros > 0 {
		ceil, _ := on(c.ceilDay.Load(), day)
		used, _ := on(c.dayUsed.Load(), day)
		if ceil < lim.DailyMicros && ceil-used < c.l.leaseChunk(c, lim.DailyMicros)/2 {
			c.l.leases.request(c)
			return
		}
	}
	if lim.TotalMicros > 0 {
		ceil := c.ceilTotal.Load()
		if ceil < lim.TotalMicros && ceil-c.totalUsed.Load() < c.l.leaseChunk(c, lim.TotalMicros)/2 {
			c.l.leases.request(c)
		}
	}
}

// maybeShrink asks for the lease to be lowered when a release has left two
// leases or more of it unspent (see leaseState.grant): a crash counts the
// unspent lease as spent.
func (c *Campaign) maybeShrink() {
	if !c.l.leased() {
		return
	}
	lim := c.limits.Load()
	if lim == nil {
		return
	}
	if lim.DailyMicros > 0 {
		cd := c.ceilDay.Load()
		used, ok := on(c.dayUsed.Load(), int32(dayOfWord(cd)))
		if ok && overLeased(int64(cd&usedMask), used, c.l.leaseChunk(c, lim.DailyMicros)) {
			c.l.leases.requestAgain(c)
			return
		}
	}
	if lim.TotalMicros > 0 && overLeased(c.ceilTotal.Load(), c.totalUsed.Load(), c.l.leaseChunk(c, lim.TotalMicros)) {
		c.l.leases.requestAgain(c)
	}
}

// addSpend moves the campaign's spend by delta on day (negative to
// release). A day other than the counter's current day leaves the daily
// counter alone: yesterday's releases do not give today more budget.
func (c *Campaign) addSpend(day int32, delta int64) {
	c.totalUsed.Add(delta)
	addDay(&c.dayUsed, day, delta)
}

// addDay adds delta to w when w holds day (rolling it over when w is
// older and delta is positive), clamping at zero.
func addDay(w *atomic.Uint64, day int32, delta int64) {
	for {
		old := w.Load()
		d := int16(uint16(day) - dayOfWord(old))
		var v int64
		switch {
		case d == 0:
			v = int64(old&usedMask) + delta
		case d > 0 && delta > 0:
			v = delta
		default:
			return
		}
		v = max(0, min(v, usedMask))
		if w.CompareAndSwap(old, pack(day, v)) {
			return
		}
	}
}

// dayCache maps unix nanoseconds to day numbers in a Location, caching the
// current day's bounds so the common case is two compares.
type dayCache struct {
	loc *time.Location
	cur atomic.Pointer[dayRange]
}

type dayRange struct {
	start, end int64 // [start, end) in unix nanoseconds
	day        int32
}

func (d *dayCache) day(now int64) int32 {
	if r := d.cur.Load(); r != nil && now >= r.start && now < r.end {
		return r.day
	}
	r := d.compute(now)
	if old := d.cur.Load(); old == nil || r.start > old.start {
		d.cur.Store(r)
	}
	return r.day
}

func (d *dayCache) bounds(now int64) (start, end int64, day int32) {
	if r := d.cur.Load(); r != nil && now >= r.start && now < r.end {
		return r.start, r.end, r.day
	}
	r := d.compute(now)
	return r.start, r.end, r.day
}

func (d *dayCache) compute(now int64) *dayRange {
	t := time.Unix(0, now).In(d.loc)
	y, m, dd := t.Date()
	start := dayStart(y, m, dd, d.loc)
	end := dayStart(y, m, dd+1, d.loc)
	day := time.Date(y, m, dd, 0, 0, 0, 0, time.UTC).Unix() / 86400
	return &dayRange{start: start.UnixNano(), end: end.UnixNano(), day: int32(day)}
}

// dayStart returns the first instant of the date y-m-d (normalised, as
// time.Date does) in loc: its midnight, unless a clock change skips
// midnight (America/Santiago and America/Havana move to summer time at
// 00:00). time.Date then moves the missing midnight out of the gap,
// before it (into the day before, west of UTC) or after it, and the day
// begins where the gap ends.
func dayStart(y int, m time.Month, d int, loc *time.Location) time.Time {
	t := time.Date(y, m, d, 0, 0, 0, 0, loc)
	want := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	ty, tm, td := t.Date()
	got := time.Date(ty, tm, td, 0, 0, 0, 0, time.UTC)
	var jump time.Time
	switch {
	case got.Before(want): // before the gap
		_, jump = t.ZoneBounds()
	case got.After(want) || t.Hour() != 0 || t.Minute() != 0 || t.Second() != 0: // after it
		jump, _ = t.ZoneBounds()
	}
	if jump.IsZero() {
		return t
	}
	return jump
}
