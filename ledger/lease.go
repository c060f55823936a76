package ledger

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// A Leaser hands out slices of campaign budgets to this node: the budget
// backend for many nodes (package ledger/redisledger). The node spends
// from its slices locally, so the decision never waits on the network.
// Implementations must be safe for concurrent use.
//
// A call that fails may have been applied all the same (a timeout whose
// reply was lost), unless its error wraps ErrLeaseRefused: the ledger
// sends the same request (ID and amounts) again on its next attempt for
// the campaign, so that a grant applied but not heard of is not lost to
// the node, nor a return to the others; it does so only within
// RetryWindow of the first call, so a Leaser must remember an ID (and
// what it did with it) at least that long.
type Leaser interface {
	// Lease grants up to the wanted amounts of the campaign's remaining
	// daily and total budgets. A retried request with the same ID grants
	// at most once, and answers what it granted the first time.
	Lease(ctx context.Context, req LeaseRequest) (LeaseGrant, error)
	// Return gives back unspent amounts (on Close, and when releases
	// lower a lease). A retried return with the same ID gives back once.
	Return(ctx context.Context, ret LeaseReturn) error
	Close() error
}

// ErrLeaseRefused, wrapped in a Leaser's error, says that the call was
// refused and changed nothing (redisledger.ErrStateLost): the next
// attempt is a new request. Any other error leaves the outcome unknown.
var ErrLeaseRefused = errors.New("ledger: lease call refused")

// RetryWindow is how long after a Leaser call that failed without a
// definite answer the ledger may send it again, same ID: a Leaser that
// forgot the ID by then would apply it a second time (a return given back
// twice lets the other nodes lease what this one still holds). Past it,
// what the call did stays done and what it did not stays undone: counted
// as leased, the safe direction.
const RetryWindow = time.Hour

// LeaseRequest asks for budget; amounts in micro-units, budgets 0 when
// unlimited (nothing to lease).
type LeaseRequest struct {
	ID                       uint64
	Campaign                 string
	Day                      int32 // days since 1970-01-01 in the ledger's Location
	DailyBudget, TotalBudget int64
	WantDaily, WantTotal     int64
	// HeldDaily and HeldTotal are what this node holds already (its
	// ceilings: leases granted, spent or not, less returns): the backend
	// counts at least that much as leased, unless it lost its state.
	HeldDaily, HeldTotal int64
}

// LeaseGrant is what a Lease call granted.
type LeaseGrant struct{ Daily, Total int64 }

// LeaseReturn gives back unspent lease.
type LeaseReturn struct {
	ID           uint64
	Campaign     string
	Day          int32
	Daily, Total int64
	// HeldDaily and HeldTotal are what this node held before the return
	// (see LeaseRequest).
	HeldDaily, HeldTotal int64
}

// FrequencyShare shares frequency counts between nodes (Redis). The ledger
// consults it after its own exact count passes, and tells it of every
// counted impression. Allow and Record are called in the decision and must
// not block or do I/O: Allow answers from what the share holds, and when
// it holds no count for the user it must answer false (cap) and find out
// in the background. A share that also implements FrequencyWarmer is given
// the chance to read the counts before the decision
// (Ledger.WarmFrequency). Implementations must be safe for concurrent use.
type FrequencyShare interface {
	Allow(campaign string, user uint64, local, max int32, window time.Duration, now int64) bool
	Record(campaign string, user uint64, bid uint64, window time.Duration, now int64)
	Close() error
}

// FrequencyWarmer is a FrequencyShare that can read a user's counts ahead
// of a decision, so that Allow knows them. WarmFrequency calls Warm with
// the caps the decision may ask about (engine.FrequencyCaps: the capped
// campaigns the request's persona, channel and sizes leave), before the
// decision and outside it (the wire layer does, at request arrival). Warm reads the counts the
// share does not hold fresh, in one round trip, and returns when they are
// held or ctx is done; on a timeout or an error it changes nothing (Allow
// then caps a user it does not know and judges another by its older
// count). It must not keep caps past its return.
type FrequencyWarmer interface {
	FrequencyShare
	Warm(ctx context.Context, user uint64, caps []FrequencyCap, now int64) error
}

// FrequencyCap is a campaign's frequency cap window, as Warm needs it.
type FrequencyCap struct {
	Campaign string
	Window   time.Duration
}

// leaseState runs the lease goroutine. A ledger is leased when it has a
// durable log (leases are fsynced records) or a Leaser.
type leaseState struct {
	l    *Ledger
	on   bool
	ch   chan *Campaign
	stop chan struct{}
	wg   sync.WaitGroup
	// grants holds a token while a grant runs: it serialises them, and a
	// Lease waiting for one gives up with its context (a grant stuck on
	// an unreachable Leaser holds it for up to LeaseTimeout).
	grants   chan struct{}
	seq      atomic.Uint64
	failures atomic.Int64
	// unsureLease and unsureReturn hold, per campaign, the Lease call
	// and the Return calls (oldest first, at most maxUnsureReturns) that
	// failed without a definite answer: they may have been applied. The
	// next attempt sends them again, same ID and amounts, so that the
	// Leaser answers what it did; a definite answer clears one. Guarded
	// by the grants token.
	unsureLease  map[*Campaign]unsureLease
	unsureReturn map[*Campaign][]unsureReturn
	// dropped is set when a request found the queue full: the run loop
	// then queues again the campaigns whose budget was lowered (shrink),
	// which nothing else would ask for.
	dropped atomic.Bool
}

func (l *Ledger) leased() bool { return l.leases.on }

// leaseChunk is how much of a budget one lease takes: LeaseFraction of
// it, at least LeaseMinMicros and four of the largest price the campaign
// was refused for want of a lease.
func (l *Ledger) leaseChunk(c *Campaign, budget int64) int64 {
	return min(budget, max(int64(float64(budget)*l.cfg.LeaseFraction), l.cfg.LeaseMinMicros, 4*c.maxPrice.Load()))
}

func (s *leaseState) init(l *Ledger) {
	s.l = l
	s.grants = make(chan struct{}, 1)
	s.unsureLease = map[*Campaign]unsureLease{}
	s.unsureReturn = map[*Campaign][]unsureReturn{}
	s.on = l.log != nil || l.cfg.Leaser != nil
	if !s.on {
		return
	}
	s.ch = make(chan *Campaign, 4096)
	s.stop = make(chan struct{})
	s.seq.Store(l.bidKey)
	s.wg.Add(1)
	go s.run()
}

// request asks the lease goroutine, without blocking, to top up c.
func (s *leaseState) request(c *Campaign) {
	if !s.on || !c.needLease.CompareAndSwap(false, true) {
		return
	}
	select {
	case s.ch <- c:
	default:
		c.needLease.Store(false)
		s.dropped.Store(true)
	}
}

// requestAgain is request for a release: when a request is pending, the
// grant serving it may already have read the spend, so it is asked to run
// once more.
func (s *leaseState) requestAgain(c *Campaign) {
	if !s.on {
		return
	}
	if c.needLease.Load() {
		c.leaseAgain.Store(true)
	}
	s.request(c)
}

func (s *leaseState) run() {
	defer s.wg.Done()
	batch := make([]*Campaign, 0, 256)
	for {
		select {
		case <-s.stop:
			return
		case c := <-s.ch:
			batch = append(batch[:0], c)
		}
	drain:
		for len(batch) < cap(batch) {
			select {
			case c := <-s.ch:
				batch = append(batch, c)
			default:
				break drain
			}
		}
		for _, c := range batch {
			c.leaseAgain.Store(false) // the grant below reads the spend after this
		}
		now := s.l.clock().UnixNano()
		ctx, cancel := context.WithTimeout(context.Background(), s.l.cfg.LeaseTimeout)
		err := s.grant(ctx, batch, now)
		cancel()
		for _, c := range batch {
			if c.leaseAgain.Load() {
				select {
				case s.ch <- c: // needLease stays set: one more grant
					continue
				default:
				}
			}
			c.needLease.Store(false)
			// A release between the Load above and this Store set
			// leaseAgain but could not queue c (needLease was set): queue
			// it now, or that lowering would wait for another release.
			// (leaseAgain stays set until the grant that serves it.)
			if c.leaseAgain.Load() {
				s.request(c)
			}
		}
		if s.dropped.Swap(false) {
			// A lowered budget's request was dropped with the queue full,
			// and bids do not ask for a lease held past their budget: ask
			// again (dropped anew while the queue stays full).
			for _, c := range *s.l.campaigns.Load() {
				if c.shrink.Load() {
					s.request(c)
				}
			}
		}
		if err != nil {
			// Back off so that an unreachable backend is not hammered by
			// the hot path's requests; spending goes on within the leases
			// already held, then stops (fail closed).
			t := time.NewTimer(100 * time.Millisecond)
			select {
			case <-t.C:
			case <-s.stop:
				t.Stop()
				return
			}
		}
	}
}

// Lease tops up c's lease for now's day and waits for it (tests, warm-up
// after a reload); it gives up with ctx, also while waiting for another
// grant to finish. Reservations need a lease in a durable or shared
// ledger; the hot path requests them in the background on its own.
func (l *Ledger) Lease(ctx context.Context, c *Campaign, now int64) error {
	if !l.leased() {
		return nil
	}
	return l.leases.grant(ctx, []*Campaign{c}, now)
}

// grant tops up the leases of batch for now's day, and lowers those that
// releases have left with two leases or more unspent: from the Leaser, or
// by local arithmetic; a durable ledger logs the new ceilings and waits
// for the fsync before publishing a raised one, so a ceiling the hot path
// sees is always on disk.
//
// A lowered ceiling goes the other way round, so that the spend never
// passes the durable ceiling: it is published first, then every
// reservation shard's lock is taken and released (Reserve holds its
// shard's lock while it checks and adds to the spend, so no reservation
// admitted under the old ceiling is still in flight), then the ceiling
// logged is the lowered one or the spend as it now is, whichever is
// higher. Only then, once that record is durable, does a Leaser get the
// difference back.
//
// A campaign whose budget was lowered gives back all its unspent lease,
// then leases anew under the new budget, in the same call: so that Lease
// returns holding a lease.
func (s *leaseState) grant(ctx context.Context, batch []*Campaign, now int64) error {
	select {
	case s.grants <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.grants }()
	shrunk, err := s.grantLocked(ctx, batch, now)
	if len(shrunk) > 0 {
		if err != nil {
			// Lease anew later: the run loop queues them again.
			for _, c := range shrunk {
				c.leaseAgain.Store(true)
			}
			return err
		}
		_, err = s.grantLocked(ctx, shrunk, now)
	}
	return err
}

// grantLocked is grant, holding the grants token; it returns the campaigns
// whose budget was lowered, which gave their lease back and leased nothing.
func (s *leaseState) grantLocked(ctx context.Context, batch []*Campaign, now int64) (shrunk []*Campaign, _ error) {
	l := s.l
	day := l.days.day(now)
	type pub struct {
		c                *Campaign
		oldDay, oldTotal int64 // the ceilings before
		dayCeil, totCeil int64 // the new ones
	}
	var pubs []pub
	var firstErr error
	lowered := false
	// While the log's writes fail, a slice the Leaser grants could not be
	// made durable: grant would not publish it, and the Leaser would count
	// it as leased for good, a chunk of every budgeted campaign lost to
	// all the nodes at each try (every 100ms while bids ask). Ask for none
	// until the log writes again; lowering goes on (it needs no grant).
	var logErr error
	if l.log != nil && l.cfg.Leaser != nil {
		logErr = l.log.trouble()
	}
	for _, c := range batch {
		if err := s.returnAgain(ctx, c, day); err != nil && firstErr == nil {
			firstErr = err
		}
		lim := c.limits.Load()
		if lim == nil || lim.DailyMicros|lim.TotalMicros == 0 {
			continue
		}
		ceilD, ok := on(c.ceilDay.Load(), day)
		if !ok {
			continue
		}
		usedD, _ := on(c.dayUsed.Load(), day)
		ceilT, usedT := c.ceilTotal.Load(), c.totalUsed.Load()
		chD, chT := l.leaseChunk(c, lim.DailyMicros), l.leaseChunk(c, lim.TotalMicros)
		newD, newT := ceilD, ceilT
		// Releases (expiry, losses, bills below the bid) lower the spend
		// but not the ceiling: lower a ceiling two leases or more above
		// the spend to one lease above it, or a crash would count all of
		// it as spent.
		if lim.DailyMicros > 0 && overLeased(ceilD, usedD, chD) {
			newD = usedD + chD
		}
		if lim.TotalMicros > 0 && overLeased(ceilT, usedT, chT) {
			newT = usedT + chT
		}
		// A lowered budget: every node checks it against its own spend
		// only, so the leases are what keeps the nodes together within
		// it. Give back all that is unspent (grant publishes the lower
		// ceiling before it returns it), and lease anew under the new
		// budget in the next grant, not on the old ceilings.
		shrink := c.shrink.Swap(false)
		if shrink {
			newD, newT = min(newD, usedD), min(newT, usedT)
			shrunk = append(shrunk, c)
		}
		if lt := l.cfg.Leaser; shrink {
			// no top-up in this grant
		} else if lt != nil && logErr != nil {
			if firstErr == nil && (lim.DailyMicros > 0 && ceilD-usedD < chD || lim.TotalMicros > 0 && ceilT-usedT < chT) {
				firstErr = logErr
			}
		} else if lt != nil {
			req := LeaseRequest{
				Campaign:    c.id,
				Day:         day,
				DailyBudget: lim.DailyMicros,
				TotalBudget: lim.TotalMicros,
				HeldDaily:   ceilD,
				HeldTotal:   ceilT,
			}
			if lim.DailyMicros > 0 && ceilD-usedD < chD {
				req.WantDaily = min(chD, lim.DailyMicros-ceilD)
			}
			if lim.TotalMicros > 0 && ceilT-usedT < chT {
				req.WantTotal = min(chT, lim.TotalMicros-ceilT)
			}
			if req.WantDaily > 0 || req.WantTotal > 0 {
				sent := s.leaseID(c, &req)
				g, err := lt.Lease(ctx, req)
				if err != nil && !errors.Is(err, ErrLeaseRefused) {
					s.unsureLease[c] = unsureLease{req, sent} // may have been granted: ask again so
				} else {
					delete(s.unsureLease, c)
				}
				switch {
				case err != nil:
					s.failures.Add(1)
					if firstErr == nil {
						firstErr = err
					}
				case g.Daily == 0 && g.Total == 0:
					// Nothing to lease: bids ask again after LeaseRetry,
					// not at once (see wantLease).
					c.leaseIdle.Store(now + int64(l.cfg.LeaseRetry))
				default:
					newD, newT = max(newD, ceilD+g.Daily), max(newT, ceilT+g.Total)
					c.leaseIdle.Store(0) // an earlier grant of nothing is past
				}
			}
		} else {
			// Top up only a lease that runs low, as the Leaser path asks:
			// every change of the limits (a reload that touches the
			// campaign) asks for a lease too, and a chunk added whatever
			// the headroom would stack up unspent lease that a crash then
			// counts as spent.
			if lim.DailyMicros > 0 && ceilD-usedD < chD {
				newD = min(lim.DailyMicros, max(ceilD, usedD)+chD)
			}
			if lim.TotalMicros > 0 && ceilT-usedT < chT {
				newT = min(lim.TotalMicros, max(ceilT, usedT)+chT)
			}
		}
		if newD == ceilD && newT == ceilT {
			continue
		}
		if (newD < ceilD || newT < ceilT) && testHookLower != nil {
			testHookLower()
		}
		if newD < ceilD {
			c.ceilDay.Store(pack(day, newD))
			lowered = true
		}
		if newT < ceilT {
			c.ceilTotal.Store(newT)
			lowered = true
		}
		pubs = append(pubs, pub{c, ceilD, ceilT, newD, newT})
	}
	if len(pubs) == 0 {
		return shrunk, firstErr
	}
	if lowered {
		l.resv.quiesce()
		for i := range pubs {
			p := &pubs[i]
			if p.dayCeil < p.oldDay {
				used, _ := on(p.c.dayUsed.Load(), day)
				p.dayCeil = min(p.oldDay, max(p.dayCeil, used))
			}
			if p.totCeil < p.oldTotal {
				p.totCeil = min(p.oldTotal, max(p.totCeil, p.c.totalUsed.Load()))
			}
		}
	}
	if l.log != nil {
		var seq uint64
		for _, p := range pubs {
			seq = l.log.appendCeiling(p.c, day, p.dayCeil, p.totCeil)
			if testHookCeiling != nil {
				testHookCeiling(p.c, seq, day, p.dayCeil, p.totCeil)
			}
		}
		if err := l.log.wait(ctx, seq); err != nil {
			// Not durable: do not publish. With a Leaser the slice is lost
			// (counted as spent centrally): the safe direction. A lowered
			// ceiling stays lowered in memory: the safe direction too.
			s.failures.Add(1)
			return shrunk, err
		}
	}
	for _, p := range pubs {
		// Raised ceilings, and lowered ones that the spend in flight kept
		// above the lowered value: now durable.
		raiseDay(&p.c.ceilDay, day, p.dayCeil)
		for {
			old := p.c.ceilTotal.Load()
			if p.totCeil <= old || p.c.ceilTotal.CompareAndSwap(old, p.totCeil) {
				break
			}
		}
		// A release since the spend was read above checked the ceiling
		// before this one, which it may not have left two leases above
		// the spend: check this one (a raise computed from a spend that
		// has since fallen; a lowering that the spend in flight kept
		// higher), or nothing would lower it until the next release
		// (TestReleaseDuringRaiseLowersTheLease).
		p.c.maybeShrink()
		retD, retT := max(0, p.oldDay-p.dayCeil), max(0, p.oldTotal-p.totCeil)
		if lt := l.cfg.Leaser; lt != nil && retD|retT != 0 {
			// Give back to the other nodes what this node no longer may
			// spend. Should this fail, the slice stays counted as leased
			// centrally (the safe direction) until the return is given
			// again, if its outcome is unknown.
			ret := LeaseReturn{ID: s.seq.Add(1), Campaign: p.c.id, Day: day, Daily: retD, Total: retT,
				HeldDaily: p.oldDay, HeldTotal: p.oldTotal}
			err := lt.Return(ctx, ret)
			if err != nil {
				s.failures.Add(1)
				if firstErr == nil {
					firstErr = err
				}
				if !errors.Is(err, ErrLeaseRefused) {
					// May have been applied: give it again, same ID, on
					// the next grant for the campaign (returnAgain).
					u := append(s.unsureReturn[p.c], unsureReturn{ret, l.clock().UnixNano()})
					if len(u) > maxUnsureReturns {
						u = u[1:] // lost to the other nodes, as before
					}
					s.unsureReturn[p.c] = u
				}
			}
		}
	}
	return shrunk, firstErr
}

// leaseID gives req, a lease for c, its ID: the one of c's last lease call
// that failed without a definite answer, with its amounts, when that was
// for the same day and budgets, so that a grant the Leaser applied then
// reaches the node now; otherwise a new one. (The held amounts are the
// node's as they are now: the Leaser answers a request it applied before
// it checks them.) A call for another day or budgets, or first sent
// RetryWindow ago or more, is not asked again: what it may have granted
// is lost to the node, counted as leased by the Leaser, the safe
// direction. It returns when the ID was first sent (unix nanos).
func (s *leaseState) leaseID(c *Campaign, req *LeaseRequest) (sent int64) {
	now := s.l.clock().UnixNano()
	prev, ok := s.unsureLease[c]
	if ok && now-prev.sent < int64(RetryWindow) &&
		prev.Day == req.Day && prev.DailyBudget == req.DailyBudget && prev.TotalBudget == req.TotalBudget {
		req.ID, req.WantDaily, req.WantTotal = prev.ID, prev.WantDaily, prev.WantTotal
		return prev.sent
	}
	delete(s.unsureLease, c)
	req.ID = s.seq.Add(1)
	return now
}

// unsureLease and unsureReturn are a call that failed without a definite
// answer, and when it was first sent (unix nanos, by the ledger's clock).
type unsureLease struct {
	LeaseRequest
	sent int64
}

type unsureReturn struct {
	LeaseReturn
	sent int64
}

// maxUnsureReturns bounds a campaign's returns kept to be given again
// while the Leaser fails (each lowering of its lease makes one).
const maxUnsureReturns = 64

// returnAgain gives again c's returns that failed without a definite
// answer, oldest first, same IDs and amounts, those for day: the Leaser
// gives each back once. It stops at the first that fails again without
// one. The held amounts are what the node holds now plus what that return
// gives back: had it been applied, the Leaser would answer before it
// checks them; had it not, the Leaser counts at least that much, whatever
// the node leased and gave back since. Another day's are dropped, as a
// return for another day is (see close), and so are those first sent
// RetryWindow ago or more, which the Leaser may have forgotten: given
// again, one it applied would be given back twice.
func (s *leaseState) returnAgain(ctx context.Context, c *Campaign, day int32) error {
	u := s.unsureReturn[c]
	if len(u) == 0 {
		return nil
	}
	now := s.l.clock().UnixNano()
	var firstErr error
	for len(u) > 0 {
		ret := u[0].LeaseReturn
		if ret.Day == day && now-u[0].sent < int64(RetryWindow) {
			ceilD, _ := on(c.ceilDay.Load(), day)
			ret.HeldDaily, ret.HeldTotal = ceilD+ret.Daily, c.ceilTotal.Load()+ret.Total
			if err := s.l.cfg.Leaser.Return(ctx, ret); err != nil {
				s.failures.Add(1)
				if firstErr == nil {
					firstErr = err
				}
				if !errors.Is(err, ErrLeaseRefused) {
					break
				}
			}
		}
		u = u[1:]
	}
	if len(u) == 0 {
		delete(s.unsureReturn, c)
	} else {
		s.unsureReturn[c] = u
	}
	return firstErr
}

// testHookCeiling, when set (tests), sees every ceiling record grant
// appends, with its sequence number, before the record is durable.
var testHookCeiling func(c *Campaign, seq uint64, day int32, dayCeil, totalCeil int64)

// testHookLower, when set (tests), runs before grant publishes a lowered
// ceiling, after it read the spend: it lets reservations come in between.
var testHookLower func()

// raiseDay sets w to (day, v) unless it already holds more for day or a
// later day.
func raiseDay(w *atomic.Uint64, day int32, v int64) {
	for {
		old := w.Load()
		cur, ok := on(old, day)
		if !ok || (old != 0 && cur >= v && dayOfWord(old) == uint16(day)) {
			return
		}
		if w.CompareAndSwap(old, pack(day, v)) {
			return
		}
	}
}

// close stops the lease goroutine and gives back what is leased but
// unspent: in the log (so that a clean restart counts nothing as lost),
// and to the Leaser. As in grant, the lowered ceilings are durable before
// the Leaser gets anything back: a crash or a lost reply in between leaves
// the backend counting more than the node holds (the safe direction),
// never less, which it would take for lost state (ErrStateLost). Only
// today's daily lease goes back: another day's is of no use to the other
// nodes, and its counter may have expired. After the Leaser's first
// failure it asks it no more: each call may wait LeaseTimeout, and a
// backend that is gone would hold a stop for that long per campaign. A
// refusal (ErrLeaseRefused: the backend lost that campaign's counters)
// is an answer, not a failure: the other campaigns are still given back,
// and the returns lost earlier given again (TestCloseGivesLostReturnsAgain). What
// it did not offer keeps its ceiling, counted as spent, as after a crash.
// Returns that failed without an answer while it ran are given again
// (returnAgain); one that fails so here is not: the ledger is closing.
func (s *leaseState) close() error {
	if !s.on {
		return nil
	}
	close(s.stop)
	s.wg.Wait()
	s.grants <- struct{}{} // after any Lease call's grant
	defer func() { <-s.grants }()
	l := s.l
	type back struct {
		c            *Campaign
		day          int32 // the ceiling's, modulo 2^16
		ceilD, ceilT int64 // the ceilings before
		retD, retT   int64
	}
	var backs []back
	var firstErr error
	// failed: the log or the Leaser failed (not a refusal, which is an
	// answer): ask the Leaser nothing more.
	failed := false
	var seq uint64
	for _, c := range *l.campaigns.Load() {
		cd := c.ceilDay.Load()
		day := int32(dayOfWord(cd))
		ceilD := int64(cd & usedMask)
		usedD, _ := on(c.dayUsed.Load(), day)
		ceilT, usedT := c.ceilTotal.Load(), c.totalUsed.Load()
		retD, retT := max(0, ceilD-usedD), max(0, ceilT-usedT)
		if retD == 0 && retT == 0 {
			continue
		}
		c.ceilDay.Store(pack(day, ceilD-retD))
		c.ceilTotal.Store(ceilT - retT)
		if l.log != nil {
			seq = l.log.appendCeiling(c, day, ceilD-retD, ceilT-retT)
		}
		backs = append(backs, back{c, day, ceilD, ceilT, retD, retT})
	}
	if l.log != nil && seq > 0 {
		if err := l.log.wait(context.Background(), seq); err != nil {
			firstErr, failed = err, true // not durable: give nothing back
		}
	}
	if lt := l.cfg.Leaser; lt != nil && !failed {
		today := l.days.day(l.clock().UnixNano())
		for i, b := range backs {
			ret := LeaseReturn{Campaign: b.c.id, Day: l.fullDay(b.day), Daily: b.retD, Total: b.retT,
				HeldDaily: b.ceilD, HeldTotal: b.ceilT}
			if ret.Day != today {
				// Another day's lease is of no use to the other nodes, and
				// the backend may have expired that day's counter (Redis:
				// 3 days after its last grant), which it would take for
				// lost state: name none of it.
				ret.Daily, ret.HeldDaily = 0, 0
			}
			if ret.Daily == 0 && ret.Total == 0 {
				continue
			}
			ret.ID = s.seq.Add(1)
			ctx, cancel := context.WithTimeout(context.Background(), l.cfg.LeaseTimeout)
			err := lt.Return(ctx, ret)
			cancel()
			if err == nil {
				continue
			}
			if errors.Is(err, ErrLeaseRefused) {
				// A definite refusal (the backend lost this campaign's
				// counters): the backend answers, so the campaigns
				// after it are given back; this one's lease is counted
				// nowhere it could be given, and its ceiling stays
				// lowered, as after a return applied.
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			// The Leaser failed: this return may have been applied, so
			// its ceiling stays lowered (the safe direction); the
			// campaigns after it keep theirs.
			firstErr, failed = err, true
			seq = 0
			for _, b := range backs[i+1:] {
				b.c.ceilDay.Store(pack(b.day, b.ceilD))
				b.c.ceilTotal.Store(b.ceilT)
				if l.log != nil {
					seq = l.log.appendCeiling(b.c, b.day, b.ceilD, b.ceilT)
				}
			}
			if l.log != nil && seq > 0 {
				// Should this fail, the lowered ceilings may stand: lease
				// the backend counts and no node holds, the safe direction.
				_ = l.log.wait(context.Background(), seq)
			}
			break
		}
	}
	if l.cfg.Leaser != nil && !failed && len(s.unsureReturn) > 0 {
		// Returns that failed without an answer while running: given
		// again, today's (see returnAgain), until the Leaser fails again.
		today := l.days.day(l.clock().UnixNano())
		for c := range s.unsureReturn {
			ctx, cancel := context.WithTimeout(context.Background(), l.cfg.LeaseTimeout)
			err := s.returnAgain(ctx, c, today)
			cancel()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				if !errors.Is(err, ErrLeaseRefused) {
					break
				}
			}
		}
	}
	if lt := l.cfg.Leaser; lt != nil {
		if err := lt.Close(); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// fullDay rebuilds a day number from its low 16 bits: the one nearest the
// clock's day.
func (l *Ledger) fullDay(d int32) int32 {
	now := l.days.day(l.clock().UnixNano())
	return now + int32(int16(uint16(d)-uint16(now)))
}

// overLeased reports whether a ceiling leaves two leases (of chunk) or
// more unspent above used: a crash would count them all as spent, so
// grant lowers it to one lease above used, and a release asks it to.
func overLeased(ceil, used, chunk int64) bool { return ceil-used >= 2*chunk }
