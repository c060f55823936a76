// Package redisledger shares personad's budgets and frequency caps between
// decision nodes through Redis (github.com/redis/go-redis/v9).
//
// Budgets: a Client is a ledger.Leaser. Each node leases a slice of a
// campaign's remaining daily and total budget with one atomic Lua script
// (a per-day and an all-time counter of what has been leased, never past
// the budget) and spends it locally, so the decision never waits on the
// network; the ledger refills in the background when a slice runs low and
// returns what is unspent on Close. Every request carries an id; the
// script stores its answer under that id, so a retried command (a timeout
// whose reply was lost) grants once, and answers what it granted. A lease
// or return that fails without an answer (a timeout, a connection error:
// Redis may have applied it) is sent again by the ledger, same id and
// amounts, on its next attempt for the campaign within ledger.RetryWindow
// (Options.IdempotencyTTL is at least that), so that a slice Redis
// granted while the node gave up reaches the node, and a return it did
// not apply is made; only ErrStateLost is a definite refusal
// (ledger.ErrLeaseRefused). The sum of the slices never passes
// the budget, so the nodes together never overspend; a node that cannot
// reach Redis spends what it holds and then stops (fail closed;
// Options.OnDown and OnUp hear when its calls start failing and when they
// succeed again), and a node that dies loses its slice, counted as spent: the safe direction.
//
// Lost state: the counters hold at least what each node holds of them
// (its leases, spent or not, which its durable ledger remembers across a
// restart). A Redis that restarted without persistence, was flushed or
// evicted the keys holds less: a lease or return then fails with
// ErrStateLost instead of granting the budget a second time, so the
// nodes that spent the campaign fail closed, and Options.OnStateLost
// hears of it. Restoring Redis's data lets them lease again; so does
// setting each counter to the sum of what the nodes hold
// (leased_today_micros and leased_total_micros in their reports).
//
// Frequency: a Client is also a ledger.FrequencyShare and a
// ledger.FrequencyWarmer. Impressions are counted per (campaign, user,
// window bucket) with INCR and an expiry (idempotent per bid: a SET NX
// marker guards each INCR); the count over a window is the current bucket
// plus the previous one, which can only over-count. Each node caches the
// counts it read, bumped at once by its own impressions. The decision
// itself (Allow) never touches the network: it answers from the cache, a
// count read less than Options.Refresh (100 ms) ago, or an older one
// (read again in the background), and caps a user the cache does not know
// (fail closed). The read happens before the decision, at request
// arrival: the bidder calls Ledger.WarmFrequency, which gives Warm the
// capped campaigns the decision may ask about (engine.FrequencyCaps: the
// few the request's persona, channel and sizes leave), and Warm reads with one MGET the counts the
// cache lacks or holds older than Refresh, waiting at most
// Options.FetchWait (5 ms; Redis on a LAN answers in well under a
// millisecond) or the request's own deadline, whichever is first;
// concurrent Warms of the same campaign and user share one read. A read
// that gets nothing in time (a timeout or an error) changes nothing, is
// retried in the background, and, when FetchWait rather than the
// request's deadline ran out, stops Warm reading for a second
// (Stats.FrequencyWaitSkipped), so a silent Redis costs one request one
// FetchWait a second. An entry is dropped about a minute after its last
// use.
//
// What a cap can still miss across nodes is another node's impressions of
// the user that this node's count does not hold yet: those since this
// node's last read, when that read is less than Refresh old (a user sent
// to several nodes within 100 ms); those not yet in Redis when it read
// (the record lag: the recorder's queue, one round trip per impression,
// so a fraction of a millisecond on an idle LAN and longer while
// impressions queue up; it includes decisions for the user made at the
// same moment on two nodes, and a read within it also hides this node's
// own impressions from its cached shared count, though the ledger's
// exact local count still caps what this node showed); those since its older count, while
// reads fail or back off; and those that never reached Redis
// (Stats.FrequencyLost*, until the window ends). A request that reaches
// the decision without its user's counts (Warm timed out, Redis down, no
// Warm called) caps the user on the campaigns this node does not know it
// for: it is never over-served, only under-served. Measured on a loaded
// two-core machine, with default options, one user sent round-robin to
// three nodes through Ledger.WarmFrequency and FrequencyOK, cap 2, 12
// requests, five runs each: 50 to 400 ms apart, 2 shown every time
// (before: 4 to 6); 1 to 20 ms apart, each node seeing the user again
// within Refresh, 3; back to back, before the records reached Redis, 3
// or 5 (before: 0, the unknown user capped everywhere)
// (TestFrequencyRoundRobin holds the 50 and 400 ms cases to 2).
//
// Every call takes its deadline from a context; background calls use
// Options.Timeout.
package redisledger

import (
	"context"
	"errors"
	"fmt"
	neturl "net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/personad/personad/ledger"
)

// Options configure a Client. Start from DefaultOptions.
type Options struct {
	// Prefix starts every key.
	Prefix string
	// Timeout bounds background calls (frequency fetches and records).
	Timeout time.Duration
	// Refresh is how old a cached frequency count may get before it is
	// read again. Within it a node does not see the impressions other
	// nodes show the user: a user sent to several nodes within Refresh
	// can pass a cap by those.
	Refresh time.Duration
	// FetchWait bounds how long Warm waits for the counts it reads (a
	// user the cache does not know, or counts older than Refresh), before
	// the decision. Past it the decision's Allow answers without them:
	// false for an unknown user (fail closed), the older count otherwise,
	// and Warm does not read again for a second. 0: Warm does nothing,
	// and unknown users are capped until read in the background.
	FetchWait time.Duration
	// IdempotencyTTL is how long lease and bid ids are remembered; at
	// least ledger.RetryWindow, within which the ledger may send a lease
	// or return again with its id (one forgotten by then would be applied
	// twice: a return given back twice lets the other nodes overspend).
	IdempotencyTTL time.Duration
	// MaxCached bounds the frequency cache; when full, unknown users are
	// capped (and fetched) rather than cached.
	MaxCached int
	// OnStateLost, when set, is called the first time a lease or return
	// of a campaign fails with ErrStateLost (once per campaign and
	// Client), from the goroutine that called Lease or Return.
	OnStateLost func(campaign string, err error)
	// OnDown, when set, is called when a call to Redis fails (a lease, a
	// return, a frequency read or record in the background: not Warm's
	// read, which a request's few milliseconds bound) while the last one
	// had succeeded, with the operation and its error; OnUp when one
	// succeeds after such a failure. So a Redis that goes away or stops
	// taking writes (a replica, maxmemory) is heard of once, and once
	// more when it is back, rather than on every call or never; and
	// OnDown at most once a minute, OnUp only after an OnDown, so that a
	// Redis that refuses some calls and answers others (writes refused at
	// maxmemory, reads answered) is heard of twice a minute at most, not
	// on every call (Stats.Downs counts every change). A refusal with
	// ErrStateLost is an answer: neither. They are called from the
	// goroutine that made the call, one at a time.
	OnDown func(op string, err error)
	OnUp   func()
}

// ErrStateLost is a lease or return refused because Redis counts less of
// the campaign's budget as leased than this node alone holds: Redis lost
// its data (a restart without persistence, a flush, an eviction).
var ErrStateLost = errors.New("redisledger: Redis counts less leased than this node holds: its ledger state was lost")

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{
		Prefix:  "personad:ledger:",
		Timeout: 250 * time.Millisecond,
		// Warm reads before each request whatever is older, so a short
		// Refresh costs one MGET per request of a user the node saw more
		// than 100 ms before, and narrows what other nodes' impressions
		// a cap misses.
		Refresh: 100 * time.Millisecond,
		// An MGET from Redis on the same LAN answers in 0.1-0.5 ms; 5 ms
		// leaves room for a busy node's scheduling delays and a GC pause
		// while costing a tenth of the default decision budget (50 ms)
		// when Redis does not answer (once: see waitBackoff).
		FetchWait:      5 * time.Millisecond,
		IdempotencyTTL: 24 * time.Hour,
		MaxCached:      1 << 20,
	}
}

// Client is the Redis side of a shared ledger. It is safe for concurrent
// use. Its background goroutines stop in Close.
type Client struct {
	rdb  *redis.Client
	opts Options

	mu    sync.Mutex
	cache map[cacheKey]*cached
	// sweeps counts the cache's sweeps; an entry remembers the count at
	// its last use.
	sweeps uint32
	fetch  chan fetchReq
	rec    chan recordReq
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once

	// lostQueue and lostRedis count impressions other nodes will not see
	// (this node still counts them): dropped on a full queue, or not
	// recorded by Redis (an error or a timeout).
	lostQueue, lostRedis atomic.Int64
	// stateLost counts leases and returns refused with ErrStateLost;
	// lostSeen holds the campaigns OnStateLost was called for.
	stateLost atomic.Int64
	lostSeen  sync.Map

	// waitOff is when Warm may read counts again (unix nanos) after a
	// read that got none. waits counts the Warms that waited for a read,
	// waitTimeouts the reads that got none in time, waitSkipped the Warms
	// that did not read because of waitOff, waitNanos the time waited,
	// reads the MGETs Warm sent.
	waitOff                                            atomic.Int64
	waits, waitTimeouts, waitSkipped, waitNanos, reads atomic.Int64

	// down is whether the last call to Redis (but Warm's) failed;
	// downMu orders its changes and the OnDown and OnUp calls; downs
	// counts the changes to failing, untold whether OnDown has not been
	// called since the last one (it was within downEvery). Under downMu,
	// toldDown is when OnDown was last called (unix nanos), toldUp
	// whether OnUp was called since, and downEvery how often OnDown may
	// be called at most (a minute; tests shorten it).
	downMu    sync.Mutex
	down      atomic.Bool
	untold    atomic.Bool
	downs     atomic.Int64
	toldDown  int64
	toldUp    bool
	downEvery time.Duration
}

// Stats are a Client's counts since New.
type Stats struct {
	// FrequencyLostQueue and FrequencyLostRedis are impressions not
	// published to the other nodes: dropped because the queue to Redis
	// was full, or failed there. Each lets the other nodes under-count
	// that user's frequency until the window ends.
	FrequencyLostQueue, FrequencyLostRedis int64
	// StateLost is leases and returns refused with ErrStateLost.
	StateLost int64
	// FrequencyWaits is Warms (requests, before their decision) that
	// waited for counts from Redis (a user the cache did not know, or
	// counts older than Options.Refresh), and FrequencyWaitNanos the time
	// they waited in all; FrequencyReads is the MGETs they sent (one per
	// Warm that read; a Warm that found another's read in flight waits on
	// it). FrequencyWaitTimeouts is reads that got nothing within
	// Options.FetchWait or the request's deadline (a timeout or an
	// error): their decisions capped an unknown user or used the older
	// count. FrequencyWaitSkipped is Warms that needed counts but did not
	// read, because a read had failed in the second before.
	FrequencyWaits, FrequencyWaitTimeouts, FrequencyWaitSkipped, FrequencyWaitNanos, FrequencyReads int64
	// Down is whether the last call to Redis failed (Options.OnDown), and
	// Downs how many times calls started failing.
	Down  bool
	Downs int64
}

// Stats returns the Client's counts.
func (c *Client) Stats() Stats {
	return Stats{
		FrequencyLostQueue: c.lostQueue.Load(), FrequencyLostRedis: c.lostRedis.Load(), StateLost: c.stateLost.Load(),
		FrequencyWaits: c.waits.Load(), FrequencyWaitTimeouts: c.waitTimeouts.Load(),
		FrequencyWaitSkipped: c.waitSkipped.Load(), FrequencyWaitNanos: c.waitNanos.Load(), FrequencyReads: c.reads.Load(),
		Down: c.down.Load(), Downs: c.downs.Load(),
	}
}

type cacheKey struct {
	campaign string
	user     uint64
}

type cached struct {
	count   int32  // as of fetched, plus this node's records since
	fetched int64  // the decision time (unix nanos) of the read; 0 until one answered
	bucket  int64  // the window bucket count was read in
	used    uint32 // Client.sweeps at the last Allow or Warm
	// inflight is Warm's read of the count running, or nil.
	inflight *fetchCall
}

type fetchReq struct {
	key    cacheKey
	window time.Duration
	now    int64
}

type recordReq struct {
	key    cacheKey
	bid    uint64
	window time.Duration
	now    int64
}

// RedactURL is a Redis URL fit for errors and logs: its password, if it
// has one (redis://user:password@host:port/db), replaced by "xxxxx". A URL
// that does not parse is not shown at all.
func RedactURL(url string) string {
	u, err := neturl.Parse(url)
	if err != nil {
		return "(a Redis URL that does not parse, not shown: it may hold a password)"
	}
	return u.Redacted()
}

// withoutURL is err without the URL a *url.Error quotes, which may hold
// a password.
func withoutURL(err error) error {
	var ue *neturl.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// New connects to the Redis at url (redis://host:port/db) and checks it
// answers within ctx. Its errors show url without its password
// (RedactURL).
func New(ctx context.Context, url string, opts Options) (*Client, error) {
	if opts.Timeout <= 0 || opts.Refresh <= 0 || opts.IdempotencyTTL <= 0 || opts.MaxCached <= 0 {
		return nil, errors.New("redisledger: Timeout, Refresh, IdempotencyTTL and MaxCached must be > 0")
	}
	if opts.FetchWait < 0 {
		return nil, errors.New("redisledger: FetchWait must be >= 0")
	}
	if opts.IdempotencyTTL < ledger.RetryWindow {
		return nil, fmt.Errorf("redisledger: IdempotencyTTL must be at least %v (ledger.RetryWindow)", ledger.RetryWindow)
	}
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redisledger: %s: %w", RedactURL(url), withoutURL(err))
	}
	o.ContextTimeoutEnabled = true
	o.DialTimeout = opts.Timeout
	o.MaxRetries = 1
	rdb := redis.NewClient(o)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redisledger: %s: %w", RedactURL(url), err)
	}
	c := &Client{
		rdb:   rdb,
		opts:  opts,
		cache: map[cacheKey]*cached{},
		fetch: make(chan fetchReq, 4096),
		rec:   make(chan recordReq, 4096),
		stop:  make(chan struct{}),

		downEvery: time.Minute,
	}
	c.wg.Add(2)
	go c.fetcher()
	go c.recorder()
	return c, nil
}

// Close stops the background goroutines and closes the connection pool.
func (c *Client) Close() error {
	var err error
	c.once.Do(func() {
		close(c.stop)
		c.wg.Wait()
		err = c.rdb.Close()
	})
	return err
}

func (c *Client) dayKey(campaign string, day int32) string {
	return c.opts.Prefix + "{" + campaign + "}:day:" + strconv.Itoa(int(day))
}

func (c *Client) totalKey(campaign string) string {
	return c.opts.Prefix + "{" + campaign + "}:total"
}

// lostCheck fails a script whose counters (KEYS[1], KEYS[2]) hold less
// than the node holds of them (ARGV[n], ARGV[n+1]): Redis lost them.
const lostCheck = `
local function short(key, held)
  return held > 0 and tonumber(redis.call('GET', key) or '0') < held
end
if short(KEYS[1], tonumber(ARGV[%d])) or short(KEYS[2], tonumber(ARGV[%d])) then
  return redis.error_reply("PERSONAD_LOST counters below this node's leases")
end
`

// lostReply starts the error reply of lostCheck.
const lostReply = "PERSONAD_LOST "

// leaseScript grants min(want, budget - leased) on each of the day and
// total counters, once per request id (remembered when it granted
// something), unless the counters are short of
// what the node holds (ARGV[7], ARGV[8]).
var leaseScript = redis.NewScript(`
local prev = redis.call('GET', KEYS[3])
if prev then
  local d, t = string.match(prev, '^(%d+):(%d+)$')
  return {tonumber(d), tonumber(t)}
end
` + fmt.Sprintf(lostCheck, 7, 8) + `
local function take(key, budget, want, ttl)
  if want <= 0 or budget <= 0 then return 0 end
  local used = tonumber(redis.call('GET', key) or '0')
  local g = math.min(want, budget - used)
  if g <= 0 then return 0 end
  redis.call('INCRBY', key, g)
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
  return g
end
local gd = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[5]))
local gt = take(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[4]), 0)
-- A grant of nothing needs no record (a retry may grant once), and a node
-- whose share is spent asks on every bid it cannot make.
if gd > 0 or gt > 0 then redis.call('SET', KEYS[3], gd .. ':' .. gt, 'EX', ARGV[6]) end
return {gd, gt}
`)

// returnScript gives back unspent lease, once per id, never below zero,
// unless the counters are short of what the node holds (ARGV[4], ARGV[5]).
var returnScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
` + fmt.Sprintf(lostCheck, 4, 5) + `
redis.call('SET', KEYS[3], '1', 'EX', ARGV[3])
local function give(key, v)
  if v <= 0 then return end
  local used = tonumber(redis.call('GET', key) or '0')
  if used <= 0 then return end
  redis.call('DECRBY', key, math.min(v, used))
end
give(KEYS[1], tonumber(ARGV[1]))
give(KEYS[2], tonumber(ARGV[2]))
return 1
`)

// Lease implements ledger.Leaser.
func (c *Client) Lease(ctx context.Context, req ledger.LeaseRequest) (ledger.LeaseGrant, error) {
	keys := []string{
		c.dayKey(req.Campaign, req.Day),
		c.totalKey(req.Campaign),
		c.opts.Prefix + "{" + req.Campaign + "}:lease:" + strconv.FormatUint(req.ID, 16),
	}
	res, err := leaseScript.Run(ctx, c.rdb, keys,
		req.DailyBudget, req.TotalBudget, req.WantDaily, req.WantTotal,
		int64((3*24*time.Hour)/time.Second), int64(c.opts.IdempotencyTTL/time.Second),
		req.HeldDaily, req.HeldTotal).Int64Slice()
	c.observe("lease", err)
	if err != nil {
		return ledger.LeaseGrant{}, c.scriptErr("lease", req.Campaign, err)
	}
	if len(res) != 2 {
		return ledger.LeaseGrant{}, fmt.Errorf("redisledger: lease %q: bad reply", req.Campaign)
	}
	return ledger.LeaseGrant{Daily: res[0], Total: res[1]}, nil
}

// Return implements ledger.Leaser.
func (c *Client) Return(ctx context.Context, ret ledger.LeaseReturn) error {
	keys := []string{
		c.dayKey(ret.Campaign, ret.Day),
		c.totalKey(ret.Campaign),
		c.opts.Prefix + "{" + ret.Campaign + "}:return:" + strconv.FormatUint(ret.ID, 16),
	}
	err := returnScript.Run(ctx, c.rdb, keys, ret.Daily, ret.Total, int64(c.opts.IdempotencyTTL/time.Second),
		ret.HeldDaily, ret.HeldTotal).Err()
	c.observe("return", err)
	if err != nil {
		return c.scriptErr("return", ret.Campaign, err)
	}
	return nil
}

// observe notes whether a call to Redis (op) failed, calling OnDown or
// OnUp when that changes, OnDown at most every downEvery: a failure it
// did not tell (untold) is told by the first failing call past that. A
// lease or return refused for lost state is an answer from Redis; a call
// its caller canceled says nothing of Redis either way.
func (c *Client) observe(op string, err error) {
	if errors.Is(err, context.Canceled) {
		return // the caller gave up (a shutdown, a request ended): no word on Redis
	}
	failed := err != nil && !strings.HasPrefix(err.Error(), lostReply)
	if c.down.Load() == failed && (!failed || !c.untold.Load()) {
		return
	}
	c.downMu.Lock()
	defer c.downMu.Unlock()
	if !failed {
		if !c.down.Load() {
			return
		}
		c.down.Store(false)
		c.untold.Store(false)
		if c.toldDown != 0 && !c.toldUp {
			c.toldUp = true
			if c.opts.OnUp != nil {
				c.opts.OnUp()
			}
		}
		return
	}
	if !c.down.Load() {
		c.down.Store(true)
		c.downs.Add(1)
		c.untold.Store(true)
	}
	if now := time.Now().UnixNano(); c.untold.Load() && (c.toldDown == 0 || now-c.toldDown >= int64(c.downEvery)) {
		c.toldDown, c.toldUp = now, false
		c.untold.Store(false)
		if c.opts.OnDown != nil {
			c.opts.OnDown(op, err)
		}
	}
}

// scriptErr wraps a lease or return script's error, telling lost state
// (lostCheck) from the rest.
func (c *Client) scriptErr(op, campaign string, err error) error {
	if !strings.HasPrefix(err.Error(), lostReply) {
		return fmt.Errorf("redisledger: %s %q: %w", op, campaign, err)
	}
	err = refusedError{fmt.Errorf("%w (%s %q)", ErrStateLost, op, campaign)}
	c.stateLost.Add(1)
	if _, seen := c.lostSeen.LoadOrStore(campaign, struct{}{}); !seen && c.opts.OnStateLost != nil {
		c.opts.OnStateLost(campaign, err)
	}
	return err
}

// refusedError is an error of a script that changed nothing: the ledger
// asks anew rather than again (ledger.ErrLeaseRefused).
type refusedError struct{ error }

func (e refusedError) Unwrap() []error { return []error{e.error, ledger.ErrLeaseRefused} }

// Leased returns how much of campaign's budget is leased out for day and
// in total (for reports and tests).
func (c *Client) Leased(ctx context.Context, campaign string, day int32) (daily, total int64, err error) {
	vals, err := c.rdb.MGet(ctx, c.dayKey(campaign, day), c.totalKey(campaign)).Result()
	if err != nil {
		return 0, 0, fmt.Errorf("redisledger: %w", err)
	}
	parse := func(v any) int64 {
		s, _ := v.(string)
		n, _ := strconv.ParseInt(s, 10, 64)
		return n
	}
	return parse(vals[0]), parse(vals[1]), nil
}

var _ ledger.Leaser = (*Client)(nil)
var _ ledger.FrequencyWarmer = (*Client)(nil)
