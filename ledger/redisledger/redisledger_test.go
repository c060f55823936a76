package redisledger

import (
	"context"
	"errors"
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

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/personad/personad/internal/tcpproxy"
	"github.com/personad/personad/ledger"
)

var useRedis = flag.Bool("redis", true, "run the tests against a real Redis (PERSONAD_TEST_REDIS_ADDR, default 127.0.0.1:6379); -redis=false skips them")

func TestMain(m *testing.M) {
	flag.Parse()
	goleak.VerifyTestMain(m)
}

func redisAddr() string {
	if a := os.Getenv("PERSONAD_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// connect returns a Client for the test Redis, failing the test clearly
// (not skipping) when it cannot be reached, unless -redis=false.
func connect(t testing.TB, addr string) *Client {
	t.Helper()
	return connectWith(t, addr, DefaultOptions())
}

// connectWith is connect with opts.
func connectWith(t testing.TB, addr string, opts Options) *Client {
	t.Helper()
	if !*useRedis {
		t.Skip("-redis=false")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := New(ctx, "redis://"+addr, opts)
	if err != nil {
		t.Fatalf("Redis at %s is not reachable (set PERSONAD_TEST_REDIS_ADDR, or pass -redis=false to skip): %v", addr, err)
	}
	return c
}

const unit = 1_000_000

// uniqueID is a campaign id no other test or run uses. Its keys are
// deleted when the test ends: a run leaves nothing in a shared Redis (a
// campaign's total never expires).
func uniqueID(t testing.TB) string {
	id := fmt.Sprintf("test-%s-%d-%x", t.Name(), time.Now().UnixNano(), rand.Uint32())
	t.Cleanup(func() { deleteKeys(t, DefaultOptions().Prefix+"{"+id+"}:*") })
	return id
}

// deleteKeys deletes the test Redis's keys that match pattern.
func deleteKeys(t testing.TB, pattern string) {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr()})
	defer rdb.Close()
	ctx := context.Background()
	var keys []string
	iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	for len(keys) > 0 && iter.Err() == nil {
		n := min(len(keys), 1000)
		if err := rdb.Del(ctx, keys[:n]...).Err(); err != nil {
			t.Errorf("deleting the test's keys %s: %v", pattern, err)
			return
		}
		keys = keys[n:]
	}
	if err := iter.Err(); err != nil {
		t.Errorf("listing the test's keys %s: %v", pattern, err)
	}
}

func newNode(t *testing.T, rc *Client) *ledger.Ledger {
	t.Helper()
	l, err := ledger.New(nodeConfig(rc))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// nodeConfig is a node's ledger configuration, leasing from rc.
func nodeConfig(rc *Client) ledger.Config {
	cfg := ledger.DefaultConfig()
	cfg.Manual = true
	cfg.Leaser = rc
	cfg.LeaseFraction = 0.02
	cfg.LeaseTimeout = 200 * time.Millisecond
	cfg.NoticeKey = []byte("redis test key, long enough")
	return cfg
}

func TestLeaseIdempotent(t *testing.T) {
	rc := connect(t, redisAddr())
	defer rc.Close()
	ctx := context.Background()
	id := uniqueID(t)
	req := ledger.LeaseRequest{ID: 42, Campaign: id, Day: 20000, DailyBudget: 10 * unit, TotalBudget: 15 * unit, WantDaily: 4 * unit, WantTotal: 4 * unit}
	for range 3 {
		g, err := rc.Lease(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if g != (ledger.LeaseGrant{Daily: 4 * unit, Total: 4 * unit}) {
			t.Fatalf("grant %+v", g)
		}
	}
	req.ID, req.WantDaily, req.WantTotal = 43, 100*unit, 100*unit
	g, err := rc.Lease(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if g != (ledger.LeaseGrant{Daily: 6 * unit, Total: 11 * unit}) {
		t.Fatalf("second grant %+v, want the rest", g)
	}
	ret := ledger.LeaseReturn{ID: 44, Campaign: id, Day: 20000, Daily: 3 * unit, Total: 3 * unit}
	for range 2 {
		if err := rc.Return(ctx, ret); err != nil {
			t.Fatal(err)
		}
	}
	d, tot, err := rc.Leased(ctx, id, 20000)
	if err != nil || d != 7*unit || tot != 12*unit {
		t.Fatalf("leased %d %d %v, want 7 and 12 units", d, tot, err)
	}
}

// TestThreeNodesNeverOverspend: three ledgers share one campaign's budget
// through the real Redis, each with concurrent spenders: the settled
// spend of all three never passes the budget.
func TestThreeNodesNeverOverspend(t *testing.T) {
	id := uniqueID(t)
	const budget = 50 * unit
	lim := ledger.Limits{DailyMicros: budget, TotalMicros: budget * 2, Pacing: ledger.PacingASAP}
	var nodes []*ledger.Ledger
	var camps []*ledger.Campaign
	for range 3 {
		rc := connect(t, redisAddr()) // the ledger closes it
		cfg := nodeConfig(rc)
		// A lease call that times out may have been granted in Redis all
		// the same: that slice is lost to this node (counted as spent, the
		// safe direction), and Redis's count after Close no longer matches
		// the spend. newNode's 200ms timed out under the race detector on
		// a loaded machine; what this test bounds is the spend, not the
		// calls' latency.
		cfg.LeaseTimeout = 10 * time.Second
		l, err := ledger.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c, err := l.Campaign(id, lim)
		if err != nil {
			t.Fatal(err)
		}
		nodes, camps = append(nodes, l), append(camps, c)
	}
	ctx := context.Background()
	check := connect(t, redisAddr()) // the nodes close their clients
	defer check.Close()
	day := int32(time.Now().UTC().Unix() / 86400)
	// leasedOut reports whether Redis has leased out the whole budget:
	// a node refused then has spent what it holds.
	leasedOut := func() bool {
		d, _, err := check.Leased(ctx, id, day)
		return err == nil && d >= budget
	}
	giveUp := time.Now().Add(time.Minute) // should the nodes never spend it all
	var settled atomic.Int64
	var wg sync.WaitGroup
	for n := range nodes {
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(n), uint64(g)))
				l, c := nodes[n], camps[n]
				refusedSince := time.Time{}
				for {
					now := time.Now().UnixNano()
					price := int64(1+rng.IntN(100)) * 1000
					bid := l.NewBidID()
					_, err := l.Reserve(c, bid, 0, price, now)
					if err != nil {
						if refusedSince.IsZero() {
							refusedSince = time.Now()
						}
						if errors.Is(err, ledger.ErrBudget) || time.Now().After(giveUp) {
							return
						}
						// Refused for a while: done once Redis has no
						// more to lease; else a lease is on its way (a
						// slow call, under load), wait on.
						if time.Since(refusedSince) > 500*time.Millisecond {
							if leasedOut() {
								return
							}
							refusedSince = time.Now()
						}
						time.Sleep(100 * time.Microsecond)
						continue
					}
					refusedSince = time.Time{}
					if rng.IntN(4) == 0 {
						l.Loss(ctx, bid, now)
						continue
					}
					clear := price * int64(60+rng.IntN(41)) / 100
					if err := l.Bill(ctx, bid, clear, now); err != nil {
						t.Error(err)
						return
					}
					settled.Add(clear)
				}
			}()
		}
	}
	wg.Wait()
	var used int64
	for _, c := range camps {
		used += ledger.LimitsUsedToday(c, time.Now())
	}
	var failures int64
	for _, l := range nodes {
		failures += l.Stats().LeaseFailures
	}
	t.Logf("settled %d of %d micros across 3 nodes (%.2f%%), %d lease calls failed", settled.Load(), budget, 100*float64(settled.Load())/budget, failures)
	if settled.Load() > budget || used > budget {
		t.Fatalf("overspent: settled %d, used %d, budget %d", settled.Load(), used, budget)
	}
	if settled.Load() < budget*90/100 {
		t.Errorf("settled only %d of %d", settled.Load(), budget)
	}
	for _, l := range nodes {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	d, _, err := check.Leased(ctx, id, day)
	if err != nil {
		t.Fatal(err)
	}
	if d != used {
		t.Errorf("after Close Redis shows %d leased today, nodes used %d: unspent lease not returned", d, used)
	}
}

// TestRedisGoneFailsClosed cuts the connection to Redis mid-run, as a
// network partition does (calls hang): the node spends what its slice
// still holds, then stops, and every call keeps returning promptly.
func TestRedisGoneFailsClosed(t *testing.T) {
	if !*useRedis {
		t.Skip("-redis=false")
	}
	p := tcpproxy.New(t, redisAddr())
	defer p.Close()
	rc := connect(t, p.Addr())
	cfg := nodeConfig(rc)
	// A hot-path call that waited on Redis would hang this long, far
	// beyond what a loaded machine's pauses (~100 ms under -race) add.
	const hang = 2 * time.Second
	cfg.LeaseTimeout = hang
	l, err := ledger.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	id := uniqueID(t)
	const budget = 100 * unit
	c, err := l.Campaign(id, ledger.Limits{DailyMicros: budget, Pacing: ledger.PacingASAP})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := l.Lease(ctx, c, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	p.Partition()
	held := ledger.LeasedToday(c, time.Now())
	if held <= 0 || held >= budget {
		t.Fatalf("held %d", held)
	}
	var spent int64
	var slowest time.Duration
	for i := 0; i < 20000; i++ {
		now := time.Now()
		ok := c.Allow(now.UnixNano(), 10_000, 0)
		_, err := l.Reserve(c, l.NewBidID(), 0, 10_000, now.UnixNano())
		slowest = max(slowest, time.Since(now))
		if err == nil {
			if !ok {
				t.Fatal("Allow refused what Reserve took")
			}
			spent += 10_000
		}
	}
	lctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	start := time.Now()
	lerr := l.Lease(lctx, c, time.Now().UnixNano())
	cancel()
	if lerr == nil {
		t.Fatal("lease succeeded with Redis gone")
	}
	t.Logf("held %d, spent %d, slowest hot-path call %v, lease failed in %v: %v", held, spent, slowest, time.Since(start), lerr)
	if spent > held {
		t.Fatalf("spent %d beyond the %d held", spent, held)
	}
	if spent < held-10_000 {
		t.Fatalf("spent %d, could have spent the %d held", spent, held)
	}
	if slowest > hang/2 {
		t.Fatalf("a hot-path call took %v with Redis gone: it waited on Redis", slowest)
	}
	if time.Since(start) > time.Second {
		t.Fatal("lease did not follow its context")
	}
}

// TestCloseWithRedisPartitioned: Close gives leases back one campaign at a
// time, each call bounded by LeaseTimeout; with Redis unreachable it must
// not wait that long for every campaign (a node with 1,000 campaigns took
// half a minute to stop on "connection refused", and would take 2s × 1,000
// across a partition). What it cannot give back stays counted as spent,
// and Close says so.
func TestCloseWithRedisPartitioned(t *testing.T) {
	if !*useRedis {
		t.Skip("-redis=false")
	}
	p := tcpproxy.New(t, redisAddr())
	defer p.Close()
	rc := connect(t, p.Addr())
	l := newNode(t, rc)
	ctx := context.Background()
	const campaigns = 20
	for i := range campaigns {
		c, err := l.Campaign(uniqueID(t), ledger.Limits{DailyMicros: 100 * unit, Pacing: ledger.PacingASAP})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Lease(ctx, c, time.Now().UnixNano()); err != nil {
			t.Fatalf("campaign %d: %v", i, err)
		}
	}
	p.Partition()
	start := time.Now()
	err := l.Close()
	took := time.Since(start)
	if err == nil {
		t.Error("Close returned leases to an unreachable Redis without an error")
	}
	// newNode's LeaseTimeout is 200ms: one call's worth, and some slack
	// for a loaded machine, not one per campaign (4s).
	if limit := 1500 * time.Millisecond; took > limit {
		t.Errorf("Close took %v with Redis partitioned (%d campaigns, LeaseTimeout 200ms), want under %v", took, campaigns, limit)
	}
}

// TestFrequencySharedAcrossNodes: a user capped through one node is capped
// on another once the count has propagated; a user no node has shown
// anything passes at once once WarmFrequency has read its count.
func TestFrequencySharedAcrossNodes(t *testing.T) {
	id := uniqueID(t)
	lim := ledger.Limits{Pacing: ledger.PacingASAP, CapMax: 2, CapWindow: time.Hour}
	var nodes []*ledger.Ledger
	var camps []*ledger.Campaign
	for range 2 {
		rc := connectWith(t, redisAddr(), patientOptions())
		cfg := ledger.DefaultConfig()
		cfg.Manual = true
		cfg.Frequency = rc
		cfg.NoticeKey = []byte("redis test key, long enough")
		l, err := ledger.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		c, err := l.Campaign(id, lim)
		if err != nil {
			t.Fatal(err)
		}
		nodes, camps = append(nodes, l), append(camps, c)
	}
	const user = 777
	eventually := func(f func() bool) bool {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			if f() {
				return true
			}
			time.Sleep(5 * time.Millisecond)
		}
		return false
	}
	now := func() int64 { return time.Now().UnixNano() }
	fc, _ := camps[0].FrequencyCap()
	if err := nodes[0].WarmFrequency(context.Background(), user, []ledger.FrequencyCap{fc}, now()); err != nil {
		t.Fatal(err)
	}
	if !nodes[0].FrequencyOK(camps[0], user, now()) {
		t.Fatal("a user with no impressions was capped")
	}
	for range 2 {
		if _, err := nodes[0].Reserve(camps[0], nodes[0].NewBidID(), user, 1000, now()); err != nil {
			t.Fatal(err)
		}
	}
	if nodes[0].FrequencyOK(camps[0], user, now()) {
		t.Fatal("capped user passed on the node that served it")
	}
	if !eventually(func() bool {
		return !nodes[1].FrequencyOK(camps[1], user, now()) && nodes[1].FrequencyOK(camps[1], user+1, now())
	}) {
		t.Fatal("the other node never saw the cap")
	}
}

// TestReleasesReturnLease: a node leases from Redis as it bids, then every
// bid is lost. The node lowers its lease to one above its spend and gives
// the rest back to Redis, where other nodes can lease it: before, it kept
// the whole slice until Close (and a crash lost it for good).
func TestReleasesReturnLease(t *testing.T) {
	rc := connect(t, redisAddr())
	defer rc.Close()
	ctx := context.Background()
	id := uniqueID(t)
	l := newNode(t, rc)
	defer l.Close()
	budget := int64(100 * unit)
	c, err := l.Campaign(id, ledger.Limits{DailyMicros: budget, TotalMicros: budget, Pacing: ledger.PacingASAP})
	if err != nil {
		t.Fatal(err)
	}
	lease := int64(2 * unit) // LeaseFraction 0.02 of the budget
	now := time.Now()
	day := int32(now.Unix() / 86400)
	for bid := uint64(1); bid <= 30; bid++ {
		_, err := l.Reserve(c, bid, 0, unit/2, now.UnixNano())
		if errors.Is(err, ledger.ErrNoLease) {
			if err := l.Lease(ctx, c, now.UnixNano()); err != nil {
				t.Fatal(err)
			}
			_, err = l.Reserve(c, bid, 0, unit/2, now.UnixNano())
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	d, tot, err := rc.Leased(ctx, id, day)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("leased after 30 bids of 0.5: %d today, %d in all", d, tot)
	for bid := uint64(1); bid <= 30; bid++ {
		if err := l.Loss(ctx, bid, time.Now().UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, tot, err = rc.Leased(ctx, id, day)
		if err != nil {
			t.Fatal(err)
		}
		if d < 2*lease && tot < 2*lease || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("leased once every bid was lost: %d today, %d in all", d, tot)
	if d >= 2*lease || tot >= 2*lease {
		t.Errorf("the node still holds %d of the day's and %d of the total budget from Redis with nothing spent; want less than two leases (%d)", d, tot, 2*lease)
	}
	r := l.Report(time.Now())[0]
	if r.LeasedTodayMicros != d || r.LeasedTotalMicros != tot {
		t.Errorf("the node's lease is %d today, %d in all; Redis has %d, %d", r.LeasedTodayMicros, r.LeasedTotalMicros, d, tot)
	}
}

// TestFrequencyLostCounted: an impression that does not reach Redis is
// counted in Stats: dropped on a full queue, or failed there (Redis
// gone); one that reaches it is not.
func TestFrequencyLostCounted(t *testing.T) {
	full := &Client{rec: make(chan recordReq, 1), cache: map[cacheKey]*cached{}} // no recorder drains it
	full.Record("c", 1, 1, time.Hour, time.Now().UnixNano())
	full.Record("c", 1, 2, time.Hour, time.Now().UnixNano())
	if st := full.Stats(); st.FrequencyLostQueue != 1 || st.FrequencyLostRedis != 0 {
		t.Errorf("a full queue: %+v, want one lost to the queue", st)
	}

	if !*useRedis {
		t.Skip("-redis=false")
	}
	p := tcpproxy.New(t, redisAddr())
	rc := connect(t, p.Addr())
	defer rc.Close()
	id := uniqueID(t)
	rc.Record(id, 7, 1, time.Hour, time.Now().UnixNano())
	deadline := time.Now().Add(10 * time.Second)
	for len(rc.rec) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the recorder's call in flight
	if st := rc.Stats(); st != (Stats{}) {
		t.Fatalf("with Redis up: %+v, want nothing lost", st)
	}
	p.Close()
	rc.Record(id, 7, 2, time.Hour, time.Now().UnixNano())
	for rc.Stats().FrequencyLostRedis == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := rc.Stats(); st.FrequencyLostRedis != 1 || st.FrequencyLostQueue != 0 {
		t.Errorf("with Redis gone: %+v, want one lost there", st)
	}
}

// TestRedisLostStateFailsClosed: Redis restarted without persistence (or
// flushed, or its keys evicted) comes back with the campaign's counters
// gone. Two nodes spend a campaign's budget to its end, then the counters
// vanish: a node that holds leases the counters no longer count must
// refuse to lease again (fail closed) rather than spend the budget a
// second time, and say so. Before, both nodes leased the whole budget
// again from the empty counters: twice the daily and the total budget.
func TestRedisLostStateFailsClosed(t *testing.T) {
	id := uniqueID(t)
	const budget = 20 * unit
	const price = 100_000
	lim := ledger.Limits{DailyMicros: budget, TotalMicros: budget, Pacing: ledger.PacingASAP}
	var nodes []*ledger.Ledger
	var camps []*ledger.Campaign
	var clients []*Client
	for range 2 {
		rc := connect(t, redisAddr()) // the ledger closes it
		l := newNode(t, rc)
		defer l.Close()
		c, err := l.Campaign(id, lim)
		if err != nil {
			t.Fatal(err)
		}
		nodes, camps, clients = append(nodes, l), append(camps, c), append(clients, rc)
	}
	ctx := context.Background()
	spend := func() (n int64) {
		for {
			progress := false
			for i, l := range nodes {
				now := time.Now().UnixNano()
				l.Lease(ctx, camps[i], now) //nolint:errcheck // a refusal is what we count
				for {
					bid := l.NewBidID()
					if _, err := l.Reserve(camps[i], bid, 0, price, now); err != nil {
						break
					}
					if err := l.Bill(ctx, bid, price, now); err != nil {
						t.Fatal(err)
					}
					n += price
					progress = true
				}
			}
			if !progress {
				return n
			}
		}
	}
	before := spend()
	if before != budget {
		t.Fatalf("spent %d before the loss, want the budget %d", before, budget)
	}
	deleteKeys(t, DefaultOptions().Prefix+"{"+id+"}:*") // Redis comes back empty
	after := spend()
	if after != 0 {
		t.Errorf("after Redis lost its counters the nodes spent %d more (budget %d, already spent %d)", after, budget, before)
	}
	now := time.Now().UnixNano()
	for i, l := range nodes {
		err := l.Lease(ctx, camps[i], now)
		if !errors.Is(err, ErrStateLost) || !errors.Is(err, ledger.ErrLeaseRefused) {
			t.Errorf("node %d: lease after the loss: %v, want ErrStateLost, a refusal (ledger.ErrLeaseRefused)", i, err)
		}
		if clients[i].Stats().StateLost == 0 {
			t.Errorf("node %d: Stats().StateLost = 0 after a refused lease", i)
		}
	}
}

// TestEmptyGrantsLeaveNoKeys: a node whose share of a budget is spent
// asks Redis for more on every bid it cannot make; each ask stored its
// request id for IdempotencyTTL (a day) even when it granted nothing, so
// that Redis filled with ~1,800 keys a second per node and campaign (a
// day's worth: about 150 million). A grant of nothing needs no
// idempotency record: a retry may grant once.
func TestEmptyGrantsLeaveNoKeys(t *testing.T) {
	rc := connect(t, redisAddr())
	defer rc.Close()
	ctx := context.Background()
	id := uniqueID(t)
	req := ledger.LeaseRequest{Campaign: id, Day: 20000, DailyBudget: 10 * unit, TotalBudget: 10 * unit, WantDaily: 10 * unit, WantTotal: 10 * unit}
	req.ID = 1
	if g, err := rc.Lease(ctx, req); err != nil || g != (ledger.LeaseGrant{Daily: 10 * unit, Total: 10 * unit}) {
		t.Fatalf("first grant %+v, %v", g, err)
	}
	req.HeldDaily, req.HeldTotal = 10*unit, 10*unit
	for i := range 100 {
		req.ID = uint64(2 + i)
		if g, err := rc.Lease(ctx, req); err != nil || g != (ledger.LeaseGrant{}) {
			t.Fatalf("grant on a spent budget %+v, %v", g, err)
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr()})
	defer rdb.Close()
	keys, err := rdb.Keys(ctx, DefaultOptions().Prefix+"{"+id+"}:lease:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Errorf("%d lease id keys after 1 grant and 100 empty ones, want 1", len(keys))
	}
}

// TestLoweredBudgetAcrossNodes: a planner lowers a campaign's budget to
// just above what the nodes together have spent. Each node checks the
// budget against its own spend only, so the leases they hold are the only
// guard across nodes: they must give back what they hold unspent and
// lease again under the new budget. Before, each node went on spending
// its lease: three nodes that had spent 0.90 of a budget lowered to 1.00
// spent 3.00.
func TestLoweredBudgetAcrossNodes(t *testing.T) {
	id := uniqueID(t)
	const price = 10_000
	lim := ledger.Limits{DailyMicros: 50 * unit, TotalMicros: 80 * unit, Pacing: ledger.PacingASAP}
	var nodes []*ledger.Ledger
	var camps []*ledger.Campaign
	for range 3 {
		rc := connect(t, redisAddr()) // the ledger closes it
		l := newNode(t, rc)
		defer l.Close()
		c, err := l.Campaign(id, lim)
		if err != nil {
			t.Fatal(err)
		}
		nodes, camps = append(nodes, l), append(camps, c)
	}
	ctx := context.Background()
	var spent int64
	reserve := func(i int, now int64) bool {
		l := nodes[i]
		bid := l.NewBidID()
		if _, err := l.Reserve(camps[i], bid, 0, price, now); err != nil {
			return false
		}
		if err := l.Bill(ctx, bid, price, now); err != nil {
			t.Fatal(err)
		}
		spent += price
		return true
	}
	now := time.Now().UnixNano()
	for i := range nodes {
		if err := nodes[i].Lease(ctx, camps[i], now); err != nil {
			t.Fatal(err)
		}
		for range 30 {
			if !reserve(i, now) {
				t.Fatal("refused within the lease")
			}
		}
	}
	before := spent
	lower := lim
	lower.DailyMicros = before + 10*price
	for _, l := range nodes {
		if _, err := l.Campaign(id, lower); err != nil {
			t.Fatal(err)
		}
	}
	// The first grant after the change gives back, the next one leases:
	// stop after two rounds without a reservation.
	for idle := 0; idle < 2; {
		idle++
		for i, l := range nodes {
			now := time.Now().UnixNano()
			l.Lease(ctx, camps[i], now) //nolint:errcheck // a refusal ends the loop
			for reserve(i, now) {
				idle = 0
			}
		}
	}
	t.Logf("spent %d before the budget was lowered to %d, %d in all", before, lower.DailyMicros, spent)
	if spent > lower.DailyMicros {
		t.Errorf("spent %d across 3 nodes, past the lowered daily budget %d (%d spent before it was lowered)", spent, lower.DailyMicros, before)
	}
	if spent < lower.DailyMicros {
		t.Errorf("spent %d, the lowered budget %d allows more", spent, lower.DailyMicros)
	}
}

// countingLeaser counts the Lease calls a node makes.
type countingLeaser struct {
	*Client
	calls atomic.Int64
}

func (c *countingLeaser) Lease(ctx context.Context, req ledger.LeaseRequest) (ledger.LeaseGrant, error) {
	c.calls.Add(1)
	return c.Client.Lease(ctx, req)
}

// TestSpentBudgetAsksRarely: once another node holds all of a budget, a
// node's bids ask Redis for a lease again only every LeaseRetry, not on
// every bid: each ask is a round trip of the lease goroutine, which the
// campaigns with budget left wait behind (a black-box run measured one
// per two or three bids). A raised budget asks at once.
func TestSpentBudgetAsksRarely(t *testing.T) {
	if !*useRedis {
		t.Skip("-redis=false")
	}
	id := uniqueID(t)
	const budget = 10 * unit
	lim := ledger.Limits{DailyMicros: budget, Pacing: ledger.PacingASAP}
	acfg := nodeConfig(connect(t, redisAddr()))
	acfg.LeaseFraction = 1 // node a leases the whole budget at once
	a, err := ledger.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ca, err := a.Campaign(id, lim)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Lease(context.Background(), ca, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	if held := ledger.LeasedToday(ca, time.Now()); held != budget {
		t.Fatalf("node a holds %d of %d", held, budget)
	}

	counting := &countingLeaser{Client: connect(t, redisAddr())}
	cfg := nodeConfig(counting.Client)
	cfg.Leaser = counting
	cfg.LeaseRetry = time.Hour
	b, err := ledger.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cb, err := b.Campaign(id, lim)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	bids := 0
	for ; time.Now().Before(deadline); bids++ {
		now := time.Now().UnixNano()
		if cb.Allow(now, 10_000, 0) {
			t.Fatal("node b allowed a bid of a budget node a holds")
		}
		if _, err := b.Reserve(cb, b.NewBidID(), 0, 10_000, now); err == nil {
			t.Fatal("node b reserved from a budget node a holds")
		}
		time.Sleep(100 * time.Microsecond)
	}
	if n := counting.calls.Load(); n > 2 {
		t.Errorf("%d lease calls for %d bids on a budget another node holds, want at most 2 (LeaseRetry an hour)", n, bids)
	}
	// A raised budget asks at once.
	before := counting.calls.Load()
	lim.DailyMicros = 2 * budget
	if cb, err = b.Campaign(id, lim); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ledger.LeasedToday(cb, time.Now()) == 0; time.Sleep(time.Millisecond) {
		b.Reserve(cb, b.NewBidID(), 0, 10_000, time.Now().UnixNano()) //nolint:errcheck // until a lease arrives
		if time.Now().After(deadline) {
			t.Fatalf("no lease within 10 s of the budget's raise (%d lease calls after it)", counting.calls.Load()-before)
		}
	}
}

// TestCloseAfterIdleDays: a campaign that leased on one day and then went
// without bids (paused, out of the rules) still holds that day's lease at
// Close, days later, when Redis has expired that day's counter (3 days
// after its last grant). Close must not take the expired counter for lost
// state: before, it failed with ErrStateLost (and called OnStateLost), and,
// as Close stops after the Leaser's first failure, kept every other
// campaign's lease from Redis too.
func TestCloseAfterIdleDays(t *testing.T) {
	rc := connect(t, redisAddr()) // the ledger closes it
	var lost atomic.Int64
	rc.opts.OnStateLost = func(string, error) { lost.Add(1) }
	start := time.Now()
	var clk atomic.Int64
	clk.Store(start.UnixNano())
	cfg := nodeConfig(rc)
	cfg.Clock = func() time.Time { return time.Unix(0, clk.Load()) }
	l, err := ledger.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	lim := ledger.Limits{DailyMicros: 10 * unit, TotalMicros: 100 * unit, Pacing: ledger.PacingASAP}
	idle, err := l.Campaign(uniqueID(t), lim)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Lease(ctx, idle, start.UnixNano()); err != nil {
		t.Fatal(err)
	}
	// Four days on, Redis has expired the idle campaign's counter of that
	// day; another campaign leases today.
	later := start.Add(4 * 24 * time.Hour)
	clk.Store(later.UnixNano())
	deleteKeys(t, rc.dayKey(idle.ID(), int32(start.Unix()/86400)))
	busy, err := l.Campaign(uniqueID(t), lim)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Lease(ctx, busy, later.UnixNano()); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if n := lost.Load(); n != 0 {
		t.Errorf("OnStateLost called %d times for a day counter Redis expired", n)
	}
	check := connect(t, redisAddr())
	defer check.Close()
	for _, c := range []*ledger.Campaign{idle, busy} {
		_, tot, err := check.Leased(ctx, c.ID(), int32(later.Unix()/86400))
		if err != nil {
			t.Fatal(err)
		}
		if tot != 0 {
			t.Errorf("campaign %s: %d of its total budget still leased after Close, none spent", c.ID(), tot)
		}
	}
}

// closeCrashLeaser gives leases back to Redis; then, as if the node died
// right after (kill -9 during shutdown), it copies the node's data dir as
// it is to crashDir, or it loses Redis's reply (a timeout after the script
// ran).
type closeCrashLeaser struct {
	*Client
	dir, crashDir string // copy dir to crashDir after a return, if set
	loseReply     bool
	t             *testing.T
}

func (c *closeCrashLeaser) Return(ctx context.Context, ret ledger.LeaseReturn) error {
	if err := c.Client.Return(ctx, ret); err != nil {
		return err
	}
	if c.crashDir != "" {
		// The node's files as they are now, replacing an earlier copy.
		if err := os.RemoveAll(c.crashDir); err != nil {
			c.t.Fatal(err)
		}
		if err := os.CopyFS(c.crashDir, os.DirFS(c.dir)); err != nil {
			c.t.Fatal(err)
		}
	}
	if c.loseReply {
		return context.DeadlineExceeded
	}
	return nil
}

// TestCloseReturnThenCrash: Close gives a node's unspent lease back to
// Redis. Should the node die before the lowered ceiling is durable (kill
// -9 during the shutdown, a power loss), or Redis's reply be lost (the
// return ran, the call timed out), the node's log still holds the lease
// that Redis no longer counts: on restart every lease failed with
// ErrStateLost, and a node alone on the campaign never spent its total
// budget again. A lease goes back only once the lowered ceiling is
// durable, as grant gives back a lowered one.
func TestCloseReturnThenCrash(t *testing.T) {
	for _, tc := range []struct {
		name      string
		crash     bool
		loseReply bool
	}{{"crash", true, false}, {"reply lost", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			id := uniqueID(t)
			lim := ledger.Limits{DailyMicros: 10 * unit, TotalMicros: 100 * unit, Pacing: ledger.PacingASAP}
			dir := t.TempDir()
			leaser := &closeCrashLeaser{Client: connect(t, redisAddr()), dir: dir, loseReply: tc.loseReply, t: t}
			if tc.crash {
				leaser.crashDir = filepath.Join(t.TempDir(), "crashed")
			}
			cfg := nodeConfig(leaser.Client)
			cfg.Leaser, cfg.Dir = leaser, dir
			l, err := ledger.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			c, err := l.Campaign(id, lim)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now().UnixNano()
			if err := l.Lease(ctx, c, now); err != nil {
				t.Fatal(err)
			}
			bid := l.NewBidID()
			if _, err := l.Reserve(c, bid, 0, unit/2, now); err != nil {
				t.Fatal(err)
			}
			if err := l.Bill(ctx, bid, unit/2, now); err != nil {
				t.Fatal(err)
			}
			l.Close() //nolint:errcheck // a lost reply fails it
			if tc.crash {
				dir = leaser.crashDir
			}
			cfg = nodeConfig(connect(t, redisAddr()))
			cfg.Dir = dir
			l, err = ledger.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if c, err = l.Campaign(id, lim); err != nil {
				t.Fatal(err)
			}
			now = time.Now().UnixNano()
			if err := l.Lease(ctx, c, now); err != nil {
				t.Fatalf("lease after the restart: %v", err)
			}
			if _, err := l.Reserve(c, l.NewBidID(), 0, unit/2, now); err != nil {
				t.Errorf("reserve after the restart: %v", err)
			}
		})
	}
}

// TestSlowLeaseKeepsGrant: a lease call that Redis applies but whose reply
// comes after LeaseTimeout is asked again with its id, so that Redis
// answers with the slice it granted and the node holds it: before, the
// next call was a new request, and the first slice stayed counted in
// Redis as leased, never spent or given back (the campaign under-
// delivered by it for the day). A Close then leaves Redis counting
// nothing leased.
func TestSlowLeaseKeepsGrant(t *testing.T) {
	if !*useRedis {
		t.Skip("-redis=false")
	}
	p := tcpproxy.New(t, redisAddr())
	defer p.Close()
	rc := connect(t, p.Addr())
	// direct reads the counters past the proxy, on its own connections:
	// a slowed read on rc's would hold one, and the lease call would then
	// dial a new one, whose handshake, slowed too, it times out in before
	// it sends anything.
	direct := connect(t, redisAddr())
	defer direct.Close()
	cfg := nodeConfig(rc)
	cfg.LeaseTimeout = 100 * time.Millisecond
	l, err := ledger.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			l.Close()
		}
	}()
	ctx := context.Background()
	lim := ledger.Limits{DailyMicros: 100 * unit, Pacing: ledger.PacingASAP}
	// Redis knows the lease script before replies are slowed (a NOSCRIPT
	// reply would be slowed too, and Redis then apply nothing).
	warm, err := l.Campaign(uniqueID(t), lim)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Lease(ctx, warm, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	id := uniqueID(t)
	day := int32(time.Now().Unix() / 86400)
	p.SetReplyDelay(time.Second)
	failures := l.Stats().LeaseFailures
	c, err := l.Campaign(id, lim) // the lease goroutine asks, and times out
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); l.Stats().LeaseFailures == failures; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no lease call failed 10 s after replies were slowed")
		}
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		d, _, err := direct.Leased(ctx, id, day)
		if err != nil {
			t.Fatal(err)
		}
		if d > 0 {
			break
		}
		if time.Now().After(deadline) {
			// A stall of this process before the call was sent: what
			// follows still holds, but does not test the lost reply.
			t.Log("the call that timed out did not reach Redis")
			break
		}
	}
	if held := ledger.LeasedToday(c, time.Now()); held != 0 {
		t.Fatalf("the node holds %d after its lease call timed out", held)
	}
	p.SetReplyDelay(0)
	if err := l.Lease(ctx, c, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	d, _, err := direct.Leased(ctx, id, day)
	if err != nil {
		t.Fatal(err)
	}
	if held := ledger.LeasedToday(c, time.Now()); held != d {
		t.Errorf("the node holds %d, Redis counts %d leased: %d lost to the node", held, d, d-held)
	}
	closed = true
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if d, _, err := direct.Leased(ctx, id, day); err != nil || d != 0 {
		t.Errorf("after Close Redis counts %d leased (%v), want 0", d, err)
	}
}

// TestNewRefusesShortIdempotencyTTL: ids must outlive the ledger's
// RetryWindow, within which it sends a lease or return again with its id
// (one forgotten and applied twice: a return given back twice). Under a
// second the lease script's SET ... EX 0 failed after it had counted the
// grant.
func TestNewRefusesShortIdempotencyTTL(t *testing.T) {
	for _, ttl := range []time.Duration{500 * time.Millisecond, time.Minute, ledger.RetryWindow - time.Second} {
		opts := DefaultOptions()
		opts.IdempotencyTTL = ttl
		if c, err := New(context.Background(), "redis://127.0.0.1:1/0", opts); err == nil || !strings.Contains(err.Error(), "IdempotencyTTL") {
			if c != nil {
				c.Close()
			}
			t.Errorf("IdempotencyTTL %v: New answered %v, want an error naming IdempotencyTTL", ttl, err)
		}
	}
}

// New's errors show the URL without its password; no Redis is needed
// (port 1 has none).
func TestNewErrorHidesPassword(t *testing.T) {
	const pw = "s3cretpw"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, u := range []string{"redis://user:" + pw + "@127.0.0.1:1/0", "redis://user:" + pw + "%zz@127.0.0.1:1/0"} {
		c, err := New(ctx, u, DefaultOptions())
		if err == nil {
			c.Close()
			t.Fatalf("New(%s): no error", u)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("New: %v shows the password", err)
		}
	}
	if got, want := RedactURL("redis://user:"+pw+"@h:6379/2"), "redis://user:xxxxx@h:6379/2"; got != want {
		t.Errorf("RedactURL: %q, want %q", got, want)
	}
}

// TestRedisDownHeardOnce: a Redis that stopped answering (or taking
// writes: a replica, maxmemory) was heard of by nobody: a lease's or a
// frequency call's error was counted (lease_failure) and dropped, so a
// node stopped bidding on its budgeted campaigns with no log line at all
// (go-redis logs only dials that fail). OnDown is called once when calls
// start failing, OnUp once when one succeeds again, and a refusal for
// lost state, which is Redis answering, is neither.
func TestRedisDownHeardOnce(t *testing.T) {
	if !*useRedis {
		t.Skip("-redis=false")
	}
	p := tcpproxy.New(t, redisAddr())
	defer p.Close()
	var mu sync.Mutex
	var events []string
	opts := DefaultOptions()
	opts.OnDown = func(op string, err error) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, "down "+op)
	}
	opts.OnUp = func() {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, "up")
	}
	rc := connectWith(t, p.Addr(), opts)
	defer rc.Close()
	id := uniqueID(t)
	day := int32(time.Now().Unix() / 86400)
	seq := uint64(rand.Uint32()) << 20
	lease := func(held int64) error {
		seq++
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := rc.Lease(ctx, ledger.LeaseRequest{ID: seq, Campaign: id, Day: day,
			DailyBudget: 10 * unit, WantDaily: unit, HeldDaily: held})
		return err
	}
	got := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(events)
	}
	if err := lease(0); err != nil {
		t.Fatal(err)
	}
	p.Partition()
	for range 3 {
		if err := lease(unit); err == nil {
			t.Fatal("a lease succeeded with Redis partitioned")
		}
	}
	if st := rc.Stats(); !st.Down || st.Downs != 1 {
		t.Errorf("partitioned: Stats Down %v, Downs %d; want true, 1", st.Down, st.Downs)
	}
	p.Heal()
	for range 2 {
		if err := lease(unit); err != nil {
			t.Fatal(err)
		}
	}
	// Redis answers that it lost the counters: not down.
	if err := lease(100 * unit); !errors.Is(err, ErrStateLost) {
		t.Fatalf("lease holding more than Redis counts: %v, want ErrStateLost", err)
	}
	if diff := cmp.Diff([]string{"down lease", "up"}, got()); diff != "" {
		t.Errorf("OnDown/OnUp calls (-want +got):\n%s", diff)
	}
	if st := rc.Stats(); st.Down || st.Downs != 1 {
		t.Errorf("healed: Stats Down %v, Downs %d; want false, 1", st.Down, st.Downs)
	}
	// A caller that gives up (its context canceled: a shutdown, an
	// exchange that hung up) is not Redis failing.
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	seq++
	if _, err := rc.Lease(canceled, ledger.LeaseRequest{ID: seq, Campaign: id, Day: day,
		DailyBudget: 10 * unit, WantDaily: unit, HeldDaily: unit}); !errors.Is(err, context.Canceled) {
		t.Fatalf("lease with a canceled context: %v, want context.Canceled", err)
	}
	if diff := cmp.Diff([]string{"down lease", "up"}, got()); diff != "" {
		t.Errorf("after a canceled call, OnDown/OnUp calls (-want +got):\n%s", diff)
	}
	if st := rc.Stats(); st.Down || st.Downs != 1 {
		t.Errorf("after a canceled call: Stats Down %v, Downs %d; want false, 1", st.Down, st.Downs)
	}
	// Calls that fail and succeed by turns (as at maxmemory: writes
	// refused, reads answered) were heard of on every change: within a
	// minute of the last OnDown, neither is called again.
	for range 3 {
		p.Partition()
		if err := lease(unit); err == nil {
			t.Fatal("a lease succeeded with Redis partitioned")
		}
		p.Heal()
		if err := lease(unit); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{"down lease", "up"}, got()); diff != "" {
		t.Errorf("OnDown/OnUp calls after flapping (-want +got):\n%s", diff)
	}
	if st := rc.Stats(); st.Down || st.Downs != 4 {
		t.Errorf("after flapping: Stats Down %v, Downs %d; want false, 4", st.Down, st.Downs)
	}
	// Down again within the minute: not told yet, but once the minute
	// is past (here shortened), the next failing call tells it, or the
	// last word would stay "up" for as long as Redis is down.
	p.Partition()
	if err := lease(unit); err == nil {
		t.Fatal("a lease succeeded with Redis partitioned")
	}
	rc.downMu.Lock()
	rc.downEvery = 0
	rc.downMu.Unlock()
	if err := lease(unit); err == nil {
		t.Fatal("a lease succeeded with Redis partitioned")
	}
	if err := lease(unit); err == nil {
		t.Fatal("a lease succeeded with Redis partitioned")
	}
	p.Heal()
	if err := lease(unit); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"down lease", "up", "down lease", "up"}, got()); diff != "" {
		t.Errorf("OnDown/OnUp calls after a later outage (-want +got):\n%s", diff)
	}
}

// TestCloseAfterLostStateReturnsTheRest: Close stopped giving leases back
// at the first return that failed, also when that failure was Redis
// answering that it had lost that one campaign's counters (a flush, an
// eviction, counters restored for some campaigns only): every campaign
// after it kept its lease counted in Redis, budget the other nodes could
// no longer lease. Seen with two nodes on the demo world after a Redis
// restarted empty: a clean stop of a node gave back nothing of the
// campaigns whose counters had been set again. A refusal is an answer:
// the campaigns after it are still given back.
func TestCloseAfterLostStateReturnsTheRest(t *testing.T) {
	rc := connect(t, redisAddr()) // the ledger closes it
	l := newNode(t, rc)
	ctx := context.Background()
	lim := ledger.Limits{DailyMicros: 100 * unit, TotalMicros: 200 * unit, Pacing: ledger.PacingASAP}
	ids := []string{uniqueID(t), uniqueID(t), uniqueID(t)}
	for _, id := range ids { // in this order: Close gives back in it
		c, err := l.Campaign(id, lim)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Lease(ctx, c, time.Now().UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	day := int32(time.Now().UTC().Unix() / 86400)
	deleteKeys(t, DefaultOptions().Prefix+"{"+ids[0]+"}:*") // the first campaign's counters are lost
	err := l.Close()
	if !errors.Is(err, ErrStateLost) {
		t.Errorf("Close: %v, want ErrStateLost (the first campaign's return)", err)
	}
	check := connect(t, redisAddr())
	defer check.Close()
	for _, id := range ids[1:] {
		d, tot, err := check.Leased(ctx, id, day)
		if err != nil {
			t.Fatal(err)
		}
		if d != 0 || tot != 0 {
			t.Errorf("%s: Redis still counts %d today, %d in total as leased after a clean Close that spent nothing, want 0 and 0", id, d, tot)
		}
	}
}
