package engine_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/personad/personad/engine"
	"github.com/personad/personad/segments"
)

// BenchmarkDecideDuringUpload measures the decision's latency while a
// large upload of new users runs in the same process (issue 3: decision
// p99 rises at most 20% while a 10M-id upload runs). The engine serves
// the benchmark world (PERSONAD_BENCH_WORLD) from a durable store (a log
// in a temporary directory, fsynced per commit, as personad's). Each
// iteration runs decisions at a steady rate (PERSONAD_BENCH_DECIDE_RPS,
// default 2,000 a second, open loop) for a steady window, then for as long
// as one upload of PERSONAD_BENCH_UPLOAD_IDS new ids takes (default 10M,
// in chunks of 65,536 packed ids as personactl sends them, into a segment
// the rules target), reporting each window's p50 and p99 of the decision
// (Decide's own time) and p99 of the response (from when the decision was
// due: it includes waiting for a CPU, and the timer's own lateness in both
// windows). The upload is the store's whole work for it (resolving and
// interning every chunk, the commit's bitmap and log record, the swap);
// the gRPC transport's part is not here. gc/upload counts the collections
// that ran during each upload.
//
//	PERSONAD_BENCH_WORLD=reference go test ./engine -run '^$' \
//	    -bench DecideDuringUpload -benchtime 1x -count 5
//
// PERSONAD_BENCH_CONTROL=memory replaces each upload with a control:
// for as long as one upload took (run first, unmeasured), the other core writes 8 bytes at random places in 512 MB,
// as an upload's table and arrays are written, and does nothing else. On
// a machine whose cores share their caches and memory bandwidth, the
// decisions' p99 rises with any such neighbour; the control tells that
// share from the upload's own.
func BenchmarkDecideDuringUpload(b *testing.B) {
	w := benchWorld(b)
	qs := queries(w, w.Config.Users, 1<<16)
	ids := envInt(b, "PERSONAD_BENCH_UPLOAD_IDS", 10_000_000)
	rps := envInt(b, "PERSONAD_BENCH_DECIDE_RPS", 2000)
	var scratch []uint64 // the control's memory
	switch c := os.Getenv("PERSONAD_BENCH_CONTROL"); c {
	case "":
	case "memory":
		scratch = make([]uint64, 512<<20/8)
		for i := range scratch { // faulted in now, not in a window
			scratch[i] = uint64(i)
		}
	default:
		b.Fatalf("PERSONAD_BENCH_CONTROL=%q: want memory or nothing", c)
	}

	store, err := segments.Open(segments.Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	store.Publish(w.Segments)
	e, err := engine.New(engine.DefaultConfig(), store)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	r, err := engine.Compile(w.Rules, "bench")
	if err != nil {
		b.Fatal(err)
	}
	e.SetRules(r)
	var d engine.Decision
	for i := range qs { // warm the persona cache and the pool
		e.Decide(context.Background(), &qs[i], &d)
	}
	clause := w.Rules.Campaigns[0].Targeting.All[0]
	facet, value := clause.Facet, clause.Any[0]

	// The chunks, built once: round r's ids are new ("b<r>-<n>").
	const chunkIDs = 1 << 16
	chunks := func(round int) [][]byte {
		var out [][]byte
		var c []byte
		for i := range ids {
			c = strconv.AppendInt(append(c, fmt.Sprintf("b%d-", round)...), int64(i), 10)
			c = append(c, '\n')
			if (i+1)%chunkIDs == 0 || i == ids-1 {
				out = append(out, c)
				c = nil
			}
		}
		return out
	}
	upload := func(round int, data [][]byte) {
		u, err := store.NewUpload(facet, value, segments.Add, "")
		if err != nil {
			b.Fatal(err)
		}
		u.Expect(uint64(ids))
		for _, c := range data {
			if _, _, err := u.AddPacked(c); err != nil {
				b.Fatal(err)
			}
		}
		res, err := store.Commit(u)
		if err != nil {
			b.Fatal(err)
		}
		if res.NewUsers != uint64(ids) {
			b.Fatalf("round %d: %d new users, want %d", round, res.NewUsers, ids)
		}
	}

	// decide runs decisions at rps until stop is closed, timing each call
	// and each response (from when it was due).
	decide := func(stop <-chan struct{}) []timing {
		lat := make([]timing, 0, 1<<16)
		var d engine.Decision
		every := time.Second / time.Duration(rps)
		next := time.Now()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return lat
			default:
			}
			if wait := time.Until(next); wait > 0 {
				time.Sleep(wait)
			}
			due := next
			next = next.Add(every)
			q := &qs[i&(len(qs)-1)]
			start := time.Now()
			e.Decide(context.Background(), q, &d)
			end := time.Now()
			lat = append(lat, timing{end.Sub(start), end.Sub(due)})
		}
	}

	// Each iteration: the persona cache warmed (a commit invalidates
	// every cached persona by version, so a window right after one would
	// measure the refill, not the upload), a steady window, the upload's
	// window (it ends with the commit), then a second after the commit,
	// reported on its own: the cache refilling.
	warm := func() {
		var d engine.Decision
		for i := range qs {
			e.Decide(context.Background(), &qs[i], &d)
		}
	}
	window := func(work func()) []timing {
		stop := make(chan struct{})
		var lat []timing
		var wg sync.WaitGroup
		wg.Go(func() { lat = decide(stop) })
		work()
		close(stop)
		wg.Wait()
		return lat
	}
	var steady, during, after []timing
	var moved int
	var busy time.Duration
	var cycles uint64       // collections during uploads
	took := 2 * time.Second // the steady window before the first upload
	round := 0
	if scratch != nil { // the control's windows last as long as an upload
		start := time.Now()
		upload(round, chunks(round))
		took = time.Since(start)
	}
	for b.Loop() {
		round++
		b.StopTimer()
		data := chunks(round)
		// Collect the building's garbage now: left to the collector, it
		// would be collected during the steady window, which would then
		// measure the benchmark's own allocations.
		runtime.GC()
		warm()
		b.StartTimer()
		steady = append(steady, window(func() { time.Sleep(took) })...)
		during = append(during, window(func() {
			start, c := time.Now(), gcCycles()
			if scratch != nil {
				scribble(scratch, took)
				cycles += gcCycles() - c
				return // took stays the unmeasured upload's
			}
			upload(round, data)
			took = time.Since(start)
			cycles += gcCycles() - c
		})...)
		after = append(after, window(func() { time.Sleep(time.Second) })...)
		moved += ids
		busy += took
	}
	call := func(t timing) time.Duration { return t.call }
	resp := func(t timing) time.Duration { return t.resp }
	p99s, p99u := percentile(steady, call, 0.99), percentile(during, call, 0.99)
	b.ReportMetric(percentile(steady, call, 0.50), "steady-p50-ns")
	b.ReportMetric(p99s, "steady-p99-ns")
	b.ReportMetric(percentile(during, call, 0.50), "upload-p50-ns")
	b.ReportMetric(p99u, "upload-p99-ns")
	b.ReportMetric(p99u/p99s, "p99-ratio")
	r99s, r99u := percentile(steady, resp, 0.99), percentile(during, resp, 0.99)
	b.ReportMetric(r99s, "steady-resp-p99-ns")
	b.ReportMetric(r99u, "upload-resp-p99-ns")
	b.ReportMetric(r99u/r99s, "resp-p99-ratio")
	b.ReportMetric(percentile(after, call, 0.99), "after-commit-p99-ns")
	b.ReportMetric(float64(moved)/busy.Seconds(), "ids/s")
	b.ReportMetric(float64(cycles)/float64(b.N), "gc/upload")
}

// scribble writes to random places in mem for d: the control of
// BenchmarkDecideDuringUpload.
func scribble(mem []uint64, d time.Duration) {
	x := uint64(88172645463325252)
	for end := time.Now().Add(d); time.Now().Before(end); {
		for range 4096 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			mem[x%uint64(len(mem))] = x
		}
	}
}

// gcCycles is how many collections this process has completed.
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// percentile is the p-quantile of one of ts's times, in nanoseconds.
func percentile(ts []timing, of func(timing) time.Duration, p float64) float64 {
	if len(ts) == 0 {
		return 0
	}
	lat := make([]time.Duration, len(ts))
	for i, t := range ts {
		lat[i] = of(t)
	}
	slices.Sort(lat)
	return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds())
}

// timing is one decision's own time (call) and its time from when it was
// due (resp).
type timing struct{ call, resp time.Duration }

// envInt is the integer in the environment variable name, or def.
func envInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}
