package redisledger

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/personad/personad/ledger"
)

// BenchmarkAllow measures Client.Allow against the test Redis: hit, a
// user whose count the cache holds and is fresh (no I/O); miss, a user
// the cache does not know (each iteration a new one): capped, its count
// queued for the background fetcher (no I/O either).
func BenchmarkAllow(b *testing.B) {
	rc := connectWith(b, redisAddr(), patientOptions())
	defer rc.Close()
	id := uniqueID(b)
	now := time.Now().UnixNano()
	b.Run("hit", func(b *testing.B) {
		const user = 1
		deadline := time.Now().Add(5 * time.Second)
		for !rc.Allow(id, user, 0, 3, time.Hour, now) {
			if time.Now().After(deadline) {
				b.Fatal("the user's count was never fetched")
			}
			time.Sleep(time.Millisecond)
		}
		b.ReportAllocs()
		for b.Loop() {
			rc.Allow(id, user, 0, 3, time.Hour, now)
		}
	})
	b.Run("miss", func(b *testing.B) {
		user := uint64(1 << 32)
		b.ReportAllocs()
		for b.Loop() {
			user++
			rc.Allow(id, user, 0, 3, time.Hour, now)
		}
	})
}

// BenchmarkWarm measures Client.Warm against the test Redis for one user
// and campaigns capped: fresh, counts the cache holds fresh (no I/O);
// read1 and read8, counts older than Refresh (each iteration's decision
// time a Refresh later), read for 1 or 8 campaigns in one MGET, as for a
// user the cache does not know, without growing the cache to MaxCached
// (patientOptions: a read that timed out on a busy machine would turn
// the next second's reads into skipped ones).
func BenchmarkWarm(b *testing.B) {
	rc := connectWith(b, redisAddr(), patientOptions())
	defer rc.Close()
	id := uniqueID(b)
	ctx := context.Background()
	// Decision time only moves on, across runs too: a count read at a
	// later time is fresh at an earlier one.
	now := time.Now().UnixNano()
	caps := func(n int) []ledger.FrequencyCap {
		var caps []ledger.FrequencyCap
		for i := range n {
			caps = append(caps, ledger.FrequencyCap{Campaign: fmt.Sprintf("%s-%d", id, i), Window: time.Hour})
		}
		return caps
	}
	b.Run("fresh", func(b *testing.B) {
		c := caps(8)
		if err := rc.Warm(ctx, 1, c, now); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			rc.Warm(ctx, 1, c, now)
		}
	})
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("read%d", n), func(b *testing.B) {
			c := caps(n)
			reads := rc.Stats().FrequencyReads
			b.ReportAllocs()
			for b.Loop() {
				now += int64(rc.opts.Refresh) + 1
				if err := rc.Warm(ctx, 2, c, now); err != nil {
					b.Fatal(err)
				}
			}
			if got := rc.Stats().FrequencyReads - reads; got != int64(b.N) {
				b.Fatalf("%d reads in %d Warms", got, b.N)
			}
		})
	}
}
