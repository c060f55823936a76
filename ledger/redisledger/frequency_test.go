package redisledger

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/personad/personad/ledger"
)

// patientOptions are the defaults with a FetchWait no scheduling delay of
// a loaded test machine reaches, for tests of what a count read decides
// rather than of how long it may take.
func patientOptions() Options {
	o := DefaultOptions()
	o.FetchWait = 2 * time.Second
	return o
}

// TestNewUserAllowedAfterWarm: a node whose cache does not know a user
// with no impressions lets the first request through once Warm has read
// the user's counts; Allow alone, which never reads, caps it (fail
// closed). Before Warm, the node capped the user while it fetched the
// count in the background, and dropped the count a minute after fetching
// it, so a user each node saw less than once a minute was capped on every
// visit.
func TestNewUserAllowedAfterWarm(t *testing.T) {
	rc := connectWith(t, redisAddr(), patientOptions())
	defer rc.Close()
	id := uniqueID(t)
	now := time.Now().UnixNano()
	if rc.Allow(id, 41, 0, 2, time.Hour, now) {
		t.Error("Allow passed a user the cache does not know, without Warm")
	}
	if err := rc.Warm(context.Background(), 42, []ledger.FrequencyCap{{Campaign: id, Window: time.Hour}}, now); err != nil {
		t.Fatal(err)
	}
	if !rc.Allow(id, 42, 0, 2, time.Hour, now) {
		t.Fatal("a user with no impressions, warmed, was capped")
	}
}

// TestFrequencyRoundRobin: one user sent round-robin to three nodes, 50
// or 400 ms apart (decision time), cap 2, each request warmed (Warm) and
// then decided (Allow): each node's count is older than Refresh when the
// user comes back, and every impression has reached Redis before the next
// request (the test waits for it). Exactly two impressions may be shown.
// Before Warm, the nodes capped the unknown user, then judged it by
// counts fetched before the other nodes' impressions: 4 or 5 shown.
func TestFrequencyRoundRobin(t *testing.T) {
	for _, gap := range []time.Duration{50 * time.Millisecond, 400 * time.Millisecond} {
		t.Run(gap.String(), func(t *testing.T) {
			const nodes, capMax, visits = 3, 2, 12
			const window = time.Hour
			opts := patientOptions()
			if nodes*gap <= opts.Refresh {
				t.Fatalf("a node sees the user every %v, within Refresh (%v): its cached count answers", nodes*gap, opts.Refresh)
			}
			id := uniqueID(t)
			var rcs []*Client
			for range nodes {
				rc := connectWith(t, redisAddr(), opts)
				defer rc.Close()
				rcs = append(rcs, rc)
			}
			rdb := redis.NewClient(&redis.Options{Addr: redisAddr()})
			defer rdb.Close()
			const user = 4242
			base := time.Now().UnixNano()
			shown := 0
			for i := range visits {
				rc, now := rcs[i%nodes], base+int64(i)*int64(gap)
				if err := rc.Warm(context.Background(), user, []ledger.FrequencyCap{{Campaign: id, Window: window}}, now); err != nil {
					t.Fatal(err)
				}
				if rc.Allow(id, user, 0, capMax, window, now) {
					shown++
					rc.Record(id, user, uint64(i+1), window, now)
					waitCount(t, rdb, rc.bucketKey(cacheKey{id, user}, window, now/int64(window)), shown)
				}
				waitFresh(t, rc, cacheKey{id, user}, now)
			}
			if shown != capMax {
				t.Errorf("shown %d impressions across %d nodes with a cap of %d", shown, nodes, capMax)
			}
		})
	}
}

// waitCount waits until Redis counts n impressions under key.
func waitCount(t *testing.T, rdb *redis.Client, key string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := rdb.Get(context.Background(), key).Int()
		if err == nil && got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis counts %d (%v) under %s 10s after the record, want %d", got, err, key, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitFresh waits until c holds a count of k that is fresh at now (a
// node that fetches in the background has done so).
func waitFresh(t *testing.T, c *Client, k cacheKey, now int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		e, ok := c.cache[k]
		fresh := ok && e.fetched != 0 && now-e.fetched <= int64(c.opts.Refresh)
		c.mu.Unlock()
		if fresh {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no count of %v fresh at %d 10s later", k, now)
		}
		time.Sleep(time.Millisecond)
	}
}
