package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	_ "time/tzdata" // the budget-zone tests need no system zone files
	"unsafe"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

// fakeClock is a settable clock for Config.Clock.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) NowNs() int64        { return c.ns.Load() }
func (c *fakeClock) Add(d time.Duration) { c.ns.Add(int64(d)) }
func testKey() []byte                    { return []byte("0123456789abcdef0123456789abcdef") }
func mustCampaign(t testing.TB, l *Ledger, id string, lim Limits) *Campaign {
	t.Helper()
	c, err := l.Campaign(id, lim)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func memConfig(clk *fakeClock) Config {
	cfg := DefaultConfig()
	cfg.Manual = true
	cfg.Clock = clk.Now
	cfg.NoticeKey = testKey()
	return cfg
}

func newLedger(t testing.TB, cfg Config) *Ledger {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

const unit = 1_000_000 // micros per currency unit

func TestDailyBudgetRollsOverInTimeZone(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err) // the zone database is embedded (time/tzdata)
	}
	clk := newFakeClock(time.Date(2026, 3, 2, 19, 0, 0, 0, ny)) // 00:00 UTC on the 3rd
	cfg := memConfig(clk)
	cfg.Location = ny
	l := newLedger(t, cfg)
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 10 * unit, Pacing: PacingASAP})
	bid := uint64(0)
	reserve := func(at time.Time) error {
		bid++
		_, err := l.Reserve(c, bid, 0, 4*unit, at.UnixNano())
		return err
	}
	evening := time.Date(2026, 3, 2, 19, 30, 0, 0, ny)
	for i, want := range []error{nil, nil, ErrBudget} {
		if err := reserve(evening); !errors.Is(err, want) {
			t.Fatalf("reserve %d: got %v, want %v", i, err, want)
		}
	}
	// 23:59 New York is the next day in UTC, but the same budget day.
	if err := reserve(time.Date(2026, 3, 2, 23, 59, 0, 0, ny)); !errors.Is(err, ErrBudget) {
		t.Fatalf("23:59 local: got %v, want ErrBudget", err)
	}
	if c.Allow(time.Date(2026, 3, 2, 23, 59, 0, 0, ny).UnixNano(), 1, 0) != true {
		t.Fatal("Allow refused 1 micro with 2 units left")
	}
	next := time.Date(2026, 3, 3, 0, 0, 1, 0, ny)
	if !c.Allow(next.UnixNano(), 4*unit, 0) {
		t.Fatal("Allow refused after local midnight")
	}
	if err := reserve(next); err != nil {
		t.Fatalf("after local midnight: %v", err)
	}
	// A clock behind the counter's day is refused, not allowed to clobber it.
	if err := reserve(evening); !errors.Is(err, ErrStaleClock) {
		t.Fatalf("stale clock: got %v", err)
	}
	// A loss of yesterday's bid gives today nothing back.
	if err := l.Loss(context.Background(), 1, next.UnixNano()); err != nil {
		t.Fatal(err)
	}
	r := l.Report(next)[0]
	if r.SpentTodayMicros != 4*unit || r.TotalSpentMicros != 8*unit {
		t.Fatalf("report: today %d total %d", r.SpentTodayMicros, r.TotalSpentMicros)
	}
}

// TestDayBoundsAcrossDST walks 2026 in zones with clock changes, among
// them zones whose change skips midnight (America/Santiago,
// America/Havana: a day without 00:00) and one that moves by half an
// hour (Australia/Lord_Howe), in 7-minute steps from a day before each
// change to a day after it and in 3-hour steps between: every instant
// gets its local date's day number and lies within its day's bounds,
// which run from the first instant of that date to the first instant of
// the next.
func TestDayBoundsAcrossDST(t *testing.T) {
	for _, zone := range []string{"America/New_York", "Europe/London", "America/Santiago", "America/Havana",
		"Asia/Beirut", "America/Asuncion", "Australia/Lord_Howe", "Pacific/Apia"} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		d := dayCache{loc: loc}
		date := func(ns int64) time.Time {
			y, m, dd := time.Unix(0, ns).In(loc).Date()
			return time.Date(y, m, dd, 0, 0, 0, 0, time.UTC)
		}
		bad := 0
		start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		year := start.AddDate(1, 0, 0)
		_, change := start.In(loc).ZoneBounds()
		for ts := start; ts.Before(year) && bad < 3; {
			n := ts.UnixNano()
			today := date(n)
			if got, want := d.day(n), int32(today.Unix()/86400); got != want {
				t.Errorf("%s %v: day %d, want %d", zone, ts.In(loc), got, want)
				bad++
			}
			s, e, _ := d.bounds(n)
			if n < s || n >= e || !date(s).Equal(today) || date(s-1).Equal(today) ||
				!date(e).Equal(today.AddDate(0, 0, 1)) || !date(e-1).Equal(today) {
				t.Errorf("%s %v: bounds [%v, %v), want the first instants of its date and the next",
					zone, ts.In(loc), time.Unix(0, s).In(loc), time.Unix(0, e).In(loc))
				bad++
			}
			switch {
			case change.IsZero() || ts.Before(change.Add(-26*time.Hour)):
				ts = ts.Add(3 * time.Hour)
				if !change.IsZero() && ts.After(change.Add(-26*time.Hour)) {
					ts = change.Add(-26 * time.Hour)
				}
			case ts.Before(change.Add(26 * time.Hour)):
				ts = ts.Add(7 * time.Minute)
			default:
				_, change = change.In(loc).ZoneBounds()
			}
		}
	}
}

func TestTotalBudgetAcrossDays(t *testing.T) {
	clk := newFakeClock(t0)
	l := newLedger(t, memConfig(clk))
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 6 * unit, TotalMicros: 10 * unit, Pacing: PacingASAP})
	var got []error
	for d := range 3 {
		for i := range 2 {
			_, err := l.Reserve(c, uint64(d*10+i+1), 0, 3*unit, t0.Add(time.Duration(d)*24*time.Hour).UnixNano())
			got = append(got, err)
		}
	}
	// Day 0: 3, 6 of 6 daily. Day 1: total 9, then 12 > 10. Day 2: total.
	want := []error{nil, nil, nil, ErrBudget, ErrBudget, ErrBudget}
	for i := range got {
		if !errors.Is(got[i], want[i]) {
			t.Errorf("reserve %d: got %v, want %v", i, got[i], want[i])
		}
	}
	if tot := c.totalUsed.Load(); tot > 10*unit {
		t.Fatalf("total %d over budget", tot)
	}
}

func TestReserveNeverPassesBudgetUnderConcurrency(t *testing.T) {
	clk := newFakeClock(t0)
	l := newLedger(t, memConfig(clk))
	const budget = 1000 * unit
	c := mustCampaign(t, l, "hot", Limits{DailyMicros: budget, TotalMicros: budget * 3 / 4, Pacing: PacingASAP})
	var wg sync.WaitGroup
	var ok atomic.Int64
	var sum atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20000 {
				price := int64(1+((g*7919+i*31)%997)) * 1000
				if _, err := l.Reserve(c, l.NewBidID(), 0, price, t0.UnixNano()); err == nil {
					ok.Add(1)
					sum.Add(price)
				}
			}
		}()
	}
	wg.Wait()
	if got := c.totalUsed.Load(); got != sum.Load() || got > budget*3/4 {
		t.Fatalf("total used %d, reserved sum %d, budget %d", got, sum.Load(), budget*3/4)
	}
	if got, _ := on(c.dayUsed.Load(), l.days.day(t0.UnixNano())); got != sum.Load() {
		t.Fatalf("day used %d, want %d", got, sum.Load())
	}
	if budget*3/4-sum.Load() > 1000*unit/1000 {
		t.Fatalf("left %d unspent with tiny prices available", budget*3/4-sum.Load())
	}
	t.Logf("%d reservations, %d micros", ok.Load(), sum.Load())
}

func TestBillValidation(t *testing.T) {
	clk := newFakeClock(t0)
	l := newLedger(t, memConfig(clk))
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 100 * unit, Pacing: PacingASAP})
	now := t0.UnixNano()
	ctx := context.Background()
	if _, err := l.Reserve(c, 7, 0, 5*unit, now); err != nil {
		t.Fatal(err)
	}
	before := l.Report(t0)
	for _, tc := range []struct {
		name  string
		bid   uint64
		price int64
		want  error
	}{
		{"above bid", 7, 5*unit + 1, ErrPrice},
		{"negative", 7, -1, ErrPrice},
		{"unknown", 8, unit, ErrUnknownBid},
	} {
		if err := l.Bill(ctx, tc.bid, tc.price, now); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if after := l.Report(t0); after[0] != before[0] {
		t.Fatalf("bad bills changed state: %+v -> %+v", before[0], after[0])
	}
	if err := l.Bill(ctx, 7, 3*unit, now); err != nil {
		t.Fatal(err)
	}
	if err := l.Bill(ctx, 7, 2*unit, now); !errors.Is(err, ErrConflict) {
		t.Fatalf("second bill at another price: %v", err)
	}
	r := l.Report(t0)[0]
	if r.SpentTodayMicros != 3*unit || r.SettledTodayMicros != 3*unit || r.ReservedMicros != 0 {
		t.Fatalf("after bill: %+v", r)
	}
	if _, err := l.Reserve(c, 7, 0, unit, now); !errors.Is(err, ErrDuplicateBid) {
		t.Fatalf("reserve of a known bid: %v", err)
	}
}

func TestForgedTokens(t *testing.T) {
	s, err := NewSigner(testKey())
	if err != nil {
		t.Fatal(err)
	}
	tok := s.Sign(42, 1234)
	bid, price, err := s.Verify(tok)
	if err != nil || bid != 42 || price != 1234 {
		t.Fatalf("verify: %d %d %v", bid, price, err)
	}
	other, _ := NewSigner([]byte("another key, sixteen bytes or more"))
	forged := []string{
		"", "x", tok[:len(tok)-1], tok + "A",
		other.Sign(42, 1234),
		flip(tok, 3), flip(tok, len(tok)-2),
	}
	for _, f := range forged {
		if _, _, err := s.Verify(f); !errors.Is(err, ErrForged) {
			t.Errorf("Verify(%q) = %v, want ErrForged", f, err)
		}
	}
	if got := s.Forged(); got != int64(len(forged)) {
		t.Fatalf("forged count %d, want %d", got, len(forged))
	}
	// Signing into a caller's buffer and verifying allocate nothing: a
	// token per bid and one per notice are on the hot paths.
	var buf [64]byte
	if got := string(s.AppendSign(buf[:0], 42, 1234)); got != tok {
		t.Errorf("AppendSign %q, Sign %q", got, tok)
	}
	if testing.CoverMode() == "" && !raceEnabled {
		if n := testing.AllocsPerRun(200, func() { s.AppendSign(buf[:0], 42, 1234) }); n != 0 {
			t.Errorf("AppendSign: %v allocations, want 0", n)
		}
		if n := testing.AllocsPerRun(200, func() { s.Verify(tok) }); n != 0 {
			t.Errorf("Verify: %v allocations, want 0", n)
		}
	}
}

func flip(s string, i int) string {
	b := []byte(s)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestExpiry(t *testing.T) {
	clk := newFakeClock(t0)
	cfg := memConfig(clk)
	cfg.ChannelTTL = map[string]time.Duration{"email": time.Hour}
	l := newLedger(t, cfg)
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 100 * unit, Pacing: PacingASAP})
	now := t0.UnixNano()
	mustReserve := func(bid uint64, ttl time.Duration) {
		t.Helper()
		if _, err := l.ReserveTTL(c, bid, 0, 2*unit, now, ttl); err != nil {
			t.Fatal(err)
		}
	}
	mustReserve(1, 0)              // unanswered: released at 5 min
	mustReserve(2, 0)              // won, unbilled: counted at its price
	mustReserve(3, l.TTL("email")) // email: an hour
	if err := l.Win(context.Background(), 2, now); err != nil {
		t.Fatal(err)
	}
	l.Tick(t0.Add(4 * time.Minute))
	if r := l.Report(t0)[0]; r.SpentTodayMicros != 6*unit {
		t.Fatalf("before TTL: %+v", r)
	}
	l.Tick(t0.Add(5 * time.Minute))
	r := l.Report(t0)[0]
	if r.SpentTodayMicros != 4*unit || r.SettledTodayMicros != 2*unit || r.ReservedMicros != 2*unit {
		t.Fatalf("after TTL: %+v", r)
	}
	// A bill after expiry still counts, at the clearing price.
	if err := l.Bill(context.Background(), 1, unit, now); err != nil {
		t.Fatal(err)
	}
	if err := l.Bill(context.Background(), 2, unit, now); err != nil {
		t.Fatal(err)
	}
	l.Tick(t0.Add(61 * time.Minute))
	r = l.Report(t0)[0]
	if r.SpentTodayMicros != 2*unit || r.ReservedMicros != 0 || r.LateBilledMicros != unit {
		t.Fatalf("at the end: %+v", r)
	}
	// Past retention the bids are forgotten.
	l.Tick(t0.Add(2 * time.Hour))
	if n := l.Pending(); n != 0 {
		t.Fatalf("%d bids remembered past retention", n)
	}
}

func TestFrequencyCapAcrossChannels(t *testing.T) {
	clk := newFakeClock(t0)
	l := newLedger(t, memConfig(clk))
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		max    int32
		window time.Duration
	}{
		{"exact", 3, time.Hour},
		{"bucketed", 20, 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustCampaign(t, l, tc.name, Limits{DailyMicros: 1000 * unit, Pacing: PacingASAP, CapMax: tc.max, CapWindow: tc.window})
			const user = 99
			channels := []string{"social", "web", "email"}
			now := t0
			for i := range int(tc.max) {
				if !l.FrequencyOK(c, user, now.UnixNano()) {
					t.Fatalf("impression %d refused", i)
				}
				ttl := l.TTL(channels[i%3])
				if _, err := l.ReserveTTL(c, l.NewBidID(), user, unit, now.UnixNano(), ttl); err != nil {
					t.Fatalf("impression %d: %v", i, err)
				}
				now = now.Add(time.Second)
			}
			if l.FrequencyOK(c, user, now.UnixNano()) {
				t.Fatal("FrequencyOK past the cap")
			}
			if _, err := l.Reserve(c, l.NewBidID(), user, unit, now.UnixNano()); !errors.Is(err, ErrFrequency) {
				t.Fatalf("reserve past the cap: %v", err)
			}
			if !l.FrequencyOK(c, user+1, now.UnixNano()) {
				t.Fatal("another user capped")
			}
			// A loss gives the impression back.
			bid := l.NewBidID()
			c2 := mustCampaign(t, l, tc.name+"-loss", Limits{Pacing: PacingASAP, CapMax: 1, CapWindow: tc.window})
			if _, err := l.Reserve(c2, bid, user, unit, now.UnixNano()); err != nil {
				t.Fatal(err)
			}
			if l.FrequencyOK(c2, user, now.UnixNano()) {
				t.Fatal("cap 1 not reached")
			}
			if err := l.Loss(ctx, bid, now.UnixNano()); err != nil {
				t.Fatal(err)
			}
			if !l.FrequencyOK(c2, user, now.UnixNano()) {
				t.Fatal("loss did not give the impression back")
			}
			// Never early: just before the window has passed since the
			// first impression the user is still capped...
			if l.FrequencyOK(c, user, t0.Add(tc.window-time.Second).UnixNano()) {
				t.Fatal("cap lifted early")
			}
			// ...and within a bucket's width after it, free again.
			slack := time.Second
			if tc.max > freqSlots {
				slack = tc.window/7 + time.Second
			}
			if !l.FrequencyOK(c, user, now.Add(tc.window+slack).UnixNano()) {
				t.Fatal("cap not lifted after the window")
			}
			if l.FrequencyOK(c, 0, now.UnixNano()) {
				t.Fatal("unknown user passed a capped campaign")
			}
		})
	}
}

// TestLateLossKeepsLaterImpression: a loss notice that arrives after its
// bid's impression has left the frequency window (the reservation's TTL
// is longer than the window) takes nothing back, since the slot it was
// counted in may hold a later impression by then; the user stays capped
// by that later impression, also after a restart replays the log.
func TestLateLossKeepsLaterImpression(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(t0)
	dir := t.TempDir()
	l, err := New(durableConfig(clk, dir))
	if err != nil {
		t.Fatal(err)
	}
	lim := Limits{DailyMicros: 100 * unit, Pacing: PacingASAP, CapMax: 1, CapWindow: time.Minute}
	c := mustCampaign(t, l, "c", lim)
	const user = 42
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	if _, err := reserve(l, c, 1, user, unit, at(0)); err != nil { // impression A
		t.Fatal(err)
	}
	if _, err := reserve(l, c, 2, user, unit, at(70*time.Second)); err != nil { // B, once A has left the window
		t.Fatal(err)
	}
	if err := l.Loss(ctx, 1, at(80*time.Second)); err != nil { // A lost, late
		t.Fatal(err)
	}
	capped := func(l *Ledger, c *Campaign, when string) {
		t.Helper()
		if l.FrequencyOK(c, user, at(90*time.Second)) {
			t.Errorf("%s: 20 s after impression B, cap 1 a minute: user not capped (count %d)", when, l.FrequencyCount(c, user, at(90*time.Second)))
		}
	}
	capped(l, c, "live")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := newLedger(t, durableConfig(clk, dir))
	capped(l2, mustCampaign(t, l2, "c", lim), "replayed")
}

func TestFrequencyTableBounded(t *testing.T) {
	clk := newFakeClock(t0)
	cfg := memConfig(clk)
	cfg.MaxFrequencyEntries = 10
	cfg.FrequencyShards = 1
	l := newLedger(t, cfg)
	c := mustCampaign(t, l, "c", Limits{Pacing: PacingASAP, CapMax: 2, CapWindow: time.Minute})
	refused := 0
	for u := range uint64(20) {
		if _, err := l.Reserve(c, l.NewBidID(), u+1, unit, t0.UnixNano()); errors.Is(err, ErrFrequencyMem) {
			refused++
		}
	}
	if refused != 10 {
		t.Fatalf("refused %d, want 10", refused)
	}
	l.Tick(t0.Add(2 * time.Minute)) // sweeps one shard of one
	if n := l.Stats().FrequencyEntries; n != 0 {
		t.Fatalf("%d entries after expiry", n)
	}
}

func TestReloadKeepsState(t *testing.T) {
	clk := newFakeClock(t0)
	l := newLedger(t, memConfig(clk))
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 10 * unit, Pacing: PacingASAP})
	if _, err := l.Reserve(c, 1, 0, 8*unit, t0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	c2 := mustCampaign(t, l, "c", Limits{DailyMicros: 9 * unit, Pacing: PacingEven})
	if c2 != c {
		t.Fatal("reload returned a new *Campaign")
	}
	if c.Allow(t0.UnixNano(), 2*unit, 0) {
		t.Fatal("new, lower budget not applied")
	}
	if _, err := l.Reserve(c, 2, 0, unit, t0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	if r := l.Report(t0)[0]; r.SpentTodayMicros != 9*unit || r.Pacing != PacingEven {
		t.Fatalf("%+v", r)
	}
}

func TestAllowPacingRate(t *testing.T) {
	clk := newFakeClock(t0)
	l := newLedger(t, memConfig(clk))
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 10 * unit})
	c.setRate(0.25)
	pass := 0
	const n = 100000
	for i := range n {
		if c.Allow(t0.UnixNano(), 1, splitmix64(uint64(i))) {
			pass++
		}
	}
	if f := float64(pass) / n; f < 0.24 || f > 0.26 {
		t.Fatalf("pass rate %.3f, want 0.25", f)
	}
	asap := mustCampaign(t, l, "asap", Limits{DailyMicros: 10 * unit, Pacing: PacingASAP})
	asap.setRate(0.0001)
	if !asap.Allow(t0.UnixNano(), 1, ^uint64(0)) {
		t.Fatal("asap campaign throttled")
	}
}

func TestNoAllocs(t *testing.T) {
	clk := newFakeClock(t0)
	l := newLedger(t, memConfig(clk))
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 1 << 40, Pacing: PacingEven, CapMax: 1000, CapWindow: time.Hour, Currency: "USD"})
	now := t0.UnixNano()
	for _, tc := range []struct {
		name string
		f    func()
		max  float64
	}{
		{"Allow", func() { c.Allow(now, 1000, 12345) }, 0},
		{"FrequencyOK", func() { l.FrequencyOK(c, 7, now) }, 0},
		// No FrequencyWarmer: the bidder's warm step costs nothing.
		{"WarmFrequency", func() { l.WarmFrequency(context.Background(), 7, nil, now) }, 0},
		// Reserve inserts into maps; growth is amortised, so the
		// average over many runs is far below one.
		{"Reserve", func() { l.Reserve(c, l.NewBidID(), 7, 1000, now) }, 0.1},
		{"ReserveIn", func() { l.ReserveIn(c, "USD", l.NewBidID(), 7, 1000, now, 0) }, 0.1},
		{"ReserveIn another currency", func() { l.ReserveIn(c, "EUR", l.NewBidID(), 7, 1000, now, 0) }, 0},
		// Sign runs once per bid sent, off the decision: the token string
		// and crypto/hmac's internal buffers.
		{"Sign", func() { l.Signer().Sign(1, 2) }, 5},
	} {
		if got := testing.AllocsPerRun(2000, tc.f); got > tc.max {
			t.Errorf("%s: %.2f allocs, want <= %v", tc.name, got, tc.max)
		}
	}
}

// TestWinAfterExpiry: a win notice that arrives after an unanswered
// reservation expired still counts the price (the ad was shown), unless a
// loss notice arrived for that bid, in either order.
func TestWinAfterExpiry(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(t0)
	l := newLedger(t, memConfig(clk))
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 100 * unit, Pacing: PacingASAP})
	now := t0.UnixNano()
	for bid := uint64(1); bid <= 3; bid++ {
		if _, err := l.Reserve(c, bid, 0, 2*unit, now); err != nil {
			t.Fatal(err)
		}
	}
	l.Tick(t0.Add(10 * time.Minute)) // all three expire unanswered
	if r := l.Report(t0)[0]; r.SpentTodayMicros != 0 {
		t.Fatalf("after expiry: %+v", r)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(l.Win(ctx, 1, now))  // late win: counts
	must(l.Win(ctx, 1, now))  // replayed: once
	must(l.Loss(ctx, 2, now)) // lost, then a stray win: nothing
	must(l.Win(ctx, 2, now))
	must(l.Win(ctx, 3, now)) // late win, then a loss: the loss wins
	must(l.Loss(ctx, 3, now))
	if r := l.Report(t0)[0]; r.SpentTodayMicros != 2*unit || r.SettledTodayMicros != 2*unit || r.LateBilledMicros != 2*unit {
		t.Fatalf("late notices: %+v; want 2 units spent and settled, late", r)
	}
}

// TestLateNoticesBoundOverspend checks the one way a node's spend passes
// a budget: a win or bill that arrives after its reservation expired
// unanswered (its spend released and reused by later bids) still counts,
// as the exchange charged it. First the whole budget twice over: ten bids
// expire, ten more use the budget again, then the first ten are billed
// late. Then random reservations, notices (some late) and expiries: spend
// never passes the budget by more than the late notices' prices, which
// Report and Stats count. A bill past retention counts only in Stats.
func TestLateNoticesBoundOverspend(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(t0)
	l := newLedger(t, memConfig(clk))
	const budget = 10 * unit
	c := mustCampaign(t, l, "c", Limits{DailyMicros: budget, Pacing: PacingASAP})
	now := t0.UnixNano()
	for bid := uint64(1); bid <= 10; bid++ {
		if _, err := l.Reserve(c, bid, 0, unit, now); err != nil {
			t.Fatal(err)
		}
	}
	later := t0.Add(6 * time.Minute).UnixNano() // the TTL is 5 minutes
	l.Tick(time.Unix(0, later))
	for bid := uint64(11); bid <= 20; bid++ {
		if _, err := l.Reserve(c, bid, 0, unit, later); err != nil {
			t.Fatal(err)
		}
		if err := l.Bill(ctx, bid, unit, later); err != nil {
			t.Fatal(err)
		}
	}
	for bid := uint64(1); bid <= 10; bid++ {
		if err := l.Bill(ctx, bid, unit, later); err != nil {
			t.Fatal(err)
		}
	}
	r := l.Report(t0)[0]
	if r.SettledTodayMicros != 2*budget || r.LateBilledMicros != budget || l.Stats().Late != 10 {
		t.Fatalf("settled %d, late %d micros in %d notices; want %d, %d in 10", r.SettledTodayMicros, r.LateBilledMicros, l.Stats().Late, 2*budget, budget)
	}
	// Past retention (10 minutes after the deadline) a bid is forgotten:
	// its bill is refused and counted apart.
	gone := mustCampaign(t, l, "gone", Limits{DailyMicros: budget, Pacing: PacingASAP})
	if _, err := l.Reserve(gone, 21, 0, unit, later); err != nil {
		t.Fatal(err)
	}
	l.Tick(t0.Add(22 * time.Minute))
	if err := l.Bill(ctx, 21, unit, t0.Add(22*time.Minute).UnixNano()); !errors.Is(err, ErrUnknownBid) {
		t.Fatalf("bill past retention: %v, want ErrUnknownBid", err)
	}
	if st := l.Stats(); st.UnknownBilledMicros != unit {
		t.Fatalf("unknown billed %d micros, want %d", st.UnknownBilledMicros, unit)
	}

	rng := rand.New(rand.NewPCG(5, 6))
	c = mustCampaign(t, l, "random", Limits{DailyMicros: budget, Pacing: PacingASAP})
	at := t0.Add(22 * time.Minute)
	var bids []uint64
	over := false
	for step := range 3000 {
		now := at.UnixNano()
		switch k := rng.IntN(10); {
		case k < 5:
			bid := l.NewBidID()
			if _, err := l.Reserve(c, bid, 0, int64(1+rng.IntN(3))*unit/2, now); err == nil {
				bids = append(bids, bid)
			} else if !errors.Is(err, ErrBudget) {
				t.Fatal(err)
			}
		case k < 8 && len(bids) > 0:
			bid := bids[rng.IntN(len(bids))]
			var err error
			switch rng.IntN(3) {
			case 0:
				err = l.Win(ctx, bid, now)
			case 1:
				err = l.Bill(ctx, bid, unit/2, now)
			default:
				err = l.Loss(ctx, bid, now)
			}
			if err != nil && !errors.Is(err, ErrConflict) && !errors.Is(err, ErrUnknownBid) {
				t.Fatal(err)
			}
		default:
			at = at.Add(time.Duration(rng.IntN(120)) * time.Second)
			l.Tick(at)
		}
		r := l.Report(at)[2]
		if r.SpentTodayMicros > budget+r.LateBilledMicros || r.SettledTodayMicros > budget+r.LateBilledMicros {
			t.Fatalf("step %d: spent %d, settled %d: over the budget %d by more than the late notices' %d",
				step, r.SpentTodayMicros, r.SettledTodayMicros, int64(budget), r.LateBilledMicros)
		}
		over = over || r.SpentTodayMicros > budget
	}
	if !over {
		t.Fatal("no late notice took the spend past the budget: the test tests nothing")
	}
}

// TestCampaignKeepsOwnID: the ledger keeps a copy of a campaign's id, not
// the caller's string, which may point into a whole rules file's text.
func TestCampaignKeepsOwnID(t *testing.T) {
	l := newLedger(t, memConfig(newFakeClock(time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC))))
	text := []byte("campaigns: [{id: camp-1}]")
	at := bytes.Index(text, []byte("camp-1"))
	id := unsafe.String(&text[at], len("camp-1"))
	c := mustCampaign(t, l, id, Limits{DailyMicros: unit, Pacing: PacingASAP})
	if unsafe.StringData(c.ID()) == unsafe.StringData(id) {
		t.Fatal("the ledger keeps the caller's string")
	}
	copy(text[at:], "xxxxxx")
	if c.ID() != "camp-1" || l.Lookup("camp-1") != c {
		t.Fatalf("id %q after the caller's text changed", c.ID())
	}
}

// TestLeaseFollowsContextWhileGrantStuck: a Lease waiting for another
// grant, stuck on an unreachable Leaser, gives up with its context
// instead of waiting for that grant (up to LeaseTimeout, which the stuck
// grant ignores here).
func TestLeaseFollowsContextWhileGrantStuck(t *testing.T) {
	cfg := memConfig(newFakeClock(t0))
	gate := make(chan struct{})
	sl := &gateLeaser{gate: gate, entered: make(chan struct{}, 1), shut: partitioned}
	cfg.Leaser = sl
	l := newLedger(t, cfg)
	c := mustCampaign(t, l, "a", Limits{DailyMicros: 100 * unit})
	stuck := make(chan error, 1)
	go func() { stuck <- l.Lease(context.Background(), c, t0.UnixNano()) }()
	<-sl.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	waiting := make(chan error, 1)
	go func() { waiting <- l.Lease(ctx, c, t0.UnixNano()) }()
	select {
	case err := <-waiting:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Lease while another grant is stuck: %v, want its context's deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Lease still waits for the stuck grant 5 s after its context's deadline")
		defer func() { <-waiting }() // once released below
	}
	close(gate)
	if err := <-stuck; err == nil {
		t.Error("the stuck grant succeeded")
	}
}

// failingReturnLeaser grants what is asked and fails every Return, as a
// backend gone at shutdown (or one whose reply was lost).
type failingReturnLeaser struct{ returns atomic.Int64 }

func (f *failingReturnLeaser) Lease(_ context.Context, req LeaseRequest) (LeaseGrant, error) {
	return LeaseGrant{Daily: req.WantDaily, Total: req.WantTotal}, nil
}

func (f *failingReturnLeaser) Return(context.Context, LeaseReturn) error {
	f.returns.Add(1)
	return errors.New("gone")
}
func (f *failingReturnLeaser) Close() error { return nil }

// TestCloseKeepsLeasesNotOffered: Close lowers the ceilings durably before
// it gives leases back; when the Leaser fails, the lease it failed to take
// back stays lowered (the return may have been applied: the backend may
// count it no more), and the campaigns not offered keep theirs, in the log
// too, as before: they are still leased.
func TestCloseKeepsLeasesNotOffered(t *testing.T) {
	clk := newFakeClock(t0)
	dir := t.TempDir()
	cfg := memConfig(clk)
	cfg.Dir = dir
	fl := &failingReturnLeaser{}
	cfg.Leaser = fl
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lim := Limits{TotalMicros: 1000 * unit, Pacing: PacingASAP}
	var held [3]int64
	for i := range held {
		c := mustCampaign(t, l, fmt.Sprint("c", i), lim)
		if err := l.Lease(context.Background(), c, clk.NowNs()); err != nil {
			t.Fatal(err)
		}
		held[i] = c.ceilTotal.Load()
		if held[i] == 0 {
			t.Fatalf("campaign %d: no lease", i)
		}
	}
	if err := l.Close(); err == nil {
		t.Error("Close succeeded with every return failing")
	}
	if n := fl.returns.Load(); n != 1 {
		t.Errorf("%d returns tried, want 1 (none after the first failure)", n)
	}
	cfg.Leaser = nil
	l = newLedger(t, cfg)
	for i, r := range l.Report(clk.Now()) {
		want := held[i]
		if i == 0 {
			want = 0
		}
		if r.LeasedTotalMicros != want {
			t.Errorf("campaign %s holds %d after the restart, want %d", r.ID, r.LeasedTotalMicros, want)
		}
	}
}

// gateLeaser grants what is asked, but while its gate is shut each Lease
// waits for it to open (a slow backend, the lease goroutine behind it),
// then answers with shut when set.
type gateLeaser struct {
	mu      sync.Mutex
	gate    chan struct{} // nil: open
	entered chan struct{}
	// shut, when set, answers a Lease that waited: grants nothing
	// (another node holds the budget) or fails (a partition).
	shut    func() (LeaseGrant, error)
	returns atomic.Int64
}

// grantsNothing and partitioned are gateLeaser.shut answers.
func grantsNothing() (LeaseGrant, error) { return LeaseGrant{}, nil }
func partitioned() (LeaseGrant, error)   { return LeaseGrant{}, errors.New("partitioned") }

func (g *gateLeaser) Lease(_ context.Context, req LeaseRequest) (LeaseGrant, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		select {
		case g.entered <- struct{}{}:
		default: // one is waiting to be seen already
		}
		<-gate
		if g.shut != nil {
			return g.shut()
		}
	}
	return LeaseGrant{Daily: req.WantDaily, Total: req.WantTotal}, nil
}

func (g *gateLeaser) Return(context.Context, LeaseReturn) error { g.returns.Add(1); return nil }
func (g *gateLeaser) Close() error                              { return nil }

// TestLoweringSurvivesFullLeaseQueue: a rules reload that changes more
// campaigns than the lease queue holds (4,096) while the lease goroutine
// is busy: a lowered budget's request found the queue full and was
// dropped, and nothing asked again (bids ask only while the lease is below
// the budget, and this one was above it), so the node kept its lease past
// the lowered budget: each node may then spend the whole lowered budget.
func TestLoweringSurvivesFullLeaseQueue(t *testing.T) {
	clk := newFakeClock(t0)
	cfg := memConfig(clk)
	cfg.LeaseFraction = 0.5
	gl := &gateLeaser{entered: make(chan struct{}, 1)}
	cfg.Leaser = gl
	l := newLedger(t, cfg)
	ctx := context.Background()
	now := clk.NowNs()
	lim := Limits{DailyMicros: 100 * unit, Pacing: PacingASAP}
	c := mustCampaign(t, l, "lowered", lim)
	if err := l.Lease(ctx, c, now); err != nil {
		t.Fatal(err)
	}
	if held := LeasedToday(c, clk.Now()); held != 50*unit {
		t.Fatalf("holds %d, want 50 units", held)
	}
	gate := make(chan struct{})
	gl.mu.Lock()
	gl.gate = gate
	gl.mu.Unlock()
	mustCampaign(t, l, "first", lim) // the lease goroutine waits on it
	<-gl.entered
	for i := range cap(l.leases.ch) + 10 {
		mustCampaign(t, l, fmt.Sprint("reload-", i), lim)
	}
	lim.DailyMicros = 10 * unit
	mustCampaign(t, l, "lowered", lim)
	gl.mu.Lock()
	gl.gate = nil
	gl.mu.Unlock()
	close(gate)
	deadline := time.Now().Add(10 * time.Second)
	for LeasedToday(c, clk.Now()) > lim.DailyMicros && time.Now().Before(deadline) {
		// Bids on it, within the lowered budget, as the hot path would:
		// refused when the budget is spent, or the lease (given back
		// down to the lowered budget) is, until the next grant.
		if _, err := l.Reserve(c, l.NewBidID(), 0, unit, now); err != nil && !errors.Is(err, ErrBudget) && !errors.Is(err, ErrNoLease) {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	if held := LeasedToday(c, clk.Now()); held > lim.DailyMicros {
		t.Errorf("the node still holds %d of a daily budget lowered to %d: the lowering was dropped with the lease queue full", held, lim.DailyMicros)
	}
}

// TestRaiseDuringEmptyGrantLeases: a budget raised while the lease
// goroutine asks the Leaser under the old one, which grants nothing,
// leases at once. The change's request was dropped (one was pending),
// and the grant that answered nothing then told bids to wait LeaseRetry
// (an hour here) before asking again.
func TestRaiseDuringEmptyGrantLeases(t *testing.T) {
	clk := newFakeClock(t0)
	cfg := memConfig(clk)
	cfg.LeaseRetry = time.Hour
	gl := &gateLeaser{entered: make(chan struct{}, 1), gate: make(chan struct{}), shut: grantsNothing}
	cfg.Leaser = gl
	l := newLedger(t, cfg)
	lim := Limits{DailyMicros: 10 * unit, Pacing: PacingASAP}
	c := mustCampaign(t, l, "c", lim) // the lease goroutine asks, and waits
	<-gl.entered
	lim.DailyMicros = 20 * unit
	mustCampaign(t, l, "c", lim)
	gl.mu.Lock()
	gate := gl.gate
	gl.gate = nil
	gl.mu.Unlock()
	close(gate) // the pending grant answers nothing
	for deadline := time.Now().Add(5 * time.Second); LeasedToday(c, clk.Now()) == 0; time.Sleep(time.Millisecond) {
		l.Reserve(c, l.NewBidID(), 0, unit/10, clk.NowNs()) //nolint:errcheck // until a lease arrives
		if time.Now().After(deadline) {
			t.Fatal("no lease 5 s after the budget was raised (LeaseRetry an hour)")
		}
	}
}
