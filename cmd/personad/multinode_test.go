package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/personad/personad/internal/tcpproxy"
)

var useRedis = flag.Bool("redis", true, "run the multi-node tests against a real Redis (PERSONAD_TEST_REDIS_ADDR, default 127.0.0.1:6379); -redis=false skips them")

func testRedisAddr() string {
	if a := os.Getenv("PERSONAD_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// TestMultiNodeRedis runs three personad processes sharing one Redis
// ledger (through a proxy the test controls) and two budgeted campaigns:
//
//  1. "shared": all three nodes bid on it concurrently, and every bid is
//     won and billed at its price, until the budget is gone: the settled
//     spend of the three together must not pass the budget (overspend 0).
//  2. "outage": all three bid on it; then Redis becomes unreachable (a
//     partition: calls hang until they time out). Each node must spend no
//     more than the slice it holds, then stop bidding on it, while every
//     Bid is still answered within tmax.
func TestMultiNodeRedis(t *testing.T) {
	if !*useRedis {
		t.Skip("-redis=false")
	}
	addr := testRedisAddr()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		t.Fatalf("Redis at %s is not reachable (set PERSONAD_TEST_REDIS_ADDR, or pass -redis=false to skip): %v", addr, err)
	}
	bin := buildBinary(t)
	dir := t.TempDir()

	// Campaign ids unique to this run: the Redis keys embed them, so runs
	// never collide, and the cleanup deletes exactly this run's keys.
	run := fmt.Sprintf("%d%04x", time.Now().UnixNano(), rand.Uint32()&0xffff)
	shared, outage := "mn-shared-"+run, "mn-outage-"+run
	t.Cleanup(func() { // after the nodes are killed (cleanups run last first)
		defer rdb.Close()
		for _, cid := range []string{shared, outage} {
			keys, err := rdb.Keys(context.Background(), "personad:ledger:{"+cid+"}*").Result()
			if err != nil {
				t.Errorf("cleaning up Redis: %v", err)
				continue
			}
			if len(keys) > 0 {
				rdb.Del(context.Background(), keys...)
			}
		}
	})
	const (
		sharedBudget = 15_000_000   // 15.00: 1500 impressions at 10 CPM
		outageBudget = 1000_000_000 // large: the outage, not the budget, must stop the nodes
		tmax         = 100          // ms
	)
	rulesPath := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(`
campaigns:
  - id: `+shared+`
    bid_cpm: 10
    pacing: asap
    priority: 1
    budget: {daily: 15, total: 15}
    creatives: [{id: cr-shared, w: 300, h: 250, adm: "<b>${AUCTION_PRICE}</b>"}]
  - id: `+outage+`
    bid_cpm: 10
    pacing: asap
    priority: 1
    budget: {daily: 1000}
    creatives: [{id: cr-outage, w: 728, h: 90, adm: "<b>${AUCTION_PRICE}</b>"}]
  - id: fallback
    bid_cpm: 0.5
    creatives:
      - {id: cr-fb-300, w: 300, h: 250, adm: "<b>f</b>"}
      - {id: cr-fb-728, w: 728, h: 90, adm: "<b>f</b>"}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	proxy := tcpproxy.New(t, addr)
	// One notice key for all nodes, as in production.
	keyFile := filepath.Join(dir, "notice.key")
	if err := os.WriteFile(keyFile, []byte("6d756c74692d6e6f6465206b65792c2033322062797465732c206865782121\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var nodes []*node
	for i := range 3 {
		nodes = append(nodes, startNode(t, bin, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--data-dir", filepath.Join(dir, fmt.Sprintf("node%d", i)), "--rules", rulesPath,
			"--ledger", "redis://"+proxy.Addr(), "--notice-key-file", keyFile))
	}

	// load bids on size w×h from every node with 2 workers each until
	// stop returns true; onBid sees each bid for cid (on node i).
	type latencies struct {
		mu    sync.Mutex
		start []time.Time
		all   []time.Duration
		// expired counts the no-bids with nbr 1, the deadline passed
		// before the decision: this process or a node stalled past tmax
		// on the loaded machine (a CI run at load average 14 had one of
		// 4,503). At most 1% may.
		expired int
	}
	// expiredShare fails the test when more than 1% of lat's Bids were
	// answered nbr 1.
	expiredShare := func(phase string, lat *latencies) {
		if lat.expired*100 > len(lat.all) {
			t.Errorf("%s: %d of %d Bids answered no-bid nbr 1 (deadline passed): the fallback campaign always bids", phase, lat.expired, len(lat.all))
		}
	}
	load := func(w, h int32, cid string, stop func() bool, onBid func(i int, nurl, burl string), lat *latencies) *[3]atomic.Int64 {
		var bidsOn [3]atomic.Int64
		var wg sync.WaitGroup
		for i, n := range nodes {
			for g := range 2 {
				wg.Go(func() {
					var mine []time.Duration
					var starts []time.Time
					expired := 0
					for k := 0; !stop(); k++ {
						t0 := time.Now()
						resp, err := n.bidder.Bid(ctx, moneyRequest(fmt.Sprintf("n%d-%d-%d", i, g, k), w, h, tmax))
						mine, starts = append(mine, time.Since(t0)), append(starts, t0)
						if err != nil {
							t.Errorf("node %d: Bid: %v", i, err)
							return
						}
						if len(resp.Seatbid) == 0 && resp.Nbr == 1 {
							expired++
							continue
						}
						if len(resp.Seatbid) == 0 {
							t.Errorf("node %d: no bid (nbr %d): the fallback campaign always bids", i, resp.Nbr)
							return
						}
						if b := resp.Seatbid[0].Bid[0]; b.Cid == cid {
							bidsOn[i].Add(1)
							if onBid != nil {
								onBid(i, b.Nurl, b.Burl)
							}
						}
					}
					lat.mu.Lock()
					lat.all = append(lat.all, mine...)
					lat.start = append(lat.start, starts...)
					lat.expired += expired
					lat.mu.Unlock()
				})
			}
		}
		wg.Wait()
		return &bidsOn
	}
	reports := func(cid string) (sum [3]int64, settled, leased int64) {
		for i, n := range nodes {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			rep, err := n.report(rctx, cid)
			cancel()
			if err != nil {
				t.Fatalf("node %d: report: %v", i, err)
			}
			sum[i] = rep.SpentTodayMicros
			settled += rep.SettledTodayMicros
			leased += rep.LeasedTodayMicros
		}
		return sum, settled, leased
	}
	redisLeased := func(cid string) int64 {
		day := time.Now().UTC().Unix() / 86400
		v, err := rdb.Get(ctx, fmt.Sprintf("personad:ledger:{%s}:day:%d", cid, day)).Int64()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		return v
	}

	// Phase 1: spend the shared budget from three nodes at once.
	var lat1 latencies
	// The deadline is for nodes that never spend it all.
	deadline := time.Now().Add(30 * time.Second)
	var lastSharedBid atomic.Int64 // unix nanos
	lastSharedBid.Store(time.Now().UnixNano())
	bidsOn := load(300, 250, shared, func() bool {
		// Done once Redis has leased out the whole budget and no node has
		// bid on it for 300ms since: the nodes have spent what they hold.
		// A quiet 300ms alone is no sign: this process, under the race
		// detector on a loaded machine, may stall that long mid-phase.
		if time.Now().After(deadline) {
			return true
		}
		if time.Since(time.Unix(0, lastSharedBid.Load())) <= 300*time.Millisecond {
			return false
		}
		day := time.Now().UTC().Unix() / 86400
		leased, err := rdb.Get(ctx, fmt.Sprintf("personad:ledger:{%s}:day:%d", shared, day)).Int64()
		return err == nil && leased >= sharedBudget
	}, func(i int, nurl, burl string) {
		lastSharedBid.Store(time.Now().UnixNano())
		callNotice(strings.ReplaceAll(nurl, "${AUCTION_PRICE}", "10"))
		if !callNotice(strings.ReplaceAll(burl, "${AUCTION_PRICE}", "10")) {
			t.Errorf("node %d: bill not acknowledged", i)
		}
	}, &lat1)
	expiredShare("phase 1", &lat1)
	spent, settled, _ := reports(shared)
	total := spent[0] + spent[1] + spent[2]
	nb := bidsOn[0].Load() + bidsOn[1].Load() + bidsOn[2].Load()
	if settled > sharedBudget || total > sharedBudget {
		t.Errorf("shared budget %d: settled %d, spent %d across 3 nodes: overspent by %d", sharedBudget, settled, total, max(settled, total)-sharedBudget)
	}
	if got := nb * 10_000; got != settled {
		t.Errorf("%d bids billed at 10000 micros = %d, but the nodes settled %d", nb, got, settled)
	}
	if rl := redisLeased(shared); rl > sharedBudget {
		t.Errorf("Redis leased out %d of a %d budget", rl, sharedBudget)
	}
	if settled < sharedBudget/2 {
		t.Errorf("settled only %d of %d: the nodes stopped early", settled, sharedBudget)
	}
	t.Logf("phase 1: %d bids on %s (per node %d/%d/%d), settled %d of budget %d (delivery %.1f%%, overspend %d), Redis leased %d; Bid latency %s",
		nb, shared, bidsOn[0].Load(), bidsOn[1].Load(), bidsOn[2].Load(), settled, sharedBudget,
		100*float64(settled)/sharedBudget, max(0, settled-sharedBudget), redisLeased(shared), summarize(lat1.all))
	if t.Failed() {
		return
	}

	// Phase 2: bid on the outage campaign; cut Redis off mid-run.
	var lat2 latencies
	start := time.Now()
	var cutAt atomic.Int64
	cutDone := make(chan struct{})
	go func() {
		defer close(cutDone)
		time.Sleep(time.Second)
		// Silence, not Partition: the open connections hang as well,
		// nothing tells a node to redial; every call waits its timeout.
		proxy.Silence()
		cutAt.Store(time.Now().UnixNano())
	}()
	var afterCut [3]atomic.Int64
	var lastOutageBid atomic.Int64
	before := load(728, 90, outage, func() bool { return time.Since(start) > 3500*time.Millisecond },
		func(i int, _, _ string) {
			if c := cutAt.Load(); c != 0 {
				afterCut[i].Add(1)
				lastOutageBid.Store(time.Now().UnixNano())
			}
		}, &lat2)
	expiredShare("phase 2", &lat2)
	<-cutDone
	// No lease can reach a node any more, but one Redis granted just
	// before the cut may have been on its way (a report soon after the
	// cut could miss it, on a loaded machine): what each node holds once
	// the load has stopped is all it may ever spend, and all of it
	// together no more than Redis granted.
	spentOut, _, _ := reports(outage)
	var held [3]int64
	for i, n := range nodes {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		rep, err := n.report(rctx, outage)
		cancel()
		if err != nil {
			t.Fatalf("node %d: report during the outage: %v", i, err)
		}
		held[i] = rep.GetLeasedTodayMicros()
		if spentOut[i] > held[i] {
			t.Errorf("node %d spent %d on %s with Redis down, holding a lease up to %d", i, spentOut[i], outage, held[i])
		}
	}
	if rl := redisLeased(outage); held[0]+held[1]+held[2] > rl {
		t.Errorf("the nodes hold leases of %d on %s, more than the %d Redis granted", held[0]+held[1]+held[2], outage, rl)
	}
	cut := time.Unix(0, cutAt.Load())
	var stopAfter time.Duration
	if l := lastOutageBid.Load(); l != 0 {
		stopAfter = time.Unix(0, l).Sub(cut)
	}
	if rl := redisLeased(outage); rl >= outageBudget {
		t.Errorf("Redis leased out all of %s's budget: the test did not show the outage stopping the nodes", outage)
	} else {
		t.Logf("phase 2: Redis still had %d of %d unleased when the nodes stopped", outageBudget-rl, outageBudget)
	}
	if stopAfter == 0 {
		t.Errorf("no bid on %s after Redis went away: the nodes held no slice to spend", outage)
	}
	// Each node may still hold part of its slice (under load the run may
	// end first): it may spend exactly that, then must stop.
	for i, n := range nodes {
		room := (held[i] - spentOut[i]) / 10_000
		extra, tail := int64(0), 0
		for k := int64(0); k < room+50; k++ {
			resp, err := n.bidder.Bid(ctx, moneyRequest(fmt.Sprintf("probe-%d-%d", i, k), 728, 90, tmax))
			if err != nil {
				t.Fatalf("node %d: Bid: %v", i, err)
			}
			if len(resp.Seatbid) > 0 && resp.Seatbid[0].Bid[0].Cid == outage {
				extra++
				tail = 0
			} else {
				tail++
			}
		}
		if extra > room || tail < 50 {
			t.Errorf("node %d: %d more bids on %s with Redis down, room for %d; still bidding at the end: %t", i, extra, outage, room, tail < 50)
		}
	}
	// Latency of every Bid started while Redis was unreachable: the
	// decision never waits on the network.
	var down, up []time.Duration
	for k, d := range lat2.all {
		if lat2.start[k].Before(cut) {
			up = append(up, d)
		} else {
			down = append(down, d)
		}
	}
	if len(down) == 0 {
		t.Fatal("no Bid while Redis was unreachable: the test checked nothing")
	}
	// Client-side latency on a small shared machine (three servers and
	// this test on two cores, with the race detector) has scheduling
	// outliers whether Redis is up or not, so the bound is on the share
	// of answers later than tmax, not on the single worst one.
	// The outage must not slow decisions: compare with the same run
	// while Redis answered (a blocked Redis call would cost 250ms+, and
	// make most answers after the cut late; a CI run at load average 12
	// had 0.37% late with Redis down and none with it up, so the margin
	// is 1%).
	lateShare := func(ds []time.Duration) float64 {
		n := 0
		for _, d := range ds {
			if d >= tmax*time.Millisecond {
				n++
			}
		}
		return float64(n) / float64(len(ds))
	}
	late, lateUp := lateShare(down), lateShare(up)
	if late > lateUp+0.01 {
		t.Errorf("%.2f%% of Bids took tmax (%dms) or longer with Redis unreachable, %.2f%% with it up; max %v",
			100*late, tmax, 100*lateUp, slices.Max(down))
	}
	// A decision that waited on Redis would wait out MaxBudget (50ms,
	// tmax/2 here) or a Redis timeout (250ms+), and every Bid after the
	// cut reaches the outage campaign (priority 1): it is bid on until the
	// node's lease is spent and refused for want of a lease after, so such
	// a wait would slow far more than 5% of them. The slowest 1% is
	// scheduling on the loaded machine, and the load changes between the
	// two windows: at load average 17 a run had p99 54ms with Redis
	// unreachable against 22ms up, with no Bid at tmax or later.
	if p95, p95up := quantile(down, 0.95), quantile(up, 0.95); p95 >= max(tmax*time.Millisecond/2, 2*p95up) {
		t.Errorf("p95 Bid latency %v with Redis unreachable, %v with it up (tmax %dms)", p95, p95up, tmax)
	}
	t.Logf("phase 2: bids on %s per node %d/%d/%d, of which after the cut %d/%d/%d; last %v after the cut; "+
		"spent per node %v within leases held %v; Bid latency with Redis up %s, unreachable %s (%.2f%% at tmax or later, %.2f%% with Redis up)",
		outage, before[0].Load(), before[1].Load(), before[2].Load(),
		afterCut[0].Load(), afterCut[1].Load(), afterCut[2].Load(), stopAfter.Round(time.Millisecond),
		spentOut, held, summarize(up), summarize(down), 100*late, 100*lateUp)
}

// quantile returns the q-quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// summarize formats latencies as count, p50, p95, p99, p99.9 and max.
func summarize(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n=0"
	}
	r := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
	return fmt.Sprintf("n=%d p50=%v p95=%v p99=%v p99.9=%v max=%v", len(ds), r(quantile(ds, 0.5)), r(quantile(ds, 0.95)),
		r(quantile(ds, 0.99)), r(quantile(ds, 0.999)), r(slices.Max(ds)))
}
