package ledger

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func durableConfig(clk *fakeClock, dir string) Config {
	cfg := memConfig(clk)
	cfg.Dir = dir
	cfg.SyncInterval = 100 * time.Microsecond
	return cfg
}

// copyDir copies the ledger files as a crash would leave them: whatever
// is in the files now, without the Close that a kill -9 skips.
func copyDir(t testing.TB, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func onlySegment(t testing.TB, dir string) string {
	t.Helper()
	_, segs, err := listDir(dir)
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments: %v %v", segs, err)
	}
	return filepath.Join(dir, segName(segs[len(segs)-1]))
}

// reserve is Reserve, waiting for a lease when the campaign has none.
func reserve(l *Ledger, c *Campaign, bid, user uint64, price, now int64) (Reservation, error) {
	r, err := l.Reserve(c, bid, user, price, now)
	if errors.Is(err, ErrNoLease) {
		if err := l.Lease(context.Background(), c, now); err != nil {
			return r, err
		}
		r, err = l.Reserve(c, bid, user, price, now)
	}
	return r, err
}

type notice struct {
	kind  byte
	bid   uint64
	price int64
}

// TestNoticeReplayExactlyOnce sends every notice 1-5 times, shuffled,
// losses before wins, with a crash (the files copied without Close) and a
// restart halfway, and checks that each bid counted exactly once.
func TestNoticeReplayExactlyOnce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	clk := newFakeClock(t0)
	dir := filepath.Join(t.TempDir(), "a")
	cfg := durableConfig(clk, dir)
	cfg.LeaseFraction = 1 // lease everything at once: the test is about notices
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := t0.UnixNano()
	lims := map[string]Limits{
		"a": {DailyMicros: 10000 * unit, TotalMicros: 50000 * unit, CapMax: 1000, CapWindow: time.Hour},
		"b": {DailyMicros: 10000 * unit, Pacing: PacingASAP},
	}
	camps := map[string]*Campaign{}
	for id, lim := range lims {
		camps[id] = mustCampaign(t, l, id, lim)
		if err := l.Lease(ctx, camps[id], now); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]int64{}     // final money per campaign, before expiry
	wantLate := map[string]int64{} // after expiry
	var notices []notice
	for i := range 400 {
		id := "a"
		if i%2 == 1 {
			id = "b"
		}
		c := camps[id]
		bid := l.NewBidID()
		price := int64(1+rng.IntN(5000)) * 1000
		if _, err := l.Reserve(c, bid, uint64(1+i%7), price, now); err != nil {
			t.Fatalf("reserve %d: %v", i, err)
		}
		clear := price * int64(50+rng.IntN(51)) / 100
		var ns []notice
		kind := rng.IntN(6)
		switch kind {
		case 0: // won and billed
			ns = []notice{{noticeWin, bid, 0}, {noticeBill, bid, clear}}
			want[id] += clear
			wantLate[id] += clear
		case 1: // lost
			ns = []notice{{noticeLoss, bid, 0}}
		case 2: // a loss, and a (contradicting) win after it
			ns = []notice{{noticeLoss, bid, 0}, {noticeWin, bid, 0}}
		case 3: // billed, and a stray loss
			ns = []notice{{noticeWin, bid, 0}, {noticeBill, bid, clear}, {noticeLoss, bid, 0}}
			want[id] += clear
			wantLate[id] += clear
		case 4: // won, never billed: its price once it expires
			ns = []notice{{noticeWin, bid, 0}}
			want[id] += price
			wantLate[id] += price
		case 5: // nothing: reserved, then released by expiry
			want[id] += price
		}
		for _, n := range ns {
			for range 1 + rng.IntN(5) {
				notices = append(notices, n)
			}
		}
	}
	rng.Shuffle(len(notices), func(i, j int) { notices[i], notices[j] = notices[j], notices[i] })
	// Losses before wins: move each bid's first loss ahead of its first win.
	first := map[[2]uint64]int{}
	for i, n := range notices {
		k := [2]uint64{n.bid, uint64(n.kind)}
		if _, ok := first[k]; !ok {
			first[k] = i
		}
	}
	for i, n := range notices {
		if n.kind != noticeLoss || first[[2]uint64{n.bid, uint64(noticeLoss)}] != i {
			continue
		}
		if w, ok := first[[2]uint64{n.bid, uint64(noticeWin)}]; ok && w < i {
			notices[w], notices[i] = notices[i], notices[w]
		}
	}
	send := func(l *Ledger, ns []notice) {
		t.Helper()
		for _, n := range ns {
			var err error
			switch n.kind {
			case noticeWin:
				err = l.Win(ctx, n.bid, now)
			case noticeBill:
				err = l.Bill(ctx, n.bid, n.price, now)
			case noticeLoss:
				err = l.Loss(ctx, n.bid, now)
			}
			if err != nil {
				t.Fatalf("notice %+v: %v", n, err)
			}
		}
	}
	half := len(notices) / 2
	send(l, notices[:half])
	crashed := filepath.Join(t.TempDir(), "b")
	copyDir(t, dir, crashed) // every notice sent was acknowledged: durable
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	cfg.Dir = crashed
	l2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	for id, lim := range lims {
		camps[id] = mustCampaign(t, l2, id, lim)
	}
	send(l2, notices) // the first half again, as replays, then the rest
	check := func(when string, want map[string]int64) {
		t.Helper()
		for id, c := range camps {
			got := c.totalUsed.Load() - c.crashMicros.Load()
			if got != want[id] {
				t.Errorf("%s: campaign %s counted %d, want %d (crash-counted %d)", when, id, got, want[id], c.crashMicros.Load())
			}
		}
	}
	check("before expiry", want)
	l2.Tick(t0.Add(6 * time.Minute))
	check("after expiry", wantLate)
	for id, c := range camps {
		if c.settledTotal.Load()-c.crashMicros.Load() != wantLate[id] {
			t.Errorf("campaign %s settled %d, want %d", id, c.settledTotal.Load(), wantLate[id])
		}
		if c.reserved.Load() != 0 {
			t.Errorf("campaign %s still reserves %d", id, c.reserved.Load())
		}
	}
	if s := l2.Stats(); s.Duplicates == 0 || s.Conflicts == 0 {
		t.Errorf("replays not counted: %+v", s)
	}
}

func TestCleanRestartKeepsSpendAndLosesNothing(t *testing.T) {
	clk := newFakeClock(t0)
	dir := t.TempDir()
	ctx := context.Background()
	now := t0.UnixNano()
	lim := Limits{DailyMicros: 100 * unit, TotalMicros: 1000 * unit, CapMax: 2, CapWindow: time.Hour}
	open := func() (*Ledger, *Campaign) {
		l, err := New(durableConfig(clk, dir))
		if err != nil {
			t.Fatal(err)
		}
		c := mustCampaign(t, l, "c", lim)
		if err := l.Lease(ctx, c, now); err != nil {
			t.Fatal(err)
		}
		return l, c
	}
	l, c := open()
	for i := range 10 {
		bid := uint64(i + 1)
		if _, err := reserve(l, c, bid, uint64(i%5+1), 3*unit, now); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := l.Bill(ctx, bid, 2*unit, now); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := l.Report(t0)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, c = open()
	defer l.Close()
	after := l.Report(t0)
	b, a := before[0], after[0]
	a.LeasedTodayMicros, a.LeasedTotalMicros, b.LeasedTodayMicros, b.LeasedTotalMicros = 0, 0, 0, 0
	if a != b {
		t.Fatalf("restart changed the report:\n%+v\n%+v", b, a)
	}
	if a.CrashCountedMicros != 0 {
		t.Fatalf("clean restart counted %d as lost", a.CrashCountedMicros)
	}
	if l.FrequencyOK(c, 1, now) {
		t.Fatal("frequency count lost in restart")
	}
	if err := l.Loss(ctx, 2, now); err != nil {
		t.Fatal("reservation lost in restart:", err)
	}
}

// TestCrashNeverUnderCounts runs reservations and bills, noting after each
// flush the log size and the spend, then replays the log cut at random
// offsets (a crash mid-write, with torn tails): replay never panics,
// never counts less than the spend acknowledged when the cut point was
// durable, and never more than the budget.
func TestCrashNeverUnderCounts(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	clk := newFakeClock(t0)
	dir := t.TempDir()
	ctx := context.Background()
	now := t0.UnixNano()
	cfg := durableConfig(clk, dir)
	cfg.LeaseFraction = 0.05
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const budget = 500 * unit
	c := mustCampaign(t, l, "c", Limits{DailyMicros: budget, CapMax: 3, CapWindow: time.Hour})
	type ack struct{ size, spent int64 }
	var acks []ack
	seg := onlySegment(t, dir)
	for i := 0; i < 3000; i++ {
		bid := l.NewBidID()
		price := int64(1+rng.IntN(400)) * 1000
		_, err := l.Reserve(c, bid, uint64(1+rng.IntN(5000)), price, now)
		if errors.Is(err, ErrNoLease) {
			if err := l.Lease(ctx, c, now); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if errors.Is(err, ErrBudget) {
			break
		}
		if err == nil && rng.IntN(3) == 0 {
			if err := l.Bill(ctx, bid, price/2, now); err != nil {
				t.Fatal(err)
			}
		}
		if i%50 == 0 {
			spent := c.totalUsed.Load()
			if err := l.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(seg)
			if err != nil {
				t.Fatal(err)
			}
			acks = append(acks, ack{fi.Size(), spent})
		}
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	cuts := []int{0, 1, 7, len(data) - 1, len(data)}
	for range 40 {
		cuts = append(cuts, rng.IntN(len(data)+1))
	}
	for _, cut := range cuts {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, filepath.Base(seg)), data[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		l2, err := New(durableConfig(clk, d))
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		var spent int64
		if c2 := l2.Lookup("c"); c2 != nil {
			spent = c2.totalUsed.Load()
		}
		var acked int64
		for _, a := range acks {
			if a.size <= int64(cut) {
				acked = a.spent
			}
		}
		if spent < acked {
			t.Errorf("cut %d of %d: recovered spend %d < acknowledged %d", cut, len(data), spent, acked)
		}
		if spent > budget {
			t.Errorf("cut %d: recovered spend %d over budget", cut, spent)
		}
		l2.Close()
	}
}

func TestCompactionKeepsState(t *testing.T) {
	clk := newFakeClock(t0)
	dir := t.TempDir()
	ctx := context.Background()
	cfg := durableConfig(clk, dir)
	cfg.CompactBytes = 8 << 10
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lim := Limits{DailyMicros: 1000 * unit, CapMax: 5, CapWindow: time.Hour}
	c := mustCampaign(t, l, "c", lim)
	now := t0.UnixNano()
	for i := range 2000 {
		bid := uint64(i + 1)
		if _, err := reserve(l, c, bid, uint64(i%500+1), 1000, now); err != nil {
			t.Fatal(i, err)
		}
		if i%3 == 0 {
			l.Loss(ctx, bid, now)
		} else if i%3 == 1 {
			l.Bill(ctx, bid, 500, now)
		}
	}
	for l.log.compacting.Load() {
		time.Sleep(time.Millisecond)
	}
	ckpts, _, _ := listDir(dir)
	if len(ckpts) == 0 {
		t.Fatal("no checkpoint written")
	}
	before := l.Report(t0)[0]
	pending := l.Pending()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := newLedger(t, durableConfig(clk, dir))
	c2 := mustCampaign(t, l2, "c", lim)
	after := l2.Report(t0)[0]
	if before.TotalSpentMicros != after.TotalSpentMicros || before.SettledTotalMicros != after.SettledTotalMicros || before.ReservedMicros != after.ReservedMicros {
		t.Fatalf("compaction changed state:\n%+v\n%+v", before, after)
	}
	if l2.Pending() != pending {
		t.Fatalf("pending %d, want %d", l2.Pending(), pending)
	}
	for u := uint64(1); u <= 500; u++ {
		if got, want := l2.FrequencyCount(c2, u, now), l.FrequencyCount(c, u, now); got != want {
			t.Fatalf("user %d: frequency %d, want %d", u, got, want)
		}
	}
}

func TestCorruptionBeforeTailIsAnError(t *testing.T) {
	clk := newFakeClock(t0)
	dir := t.TempDir()
	l, err := New(durableConfig(clk, dir))
	if err != nil {
		t.Fatal(err)
	}
	mustCampaign(t, l, "c", Limits{DailyMicros: unit})
	l.Close()
	seg := onlySegment(t, dir)
	// A second, newer segment makes the first one not the tail.
	data, _ := os.ReadFile(seg)
	data[12] ^= 0xff
	os.WriteFile(seg, data, 0o644)
	os.WriteFile(filepath.Join(dir, segName(1<<40)), nil, 0o644)
	if _, err := New(durableConfig(clk, dir)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
}

// TestLimitChangesDoNotStackLeases changes a campaign's limits ten times
// (frequency cap, budget up and down: what rules reloads do, each asking
// for a lease), spends a little, lowers the budget below the lease held
// and raises it again, then crashes: a lease is topped up only when it
// runs low, so the crash counts less than two leases as spent (the bound
// ledger/doc.go states), for a daily and for a total budget; and the
// lowered budget is enforced and the raised one leased again.
func TestLimitChangesDoNotStackLeases(t *testing.T) {
	for _, tc := range []struct {
		name string
		lim  func(budget int64) Limits
	}{
		{"daily", func(b int64) Limits { return Limits{DailyMicros: b, Pacing: PacingASAP, CapWindow: time.Hour} }},
		{"total", func(b int64) Limits { return Limits{TotalMicros: b, Pacing: PacingASAP, CapWindow: time.Hour} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(t0)
			dir := t.TempDir()
			ctx := context.Background()
			now := t0.UnixNano()
			l := newLedger(t, durableConfig(clk, dir))
			budgets := []int64{1000, 1000, 400, 2000, 2000, 300, 1000, 1000, 600, 1000}
			c := mustCampaign(t, l, "c", tc.lim(budgets[0]*unit))
			var lease int64 // the largest lease in force
			for i, b := range budgets {
				lim := tc.lim(b * unit)
				lim.CapMax = int32(i + 1)
				mustCampaign(t, l, "c", lim)
				if err := l.Lease(ctx, c, now); err != nil { // a reload's warm-up
					t.Fatal(err)
				}
				lease = max(lease, l.leaseChunk(c, b*unit))
				if _, err := reserve(l, c, uint64(i+1), uint64(i+1), unit/10, now); err != nil {
					t.Fatal(err)
				}
			}
			// Lowered below the lease held: the budget is what binds.
			low := tc.lim(3 * unit)
			mustCampaign(t, l, "c", low)
			bid := uint64(100)
			for ; ; bid++ {
				_, err := reserve(l, c, bid, 0, unit/2, now)
				if errors.Is(err, ErrBudget) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if r := l.Report(t0)[0]; max(r.SpentTodayMicros, r.TotalSpentMicros) != 3*unit {
				t.Fatalf("lowered budget: spent %d today, %d in all, want %d", r.SpentTodayMicros, r.TotalSpentMicros, 3*unit)
			}
			// Raised again: leases come as the spend needs them.
			mustCampaign(t, l, "c", tc.lim(1000*unit))
			for end := bid + 40; bid < end; bid++ {
				if _, err := reserve(l, c, bid, 0, unit/2, now); err != nil {
					t.Fatal(err)
				}
			}
			l2 := crashAfterLeases(t, l, c, clk, dir) // after a background grant the changes asked for
			r := l2.Report(t0)[0]
			t.Logf("counted as spent by the crash: %d micros (%.2f leases of %d)", r.CrashCountedMicros, float64(r.CrashCountedMicros)/float64(lease), lease)
			if r.CrashCountedMicros >= 2*lease {
				t.Errorf("a crash after %d limit changes counted %d micros as spent, %.1f leases of %d; want fewer than 2",
					len(budgets)+2, r.CrashCountedMicros, float64(r.CrashCountedMicros)/float64(lease), lease)
			}
		})
	}
}

// TestConcurrentCampaignsReopen creates campaigns from many goroutines at
// once, as concurrent rules compilations may, then closes and reopens the
// ledger: every campaign key must reach the log in the order it was
// given, or replay refuses the log as corrupt.
func TestConcurrentCampaignsReopen(t *testing.T) {
	clk := newFakeClock(t0)
	for round := range 5 {
		dir := t.TempDir()
		l, err := New(durableConfig(clk, dir))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 200 {
					if _, err := l.Campaign(fmt.Sprintf("c-%d-%d", g, i), Limits{}); err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l2, err := New(durableConfig(clk, dir))
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		if n := len(l2.Report(t0)); n != 8*200 {
			t.Errorf("round %d: %d campaigns after reopening, want %d", round, n, 8*200)
		}
		l2.Close()
	}
}

// FuzzReplay feeds arbitrary bytes to log replay, as a segment and as a
// checkpoint: it must never panic.
func FuzzReplay(f *testing.F) {
	clk := newFakeClock(t0)
	dir := f.TempDir()
	l, err := New(durableConfig(clk, dir))
	if err != nil {
		f.Fatal(err)
	}
	c := mustCampaign(f, l, "c", Limits{DailyMicros: 100 * unit, CapMax: 2, CapWindow: time.Hour})
	ctx := context.Background()
	l.Lease(ctx, c, t0.UnixNano())
	for i := range 5 {
		l.Reserve(c, uint64(i+1), 9, unit, t0.UnixNano())
	}
	l.Bill(ctx, 1, unit/2, t0.UnixNano())
	l.Loss(ctx, 2, t0.UnixNano())
	l.Close()
	seed, _ := os.ReadFile(onlySegment(f, dir))
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, ckpt := range []bool{false, true} {
			cfg := memConfig(clk)
			l, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			good, _, _ := replay(l, data, ckpt)
			l.indexDue()
			if good < 0 || good > len(data) {
				t.Fatalf("good %d of %d", good, len(data))
			}
			l.Report(t0)
			l.Tick(t0.Add(time.Hour))
			l.Close()
		}
	})
}

// FuzzReplayFramed frames the fuzzer's records with valid CRCs, so that
// the record decoders (not only the framing) meet arbitrary payloads.
func FuzzReplayFramed(f *testing.F) {
	f.Add([]byte{recCampaign, 5, 0, 0, 0, 0, 1, 0, 0, 0, 'c'})
	f.Add([]byte{recCampaign, 9, 0, 0, 0, 0, 1, 0, 0, 0, 'c', recReserve, 4, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		var log []byte
		for len(data) >= 2 {
			typ, n := data[0], int(data[1])
			data = data[2:]
			n = min(n, len(data))
			payload := data[:n]
			data = data[n:]
			log = frame(log, typ, func(b []byte) []byte { return append(b, payload...) })
		}
		clk := newFakeClock(t0)
		l, err := New(memConfig(clk))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		replay(l, log, false)
		l.indexDue()
		l.Report(t0)
		l.Tick(t0.Add(time.Hour))
	})
}

// TestCrashCountsTotalOnlyLease crashes a campaign with a total budget and
// no daily one after its lease was logged and before any of its
// reservations was: recovery must count the lease as spent. Every total
// lease logs a day ceiling of zero beside it (there is no daily lease),
// and recovery had taken that as a bound on the lost spend, counting
// nothing.
func TestCrashCountsTotalOnlyLease(t *testing.T) {
	clk := newFakeClock(t0)
	dir := t.TempDir()
	ctx := context.Background()
	now := t0.UnixNano()
	l := newLedger(t, durableConfig(clk, dir))
	c := mustCampaign(t, l, "c", Limits{TotalMicros: 1000 * unit, Pacing: PacingASAP})
	if err := l.Lease(ctx, c, now); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	crash := t.TempDir()
	copyDir(t, dir, crash) // kill -9 before the reservations below reach the log
	var spent int64
	for bid := uint64(1); ; bid++ {
		if _, err := l.Reserve(c, bid, 0, unit, now); err != nil {
			break
		}
		spent += unit
	}
	if spent == 0 {
		t.Fatal("no reservation fit the lease")
	}
	l2 := newLedger(t, durableConfig(clk, crash))
	if got := l2.Lookup("c").totalUsed.Load(); got < spent {
		t.Errorf("recovered spend %d < %d reserved under the durable lease", got, spent)
	}
}

// TestReleasesLowerTheLease is the probe that found the ceiling left high:
// thirty bids of one unit under a lease of five, all released (expired
// unanswered, or lost), then a kill -9. A release lowers the spend but
// not the durable ceiling, and recovery counts what lies between as
// spent: six leases before the lease was lowered on release. Now the
// crash counts less than two leases (the bound ledger/doc.go states), for
// a daily and for a total budget, and the campaign leases again as it
// spends.
func TestReleasesLowerTheLease(t *testing.T) {
	for _, budget := range []struct {
		name string
		lim  Limits
	}{
		{"daily", Limits{DailyMicros: 1000 * unit, Pacing: PacingASAP}},
		{"total", Limits{TotalMicros: 1000 * unit, Pacing: PacingASAP}},
	} {
		for _, release := range []string{"expiry", "loss"} {
			t.Run(budget.name+"/"+release, func(t *testing.T) {
				clk := newFakeClock(t0)
				dir := t.TempDir()
				ctx := context.Background()
				l := newLedger(t, durableConfig(clk, dir))
				c := mustCampaign(t, l, "c", budget.lim)
				lease := l.leaseChunk(c, 1000*unit)
				if lease != 5*unit {
					t.Fatalf("lease %d, want %d", lease, 5*unit)
				}
				now := t0.UnixNano()
				for bid := uint64(1); bid <= 30; bid++ {
					if _, err := reserve(l, c, bid, 0, unit, now); err != nil {
						t.Fatal(err)
					}
				}
				switch release {
				case "expiry":
					clk.Add(l.cfg.ReservationTTL + time.Second)
					l.Tick(clk.Now())
				case "loss":
					for bid := uint64(1); bid <= 30; bid++ {
						if err := l.Loss(ctx, bid, now); err != nil {
							t.Fatal(err)
						}
					}
				}
				l2 := crashAfterLeases(t, l, c, clk, dir) // after the lowering the releases asked for
				r := l2.Report(clk.Now())[0]
				l2.Close()
				t.Logf("counted as spent by the crash: %d micros (%.2f leases of %d)", r.CrashCountedMicros, float64(r.CrashCountedMicros)/float64(lease), lease)
				if r.CrashCountedMicros >= 2*lease {
					t.Errorf("a crash after 30 released bids counted %d micros as spent, %.1f leases of %d; want fewer than 2",
						r.CrashCountedMicros, float64(r.CrashCountedMicros)/float64(lease), lease)
				}
				// The lowered lease is leased again as the campaign spends.
				now = clk.NowNs()
				for bid := uint64(100); bid < 130; bid++ {
					if _, err := reserve(l, c, bid, 0, unit, now); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	}
}

// TestSpendNeverPassesDurableCeiling reserves, releases (losses and
// expiry) and so lowers and raises leases from many goroutines at once,
// while a checker reads the spend against every ceiling a crash at that
// moment could replay: the last one written and each one appended but
// perhaps not yet written. The spend must never pass any of them, or a
// crash would under-count it. Run it with -race.
func TestSpendNeverPassesDurableCeiling(t *testing.T) {
	type ceiling struct {
		seq     uint64
		day, tl int64
	}
	var (
		mu       sync.Mutex
		ceilings []ceiling
	)
	testHookCeiling = func(_ *Campaign, seq uint64, _ int32, day, total int64) {
		mu.Lock()
		ceilings = append(ceilings, ceiling{seq, day, total})
		mu.Unlock()
	}
	// Reservations keep coming between the lowering's reading of the
	// spend and its publishing the lowered ceiling.
	testHookLower = func() { time.Sleep(200 * time.Microsecond) }
	defer func() { testHookCeiling, testHookLower = nil, nil }()

	clk := newFakeClock(t0)
	dir := t.TempDir()
	cfg := durableConfig(clk, dir)
	cfg.ReservationTTL = 20 * time.Millisecond // of the fake clock
	// The lease is four times the largest price refused for want of one
	// from the first such refusal on (1.50 below, so 6.00, not the 5.00
	// of LeaseFraction): make it that from the start, so that the bound
	// below is two of the leases the lowering keeps to.
	cfg.LeaseMinMicros = 6 * unit
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 1000 * unit, TotalMicros: 1000 * unit, Pacing: PacingASAP})
	lease := l.leaseChunk(c, 1000*unit)
	j := l.log
	positions := func() (written, appended uint64) {
		j.mu.Lock()
		defer j.mu.Unlock()
		return j.written, j.appended
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	// loop calls step in a goroutine of its own until stop is closed or
	// step returns false.
	loop := func(step func() bool) {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if !step() {
					return
				}
			}
		})
	}
	var checks, violations int
	loop(func() bool { // the checker
		w, a := positions()
		day, _ := on(c.dayUsed.Load(), l.days.day(clk.NowNs()))
		total := c.totalUsed.Load()
		if w2, a2 := positions(); w2 != w || a2 != a {
			return true // a ceiling may have been published in between
		}
		mu.Lock()
		defer mu.Unlock()
		for i := len(ceilings) - 1; i >= 0; i-- {
			cl := ceilings[i]
			if cl.seq > a {
				continue // appended since
			}
			if day > cl.day || total > cl.tl {
				violations++
				if violations <= 5 {
					t.Errorf("spend %d today, %d in all, past the ceiling record %d (%d, %d) a crash could replay (written %d, appended %d)",
						day, total, cl.seq, cl.day, cl.tl, w, a)
				}
			}
			if cl.seq <= w {
				break // the last one written: older ones are replaced
			}
		}
		checks++
		return true
	})
	loop(func() bool { // time and expiry
		clk.Add(2 * time.Millisecond)
		l.Tick(clk.Now())
		time.Sleep(100 * time.Microsecond)
		return true
	})
	for g := range 4 {
		rng := rand.New(rand.NewPCG(uint64(g), 7))
		loop(func() bool { // reservations, and losses of some
			bid := l.NewBidID()
			price := int64(1+rng.IntN(15)) * unit / 10
			if _, err := l.Reserve(c, bid, 0, price, clk.NowNs()); err != nil {
				if !errors.Is(err, ErrNoLease) {
					t.Error(err)
					return false
				}
				return true
			}
			if rng.IntN(5) < 2 {
				if err := l.Loss(context.Background(), bid, clk.NowNs()); err != nil {
					t.Error(err)
					return false
				}
			}
			return true
		})
	}
	countLowered := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for i := 1; i < len(ceilings); i++ {
			if ceilings[i].day < ceilings[i-1].day || ceilings[i].tl < ceilings[i-1].tl {
				n++
			}
		}
		return n
	}
	// 1.5 s, and on until a ceiling was lowered: on a loaded machine the
	// goroutines above may get too little of it in 1.5 s for a release
	// to leave two leases unspent (it failed so twice in 40 runs at load
	// average 14).
	start := time.Now()
	for time.Since(start) < 1500*time.Millisecond || countLowered() == 0 && time.Since(start) < time.Minute {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	lowered := countLowered()
	mu.Lock()
	t.Logf("%d checks, %d ceiling records, %d of them lowered", checks, len(ceilings), lowered)
	mu.Unlock()
	if lowered == 0 {
		t.Error("no ceiling was lowered: the test did not exercise the lowering")
	}

	// Once the releases' lowering is done, a crash counts less than two
	// leases.
	clk.Add(time.Second)
	l.Tick(clk.Now()) // expire the rest
	if got := l.leaseChunk(c, 1000*unit); got != lease {
		t.Fatalf("the lease changed from %d to %d during the test", lease, got)
	}
	l2 := crashAfterLeases(t, l, c, clk, dir)
	r := l2.Report(clk.Now())[0]
	t.Logf("counted as spent by the crash: %.2f leases", float64(r.CrashCountedMicros)/float64(lease))
	if r.CrashCountedMicros >= 2*lease {
		t.Errorf("crash counted %d micros as spent, %.1f leases of %d; want fewer than 2", r.CrashCountedMicros, float64(r.CrashCountedMicros)/float64(lease), lease)
	}
}

// TestReleaseDuringRaiseLowersTheLease: a release that comes while a
// grant raises the ceiling, after the grant read the spend, checks the
// ceiling before the raise is published, which it does not leave two
// leases above the spend; the raised one may. The grant then asks for the
// lowering itself, or a crash would count the whole raised ceiling as
// spent (TestSpendNeverPassesDurableCeiling failed so under load: 2.3 to
// 2.5 leases).
func TestReleaseDuringRaiseLowersTheLease(t *testing.T) {
	clk := newFakeClock(t0)
	dir := t.TempDir()
	ctx := context.Background()
	l := newLedger(t, durableConfig(clk, dir))
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 1000 * unit, TotalMicros: 1000 * unit, Pacing: PacingASAP})
	lease := l.leaseChunk(c, 1000*unit)
	if lease != 5*unit {
		t.Fatalf("lease %d, want %d", lease, 5*unit)
	}
	now := t0.UnixNano()
	if err := l.Lease(ctx, c, now); err != nil {
		t.Fatal(err)
	}
	// The grant that creating c queued may still be running, having read
	// the spend before the reservation below: the reservation's request
	// for a top-up would then be taken by it (needLease set) and come to
	// nothing, and the hook below would never fire.
	waitLeasesIdle(t, c)
	var released atomic.Bool
	testHookCeiling = func(hc *Campaign, _ uint64, _ int32, day, _ int64) {
		if hc != c || day <= lease || released.Swap(true) {
			return
		}
		// The top-up read the spend of bid 1 and raises the ceiling to
		// two leases: the loss sees the ceiling of one.
		if err := l.Loss(ctx, 1, now); err != nil {
			t.Error(err)
		}
	}
	defer func() { testHookCeiling = nil }()
	// Four fifths of the lease spent: the reservation asks for a top-up.
	if _, err := reserve(l, c, 1, 0, 4*unit, now); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); !released.Load(); time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			t.Fatal("no top-up raised the ceiling above one lease within a minute")
		}
	}
	l2 := crashAfterLeases(t, l, c, clk, dir)
	r := l2.Report(clk.Now())[0]
	if r.CrashCountedMicros >= 2*lease {
		t.Errorf("a crash after a release during a raise counted %d micros as spent, %.1f leases of %d; want fewer than 2",
			r.CrashCountedMicros, float64(r.CrashCountedMicros)/float64(lease), lease)
	}
}

// crashAfterLeases waits until the lease goroutine has done what c asked
// of it, flushes l's log, and opens a copy of dir, l's directory, as a
// kill -9 would leave it then (closed when the test ends).
func crashAfterLeases(t *testing.T, l *Ledger, c *Campaign, clk *fakeClock, dir string) *Ledger {
	t.Helper()
	waitLeasesIdle(t, c)
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	crash := t.TempDir()
	copyDir(t, dir, crash)
	return newLedger(t, durableConfig(clk, crash))
}

// waitLeasesIdle waits until the lease goroutine has no grant for c
// queued or running.
func waitLeasesIdle(t *testing.T, c *Campaign) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); c.needLease.Load() || c.leaseAgain.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the lease goroutine still had a grant for the campaign after a minute")
		}
	}
}

// TestCurrencyRecorded: the currency a campaign's limits name is in the
// log, and in the checkpoints that replace it, so that a reopened ledger
// knows what its spend counts in; a change is recorded again, and limits
// without one record nothing.
func TestCurrencyRecorded(t *testing.T) {
	clk := newFakeClock(t0)
	dir := t.TempDir()
	cfg := durableConfig(clk, dir)
	cfg.CompactBytes = 8 << 10
	l := newLedger(t, cfg)
	a := mustCampaign(t, l, "a", Limits{Currency: "USD"})
	mustCampaign(t, l, "b", Limits{})
	mustCampaign(t, l, "c", Limits{Currency: "USD"})
	mustCampaign(t, l, "c", Limits{Currency: "EUR"})
	mustCampaign(t, l, "c", Limits{}) // keeps EUR
	want := map[string]string{"a": "USD", "c": "EUR"}
	if got := l.Currencies(); !maps.Equal(got, want) {
		t.Fatalf("Currencies() = %v, want %v", got, want)
	}
	crashed := func() *Ledger {
		t.Helper()
		if err := l.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		crash := t.TempDir()
		copyDir(t, dir, crash)
		return newLedger(t, durableConfig(clk, crash))
	}
	if got := crashed().Currencies(); !maps.Equal(got, want) {
		t.Errorf("from the log: Currencies() = %v, want %v", got, want)
	}

	// Enough records for a checkpoint to replace the segments that hold
	// the campaign records.
	for i := range 400 {
		if _, err := reserve(l, a, uint64(i+1), 1, 1000, t0.UnixNano()); err != nil {
			t.Fatal(i, err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		// Not listDir: it removes the checkpoint being written.
		if ckpts, _ := filepath.Glob(filepath.Join(dir, "checkpoint-*.ckpt")); len(ckpts) > 0 && !l.log.compacting.Load() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint written in 10 s")
		}
		l.Flush(context.Background())
	}
	l2 := crashed()
	if got := l2.Currencies(); !maps.Equal(got, want) {
		t.Errorf("from a checkpoint: Currencies() = %v, want %v", got, want)
	}
	for _, r := range l2.Report(t0) {
		if r.Currency != want[r.ID] {
			t.Errorf("report of %s: currency %q, want %q", r.ID, r.Currency, want[r.ID])
		}
	}
}

// TestLeaseAfterLoweringHoldsLease: Lease (a reload's warm-up) after a
// change that lowered the budget gives the lease back and must then lease
// anew before it returns. It relied on leaseAgain, which the lease
// goroutine clears when it takes the campaign from its queue: should it
// take it in the middle of Lease's grant, Lease returned with no lease
// and the next reservation failed with ErrNoLease
// (TestLimitChangesDoNotStackLeases failed so about once in ten runs
// under -race). The hook below takes the campaign at that moment.
func TestLeaseAfterLoweringHoldsLease(t *testing.T) {
	clk := newFakeClock(t0)
	l := newLedger(t, durableConfig(clk, t.TempDir()))
	ctx := context.Background()
	now := t0.UnixNano()
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 1000 * unit, Pacing: PacingASAP})
	if _, err := reserve(l, c, 1, 0, unit, now); err != nil {
		t.Fatal(err)
	}
	waitLeasesIdle(t, c) // the lease goroutine's grants are done
	// Keep the change's request out of the queue: Lease alone serves it.
	c.needLease.Store(true)
	mustCampaign(t, l, "c", Limits{DailyMicros: 100 * unit, Pacing: PacingASAP})
	c.needLease.Store(false)
	var once atomic.Bool
	testHookLower = func() {
		if once.Swap(true) {
			return
		}
		l.leases.request(c) // the lease goroutine takes c now
		for len(l.leases.ch) > 0 || c.leaseAgain.Load() {
			time.Sleep(100 * time.Microsecond)
		}
	}
	defer func() { testHookLower = nil }()
	if err := l.Lease(ctx, c, now); err != nil {
		t.Fatal(err)
	}
	if held, used := LeasedToday(c, t0), LimitsUsedToday(c, t0); held <= used {
		t.Errorf("Lease after a lowered budget returned holding %d with %d spent: no lease", held, used)
	}
}

// Stats count the durable log's replay (personad_ledger_events_total
// says so): the reservations it restores as well as their notices, so
// that after a restart "reserved" is not below win + loss + expired.
func TestRestartStatsCountReplay(t *testing.T) {
	clk := newFakeClock(t0)
	dir := t.TempDir()
	ctx := context.Background()
	now := t0.UnixNano()
	lim := Limits{DailyMicros: 100 * unit, TotalMicros: 1000 * unit}
	open := func() *Ledger {
		l, err := New(durableConfig(clk, dir))
		if err != nil {
			t.Fatal(err)
		}
		c := mustCampaign(t, l, "c", lim)
		if err := l.Lease(ctx, c, now); err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := open()
	c := l.Lookup("c")
	for i := range 10 {
		bid := uint64(i + 1)
		if _, err := reserve(l, c, bid, uint64(i+1), 3*unit, now); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := l.Loss(ctx, bid, now); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := l.Stats()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = open()
	defer l.Close()
	after := l.Stats()
	if before.Reserved != 10 || before.Losses != 5 {
		t.Fatalf("before the restart: reserved %d, losses %d; want 10, 5", before.Reserved, before.Losses)
	}
	if after.Reserved != before.Reserved || after.Losses != before.Losses {
		t.Errorf("after the restart: reserved %d, losses %d; want %d, %d as replayed", after.Reserved, after.Losses, before.Reserved, before.Losses)
	}
}

// The reservations a restart restores from a checkpoint count in
// Stats().Reserved too, those still open (awaiting a bill, a loss or
// their expiry): their outcomes count after the restart, as those of the
// log's tail do, so that a node restarted after a compaction (every
// CompactBytes of log) does not show more expired than reserved. A
// reservation settled before the checkpoint is not counted: its outcome
// was counted before the restart, and is not again (one of the tail is,
// with its replayed notices).
func TestRestartStatsCountCheckpointedReservations(t *testing.T) {
	clk := newFakeClock(t0)
	dir := t.TempDir()
	ctx := context.Background()
	now := t0.UnixNano()
	lim := Limits{DailyMicros: 10_000 * unit, TotalMicros: 10_000 * unit}
	cfg := durableConfig(clk, dir)
	cfg.CompactBytes = 8 << 10
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := mustCampaign(t, l, "c", lim)
	const n = 1000
	for i := range n {
		bid := uint64(i + 1)
		if _, err := reserve(l, c, bid, uint64(i+1), unit, now); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 { // settled before the checkpoint: not counted again
			if err := l.Bill(ctx, bid, unit/2, now); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitCompacted(t, l, dir)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = newLedger(t, durableConfig(clk, dir))
	mustCampaign(t, l, "c", lim)
	// Every open reservation, and those of the log's tail settled there
	// (their bills replayed and counted): from 900 to 1000.
	if got := l.Stats().Reserved; got < n-n/10 || got > n {
		t.Errorf("after the restart: reserved %d, want the %d open reservations restored (from the checkpoint or the log) and at most the %d made", got, n-n/10, n)
	}
	clk.Add(time.Hour)
	l.Tick(clk.Now())
	if s := l.Stats(); s.Expired != n-n/10 || s.Expired > s.Reserved {
		t.Errorf("after their expiry: reserved %d, expired %d; want %d expired, not above reserved", s.Reserved, s.Expired, n-n/10)
	}
}

// waitCompacted waits until l has written a checkpoint in dir and is not
// compacting. (Not listDir, which removes a running compaction's .tmp.)
func waitCompacted(t *testing.T, l *Ledger, dir string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		if !l.log.compacting.Load() {
			if ckpts, _ := filepath.Glob(filepath.Join(dir, "checkpoint-*.ckpt")); len(ckpts) > 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint written within a minute")
		}
	}
}
