package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// unsureLeaser is a Leaser whose first call with each ID is applied but
// fails as a timeout whose reply was lost (fail set), and which answers
// a repeated ID as Redis's scripts do: a lease with what it granted the
// first time, a return with nothing done again. refuse, when set, makes
// every call a definite refusal instead, applied nowhere.
type unsureLeaser struct {
	mu     sync.Mutex
	fail   bool
	refuse bool
	// lose, when set, fails returns before they are applied (the
	// request lost on its way).
	lose bool
	// refuseCampaign, when set, makes that campaign's returns definite
	// refusals (its counters lost), applied nowhere.
	refuseCampaign      string
	leased              int64 // daily: granted less returned
	grants              map[uint64]LeaseGrant
	returns             map[uint64]bool
	leaseIDs, returnIDs []uint64
}

var errLostReply = fmt.Errorf("lease call: %w", context.DeadlineExceeded)

func newUnsureLeaser() *unsureLeaser {
	return &unsureLeaser{grants: map[uint64]LeaseGrant{}, returns: map[uint64]bool{}}
}

func (u *unsureLeaser) Lease(_ context.Context, req LeaseRequest) (LeaseGrant, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.leaseIDs = append(u.leaseIDs, req.ID)
	if u.refuse {
		return LeaseGrant{}, fmt.Errorf("state lost: %w", ErrLeaseRefused)
	}
	if g, ok := u.grants[req.ID]; ok {
		return g, nil
	}
	g := LeaseGrant{Daily: req.WantDaily, Total: req.WantTotal}
	u.grants[req.ID] = g
	u.leased += g.Daily
	if u.fail {
		return LeaseGrant{}, errLostReply
	}
	return g, nil
}

func (u *unsureLeaser) Return(_ context.Context, ret LeaseReturn) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.returnIDs = append(u.returnIDs, ret.ID)
	if u.refuse || ret.Campaign == u.refuseCampaign {
		return fmt.Errorf("state lost: %w", ErrLeaseRefused)
	}
	if u.returns[ret.ID] {
		return nil
	}
	if u.lose {
		return errLostReply
	}
	u.returns[ret.ID] = true
	u.leased -= ret.Daily
	if u.fail {
		return errLostReply
	}
	return nil
}

func (u *unsureLeaser) Close() error { return nil }

func (u *unsureLeaser) set(fail, refuse bool) {
	u.mu.Lock()
	u.fail, u.refuse = fail, refuse
	u.mu.Unlock()
}

func (u *unsureLeaser) state() (leased int64, leaseIDs, returnIDs []uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.leased, append([]uint64(nil), u.leaseIDs...), append([]uint64(nil), u.returnIDs...)
}

// TestLeaseTimeoutKeepsGrant: a lease call that the Leaser applied but
// whose reply was lost (a Redis slower than LeaseTimeout) is asked again
// with the same ID and amounts, so the Leaser answers with what it
// granted and the node holds the slice; with a new ID the slice was lost
// to the node for the day, counted as leased and never spent or given
// back. A definite refusal (ErrLeaseRefused) is not asked again.
func TestLeaseTimeoutKeepsGrant(t *testing.T) {
	clk := newFakeClock(t0)
	cfg, u := unsureConfig(clk)
	l := newLedger(t, cfg)
	ctx := context.Background()
	now := clk.NowNs()
	// askedOnce waits for the lease goroutine's call for a new campaign's
	// limits.
	askedOnce := func(c *Campaign, before int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Microsecond) {
			if _, ids, _ := u.state(); len(ids) > before && !c.needLease.Load() {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("no lease call 10 s after the limits were set")
			}
		}
	}

	u.set(true, false)
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 1000 * unit, Pacing: PacingASAP})
	askedOnce(c, 0)
	if held := LeasedToday(c, clk.Now()); held != 0 {
		t.Fatalf("the node holds %d after a lease call that failed", held)
	}
	u.set(false, false)
	if err := l.Lease(ctx, c, now); err != nil {
		t.Fatal(err)
	}
	leased, ids, _ := u.state()
	if len(ids) != 2 || ids[0] != ids[1] {
		t.Errorf("lease IDs %v: the call after the lost reply is a new request, want the same ID", ids)
	}
	if held := LeasedToday(c, clk.Now()); held != leased || held == 0 {
		t.Errorf("the node holds %d, the Leaser counts %d leased: %d lost to the node", held, leased, leased-held)
	}

	// A definite refusal: the next call is a new request.
	u.set(false, true)
	c2 := mustCampaign(t, l, "c2", Limits{DailyMicros: 1000 * unit, Pacing: PacingASAP})
	_, ids, _ = u.state()
	askedOnce(c2, len(ids))
	u.set(false, false)
	if err := l.Lease(ctx, c2, now); err != nil {
		t.Fatal(err)
	}
	if _, ids, _ := u.state(); ids[len(ids)-1] == ids[len(ids)-2] {
		t.Errorf("lease IDs %v: the call after a refusal repeats its ID, want a new request", ids)
	}
	if held := LeasedToday(c2, clk.Now()); held == 0 {
		t.Error("no lease after the refusal")
	}
}

// loseReturns leases for c on l and spends 20.00 of it, then loses all
// of it with u losing returns, so that the lease goroutine lowers the
// lease and its returns fail: before u applies them, or, applied, after
// (their replies lost). It returns the IDs of the returns u was asked
// for, and the lease.
func loseReturns(t *testing.T, l *Ledger, u *unsureLeaser, c *Campaign, applied bool) (rets []uint64, lease int64) {
	t.Helper()
	ctx := context.Background()
	now := l.clock().UnixNano()
	lease = l.leaseChunk(c, 1000*unit)
	for bid := uint64(1); bid <= 20; bid++ {
		if _, err := reserve(l, c, bid, 0, unit, now); err != nil {
			t.Fatal(err)
		}
	}
	idle := func() { waitLeasesIdle(t, c) }
	idle()
	u.mu.Lock()
	u.lose, u.fail = !applied, applied
	u.mu.Unlock()
	for bid := uint64(1); bid <= 20; bid++ { // the lease goroutine lowers the lease
		if err := l.Loss(ctx, bid, now); err != nil {
			t.Fatal(err)
		}
	}
	idle()
	leased, _, rets := u.state()
	held := LeasedToday(c, l.clock())
	if len(rets) == 0 || held >= 2*lease {
		t.Fatalf("after the losses: %d returns, the node holds %d; want a return, holding less than %d", len(rets), held, 2*lease)
	}
	if !applied && leased == held {
		t.Fatalf("the lost returns were applied: the Leaser counts %d", leased)
	}
	u.mu.Lock()
	u.lose, u.fail = false, false
	u.mu.Unlock()
	return rets, lease
}

// unsureConfig is memConfig on clk with an unsureLeaser as the Leaser.
func unsureConfig(clk *fakeClock) (Config, *unsureLeaser) {
	cfg := memConfig(clk)
	u := newUnsureLeaser()
	cfg.Leaser = u
	return cfg, u
}

// TestReturnTimeoutGivenAgain: a return of the lease that releases left
// unspent, whose call failed before the Leaser applied it, is given again
// with the same ID on the next grant for the campaign, so that the Leaser
// does not count as leased what no node holds (the other nodes could not
// lease it for the day). Applied or not, the Leaser gives back once.
func TestReturnTimeoutGivenAgain(t *testing.T) {
	clk := newFakeClock(t0)
	cfg, u := unsureConfig(clk)
	l := newLedger(t, cfg)
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 1000 * unit, Pacing: PacingASAP})
	rets, _ := loseReturns(t, l, u, c, false)
	if err := l.Lease(context.Background(), c, clk.NowNs()); err != nil { // the next grant for c
		t.Fatal(err)
	}
	var lost []uint64 // each once: some were given again while lost too
	for _, id := range rets {
		if !slices.Contains(lost, id) {
			lost = append(lost, id)
		}
	}
	leased, _, again := u.state()
	if !slices.Equal(again[len(rets):], lost) {
		t.Errorf("return IDs %v after %v, want the lost returns %v given again with their IDs", again[len(rets):], rets, lost)
	}
	if held := LeasedToday(c, clk.Now()); leased != held {
		t.Errorf("the Leaser counts %d leased, the node holds %d: %d lost to the other nodes", leased, held, leased-held)
	}
}

// TestCloseGivesLostReturnsAgain: returns that failed without an answer
// and were not given again before Close are given again by Close. Also
// past a campaign whose return the Leaser refused (it lost that
// campaign's counters: an answer, not a failure): Close gave the
// campaigns after it back (253bdfd) but none of the returns lost
// earlier again, skipped on any error, and the Leaser kept counting
// them as leased, budget no node held.
func TestCloseGivesLostReturnsAgain(t *testing.T) {
	for _, refused := range []bool{false, true} {
		t.Run(fmt.Sprintf("refused=%v", refused), func(t *testing.T) {
			clk := newFakeClock(t0)
			cfg, u := unsureConfig(clk)
			l, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			c := mustCampaign(t, l, "c", Limits{DailyMicros: 1000 * unit, Pacing: PacingASAP})
			d := mustCampaign(t, l, "d", Limits{DailyMicros: 1000 * unit, Pacing: PacingASAP})
			if err := l.Lease(context.Background(), d, clk.NowNs()); err != nil {
				t.Fatal(err)
			}
			loseReturns(t, l, u, c, false)
			var want int64 // with nothing spent, all comes back
			if refused {
				want = LeasedToday(d, clk.Now())
				u.mu.Lock()
				u.refuseCampaign = "d"
				u.mu.Unlock()
			}
			if err := l.Close(); refused != errors.Is(err, ErrLeaseRefused) || !refused && err != nil {
				t.Fatalf("Close: %v, want ErrLeaseRefused (d's return) %v", err, refused)
			}
			if leased, _, _ := u.state(); leased != want {
				t.Errorf("after Close the Leaser counts %d leased, want %d (d's if its return was refused)", leased, want)
			}
		})
	}
}

// TestNoReturnGivenAgainPastRetryWindow: a return whose reply was lost is
// given again only within RetryWindow of its first call. Past it, the
// Leaser may have forgotten the ID (redisledger: Options.IdempotencyTTL),
// and a return it applied would be given back twice: the Leaser would
// count less leased than the node holds, and the other nodes could lease
// it too (an overspend by the return). Before, such a return was kept and
// given again, with its ID, on the next grant for the campaign however
// late that came, the same day.
func TestNoReturnGivenAgainPastRetryWindow(t *testing.T) {
	clk := newFakeClock(t0)
	cfg, u := unsureConfig(clk)
	l := newLedger(t, cfg)
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 1000 * unit, Pacing: PacingASAP})
	ctx := context.Background()
	rets, _ := loseReturns(t, l, u, c, true) // applied, the replies lost
	// An hour on, the same day: the Leaser has forgotten the IDs.
	clk.Add(time.Hour)
	u.mu.Lock()
	clear(u.returns)
	u.mu.Unlock()
	if err := l.Lease(ctx, c, clk.NowNs()); err != nil {
		t.Fatal(err)
	}
	leased, _, again := u.state()
	if held := LeasedToday(c, clk.Now()); leased != held {
		t.Errorf("the Leaser counts %d leased, the node holds %d: %d given back twice (return IDs %v, then %v)",
			leased, held, held-leased, rets, again[len(rets):])
	}
}
