package redisledger

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

func (c *Client) bucketKey(k cacheKey, window time.Duration, bucket int64) string {
	return c.opts.Prefix + "{" + k.campaign + "}:freq:" + strconv.FormatUint(k.user, 16) +
		":" + strconv.FormatInt(int64(window/time.Second), 10) + ":" + strconv.FormatInt(bucket, 10)
}

// Allow implements ledger.FrequencyShare: the cached shared count, or
// false (and a background fetch) when the cache does not know the user or
// its count is older than Options.Refresh.
func (c *Client) Allow(campaign string, user uint64, local, max int32, window time.Duration, now int64) bool {
	k := cacheKey{campaign, user}
	c.mu.Lock()
	e, ok := c.cache[k]
	stale := !ok || (e.fetched != 0 && now-e.fetched > int64(c.opts.Refresh)) || (ok && e.bucket != now/int64(window))
	var count int32
	known := false
	if ok {
		count, known = e.count, e.fetched != 0
	}
	if !ok && len(c.cache) < c.opts.MaxCached {
		c.cache[k] = &cached{touched: time.Now()}
	}
	c.mu.Unlock()
	if stale {
		select {
		case c.fetch <- fetchReq{k, window, now}:
		default:
		}
	}
	return known && count < max
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
			if err != nil {
				c.lostRedis.Add(1)
			}
		}
	}
}

// sweepAge is how long an unused cache entry is kept.
const sweepAge = time.Minute

func (c *Client) fetcher() {
	defer c.wg.Done()
	t := time.NewTicker(sweepAge / 4)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.mu.Lock()
			for k, e := range c.cache {
				if time.Since(e.touched) > sweepAge {
					delete(c.cache, k)
				}
			}
			c.mu.Unlock()
		case f := <-c.fetch:
			bucket := f.now / int64(f.window)
			ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
			vals, err := c.rdb.MGet(ctx, c.bucketKey(f.key, f.window, bucket), c.bucketKey(f.key, f.window, bucket-1)).Result()
			cancel()
			if err != nil {
				continue // stays unknown or stale: capped
			}
			var n int64
			for _, v := range vals {
				if s, ok := v.(string); ok {
					x, _ := strconv.ParseInt(s, 10, 64)
					n += x
				}
			}
			c.mu.Lock()
			if e, ok := c.cache[f.key]; ok {
				e.count, e.fetched, e.bucket, e.touched = int32(min(n, 1<<30)), f.now, bucket, time.Now()
			}
			c.mu.Unlock()
		}
	}
}
