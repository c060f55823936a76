package ledger

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// benchLedger is an in-memory ledger with one even-paced, capped campaign
// and a seeded set of users with frequency entries.
func benchLedger(b *testing.B) (*Ledger, *Campaign) {
	clk := newFakeClock(t0)
	l := newLedger(b, memConfig(clk))
	c := mustCampaign(b, l, "c", Limits{DailyMicros: 1 << 46, Pacing: PacingEven, CapMax: 1 << 14, CapWindow: time.Hour})
	c.setRate(0.5)
	for u := range uint64(100_000) {
		l.Reserve(c, u+1, u+1, 1000, t0.UnixNano())
	}
	b.ResetTimer() // the setup is not what is measured
	return l, c
}

func BenchmarkAllow(b *testing.B) {
	_, c := benchLedger(b)
	now := t0.UnixNano()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := uint64(1)
		for pb.Next() {
			r = splitmix64(r)
			c.Allow(now, 1000, r)
		}
	})
}

func BenchmarkFrequencyOK(b *testing.B) {
	l, c := benchLedger(b)
	now := t0.UnixNano()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		u := uint64(1)
		for pb.Next() {
			u = splitmix64(u)
			l.FrequencyOK(c, u%100_000+1, now)
		}
	})
}

func BenchmarkReserve(b *testing.B) {
	l, c := benchLedger(b)
	now := t0.UnixNano()
	var users atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			u := users.Add(1)
			if _, err := l.Reserve(c, l.NewBidID(), u%100_000+1, 1000, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkChecks is the per-candidate cost the engine pays: Allow, then
// FrequencyOK, on one goroutine.
func BenchmarkChecks(b *testing.B) {
	l, c := benchLedger(b)
	now := t0.UnixNano()
	b.ReportAllocs()
	r := uint64(1)
	for b.Loop() {
		r = splitmix64(r)
		if c.Allow(now, 1000, r) {
			l.FrequencyOK(c, r%100_000+1, now)
		}
	}
}

// durableBenchLedger is a ledger with its log in a temporary directory,
// the default SyncInterval, and one unlimited-looking campaign whose whole
// budget is leased, so no reservation waits for a lease.
func durableBenchLedger(b *testing.B) (*Ledger, *Campaign) {
	cfg := durableConfig(newFakeClock(t0), b.TempDir())
	cfg.SyncInterval = DefaultConfig().SyncInterval
	cfg.LeaseFraction = 1
	l := newLedger(b, cfg)
	c := mustCampaign(b, l, "c", Limits{DailyMicros: MaxMicros, Pacing: PacingASAP})
	if err := l.Lease(context.Background(), c, t0.UnixNano()); err != nil {
		b.Fatal(err)
	}
	return l, c
}

// BenchmarkReserveDurable is Reserve with the durable log: the hot path
// appends the record and goes on; the writer writes it in the background.
func BenchmarkReserveDurable(b *testing.B) {
	l, c := durableBenchLedger(b)
	now := t0.UnixNano()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Reserve(c, l.NewBidID(), 0, 1000, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkLossDurable is a reservation and its loss notice, which
// returns once its record is fsynced: about a SyncInterval and an fsync.
func BenchmarkLossDurable(b *testing.B) {
	l, c := durableBenchLedger(b)
	ctx := context.Background()
	now := t0.UnixNano()
	b.ReportAllocs()
	for b.Loop() {
		bid := l.NewBidID()
		if _, err := l.Reserve(c, bid, 0, 1000, now); err != nil {
			b.Fatal(err)
		}
		if err := l.Loss(ctx, bid, now); err != nil {
			b.Fatal(err)
		}
	}
}
