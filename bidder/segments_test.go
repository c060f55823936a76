package bidder

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/personad/personad/engine"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/segments"
)

// segHarness serves Bidder and Segments over bufconn, on a durable store
// in a temp dir, with the persona cache on (as personad runs).
type segHarness struct {
	store *segments.Store
	conn  *grpc.ClientConn
	seg   personadpb.SegmentsClient
	bid   personadpb.BidderClient
	reg   *prometheus.Registry
}

// uploads is personad_segment_uploads_total{outcome}.
func (h *segHarness) uploads(outcome string) float64 {
	mfs, err := h.reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "personad_segment_uploads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// newSegHarness serves a Segments service, configured by opts, over a new
// store.
func newSegHarness(tb testing.TB, logger *zap.Logger, opts ...func(*SegmentsConfig)) *segHarness {
	tb.Helper()
	store, err := segments.Open(segments.Config{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	eng, err := engine.New(engine.DefaultConfig(), store)
	if err != nil {
		tb.Fatal(err)
	}
	if t, ok := tb.(*testing.T); ok {
		eng.SetRules(compileRules(t, testRules))
	}
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Engine, cfg.Logger, cfg.Metrics = eng, logger, reg
	srv, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	scfg := DefaultSegmentsConfig()
	scfg.Store, scfg.Logger, scfg.Metrics = store, logger, reg
	for _, o := range opts {
		o(&scfg)
	}
	ss, err := NewSegments(scfg)
	if err != nil {
		tb.Fatal(err)
	}
	gs := srv.GRPCServer()
	RegisterSegments(gs, ss)
	conn, stop := serveBufconn(tb, gs, 4<<20)
	tb.Cleanup(func() {
		stop()
		ss.Close()
		eng.Close()
		store.Close()
	})
	return &segHarness{store: store, conn: conn, seg: personadpb.NewSegmentsClient(conn), bid: personadpb.NewBidderClient(conn), reg: reg}
}

func header(facet, value string, mode personadpb.UploadMode, key string) *personadpb.UploadRequest {
	return &personadpb.UploadRequest{Msg: &personadpb.UploadRequest_Header{Header: &personadpb.UploadHeader{
		Facet: facet, Value: value, Mode: mode, IdempotencyKey: key,
	}}}
}

func chunk(ids ...string) *personadpb.UploadRequest {
	return &personadpb.UploadRequest{Msg: &personadpb.UploadRequest_Chunk{Chunk: &personadpb.UploadChunk{Ids: ids}}}
}

// packed is a chunk of ids in ids_packed.
func packed(p string) *personadpb.UploadRequest {
	return both(nil, p)
}

// both is a chunk of ids in both fields.
func both(ids []string, p string) *personadpb.UploadRequest {
	return &personadpb.UploadRequest{Msg: &personadpb.UploadRequest_Chunk{Chunk: &personadpb.UploadChunk{Ids: ids, IdsPacked: []byte(p)}}}
}

// send streams msgs as one upload and returns the server's answer.
func (h *segHarness) send(ctx context.Context, msgs ...*personadpb.UploadRequest) (*personadpb.UploadResponse, error) {
	stream, err := h.seg.Upload(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break // the status comes with CloseAndRecv
		}
	}
	return stream.CloseAndRecv()
}

var (
	modeAdd     = personadpb.UploadMode_UPLOAD_MODE_ADD
	modeRemove  = personadpb.UploadMode_UPLOAD_MODE_REMOVE
	modeReplace = personadpb.UploadMode_UPLOAD_MODE_REPLACE
)

func TestSegmentsService(t *testing.T) {
	h := newSegHarness(t, zaptest.NewLogger(t))
	ctx := t.Context()
	resp, err := h.send(ctx, header("title", "cmo", modeAdd, ""), chunk("u1", "u2"), chunk("u2", "u3"))
	if err != nil {
		t.Fatal(err)
	}
	want := &personadpb.UploadResponse{Ids: 4, Added: 3, NewUsers: 3, Cardinality: 3, Version: 1}
	if d := cmp.Diff(want, resp, protocmp.Transform()); d != "" {
		t.Errorf("Upload (-want +got):\n%s", d)
	}
	if _, err := h.send(ctx, header("industry", "fintech", modeReplace, ""), chunk("u3", "u4")); err != nil {
		t.Fatal(err)
	}
	resp, err = h.send(ctx, header("title", "cmo", modeRemove, ""), chunk("u1", "nobody"))
	if err != nil || resp.Removed != 1 || resp.Cardinality != 2 {
		t.Errorf("remove: %v, %v; want 1 removed, 2 left", resp, err)
	}

	list, err := h.seg.List(ctx, &personadpb.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range list.Segments {
		got = append(got, fmt.Sprintf("%s:%s n=%d v=%d bytes>0=%t updated=%t", s.Facet, s.Value, s.Cardinality, s.Version, s.Bytes > 0, s.Updated != nil))
	}
	if d := cmp.Diff([]string{"industry:fintech n=2 v=2 bytes>0=true updated=true", "title:cmo n=2 v=3 bytes>0=true updated=true"}, got); d != "" {
		t.Errorf("List (-want +got):\n%s", d)
	}
	if list.Version != 3 || list.Users != 4 {
		t.Errorf("List version %d users %d, want 3 and 4", list.Version, list.Users)
	}
	if only, _ := h.seg.List(ctx, &personadpb.ListRequest{Facet: "industry"}); len(only.GetSegments()) != 1 {
		t.Errorf("List(facet industry) = %v, want 1 segment", only)
	}

	lk, err := h.seg.Lookup(ctx, &personadpb.LookupRequest{UserId: "u3"})
	if err != nil {
		t.Fatal(err)
	}
	wantLk := &personadpb.LookupResponse{Found: true, Version: 3, Segments: []*personadpb.SegmentRef{
		{Facet: "industry", Value: "fintech"}, {Facet: "title", Value: "cmo"}}}
	if d := cmp.Diff(wantLk, lk, protocmp.Transform()); d != "" {
		t.Errorf("Lookup (-want +got):\n%s", d)
	}
	if lk, _ := h.seg.Lookup(ctx, &personadpb.LookupRequest{UserId: "nobody"}); lk.GetFound() {
		t.Error("Lookup(nobody) found")
	}

	del, err := h.seg.Delete(ctx, &personadpb.DeleteRequest{Facet: "industry", Value: "fintech"})
	if err != nil || del.Removed != 2 || del.Version != 4 {
		t.Errorf("Delete = %v, %v; want 2 removed at version 4", del, err)
	}
	_, err = h.seg.Delete(ctx, &personadpb.DeleteRequest{Facet: "industry", Value: "fintech"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("second Delete: %v, want NOT_FOUND", err)
	}

	// Idempotency keys.
	first, err := h.send(ctx, header("title", "cfo", modeAdd, "batch-7"), chunk("u9"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := h.send(ctx, header("title", "cfo", modeAdd, "batch-7"), chunk("u9"))
	if err != nil || !again.Replayed || again.Version != first.Version {
		t.Errorf("repeat with key: %v, %v; want the first answer replayed", again, err)
	}
	_, err = h.send(ctx, header("title", "cmo", modeAdd, "batch-7"), chunk("u9"))
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("key reused for another segment: %v, want FAILED_PRECONDITION", err)
	}

	if n, err := testutil.GatherAndCount(h.reg, "personad_segment_uploads_total"); err != nil || n != 4 {
		t.Errorf("personad_segment_uploads_total has %d series (%v), want 4 outcomes", n, err)
	}
	for _, o := range []struct {
		outcome string
		want    float64
	}{{"ok", 5}, {"invalid", 1}} {
		mfs, _ := h.reg.Gather()
		var got float64
		for _, mf := range mfs {
			if mf.GetName() == "personad_segment_uploads_total" {
				for _, m := range mf.Metric {
					if m.Label[0].GetValue() == o.outcome {
						got = m.Counter.GetValue()
					}
				}
			}
		}
		if got != o.want {
			t.Errorf("uploads %s = %v, want %v", o.outcome, got, o.want)
		}
	}
}

// TestUploadErrors: every kind of bad upload gets its code and a message
// naming the field, and changes nothing.
func TestUploadErrors(t *testing.T) {
	h := newSegHarness(t, zaptest.NewLogger(t))
	ctx := t.Context()
	big := make([]string, 65537)
	for i := range big {
		big[i] = "x"
	}
	for _, tc := range []struct {
		name string
		msgs []*personadpb.UploadRequest
		code codes.Code
		msg  string
	}{
		{"empty stream", nil, codes.InvalidArgument, "bidder: upload.header: the stream is empty"},
		{"chunk first", []*personadpb.UploadRequest{chunk("u1")}, codes.InvalidArgument, "bidder: upload.header: the first message must hold the header"},
		{"bad facet", []*personadpb.UploadRequest{header("Title", "cmo", modeAdd, "")}, codes.InvalidArgument, `bidder: upload.header.facet: "Title" must match`},
		{"bad value", []*personadpb.UploadRequest{header("title", "-cmo", modeAdd, "")}, codes.InvalidArgument, `bidder: upload.header.value: "-cmo" must match`},
		{"no mode", []*personadpb.UploadRequest{header("title", "cmo", 0, "")}, codes.InvalidArgument, "bidder: upload.header.mode: required"},
		{"unknown mode", []*personadpb.UploadRequest{header("title", "cmo", 99, "")}, codes.InvalidArgument, "bidder: upload.header.mode: 99 is not an upload mode: want UPLOAD_MODE_REPLACE"},
		{"two headers", []*personadpb.UploadRequest{header("title", "cmo", modeAdd, ""), chunk("u1"), header("title", "cmo", modeAdd, "")}, codes.InvalidArgument, "bidder: upload.chunk[1]: only the first message may hold a header"},
		{"empty message", []*personadpb.UploadRequest{header("title", "cmo", modeAdd, ""), chunk("u1"), {}}, codes.InvalidArgument, "bidder: upload.chunk[1]: the message holds neither a chunk nor a header"},
		{"empty id", []*personadpb.UploadRequest{header("title", "cmo", modeAdd, ""), chunk("u1", "u2"), chunk("u3", "")}, codes.InvalidArgument, "bidder: upload.chunk[1].ids[1]: user id 4 of the upload is 0 bytes; ids are 1 to 256 bytes"},
		{"long id", []*personadpb.UploadRequest{header("title", "cmo", modeAdd, ""), chunk(strings.Repeat("x", 257))}, codes.InvalidArgument, "bidder: upload.chunk[0].ids[0]: user id 1 of the upload is 257 bytes"},
		{"line break in an id", []*personadpb.UploadRequest{header("title", "cmo", modeAdd, ""), chunk("u1", "u2\nu3")}, codes.InvalidArgument, "bidder: upload.chunk[0].ids[1]: user id 2 of the upload holds a line break (0x0a) as byte 3 of 5"},
		{"carriage return in a packed id", []*personadpb.UploadRequest{header("title", "cmo", modeAdd, ""), chunk("u1"), packed("u2\r\nu3\r\n")}, codes.InvalidArgument, "bidder: upload.chunk[1].ids_packed[0]: user id 2 of the upload holds a carriage return (0x0d) as byte 3 of 3"},
		{"DEL in an id", []*personadpb.UploadRequest{header("title", "cmo", modeAdd, ""), chunk("u1", "0123456789\x7f")}, codes.InvalidArgument, "bidder: upload.chunk[0].ids[1]: user id 2 of the upload holds the control character 0x7f as byte 11 of 11"},
		{"line break in a removed id", []*personadpb.UploadRequest{header("title", "cmo", modeRemove, ""), chunk("u2\nu3")}, codes.InvalidArgument, "bidder: upload.chunk[0].ids[0]: user id 1 of the upload holds a line break"},
		{"big chunk", []*personadpb.UploadRequest{header("title", "cmo", modeAdd, ""), chunk(big...)}, codes.ResourceExhausted, "bidder: upload.chunk[0].ids: 65537 ids exceeds the limit of 65536 ids per chunk (MaxChunkIDs)"},
		{"empty packed id", []*personadpb.UploadRequest{header("title", "cmo", modeAdd, ""), chunk("u1"), packed("u2\n\nu3")}, codes.InvalidArgument, "bidder: upload.chunk[1].ids_packed[1]: user id 3 of the upload is 0 bytes; ids are 1 to 256 bytes"},
		{"long packed id", []*personadpb.UploadRequest{header("title", "cmo", modeAdd, ""), packed("u1\n" + strings.Repeat("x", 257) + "\n")}, codes.InvalidArgument, "bidder: upload.chunk[0].ids_packed[1]: user id 2 of the upload is 257 bytes"},
		{"big packed chunk", []*personadpb.UploadRequest{header("title", "cmo", modeAdd, ""), packed(strings.Repeat("x\n", 65537))}, codes.ResourceExhausted, "bidder: upload.chunk[0].ids_packed: 65537 ids exceeds the limit of 65536 ids per chunk (MaxChunkIDs)"},
		{"big mixed chunk", []*personadpb.UploadRequest{header("title", "cmo", modeAdd, ""), both(big[:65000], strings.Repeat("x\n", 536)+"x")}, codes.ResourceExhausted, "bidder: upload.chunk[0].ids: 65537 ids exceeds the limit of 65536 ids per chunk (MaxChunkIDs)"},
		{"remove from nothing", []*personadpb.UploadRequest{header("title", "cmo", modeRemove, ""), chunk("u1")}, codes.NotFound, "segments: no such segment: title:cmo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.send(ctx, tc.msgs...)
			if s, _ := status.FromError(err); s.Code() != tc.code || !strings.HasPrefix(s.Message(), tc.msg) {
				t.Errorf("got %v, want %v %q…", err, tc.code, tc.msg)
			}
			if v := h.store.Current().Version(); v != 0 {
				t.Errorf("store version %d after a failed upload, want 0", v)
			}
		})
	}
}

// TestUploadBrokenOff: a stream that is cancelled midway changes nothing,
// not even what the next upload publishes: the users the broken upload
// staged are taken back.
func TestUploadBrokenOff(t *testing.T) {
	h := newSegHarness(t, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := h.seg.Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(header("title", "cmo", modeAdd, ""))
	for i := range 10 {
		stream.Send(chunk(fmt.Sprint("u", i)))
	}
	cancel()
	// RecvMsg, not CloseAndRecv: a half-close could reach the server
	// before the reset and end the upload as complete.
	if err := stream.RecvMsg(new(personadpb.UploadResponse)); status.Code(err) != codes.Canceled {
		t.Errorf("RecvMsg after cancel: %v", err)
	}
	// The server may still be reading; nothing is ever applied. Its
	// handler has ended (and discarded the upload) once it counts the
	// upload aborted.
	deadline := time.Now().Add(10 * time.Second)
	for h.uploads("aborted") < 1 {
		if s := h.store.Current(); s.Version() != 0 || s.Dict().Len() != 0 {
			t.Fatalf("a cancelled upload changed the store: version %d, %d users", s.Version(), s.Dict().Len())
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never counted the cancelled upload as aborted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := h.store.Current(); s.Version() != 0 || s.Dict().Len() != 0 {
		t.Fatalf("a cancelled upload changed the store: version %d, %d users", s.Version(), s.Dict().Len())
	}
	resp, err := h.send(t.Context(), header("title", "cfo", modeAdd, ""), chunk("v1", "u3"))
	if err != nil {
		t.Fatal(err)
	}
	s := h.store.Current()
	if _, ok := s.User("u0"); ok || s.Dict().Len() != 2 || resp.NewUsers != 2 {
		t.Errorf("after the next upload: %d users, u0 known %t, %d new users; want 2 users (v1, u3), both new, u0 unknown",
			s.Dict().Len(), ok, resp.NewUsers)
	}
}

// TestUploadIdleTimeout: an upload whose client stops sending is ended
// after UploadIdleTimeout with DEADLINE_EXCEEDED, and the users it staged
// are taken back; a client that keeps sending, however slowly, is not.
// The harness's cleanup waits (Close) for the ended uploads' goroutines,
// and goleak checks none is left.
func TestUploadIdleTimeout(t *testing.T) {
	const idle = 500 * time.Millisecond
	h := newSegHarness(t, zaptest.NewLogger(t), func(c *SegmentsConfig) { c.UploadIdleTimeout = idle })
	for i, msgs := range [][]*personadpb.UploadRequest{
		nil, // not even a header
		{header("title", "cmo", modeAdd, "")},
		{header("title", "cmo", modeAdd, "k1"), chunk("u1", "u2"), packed("u3\nu4")},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second) // should the server never end it
		defer cancel()
		stream, err := h.seg.Upload(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if err := stream.Send(m); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		// RecvMsg, not CloseAndRecv: the stream stays open, idle.
		err = stream.RecvMsg(new(personadpb.UploadResponse))
		waited := time.Since(start)
		const want = "bidder: upload: the client sent nothing for 500ms (the server's upload idle timeout); nothing applied"
		if st, _ := status.FromError(err); st.Code() != codes.DeadlineExceeded || st.Message() != want {
			t.Fatalf("upload %d: idle stream ended with %v; want DeadlineExceeded %q", i, err, want)
		}
		if waited < idle/2 {
			t.Errorf("upload %d: ended after %v, before the idle timeout %v", i, waited, idle)
		}
		// The upload's goroutine counts it once it has seen the stream end
		// and discarded what it staged, after the client had its answer.
		for deadline := time.Now().Add(10 * time.Second); h.uploads("aborted") != float64(i+1); {
			if time.Now().After(deadline) {
				t.Fatalf("upload %d: %v uploads counted aborted; want %d", i, h.uploads("aborted"), i+1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// A client that pauses for less than the timeout between messages, for
	// longer than it in all, completes. Its ids are all new (NewUsers):
	// the ended uploads staged u1–u4 and took them back; none committed
	// (not replayed: the key k1 they held was never recorded).
	stream, err := h.seg.Upload(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	msgs := []*personadpb.UploadRequest{header("title", "cmo", modeAdd, "k1")}
	for i := range 8 {
		msgs = append(msgs, chunk(fmt.Sprint("u", i)))
	}
	for _, m := range msgs { // 0.8 s in all, 0.1 s between messages
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
		time.Sleep(idle / 5)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatalf("a slow but steady upload: %v", err)
	}
	if resp.Ids != 8 || resp.NewUsers != 8 || resp.Added != 8 || resp.Replayed {
		t.Errorf("slow upload: %+v; want 8 ids, all new and added, not replayed", resp)
	}
	if n := h.store.Current().Dict().Len(); n != 8 {
		t.Errorf("%d users after the slow upload; want 8", n)
	}
}

// TestUploadFailureLogs: the log line of an upload that failed names
// what its client sent, shown safely, the header included when it is
// what was refused (a name as it is; other text quoted, and cut to 64
// bytes, in the status's message too), and says whether the server
// rejected the upload or it was aborted (its client went idle, or
// cancelled it).
func TestUploadFailureLogs(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	h := newSegHarness(t, zap.New(core), func(c *SegmentsConfig) { c.UploadIdleTimeout = 300 * time.Millisecond })
	long := strings.Repeat("v", 300)
	for _, m := range []*personadpb.UploadRequest{
		header("Bad Facet\x1b", "cmo", modeAdd, ""),
		header("title", long, modeReplace, ""),
		header("title", "cmo", personadpb.UploadMode(9), ""),
	} {
		_, err := h.send(t.Context(), m)
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || len(st.Message()) > 150 {
			t.Errorf("header %.40v: %v; want InvalidArgument, in at most 150 bytes", m, err)
		}
	}
	// An upload whose client goes idle midway: aborted.
	stream, err := h.seg.Upload(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*personadpb.UploadRequest{header("title", "cmo", modeAdd, ""), chunk("u1")} {
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.RecvMsg(new(personadpb.UploadResponse)); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("an idle upload: %v; want DeadlineExceeded", err)
	}
	// Its goroutine logs it once it has seen the stream end, after the
	// client had its answer.
	for deadline := time.Now().Add(10 * time.Second); logs.Len() < 4 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	type line struct{ Msg, Facet, Value, Mode, Code string }
	var got []line
	for _, e := range logs.All() {
		f := e.ContextMap()
		str := func(k string) string { s, _ := f[k].(string); return s }
		got = append(got, line{e.Message, str("facet"), str("value"), str("mode"), str("code")})
	}
	want := []line{
		{"upload rejected; nothing applied", `"Bad Facet\x1b"`, "cmo", "add", "InvalidArgument"},
		{"upload rejected; nothing applied", "title", `"` + long[:64] + `"… (300 bytes)`, "replace", "InvalidArgument"},
		{"upload rejected; nothing applied", "title", "cmo", "9", "InvalidArgument"},
		{"upload aborted; nothing applied", "title", "cmo", "add", "DeadlineExceeded"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("log lines (-want +got):\n%s", d)
	}
}

func TestShown(t *testing.T) {
	for in, want := range map[string]string{
		"cmo": "cmo", "Title": "Title", "": `""`, "cmo ": `"cmo "`, `a"b`: `"a\"b"`, "a\x00b": `"a\x00b"`,
		"x\xffy": `"x\xffy"`, strings.Repeat("é", 40): `"` + strings.Repeat("é", 32) + `"… (80 bytes)`,
		strings.Repeat("a", 63) + "é": `"` + strings.Repeat("a", 63) + `"… (65 bytes)`,
	} {
		if got := shown(in); got != want {
			t.Errorf("shown(%q) = %s; want %s", in, got, want)
		}
	}
}

// TestIdleWatch: the watcher does not count time the server spends on the
// upload (no receive pending), never ends an upload that began to commit,
// and an upload it ended cannot commit.
func TestIdleWatch(t *testing.T) {
	const limit = 20 * time.Millisecond
	ok := uploadOutcome{err: fmt.Errorf("the upload's own outcome")}
	t.Run("busy", func(t *testing.T) {
		w := &idleWatch{start: time.Now()} // no receive pending
		done := make(chan uploadOutcome, 1)
		time.AfterFunc(10*limit, func() { done <- ok })
		if o := w.wait(done, limit); o != ok {
			t.Errorf("a busy upload ended with %v; want its own outcome", o.err)
		}
	})
	t.Run("committing", func(t *testing.T) {
		w := &idleWatch{start: time.Now().Add(-time.Hour)}
		w.since.Store(1) // a receive pending for an hour…
		if !w.commit() { // …that returned, and the upload commits
			t.Fatal("commit refused before the watcher ended the upload")
		}
		done := make(chan uploadOutcome, 1)
		time.AfterFunc(10*limit, func() { done <- ok })
		if o := w.wait(done, limit); o != ok {
			t.Errorf("a committing upload ended with %v; want its own outcome", o.err)
		}
	})
	t.Run("ended", func(t *testing.T) {
		w := &idleWatch{start: time.Now()}
		w.since.Store(1)
		o := w.wait(make(chan uploadOutcome), limit)
		if status.Code(o.err) != codes.DeadlineExceeded || !w.ended() {
			t.Fatalf("an idle upload ended with %v, ended %t; want DeadlineExceeded", o.err, w.ended())
		}
		if w.commit() {
			t.Error("an upload the watcher ended may commit")
		}
	})
}

// panicStream is an upload stream whose RecvMsg panics.
type panicStream struct {
	personadpb.Segments_UploadServer
	ctx context.Context
}

func (p panicStream) Context() context.Context { return p.ctx }
func (p panicStream) RecvMsg(any) error        { panic("boom in RecvMsg") }

// TestUploadPanic: a panic in an upload reaches the handler's goroutine,
// where the server's recovery (recoverStream) catches it, with or without
// the idle timeout (which runs the upload on a goroutine of its own), and
// names where it happened.
func TestUploadPanic(t *testing.T) {
	store, err := segments.Open(segments.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, idle := range []time.Duration{0, time.Minute} {
		cfg := DefaultSegmentsConfig()
		cfg.Store, cfg.UploadIdleTimeout = store, idle
		ss, err := NewSegments(cfg)
		if err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				r := recover()
				if msg := fmt.Sprint(r); !strings.Contains(msg, "boom in RecvMsg") || idle > 0 && !strings.Contains(msg, "panicStream.RecvMsg") {
					t.Errorf("idle timeout %v: recovered %q; want the panic, and with a timeout where it happened", idle, msg)
				}
			}()
			ss.Upload(panicStream{ctx: t.Context()}) //nolint:errcheck // it panics
		}()
		ss.Close()
	}
}

// TestUploadVisibleToBid: once Upload returns, the very next Bid sees the
// user's new persona (no stale cached persona), and a user removed from
// the segment no longer matches. Visibility is synchronous: the snapshot
// is published before the acknowledgement, so the bound the issue asks
// for (250 ms) is checked with a wide margin on the whole round trip.
func TestUploadVisibleToBid(t *testing.T) {
	h := newSegHarness(t, zaptest.NewLogger(t))
	ctx := t.Context()
	bid := func() string {
		resp, err := h.bid.Bid(ctx, request("planner-user-1"))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Seatbid) == 0 {
			return "no bid"
		}
		return resp.Seatbid[0].Bid[0].Crid
	}
	if got := bid(); got != "no bid" {
		t.Fatalf("before the upload: %s, want no bid", got)
	}
	var worst time.Duration
	for i := range 5 {
		start := time.Now()
		if _, err := h.send(ctx, header("title", "cmo", modeAdd, ""), chunk("planner-user-1")); err != nil {
			t.Fatal(err)
		}
		if got := bid(); got != "cr-acme-cmo" {
			t.Fatalf("round %d: right after the upload: %s, want cr-acme-cmo", i, got)
		}
		worst = max(worst, time.Since(start))
		if _, err := h.send(ctx, header("title", "cmo", modeRemove, ""), chunk("planner-user-1")); err != nil {
			t.Fatal(err)
		}
		if got := bid(); got != "no bid" {
			t.Fatalf("round %d: after removal: %s, want no bid", i, got)
		}
	}
	t.Logf("upload acknowledged to matched bid: worst %v", worst)
	if worst > 250*time.Millisecond {
		t.Errorf("upload to matched bid took %v, want < 250ms", worst)
	}
}

// BenchmarkUpload streams uploads through the gRPC service over bufconn
// (client marshal, server unmarshal, resolve, commit with fsync): ids/s
// for new ids and for ids the store knows.
func BenchmarkUpload(b *testing.B) {
	const n = 1 << 20
	for _, known := range []bool{false, true} {
		name := "new"
		if known {
			name = "known"
		}
		b.Run(name, func(b *testing.B) {
			h := newSegHarness(b, zap.NewNop())
			ctx := context.Background()
			round := 0
			ids := func(r int) [][]string {
				var chunks [][]string
				for c := 0; c < n; c += 32 << 10 {
					ch := make([]string, 0, 32<<10)
					for i := c; i < c+32<<10; i++ {
						ch = append(ch, fmt.Sprintf("r%03d-u%08d", r, i))
					}
					chunks = append(chunks, ch)
				}
				return chunks
			}
			pre := ids(0)
			upload := func(chunks [][]string) {
				msgs := []*personadpb.UploadRequest{header("title", fmt.Sprint("v", round%4), modeAdd, "")}
				for _, c := range chunks {
					msgs = append(msgs, chunk(c...))
				}
				if _, err := h.send(ctx, msgs...); err != nil {
					b.Fatal(err)
				}
			}
			if known {
				upload(pre)
			}
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				chunks := pre
				if !known {
					round++
					chunks = ids(round)
				}
				b.StartTimer()
				upload(chunks)
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "ids/s")
		})
	}
}

// TestUploadPackedRecycled: an upload of many packed chunks, received
// into recycled messages (uploadcodec.go), applies every chunk's own ids
// (a message recycled before its ids are resolved fails it, under -race
// at once; TestUploadCodecReuses checks that the memory is reused).
func TestUploadPackedRecycled(t *testing.T) {
	h := newSegHarness(t, zaptest.NewLogger(t))
	const chunks, per = 24, 1000
	msgs := []*personadpb.UploadRequest{header("title", "cmo", modeAdd, "")}
	for c := range chunks {
		var b strings.Builder
		for i := range per {
			fmt.Fprintf(&b, "c%02d-u%04d\n", c, i)
		}
		msgs = append(msgs, packed(b.String()))
	}
	resp, err := h.send(t.Context(), msgs...)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Added != chunks*per || resp.Cardinality != chunks*per {
		t.Fatalf("added %d, cardinality %d, want %d", resp.Added, resp.Cardinality, chunks*per)
	}
	for c := range chunks {
		for _, i := range []int{0, per / 2, per - 1} {
			id := fmt.Sprintf("c%02d-u%04d", c, i)
			look, err := h.seg.Lookup(t.Context(), &personadpb.LookupRequest{UserId: id})
			if err != nil || !look.Found || len(look.Segments) != 1 {
				t.Fatalf("Lookup(%s) = %v, %v; want found in title:cmo", id, look, err)
			}
		}
	}
}

// TestUploadPacked: ids in ids_packed count as ids in ids do, in one
// chunk with them or alone.
func TestUploadPacked(t *testing.T) {
	h := newSegHarness(t, zaptest.NewLogger(t))
	resp, err := h.send(t.Context(), header("title", "cmo", modeAdd, ""), both([]string{"u1"}, "u2\nu1\nu9\n"), packed("u10"))
	if err != nil {
		t.Fatal(err)
	}
	want := &personadpb.UploadResponse{Ids: 5, Added: 4, NewUsers: 4, Cardinality: 4, Version: 1}
	if d := cmp.Diff(want, resp, protocmp.Transform()); d != "" {
		t.Errorf("Upload (-want +got):\n%s", d)
	}
	look, err := h.seg.Lookup(t.Context(), &personadpb.LookupRequest{UserId: "u10"})
	if err != nil || !look.Found || len(look.Segments) != 1 {
		t.Errorf("Lookup(u10) = %v, %v; want found in title:cmo", look, err)
	}
}

// TestReplayMetrics: a replayed upload (its idempotency key remembered)
// counts as an ok upload but adds nothing to the applied uploads' ids,
// bytes and durations: nothing was applied, and a script's retries must
// not read as ingested ids.
func TestReplayMetrics(t *testing.T) {
	h := newSegHarness(t, zaptest.NewLogger(t))
	ctx := t.Context()
	applied := func() (ids, bytes, count float64) {
		mfs, err := h.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			switch m := mf.GetMetric()[0]; mf.GetName() {
			case "personad_segment_upload_ids_total":
				ids = m.GetCounter().GetValue()
			case "personad_segment_upload_id_bytes_total":
				bytes = m.GetCounter().GetValue()
			case "personad_segment_upload_duration_seconds":
				count = float64(m.GetHistogram().GetSampleCount())
			}
		}
		return ids, bytes, count
	}
	for i := range 2 {
		resp, err := h.send(ctx, header("title", "cmo", modeAdd, "k1"), packed("u1\nu22\nu333\n"))
		if err != nil || resp.Replayed != (i == 1) {
			t.Fatalf("upload %d: %v, %v; want replayed %t", i, resp, err, i == 1)
		}
	}
	if ids, bytes, count := applied(); ids != 3 || bytes != 9 || count != 1 {
		t.Errorf("after an upload and its replay: %v ids, %v bytes, %v durations; want 3, 9, 1 (the first upload's)", ids, bytes, count)
	}
	if ok := h.uploads("ok"); ok != 2 {
		t.Errorf("uploads ok = %v, want 2", ok)
	}
}

// TestUploadsInFlightBounded: each upload was bounded (MaxUploadIDs) but
// not how many ran at once, so a client could make the server hold any
// number of ids by opening uploads and not finishing them (10 uploads of
// 5M new ids, stalled: personad's RSS 337 MB to 1.5 GB). Now a chunk
// that would take the ids of all uploads in flight past MaxInFlightIDs
// ends its upload with RESOURCE_EXHAUSTED, nothing applied, and an
// upload's ids count until it commits or ends, however it ends.
func TestUploadsInFlightBounded(t *testing.T) {
	h := newSegHarness(t, zaptest.NewLogger(t), func(c *SegmentsConfig) { c.MaxInFlightIDs = 4 })
	ctx := t.Context()
	inFlight := func() float64 {
		t.Helper()
		mfs, err := h.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "personad_segment_upload_ids_in_flight" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no personad_segment_upload_ids_in_flight")
		return 0
	}
	// awaitInFlight waits for the server to count n ids in flight.
	awaitInFlight := func(n float64) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for inFlight() != n {
			if time.Now().After(deadline) {
				t.Fatalf("ids in flight: %v, want %v", inFlight(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}

	// An upload holding 3 ids, open.
	a, err := h.seg.Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*personadpb.UploadRequest{header("title", "a", modeAdd, ""), chunk("a1", "a2", "a3")} {
		if err := a.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	awaitInFlight(3)
	_, err = h.send(ctx, header("title", "b", modeAdd, ""), chunk("b1"), chunk("b2"))
	want := "bidder: upload.chunk[1]: 5 ids in uploads in flight with this chunk's exceeds the limit of 4 ids in all uploads in flight (MaxInFlightIDs); retry once others end"
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != want {
		t.Fatalf("second upload over the limit: %v, want ResourceExhausted %q", err, want)
	}
	if inFlight() != 3 {
		t.Errorf("after the refused upload, ids in flight %v, want 3", inFlight())
	}
	if resp, err := a.CloseAndRecv(); err != nil || resp.Cardinality != 3 {
		t.Fatalf("first upload: %v, %v; want 3 ids applied", resp, err)
	}
	if inFlight() != 0 {
		t.Errorf("after the first upload committed, ids in flight %v, want 0", inFlight())
	}

	// A cancelled upload gives its ids back too.
	cctx, cancel := context.WithCancel(ctx)
	c, err := h.seg.Upload(cctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*personadpb.UploadRequest{header("title", "c", modeAdd, ""), chunk("c1", "c2", "c3", "c4")} {
		if err := c.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	awaitInFlight(4)
	cancel()
	awaitInFlight(0)
	if resp, err := h.send(ctx, header("title", "b", modeAdd, ""), chunk("b1", "b2"), chunk("b3", "b4")); err != nil || resp.Cardinality != 4 {
		t.Fatalf("upload of 4 ids once none is in flight: %v, %v", resp, err)
	}
	list, err := h.seg.List(ctx, &personadpb.ListRequest{Facet: "title"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range list.Segments {
		got = append(got, fmt.Sprintf("%s=%d", s.Value, s.Cardinality))
	}
	if d := cmp.Diff([]string{"a=3", "b=4"}, got); d != "" {
		t.Errorf("segments (-want +got):\n%s", d)
	}
}
