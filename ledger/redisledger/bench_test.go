package redisledger

import (
	"testing"
	"time"
)

// BenchmarkAllow measures Client.Allow against the test Redis: hit, a
// user whose count the cache holds and is fresh (no I/O); miss, a user
// the cache does not know (each iteration a new one).
func BenchmarkAllow(b *testing.B) {
	rc := connect(b, redisAddr())
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
