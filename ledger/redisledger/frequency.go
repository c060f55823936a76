package redisledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/personad/personad/ledger"
)

func (c *Client) bucketKey(k cacheKey, window time.Duration, bucket int64) string {
	return c.opts.Prefix + "{" + k.campaign + "}:freq:" + strconv.FormatUint(k.user, 16) +
		":" + strconv.FormatInt(int64(window/time.Second), 10) + ":" + strconv.FormatInt(bucket, 10)
}

// waitBackoff is how long Warm stops reading after a read that got
// nothing within Options.FetchWait (a timeout or an error): a Redis that
// does not answer costs one request one FetchWait, and then nothing until
// the backoff ends.
const waitBackoff = time.Second

// fetchCall is one read of counts by Warm, which concurrent Warms of the
// same (campaign, user) wait on rather than read again. done is closed
// once the entries it reads are updated (or left as they were).
type fetchCall struct {
	done chan struct{}
}

// Allow implements ledger.FrequencyShare. It never blocks: a cached count
// read less than Options.Refresh ago in the current window bucket answers;
// an older one answers too and is read again in the background; for a
// user the cache does not know it answers false (capped) and reads the
// count in the background. Warm, before the decision, is what makes the
// cache know the user.
func (c *Client) Allow(campaign string, user uint64, local, max int32, window time.Duration, now int64) bool {
	k := cacheKey{campaign, user}
	bucket := now / int64(window)
	c.mu.Lock()
	e, ok := c.cache[k]
	if !ok && len(c.cache) < c.opts.MaxCached {
		e = &cached{}
		c.cache[k] = e
	}
	var known, fresh bool
	var count int32
	if e != nil {
		e.used = c.sweeps
		// A count from an earlier bucket still holds the impressions of
		// the window it was read in: used until read again, it can only
		// over-count the current window's previous bucket.
		known, count = e.fetched != 0, e.count
		fresh = known && e.bucket == bucket && now-e.fetched <= int64(c.opts.Refresh)
	}
	c.mu.Unlock()
	if !fresh {
		c.fetchLater(k, window, now)
	}
	return known && count < max
}

// Warm implements ledger.FrequencyWarmer: it reads, in one MGET, the
// counts of user for the caps whose cached count is missing, older than
// Options.Refresh or from another window bucket, and waits for reads of
// the others that concurrent Warms started, until ctx is done or
// Options.FetchWait has passed, whichever is first. A read that fails
// changes nothing, is retried in the background, and, unless ctx ended
// first (the request's own deadline), stops Warm reading for waitBackoff
// (a Warm that needs a read then returns errBackoff at once). With
// FetchWait 0 it does nothing. An entry Warm creates is kept while Allow
// uses it, like any other (see sweep).
func (c *Client) Warm(ctx context.Context, user uint64, caps []ledger.FrequencyCap, now int64) error {
	if c.opts.FetchWait <= 0 {
		return nil
	}
	start := time.Now()
	off := start.UnixNano() < c.waitOff.Load()
	skipped := false
	var call *fetchCall
	var mine []pendingRead
	var others []*fetchCall
	c.mu.Lock()
	for _, fc := range caps {
		k := cacheKey{fc.Campaign, user}
		bucket := now / int64(fc.Window)
		e, ok := c.cache[k]
		if !ok {
			if len(c.cache) >= c.opts.MaxCached {
				continue // Allow caps the user: nowhere to keep its count
			}
			// Used now: Allow keeps it while the decisions consult it;
			// one for a campaign they never do is swept within a minute.
			e = &cached{used: c.sweeps}
			c.cache[k] = e
		}
		if e.fetched != 0 && e.bucket == bucket && now-e.fetched <= int64(c.opts.Refresh) {
			continue
		}
		if off {
			skipped = true
			continue
		}
		if e.inflight != nil {
			if len(others) == 0 || others[len(others)-1] != e.inflight {
				others = append(others, e.inflight)
			}
			continue
		}
		if call == nil {
			call = &fetchCall{done: make(chan struct{})}
		}
		e.inflight = call
		mine = append(mine, pendingRead{e, k, fc.Window, bucket})
	}
	c.mu.Unlock()
	if skipped {
		c.waitSkipped.Add(1)
		return errBackoff
	}
	if call == nil && len(others) == 0 {
		return nil
	}
	defer func() {
		c.waits.Add(1)
		c.waitNanos.Add(int64(time.Since(start)))
	}()
	var err error
	if call != nil {
		err = c.readInto(ctx, call, mine, now)
	}
	for _, o := range others {
		select {
		case <-o.done:
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return err
		}
	}
	return err
}

// errBackoff is Warm's answer while waitBackoff runs.
var errBackoff = errors.New("redisledger: a read of frequency counts failed less than a second ago; not reading")

// pendingRead is an entry Warm reads.
type pendingRead struct {
	e      *cached
	k      cacheKey
	window time.Duration
	bucket int64
}

// readInto reads the counts of mine (two keys each: the current and the
// previous bucket) in one MGET bounded by ctx and Options.FetchWait,
// stores them in mine's entries and closes call.done.
func (c *Client) readInto(ctx context.Context, call *fetchCall, mine []pendingRead, now int64) error {
	keys := make([]string, 0, 2*len(mine))
	for _, p := range mine {
		keys = append(keys, c.bucketKey(p.k, p.window, p.bucket), c.bucketKey(p.k, p.window, p.bucket-1))
	}
	rctx, cancel := context.WithTimeout(ctx, c.opts.FetchWait)
	vals, err := c.rdb.MGet(rctx, keys...).Result()
	cancel()
	if err == nil && len(vals) != len(keys) {
		err = fmt.Errorf("redisledger: MGET of %d keys answered %d values", len(keys), len(vals))
	}
	c.reads.Add(1)
	c.mu.Lock()
	for i, p := range mine {
		e := p.e
		if err == nil && now >= e.fetched {
			e.count, e.fetched, e.bucket = sumCounts(vals[2*i:2*i+2]), now, p.bucket
		}
		if e.inflight == call {
			e.inflight = nil
		}
	}
	c.mu.Unlock()
	close(call.done)
	if err != nil {
		c.waitTimeouts.Add(1)
		if ctx.Err() == nil {
			// Redis failed within FetchWait, not the request's deadline.
			c.waitOff.Store(time.Now().Add(waitBackoff).UnixNano())
		}
		for _, p := range mine {
			c.fetchLater(p.k, p.window, now)
		}
	}
	return err
}

// fetchLater asks the background fetcher for k's count.
func (c *Client) fetchLater(k cacheKey, window time.Duration, now int64) {
	select {
	case c.fetch <- fetchReq{k, window, now}:
	default:
	}
}

// read returns k's count over the window: the current bucket plus the
// previous one.
func (c *Client) read(ctx context.Context, k cacheKey, window time.Duration, bucket int64) (int32, error) {
	vals, err := c.rdb.MGet(ctx, c.bucketKey(k, window, bucket), c.bucketKey(k, window, bucket-1)).Result()
	if err != nil {
		return 0, err
	}
	return sumCounts(vals), nil
}

// sumCounts adds MGET's answers (nil for a missing key).
func sumCounts(vals []any) int32 {
	var n int64
	for _, v := range vals {
		if s, ok := v.(string); ok {
			x, _ := strconv.ParseInt(s, 10, 64)
			n += x
		}
	}
	return int32(min(n, 1<<30))
}

// Record implements ledger.FrequencyShare: it bumps the cached count at
// once and publishes the impression in the background.
func (c *Client) Record(campaign string, user uint64, bid uint64, window time.Duration, now int64) {
	k := cacheKey{campaign, user}
	c.mu.Lock()
	if e, ok := c.cache[k]; ok {
		e.count++
	}
	c.mu.Unlock()
	select {
	case c.rec <- recordReq{k, bid, window, now}:
	default:
		// Dropped: other nodes will not see this impression; this node
		// still counts it locally.
		c.lostQueue.Add(1)
	}
}

// recordScript counts one impression per bid id.
var recordScript = redis.NewScript(`
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
`)

func (c *Client) recorder() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case r := <-c.rec:
			bucket := r.now / int64(r.window)
			ttl := int64(2*r.window/time.Second) + 1
			ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
			err := recordScript.Run(ctx, c.rdb, []string{
				c.bucketKey(r.key, r.window, bucket),
				c.opts.Prefix + "{" + r.key.campaign + "}:bid:" + strconv.FormatUint(r.bid, 16),
			}, ttl, int64(c.opts.IdempotencyTTL/time.Second)).Err()
			cancel()
			c.observe("frequency record", err)
			if err != nil {
				c.lostRedis.Add(1)
			}
		}
	}
}

// sweepAge is how long an unused cache entry is kept: an entry no Allow
// used for sweepTicks sweeps (every sweepAge/sweepTicks) is dropped, so
// between three quarters of sweepAge and sweepAge after its last use.
const (
	sweepAge   = time.Minute
	sweepTicks = 4
)

// sweepBatch is how many cache entries the sweep visits per hold of the
// lock that Allow, in the decision, takes: a full cache (MaxCached, a
// million) walked in one hold stalled every decision for tens of
// milliseconds; a batch is tens of microseconds.
const sweepBatch = 1024

// testHookSweepYield, when set (tests), is called each time the sweep has
// let go of the lock between batches.
var testHookSweepYield func(*Client)

// sweep drops the cache entries no Allow used in the last sweepTicks
// sweeps. It lets go of the lock every sweepBatch entries: the walk goes
// on over the map as Allow and Warm change it meanwhile, which the
// language allows (an entry added then may be visited or not; one
// visited is judged under the lock, as it is then).
func (c *Client) sweep() {
	c.mu.Lock()
	c.sweeps++
	n := 0
	for k, e := range c.cache {
		if c.sweeps-e.used >= sweepTicks && e.inflight == nil {
			delete(c.cache, k)
		}
		if n++; n%sweepBatch == 0 {
			c.mu.Unlock()
			if testHookSweepYield != nil {
				testHookSweepYield(c)
			}
			c.mu.Lock()
		}
	}
	c.mu.Unlock()
}

func (c *Client) fetcher() {
	defer c.wg.Done()
	t := time.NewTicker(sweepAge / sweepTicks)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.sweep()
		case f := <-c.fetch:
			bucket := f.now / int64(f.window)
			ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
			n, err := c.read(ctx, f.key, f.window, bucket)
			cancel()
			c.observe("frequency read", err)
			if err != nil {
				continue // stays unknown (capped) or stale
			}
			c.mu.Lock()
			if e, ok := c.cache[f.key]; ok && f.now >= e.fetched {
				e.count, e.fetched, e.bucket = n, f.now, bucket
			}
			c.mu.Unlock()
		}
	}
}
