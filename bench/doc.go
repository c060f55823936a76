// Package bench is personabench's load-test harness: a seeded generator of
// realistic persona bid requests and the drivers that fire them at a
// personad.v1.Bidder server, over gRPC or OpenRTB JSON over HTTP, and
// report what an exchange would see.
//
// # Workload
//
// A [Workload] turns a seed into a deterministic sequence of OpenRTB-shaped
// requests: users drawn Zipf-like by index from the demo world's id space
// (u%08d), so persona cache hits and misses are real, plus a fraction of
// unknown users; a weighted mix of channels (site.ext.channel,
// app.ext.channel, or a domain/bundle that the rules' channel map resolves),
// banner sizes, floors, bcat/badv blocks, request-carried segments and tmax.
// [Workload.Pool] pre-builds the requests so generation is never measured.
//
// # Wires
//
// A [Target] sends over gRPC ([Dial]: personad.v1.Bidder/Bid on a pool of
// connections used round robin) or over personad's OpenRTB HTTP wire
// ([DialHTTP]: each request of the pool encoded once, before the run, as
// protojson and posted to POST /openrtb2/bid over keep-alive HTTP/1.1,
// idle connections kept for every request in flight, optionally with
// Accept-Encoding: gzip and the answers decoded). Outcomes count alike: a
// 200's BidResponse, a 204's nbr from its X-Personad-Nbr header; an error
// answer counts by its status ("HTTP 400"), a timeout as DeadlineExceeded
// (its latency in the tail), a failed connection as Unavailable, an
// answer whose JSON or gzip does not decode as Internal and an
// answer over 4 MB, as sent or decompressed (gRPC's default receive
// limit), as ResourceExhausted, read no further.
//
// # Drivers
//
// [RunOpen] is the open loop: request i is due at start + i/rate and is sent
// at that moment whether or not earlier requests have answered, by an idle
// worker or a freshly started one, up to a cap on requests in flight (sends
// beyond it are counted as dropped, never silently delayed). Latency is
// measured from the intended send time, so a stalled server shows up in the
// tail instead of slowing the load down (no coordinated omission). The lag
// between intended and actual send is reported separately so the
// scheduler's own error is visible.
//
// [RunClosed] is the closed loop: C workers each send, wait, and send again;
// it finds the throughput ceiling but hides queueing, so its latencies are
// measured from the actual send. [Sweep] runs rising open-loop rates until
// p99, errors or drops break a bound and reports the knee.
//
// # Baseline
//
// [StartBaseline] serves an empty-handler Bidder (it answers an empty
// BidResponse echoing the request id) on a loopback port, so a report can
// state its ratio to the transport floor measured by the same harness in the
// same run ([Report.Compare]). personabench runs it as a child process of
// its own ("baseline --serve-only"), so that it pays for its CPU and
// syscalls apart from the harness as a real server does.
//
// # Recording
//
// Each worker batches its latencies and outcomes locally and merges them into
// a shared HdrHistogram (1 µs to 60 s, 3 significant figures) under a mutex
// once per batch or every 250 ms, so there is no lock per request.
// [Report] carries p50/p90/p99/p99.9/max, achieved rate, errors by gRPC
// code (or HTTP status) with the first message of each, no-bids by nbr, bids, and — for a local server — its CPU seconds per
// request read from /proc/<pid>/stat.
package bench
