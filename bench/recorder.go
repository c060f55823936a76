package bench

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// Histogram geometry: microsecond resolution up to 60 s, 3 significant
// figures.
const (
	histLowest  = 1
	histHighest = 60_000_000
	histSigFigs = 3

	// A worker merges into the shared collector when its batch is full or
	// this long after its last merge, whichever comes first.
	batchSize  = 512
	flushEvery = 250 * time.Millisecond

	numCodes = 17 // codes.OK … codes.Unauthenticated

	// lateAfter is the send lag past which an open-loop send counts as late.
	lateAfter = time.Millisecond
)

func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, histSigFigs)
}

func recordClamped(h *hdrhistogram.Histogram, us int64) {
	if us > histHighest {
		us = histHighest
	}
	if us < 0 {
		us = 0
	}
	_ = h.RecordValue(us) // cannot fail once clamped
}

// live holds the counters the progress line reads while a run goes on.
type live struct {
	sent, done, errs atomic.Int64
}

// collector merges the workers' batches. Its fields are guarded by mu; it is
// touched once per batch, never per request.
type collector struct {
	mu       sync.Mutex
	lat      *hdrhistogram.Histogram // measured latencies
	lag      *hdrhistogram.Histogram // intended → actual send (open loop)
	interval *hdrhistogram.Histogram // latencies since the last progress line
	tally
}

// tally is the count of outcomes of a set of requests.
type tally struct {
	n     int64 // requests that completed (answered or failed)
	ok    int64
	bids  int64
	nobid int64
	late  int64 // sent more than lateAfter after their due time
	codes [numCodes]int64
	http  map[int]int64 // failed HTTP answers by status (HTTPStatusError)
	nbr   map[int32]int64
	// first is the message of the first failure of each kind, by
	// errorKind: what the server said, with its field path, for the
	// report beside the counts. A shard takes one per kind per batch.
	first map[int]string
	// lastSent is when the latest request was actually sent (open loop).
	lastSent time.Time
}

func (t *tally) add(o *tally) {
	t.n += o.n
	t.ok += o.ok
	t.bids += o.bids
	t.nobid += o.nobid
	t.late += o.late
	if o.lastSent.After(t.lastSent) {
		t.lastSent = o.lastSent
	}
	for i, c := range o.codes {
		t.codes[i] += c
	}
	for k, v := range o.http {
		if t.http == nil {
			t.http = make(map[int]int64)
		}
		t.http[k] += v
	}
	for k, v := range o.nbr {
		if t.nbr == nil {
			t.nbr = make(map[int32]int64)
		}
		t.nbr[k] += v
	}
	for k, v := range o.first {
		if _, ok := t.first[k]; !ok {
			if t.first == nil {
				t.first = make(map[int]string)
			}
			t.first[k] = v
		}
	}
}

// errorKind keys tally.first: a gRPC code as itself, an HTTP status past
// the codes.
func errorKind(code codes.Code, httpStatus int) int {
	if httpStatus != 0 {
		return numCodes + httpStatus
	}
	return int(code)
}

// errorKindName is the Report.Errors key of an errorKind.
func errorKindName(k int) string {
	if k >= numCodes {
		return fmt.Sprintf("HTTP %d", k-numCodes)
	}
	return codes.Code(k).String()
}

func newCollector() *collector {
	return &collector{lat: newHistogram(), lag: newHistogram(), interval: newHistogram()}
}

// takeInterval returns the interval histogram's p99 and count and resets it.
func (c *collector) takeInterval() (p99 time.Duration, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n = c.interval.TotalCount()
	p99 = time.Duration(c.interval.ValueAtQuantile(99)) * time.Microsecond
	c.interval.Reset()
	return p99, n
}

// shard is one worker's private batch. Not safe for concurrent use.
type shard struct {
	c    *collector
	lat  []int64
	lag  []int64
	t    tally
	last time.Time
}

func (c *collector) shard() *shard {
	return &shard{c: c, lat: make([]int64, 0, batchSize), lag: make([]int64, 0, batchSize), last: time.Now()}
}

// record notes one measured request. lag < 0 means "not applicable" (closed
// loop). Latency is recorded for answers and for deadline expiries (so a
// timeout still lands in the tail); other failures are only counted, lest
// fast refusals flatter the percentiles.
func (s *shard) record(now time.Time, latency, lag time.Duration, resp *personadpb.BidResponse, err error) {
	s.t.n++
	code := codes.OK
	var he *HTTPStatusError
	switch {
	case err == nil:
	case errors.As(err, &he):
		// An HTTP error answer is counted by its status, not as a gRPC
		// code; like a gRPC refusal, its latency is not recorded.
		code = codes.Unknown
		if s.t.http == nil {
			s.t.http = make(map[int]int64)
		}
		s.t.http[he.Status]++
	default:
		code = status.Code(err)
	}
	switch {
	case he != nil: // counted above
	case int(code) < numCodes:
		s.t.codes[code]++
	default:
		code = codes.Unknown
		s.t.codes[codes.Unknown]++
	}
	if err != nil {
		k := 0
		if he != nil {
			k = errorKind(0, he.Status)
		} else {
			k = errorKind(code, 0)
		}
		if _, ok := s.t.first[k]; !ok {
			if s.t.first == nil {
				s.t.first = make(map[int]string)
			}
			msg := err.Error()
			if st, ok := status.FromError(err); ok && he == nil {
				msg = st.Message()
			} else if he != nil && he.Msg != "" {
				msg = he.Msg // the kind already says "HTTP 400"
			}
			s.t.first[k] = msg
		}
	}
	if code == codes.OK {
		s.t.ok++
		nb := 0
		for _, sb := range resp.GetSeatbid() {
			nb += len(sb.GetBid())
		}
		if nb == 0 {
			s.t.nobid++
			if s.t.nbr == nil {
				s.t.nbr = make(map[int32]int64)
			}
			s.t.nbr[resp.GetNbr()]++
		}
		s.t.bids += int64(nb)
	}
	if lag > lateAfter {
		s.t.late++
	}
	if lag >= 0 {
		if sent := now.Add(lag - latency); sent.After(s.t.lastSent) { // due + lag
			s.t.lastSent = sent
		}
	}
	if code == codes.OK || code == codes.DeadlineExceeded {
		s.lat = append(s.lat, latency.Microseconds())
		if lag >= 0 {
			s.lag = append(s.lag, lag.Microseconds())
		}
	}
	if len(s.lat) == cap(s.lat) || len(s.lag) == cap(s.lag) || now.Sub(s.last) >= flushEvery {
		s.flush(now)
	}
}

// flush merges the batch into the collector.
func (s *shard) flush(now time.Time) {
	s.last = now
	if s.t.n == 0 && len(s.lat) == 0 {
		return
	}
	c := s.c
	c.mu.Lock()
	for _, v := range s.lat {
		recordClamped(c.lat, v)
		recordClamped(c.interval, v)
	}
	for _, v := range s.lag {
		recordClamped(c.lag, v)
	}
	c.tally.add(&s.t)
	c.mu.Unlock()
	s.lat = s.lat[:0]
	s.lag = s.lag[:0]
	nbr, hs, first := s.t.nbr, s.t.http, s.t.first
	clear(nbr)
	clear(hs)
	clear(first)
	s.t = tally{nbr: nbr, http: hs, first: first}
}
