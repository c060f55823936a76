package ledger

import (
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
