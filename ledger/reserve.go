package ledger

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Reservation is a reserved bid, handed back by Reserve.
type Reservation struct {
	Bid         uint64
	PriceMicros int64
	// Deadline (unix nanoseconds) is when the reservation expires unless a
	// notice settles or releases it first.
	Deadline int64
}

// Reservation states, as flags.
const (
	fWon      = 1 << iota // a win notice arrived
	fBilled               // settled at resv.billed
	fReleased             // loss or expiry released the spend
	fExpired              // the deadline passed (with fWon: provisionally settled at the price)
	fFreq                 // the impression is counted in the frequency table
	fLate                 // billed, or won, after being released
	fLost                 // a loss notice arrived
)

// resv is one bid's reservation and its notice state.
type resv struct {
	price    int64
	billed   int64
	user     uint64
	at       int64 // reserve time, unix nanoseconds
	deadline int64
	day      int32
	fexp     uint32 // expiry second of its frequency slot; 0 when uncapped
	key      uint32
	state    uint8
}

type resvShard struct {
	mu sync.Mutex
	m  map[uint64]resv
	// due orders the shard's bids by when expire must look at them next:
	// at the deadline (to expire an unanswered reservation) and again at
	// deadline + retention (to forget a finished bid). Tick then costs
	// what is due, not a scan of every reservation.
	due dueHeap
	_   cacheLine
}

type dueItem struct {
	at  int64
	bid uint64
}

// dueHeap is a binary min-heap on at; hand-rolled to avoid container/heap's
// interface boxing on the Reserve path.
type dueHeap []dueItem

func (h *dueHeap) push(it dueItem) {
	*h = append(*h, it)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if a[p].at <= a[i].at {
			break
		}
		a[p], a[i] = a[i], a[p]
		i = p
	}
}

func (h *dueHeap) pop() dueItem {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a = a[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && a[l].at < a[m].at {
			m = l
		}
		if r < n && a[r].at < a[m].at {
			m = r
		}
		if m == i {
			break
		}
		a[m], a[i] = a[i], a[m]
		i = m
	}
	*h = a
	return top
}

type resvTable struct {
	shards []resvShard
	mask   uint64
}

func (t *resvTable) init(n int) {
	t.shards = make([]resvShard, n)
	for i := range t.shards {
		t.shards[i].m = map[uint64]resv{}
	}
	t.mask = uint64(n - 1)
}

// quiesce takes and releases every shard's lock in turn: a Reserve that
// began before the call, and so may have read a ceiling published before
// it, has finished when it returns (Reserve checks and adds to the spend
// under its shard's lock).
func (t *resvTable) quiesce() {
	for i := range t.shards {
		t.shards[i].mu.Lock()
		//lint:ignore SA2001 the critical section is empty on purpose: a barrier
		t.shards[i].mu.Unlock()
	}
}

func (t *resvTable) shard(bid uint64) *resvShard {
	return &t.shards[splitmix64(bid)&t.mask]
}

// counters are the ledger's event counts, for Stats.
type counters struct {
	reserved, refusedBudget, refusedLease, refusedFreq atomic.Int64
	wins, bills, losses, expired, expiredWon           atomic.Int64
	duplicates, conflicts, unknown, badPrice, late     atomic.Int64
	unknownBilled                                      atomic.Int64 // micros
}

// Reserve reserves priceMicros of c's budget for bid, counts the
// impression against user's frequency cap, and records the reservation so
// that notices can settle or release it; it expires after the default TTL.
// See ReserveTTL.
func (l *Ledger) Reserve(c *Campaign, bid, user uint64, priceMicros, now int64) (Reservation, error) {
	return l.ReserveTTL(c, bid, user, priceMicros, now, 0)
}

// ReserveTTL is Reserve with the reservation's lifetime (0: the default;
// see TTL for per-channel values). All or nothing: when it fails nothing
// changed, and the error says why (ErrBudget, ErrNoLease, ErrFrequency,
// ErrFrequencyMem, ErrNoUser, ErrDuplicateBid, ErrPrice, ErrStaleClock;
// ErrCurrency from ReserveIn).
//
// Budgets are enforced by compare-and-swap loops on the campaign's
// counters: across any number of goroutines reserved plus settled spend
// never passes a budget (nor this node's lease). The frequency check and
// count are atomic under one striped lock. Reserve does not allocate,
// except when a table grows (amortised); with a durable ledger the record
// is group-committed and the lease bounds what a crash can lose (see the
// package documentation).
func (l *Ledger) ReserveTTL(c *Campaign, bid, user uint64, priceMicros, now int64, ttl time.Duration) (Reservation, error) {
	return l.ReserveIn(c, "", bid, user, priceMicros, now, ttl)
}

// ReserveIn is ReserveTTL for a bid priced in currency (ISO 4217): the
// currency of the rules that priced it. It is refused with ErrCurrency,
// changing nothing, when the campaign's recorded currency is another one:
// the rules that priced the bid are being replaced by rules in a new
// currency (SetCurrencies). The check is made under the reservation's
// shard lock, atomically with the booking. An empty currency, or a
// campaign without a recorded currency, is not checked.
func (l *Ledger) ReserveIn(c *Campaign, currency string, bid, user uint64, priceMicros, now int64, ttl time.Duration) (Reservation, error) {
	if priceMicros <= 0 || priceMicros > MaxMicros {
		return Reservation{}, ErrPrice
	}
	if bid == 0 {
		return Reservation{}, ErrUnknownBid
	}
	if ttl <= 0 {
		ttl = l.cfg.ReservationTTL
	}
	lim := c.limits.Load()
	if lim == nil {
		return Reservation{}, ErrBudget
	}
	day := l.days.day(now)
	r := resv{
		price:    priceMicros,
		user:     user,
		at:       now,
		deadline: now + int64(ttl),
		day:      day,
		key:      c.key,
	}
	s := l.resv.shard(bid)
	s.mu.Lock()
	if _, dup := s.m[bid]; dup {
		s.mu.Unlock()
		l.stats.duplicates.Add(1)
		return Reservation{}, ErrDuplicateBid
	}
	if currency != "" {
		if p := c.currency.Load(); p != nil && *p != currency {
			s.mu.Unlock()
			l.stats.refusedBudget.Add(1)
			return Reservation{}, ErrCurrency
		}
	}
	capped := lim.CapMax > 0
	if capped {
		if user == 0 {
			s.mu.Unlock()
			l.stats.refusedFreq.Add(1)
			return Reservation{}, ErrNoUser
		}
		exp, err := l.freq.reserve(freqKey{user, c.key}, now, expiryFor(now, lim.CapMax, lim.CapWindow), lim.CapMax)
		if err != nil {
			s.mu.Unlock()
			l.stats.refusedFreq.Add(1)
			return Reservation{}, err
		}
		r.fexp = exp
		r.state |= fFreq
	}
	if err := c.reserveBudget(lim, now, day, priceMicros); err != nil {
		if capped {
			l.freq.remove(freqKey{user, c.key}, r.fexp)
		}
		s.mu.Unlock()
		if err == ErrNoLease {
			l.stats.refusedLease.Add(1)
		} else {
			l.stats.refusedBudget.Add(1)
		}
		return Reservation{}, err
	}
	s.m[bid] = r
	s.due.push(dueItem{r.deadline, bid})
	c.reserved.Add(priceMicros)
	if l.log != nil {
		l.log.appendReserve(bid, &r)
	}
	s.mu.Unlock()
	l.stats.reserved.Add(1)
	if capped && l.cfg.Frequency != nil {
		l.cfg.Frequency.Record(c.id, user, bid, lim.CapWindow, now)
	}
	return Reservation{Bid: bid, PriceMicros: priceMicros, Deadline: r.deadline}, nil
}

// Notice kinds, as logged.
const (
	noticeWin byte = iota + 1
	noticeBill
	noticeLoss
	noticeExpire
)

// Win records the win notice of bid. It changes no money (the billing
// notice does) but makes an unbilled reservation count as spent at its
// price when it expires. Idempotent: a repeated or late win returns nil
// and is counted. With a durable ledger it returns once the notice is on
// disk.
func (l *Ledger) Win(ctx context.Context, bid uint64, now int64) error {
	return l.notice(ctx, noticeWin, bid, 0, now)
}

// Bill settles bid at clearingMicros, the price the exchange charged. A
// price above the bid, a negative price, or an unknown bid is an error and
// changes nothing. Idempotent: the same bill again returns nil; a bill at
// a different price than an earlier one returns ErrConflict. A bill after
// the reservation was released (a loss, or expiry) is still counted:
// money really spent is never dropped. A bill for a bid no longer
// remembered (past Retention) is ErrUnknownBid and its price is counted
// in Stats.UnknownBilledMicros only.
func (l *Ledger) Bill(ctx context.Context, bid uint64, clearingMicros, now int64) error {
	return l.notice(ctx, noticeBill, bid, clearingMicros, now)
}

// Loss releases bid's reservation. Idempotent; a loss after a bill
// changes nothing (the bill is the exchange's word on money) and is
// counted as a conflict.
func (l *Ledger) Loss(ctx context.Context, bid uint64, now int64) error {
	return l.notice(ctx, noticeLoss, bid, 0, now)
}

func (l *Ledger) notice(ctx context.Context, kind byte, bid uint64, price, now int64) error {
	if l.closed.Load() {
		return ErrClosed
	}
	s := l.resv.shard(bid)
	s.mu.Lock()
	r, ok := s.m[bid]
	if !ok {
		s.mu.Unlock()
		l.stats.unknown.Add(1)
		if kind == noticeBill && price > 0 {
			l.stats.unknownBilled.Add(price)
		}
		return ErrUnknownBid
	}
	changed, err := l.apply(&r, kind, price, now)
	if err != nil || !changed {
		s.mu.Unlock()
		if err == nil && l.log != nil {
			// A repeat, or a notice an earlier one made moot. The record
			// of that earlier notice was appended before its change could
			// be seen here, but its caller may have gone (its context
			// ended, or the log failed) before the record was durable:
			// acknowledge the repeat only once it is, and not at all when
			// the log has failed.
			return l.log.wait(ctx, l.log.appendedSeq())
		}
		return err
	}
	s.m[bid] = r
	var seq uint64
	if l.log != nil {
		seq = l.log.appendNotice(kind, bid, price, now)
	}
	s.mu.Unlock()
	if l.log != nil {
		return l.log.wait(ctx, seq)
	}
	return nil
}

// apply moves r through one notice and adjusts the campaign's counters.
// The final money of a bid depends only on which notices arrived, not
// their order: a bill's price if any bill arrived; else nothing if a loss
// did; else, once expired, the price if a win did and nothing otherwise.
// It reports whether anything changed (and so must be logged). now is
// the notice's time (a replayed record's own).
func (l *Ledger) apply(r *resv, kind byte, price, now int64) (bool, error) {
	c := l.campaignByKey(r.key)
	if c == nil {
		return false, ErrCorrupt
	}
	switch kind {
	case noticeWin:
		switch {
		case r.state&(fWon|fBilled|fLost) != 0:
			l.stats.duplicates.Add(1)
			return false, nil
		case r.state&fReleased != 0:
			// Won after the reservation expired unanswered: the exchange
			// showed the ad, so the price counts, late (as a late bill).
			c.addSpend(r.day, r.price)
			c.settledTotal.Add(r.price)
			addDay(&c.settledDay, r.day, r.price)
			c.lateMicros.Add(r.price)
			l.stats.late.Add(1)
			r.state = r.state&^fReleased | fLate
			if r.state&fFreq == 0 && r.fexp != 0 {
				l.freq.put(freqKey{r.user, r.key}, r.at, r.fexp)
				r.state |= fFreq
			}
		}
		r.state |= fWon
		l.stats.wins.Add(1)
		return true, nil

	case noticeBill:
		if price < 0 || price > r.price {
			l.stats.badPrice.Add(1)
			return false, ErrPrice
		}
		switch {
		case r.state&fBilled != 0:
			if price == r.billed {
				l.stats.duplicates.Add(1)
				return false, nil
			}
			l.stats.conflicts.Add(1)
			return false, ErrConflict
		case r.state&fReleased != 0:
			c.addSpend(r.day, price)
			c.settledTotal.Add(price)
			addDay(&c.settledDay, r.day, price)
			c.lateMicros.Add(price)
			l.stats.late.Add(1)
			r.state |= fLate
			if r.state&fFreq == 0 && r.fexp != 0 {
				l.freq.put(freqKey{r.user, r.key}, r.at, r.fexp)
				r.state |= fFreq
			}
		case r.state&fExpired != 0: // won, provisionally settled at the price
			c.addSpend(r.day, price-r.price)
			c.settledTotal.Add(price - r.price)
			addDay(&c.settledDay, r.day, price-r.price)
			c.maybeShrink()
		default:
			c.addSpend(r.day, price-r.price)
			c.reserved.Add(-r.price)
			c.settledTotal.Add(price)
			addDay(&c.settledDay, r.day, price)
			c.maybeShrink()
		}
		r.state = r.state&^fReleased | fBilled
		r.billed = price
		l.stats.bills.Add(1)
		return true, nil

	case noticeLoss:
		switch {
		case r.state&fBilled != 0:
			l.stats.conflicts.Add(1)
			return false, nil
		case r.state&fLost != 0:
			l.stats.duplicates.Add(1)
			return false, nil
		case r.state&fReleased != 0:
			// Expired unanswered, then lost: nothing to release, but
			// remember the loss so that a later win cannot count.
			r.state |= fLost
			l.stats.losses.Add(1)
			return true, nil
		case r.state&fExpired != 0: // won, provisionally settled
			c.addSpend(r.day, -r.price)
			c.settledTotal.Add(-r.price)
			addDay(&c.settledDay, r.day, -r.price)
			if r.state&fLate != 0 { // the win itself came late
				c.lateMicros.Add(-r.price)
				r.state &^= fLate
			}
		default:
			c.addSpend(r.day, -r.price)
			c.reserved.Add(-r.price)
		}
		c.maybeShrink()
		if r.state&fFreq != 0 {
			// An impression already out of its window is counted no
			// more, and its slot may hold a later impression by now:
			// taking one back from there would uncount that one. (One
			// merged into a later slot stays counted: the safe side.)
			if r.fexp > uint32(now/int64(time.Second)) {
				l.freq.remove(freqKey{r.user, r.key}, r.fexp)
			}
			r.state &^= fFreq
		}
		r.state |= fReleased | fLost
		l.stats.losses.Add(1)
		return true, nil

	case noticeExpire:
		if r.state&(fBilled|fReleased|fExpired) != 0 {
			return false, nil
		}
		r.state |= fExpired
		c.reserved.Add(-r.price)
		if r.state&fWon != 0 {
			c.settledTotal.Add(r.price)
			addDay(&c.settledDay, r.day, r.price)
			l.stats.expiredWon.Add(1)
		} else {
			c.addSpend(r.day, -r.price)
			r.state |= fReleased // the impression stays counted: fail safe
			l.stats.expired.Add(1)
			c.maybeShrink()
		}
		return true, nil
	}
	return false, ErrCorrupt
}

// expire releases reservations past their deadline and forgets finished
// bids past retention.
func (l *Ledger) expire(now int64) {
	keep := int64(l.cfg.Retention)
	for i := range l.resv.shards {
		s := &l.resv.shards[i]
		s.mu.Lock()
		for len(s.due) > 0 && s.due[0].at <= now {
			it := s.due.pop()
			r, ok := s.m[it.bid]
			if !ok {
				continue
			}
			if r.state&(fBilled|fReleased|fExpired) == 0 {
				if changed, _ := l.apply(&r, noticeExpire, 0, now); changed {
					s.m[it.bid] = r
					if l.log != nil {
						l.log.appendNotice(noticeExpire, it.bid, 0, now)
					}
				}
			}
			if now >= r.deadline+keep {
				delete(s.m, it.bid)
			} else {
				s.due.push(dueItem{r.deadline + keep, it.bid})
			}
		}
		s.mu.Unlock()
	}
}

// Pending returns the number of bids the ledger remembers (reservations
// not yet finished plus finished ones within retention).
func (l *Ledger) Pending() int {
	n := 0
	for i := range l.resv.shards {
		s := &l.resv.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// forget drops finished bids past retention without expiring anything
// (compaction: the live ledger decides expiry).
func (l *Ledger) forget(now int64) {
	keep := int64(l.cfg.Retention)
	for i := range l.resv.shards {
		s := &l.resv.shards[i]
		s.mu.Lock()
		for bid, r := range s.m {
			if now >= r.deadline+keep && r.state&(fBilled|fReleased|fExpired) != 0 {
				delete(s.m, bid)
			}
		}
		s.mu.Unlock()
	}
}

// indexDue rebuilds every shard's due heap from its map (after replay).
func (l *Ledger) indexDue() {
	for i := range l.resv.shards {
		s := &l.resv.shards[i]
		s.mu.Lock()
		s.due = s.due[:0]
		for bid, r := range s.m {
			s.due.push(dueItem{r.deadline, bid})
		}
		s.mu.Unlock()
	}
}
