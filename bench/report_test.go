package bench

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// Latencies 1 … 1000 µs, recorded by several workers through their batches,
// give exact percentiles (3 significant figures are exact below 2048 µs).
func TestHistogramPercentiles(t *testing.T) {
	c := newCollector()
	var shards [3]*shard
	for i := range shards {
		shards[i] = c.shard()
	}
	now := time.Now()
	ok := &personadpb.BidResponse{Nbr: 8}
	for v := 1; v <= 1000; v++ {
		shards[v%3].record(now, time.Duration(v)*time.Microsecond, 0, ok, nil)
	}
	for _, s := range shards {
		s.flush(now)
	}
	got := summarize(c.lat)
	want := &Latency{Count: 1000, Min: 1, Mean: 500.5, P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("summary (-want +got):\n%s", d)
	}
}

func TestHistogramLargeValues(t *testing.T) {
	c := newCollector()
	s := c.shard()
	now := time.Now()
	for i := 0; i < 99; i++ {
		s.record(now, 10*time.Millisecond, 0, &personadpb.BidResponse{}, nil)
	}
	s.record(now, 2*time.Minute, 0, &personadpb.BidResponse{}, nil) // clamped to 60 s
	s.flush(now)
	got := summarize(c.lat)
	// 3 significant figures: within 0.1 % of the true value.
	if got.P50 < 9990 || got.P50 > 10010 || got.P99 < 9990 || got.P99 > 10010 {
		t.Errorf("p50 %d p99 %d, want 10000 ± 0.1%%", got.P50, got.P99)
	}
	if got.Max < 59_940_000 || got.Max > 60_060_000 {
		t.Errorf("max %d, want the 60 s clamp", got.Max)
	}
}

// A shard flushes on its own once its batch is full.
func TestShardFlushesWhenFull(t *testing.T) {
	c := newCollector()
	s := c.shard()
	now := s.last
	for i := 0; i < batchSize; i++ {
		s.record(now, time.Millisecond, -1, &personadpb.BidResponse{}, nil)
	}
	c.mu.Lock()
	n := c.lat.TotalCount()
	c.mu.Unlock()
	if n != batchSize {
		t.Errorf("collector holds %d, want a full batch %d merged", n, batchSize)
	}
}

func TestTallyOutcomes(t *testing.T) {
	c := newCollector()
	s := c.shard()
	now := time.Now()
	bid := &personadpb.BidResponse{Seatbid: []*personadpb.SeatBid{{Bid: []*personadpb.Bid{{}, {}}}}}
	s.record(now, time.Millisecond, 0, bid, nil)
	s.record(now, time.Millisecond, 0, &personadpb.BidResponse{Nbr: 8}, nil)
	s.record(now, time.Millisecond, 0, &personadpb.BidResponse{Nbr: 8}, nil)
	s.record(now, time.Millisecond, 0, &personadpb.BidResponse{Nbr: 2}, nil)
	s.record(now, 3*time.Millisecond, 2*time.Millisecond, nil, status.Error(codes.DeadlineExceeded, "late"))
	s.record(now, time.Microsecond, 0, nil, status.Error(codes.Unavailable, "down"))
	s.record(now, time.Microsecond, 0, nil, errors.New("not a status"))
	s.flush(now)
	// The first refusal of each kind keeps its message, field path and
	// all, in the report: across batches, the earliest.
	s.record(now, time.Microsecond, 0, nil, status.Error(codes.InvalidArgument, "bidder: imp[0].banner.h: must be > 0"))
	s.record(now, time.Microsecond, 0, nil, &HTTPStatusError{Status: 400, Msg: "bidder: imp[0].id: required"})
	s.flush(now)
	s.record(now, time.Microsecond, 0, nil, status.Error(codes.InvalidArgument, "bidder: id: required"))
	s.flush(now)

	r := newReport("open", &Target{addr: "x"}, Options{}, c, 2*time.Second)
	r.Sent = 10
	r.Dropped = 1
	r.finish()
	if r.Completed != 10 || r.OK != 4 || r.Bids != 2 || r.NoBid != 3 || r.Late != 1 {
		t.Errorf("completed %d ok %d bids %d nobid %d late %d, want 10 4 2 3 1", r.Completed, r.OK, r.Bids, r.NoBid, r.Late)
	}
	if d := cmp.Diff(map[string]string{
		"DeadlineExceeded": "late", "Unavailable": "down", "Unknown": "not a status",
		"InvalidArgument": "bidder: imp[0].banner.h: must be > 0", "HTTP 400": "bidder: imp[0].id: required",
	}, r.ErrorSamples); d != "" {
		t.Errorf("first failures (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]int64{"8": 2, "2": 1}, r.NoBids); d != "" {
		t.Errorf("no-bids by nbr (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]int64{"DeadlineExceeded": 1, "Unavailable": 1, "Unknown": 1, "InvalidArgument": 2, "HTTP 400": 1}, r.Errors); d != "" {
		t.Errorf("errors by code (-want +got):\n%s", d)
	}
	// Answers and deadline expiries are timed; fast failures are not.
	// 3000 µs is reported as the top of its bucket: 3001 (resolution 2 µs
	// between 2048 and 4095 at 3 significant figures).
	if r.Latency.Count != 5 || r.Latency.Max != 3001 {
		t.Errorf("latency count %d max %d, want 5 and 3001", r.Latency.Count, r.Latency.Max)
	}
	if r.Achieved != 2 || r.SendRate != 5 {
		t.Errorf("achieved %v send %v, want 2 and 5", r.Achieved, r.SendRate)
	}
	if got, want := r.ErrorRate(), 7.0/11; got != want {
		t.Errorf("error rate %v, want %v", got, want)
	}
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if len(r.Warnings) != 2 {
		t.Errorf("warnings %q, want late sends and drops", r.Warnings)
	}
	for _, want := range []string{"p99.9", "nbr 8 (unmatched user) 2", "DeadlineExceeded 1", "dropped 1", "achieved 2.0/s", "warning",
		"first InvalidArgument: bidder: imp[0].banner.h: must be > 0\n"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestCompare(t *testing.T) {
	r := &Report{Achieved: 8000, Latency: Latency{P50: 300, P99: 1200, P999: 3000}}
	b := &Report{Achieved: 10000, Latency: Latency{P50: 100, P99: 400, P999: 1000}}
	r.Compare(b)
	want := &Ratio{Throughput: 0.8, P50: 3, P99: 3, P999: 3}
	if d := cmp.Diff(want, r.Ratio); d != "" {
		t.Errorf("ratio (-want +got):\n%s", d)
	}
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "throughput 0.80×") {
		t.Errorf("text lacks the ratio:\n%s", buf.String())
	}
}

func TestParseStatCPU(t *testing.T) {
	// Field 2 has spaces and a ')'; utime 250 and stime 50 ticks.
	line := "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0"
	got, err := parseStatCPU(line)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want {
		t.Errorf("cpu %v, want %v", got, want)
	}
	if _, err := parseStatCPU("garbage"); err == nil {
		t.Error("garbage parsed")
	}
	self, err := ProcessCPU(os.Getpid())
	if err != nil || self < 0 {
		t.Errorf("own cpu %v, %v", self, err)
	}
}

func TestScanListenInodes(t *testing.T) {
	const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0
   1: 0100007F:2382 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1 0 100 0 0 10 0
`
	got := map[string]bool{}
	if err := scanListenInodes(bufio.NewScanner(strings.NewReader(tcp)), 9090, got); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(map[string]bool{"111": true}, got); d != "" {
		t.Errorf("inodes (-want +got):\n%s", d)
	}
}

func TestListeningPIDFindsThisProcess(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	pid, err := ListeningPID(lis.Addr().String())
	if err != nil {
		if runtime.GOOS != "linux" {
			t.Skipf("no /proc socket view on %s: %v", runtime.GOOS, err)
		}
		t.Fatal(err)
	}
	if pid != os.Getpid() {
		t.Errorf("pid %d, want this process %d", pid, os.Getpid())
	}
	if _, err := ListeningPID("192.0.2.1:9090"); err == nil {
		t.Error("a remote address resolved to a pid")
	}
}
