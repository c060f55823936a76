package bidder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/personad/personad/engine"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

// SegmentsConfig configures the personad.v1.Segments service. Start from
// DefaultSegmentsConfig; NewSegments copies it.
type SegmentsConfig struct {
	// Store is where uploads go; required.
	Store *segments.Store
	// Engine, when set, is whose live rules a Delete looks in for the
	// campaigns that name the deleted segment.
	Engine *engine.Engine
	// Logger gets one line per upload and delete (never a user id). nil
	// logs nothing.
	Logger *zap.Logger
	// Metrics is where the service registers its collectors. nil means a
	// private registry.
	Metrics prometheus.Registerer
	// MaxChunkIDs bounds the ids of one UploadChunk. Default 65536.
	MaxChunkIDs int
	// MaxUploadIDs bounds the ids of one upload, duplicates included: the
	// server holds an upload in memory until it commits. Default 100M.
	MaxUploadIDs uint64
	// MaxInFlightIDs bounds the ids of all uploads in flight together
	// (received, the upload not yet committed or ended), duplicates
	// included: each holds its ids, and its new users staged in the
	// dictionary (~24 bytes an id measured), until it ends, so that many
	// uploads at once, each within MaxUploadIDs, cannot make the server
	// hold more. A chunk that would pass it ends its upload with
	// RESOURCE_EXHAUSTED, nothing applied; the client may retry once other
	// uploads end. Default 200M: two uploads of MaxUploadIDs at once.
	MaxInFlightIDs uint64
	// UploadIdleTimeout ends an upload when the server has waited this
	// long for its client's next message (counted from when it began to
	// wait: a message must arrive whole within it, so a 64 MiB chunk needs
	// about 0.5 MB/s), with DEADLINE_EXCEEDED and nothing applied, so that
	// a stalled client does not hold a staged upload (its new users'
	// memory) until its connection drops. Time the server spends on the
	// upload's ids does not count. 0 turns it off. Default 2m.
	UploadIdleTimeout time.Duration
}

// DefaultSegmentsConfig returns the defaults documented on SegmentsConfig.
func DefaultSegmentsConfig() SegmentsConfig {
	return SegmentsConfig{MaxChunkIDs: 1 << 16, MaxUploadIDs: 100_000_000, MaxInFlightIDs: 200_000_000, UploadIdleTimeout: 2 * time.Minute}
}

// LimitError is a request over one of the server's limits: which limit,
// and by how much. It maps to RESOURCE_EXHAUSTED.
type LimitError struct {
	Path  string // the field over the limit, e.g. "upload.chunk[3].ids"
	Limit string // the limit's name and value, e.g. "65536 ids per chunk"
	Got   string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("bidder: %s: %s exceeds the limit of %s", e.Path, e.Got, e.Limit)
}

// Segments serves personad.v1.Segments over a segments.Store. It is safe
// for concurrent use. An upload runs on a goroutine of its own, which can
// outlive its handler when UploadIdleTimeout ends it: Close waits for
// those.
type Segments struct {
	personadpb.UnimplementedSegmentsServer

	cfg      SegmentsConfig
	store    *segments.Store
	log      *zap.Logger
	m        *segmentMetrics
	running  sync.WaitGroup // uploads' goroutines
	inFlight atomic.Uint64  // ids of the uploads in flight (MaxInFlightIDs)
}

// NewSegments returns the Segments service over cfg.Store.
func NewSegments(cfg SegmentsConfig) (*Segments, error) {
	if cfg.Store == nil {
		return nil, errors.New("bidder: segments config: Store is required")
	}
	if cfg.MaxChunkIDs <= 0 || cfg.MaxUploadIDs == 0 || cfg.MaxInFlightIDs == 0 {
		return nil, errors.New("bidder: segments config: MaxChunkIDs, MaxUploadIDs and MaxInFlightIDs must be > 0")
	}
	if cfg.UploadIdleTimeout < 0 {
		return nil, errors.New("bidder: segments config: UploadIdleTimeout must be >= 0")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	s := &Segments{cfg: cfg, store: cfg.Store, log: cfg.Logger.Named("segments")}
	m, err := newSegmentMetrics(cfg.Metrics, cfg.Store, &s.inFlight)
	if err != nil {
		return nil, err
	}
	s.m = m
	return s, nil
}

// uploadStats is what an upload's log line and metrics report.
type uploadStats struct {
	// header is the upload's header as the client sent it, nil until
	// one came (it may be refused).
	header       *personadpb.UploadHeader
	facet, value string // the header's, once accepted
	mode         segments.Mode
	keyed        bool
	chunks       int
	ids          uint64
	bytes        uint64
	held         uint64 // of ids, counted in Segments.inFlight
}

// sent is the log fields that name the segment and mode of an upload
// that failed: what its client sent, shown safely (see shown), since the
// header may be what was refused; none when no header came.
func (st *uploadStats) sent() []zap.Field {
	h := st.header
	if h == nil {
		return nil
	}
	mode := zap.String("mode", strings.ToLower(strings.TrimPrefix(h.Mode.String(), "UPLOAD_MODE_")))
	if st.mode != 0 {
		mode = zap.Stringer("mode", st.mode)
	}
	return []zap.Field{zap.String("facet", shown(h.Facet)), zap.String("value", shown(h.Value)), mode}
}

// shownLen is how many bytes of a client's text logs and errors show.
const shownLen = 64

// shown is s, a client's text, as a log line may show it: as it is when
// it is a name (1 to shownLen printable ASCII bytes, no space, quote or
// backslash), as every valid facet and value is; else quoted, see
// quoteCut.
func shown(s string) string {
	if s == "" || len(s) > shownLen {
		return quoteCut(s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' || c == '"' || c == '\\' {
			return quoteCut(s)
		}
	}
	return s
}

// quoteCut is s, a client's text, Go-quoted (control characters and
// invalid UTF-8 escaped) and cut to its first shownLen bytes, at a rune's
// start, with its length when cut: "cmo " or "vvv…"… (300 bytes).
func quoteCut(s string) string {
	if len(s) <= shownLen {
		return strconv.Quote(s)
	}
	cut := shownLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:cut]), len(s))
}

// Close waits for the goroutines of uploads that UploadIdleTimeout ended,
// each of which discards its upload once the stream's end reaches it. Call
// it after the gRPC server has stopped and before the store is closed.
func (s *Segments) Close() {
	s.running.Wait()
}

// Upload implements personad.v1.Segments/Upload.
//
// The upload runs on a goroutine of its own while this one watches it for
// idleness: only returning from the handler ends a stream that is waiting
// for a client's message. The ended upload's goroutine then sees its
// receive fail and discards what it staged.
func (s *Segments) Upload(stream personadpb.Segments_UploadServer) error {
	if s.cfg.UploadIdleTimeout == 0 {
		return s.serveUpload(stream, nil)
	}
	w := &idleWatch{start: time.Now()}
	done := make(chan uploadOutcome, 1)
	s.running.Go(func() {
		var o uploadOutcome
		defer func() {
			if o.panic != nil && w.ended() {
				// The handler has returned: nobody will panic with it.
				s.log.Error("panic in an upload the idle timeout had ended", zap.Stringer("panic", o.panic))
			}
			done <- o
		}()
		defer catchPanic(&o.panic)
		o.err = s.serveUpload(stream, w)
	})
	o := w.wait(done, s.cfg.UploadIdleTimeout)
	if o.panic != nil {
		panic(o.panic) // for the server's recovery, as if it happened here
	}
	return o.err
}

// uploadOutcome is how an upload's goroutine ended.
type uploadOutcome struct {
	err   error
	panic *goPanic
}

// goPanic carries a panic from a goroutine of an upload to the goroutine
// that panics with it again (the handler's, which the server's recovery
// watches: it logs the panic and answers INTERNAL), with the stack where
// it happened.
type goPanic struct {
	value any
	stack []byte
}

func (p *goPanic) String() string {
	return fmt.Sprintf("%v\n\npanicked in:\n%s", p.value, p.stack)
}

// catchPanic, deferred, stores the goroutine's panic, if any, into *p.
func catchPanic(p **goPanic) {
	if r := recover(); r != nil {
		if gp, ok := r.(*goPanic); ok {
			*p = gp // carried here already
			return
		}
		*p = &goPanic{value: r, stack: debug.Stack()}
	}
}

// idleWatch ends an upload whose client has sent nothing for too long.
// Its state settles the race between the watcher giving up and the
// upload committing: whichever moves it from watchReceiving first wins,
// so an ended upload never commits and a committing one is never ended.
type idleWatch struct {
	start time.Time
	// since is when the pending receive began, in nanoseconds after start
	// plus one; 0 while no receive is pending (the upload resolves ids or
	// commits, which is not the client's idleness).
	since atomic.Int64
	state atomic.Int32
}

// The states of an idleWatch.
const (
	watchReceiving = iota
	watchCommitting
	watchEnded
)

// recv receives the stream's next message into m, marking the wait as
// the client's. A message that is not valid protobuf is a
// *ValidationError naming the field in UploadRequest (recvLenient).
func (w *idleWatch) recv(stream personadpb.Segments_UploadServer, m *personadpb.UploadRequest) error {
	if w == nil {
		return recvLenient(stream, m)
	}
	w.since.Store(int64(time.Since(w.start)) + 1)
	err := recvLenient(stream, m)
	w.since.Store(0)
	return err
}

// inUpload names the field of a malformed message (recv's
// *ValidationError) from the upload: the header is the first message,
// chunk i a later one. Other errors are returned as they are.
func inUpload(err error, chunk int) error {
	var ve *ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	path, named := ve.Path, true
	if path == string((*personadpb.UploadRequest)(nil).ProtoReflect().Descriptor().Name()) {
		path, named = "header", false // the message itself
	}
	if chunk >= 0 {
		rest, ok := strings.CutPrefix(path, "chunk")
		if !named || !ok {
			rest = ""
		}
		path = fmt.Sprintf("chunk[%d]%s", chunk, rest)
	}
	return &ValidationError{Path: "upload." + path, Msg: ve.Msg}
}

// commit reports whether the upload may commit: false once the watcher
// has ended it.
func (w *idleWatch) commit() bool {
	return w == nil || w.state.CompareAndSwap(watchReceiving, watchCommitting)
}

// ended reports whether the watcher ended the upload.
func (w *idleWatch) ended() bool {
	return w != nil && w.state.Load() == watchEnded
}

// wait returns the upload's outcome from done, or the idle error once a
// receive has been pending for limit.
func (w *idleWatch) wait(done <-chan uploadOutcome, limit time.Duration) uploadOutcome {
	t := time.NewTimer(limit)
	defer t.Stop()
	for {
		select {
		case o := <-done:
			return o
		case <-t.C:
		}
		since := w.since.Load()
		if since == 0 {
			t.Reset(limit) // the server is busy with the upload
			continue
		}
		if idle := time.Since(w.start) - time.Duration(since-1); idle < limit {
			t.Reset(limit - idle)
			continue
		}
		if w.state.CompareAndSwap(watchReceiving, watchEnded) {
			return uploadOutcome{err: idleError(limit)}
		}
		return <-done // committing: its outcome stands
	}
}

// idleError is the status of an upload UploadIdleTimeout ended.
func idleError(limit time.Duration) error {
	return status.Errorf(codes.DeadlineExceeded,
		"bidder: upload: the client sent nothing for %s (the server's upload idle timeout); nothing applied", limit)
}

// serveUpload runs one upload and logs and counts its outcome; w, if not
// nil, watches it for idleness.
func (s *Segments) serveUpload(stream personadpb.Segments_UploadServer, w *idleWatch) error {
	start := time.Now()
	var st uploadStats
	res, err := s.upload(stream, w, &st)
	took := time.Since(start)
	if err != nil && w.ended() {
		err = idleError(s.cfg.UploadIdleTimeout) // the stream's end, as its client saw it
	}
	if err != nil {
		err = streamError(err)
		code := status.Code(err)
		outcome := s.m.upload(code)
		fields := append(st.sent(),
			zap.Int("chunks", st.chunks), zap.Uint64("ids", st.ids), zap.Duration("took", took),
			zap.Stringer("code", code), zap.Error(err))
		switch {
		case code == codes.Internal || code == codes.Unavailable:
			s.log.Error("upload failed; nothing applied", fields...)
		case outcome == "aborted": // the client's doing, or its idleness
			s.log.Info("upload aborted; nothing applied", fields...)
		default:
			s.log.Info("upload rejected; nothing applied", fields...)
		}
		return err
	}
	s.m.upload(codes.OK)
	if !res.Replayed { // a replay applied nothing: its ids are no ingest
		s.m.ids.Add(float64(st.ids))
		s.m.bytes.Add(float64(st.bytes))
		s.m.duration.Observe(took.Seconds())
	}
	s.log.Info("upload applied",
		zap.String("facet", st.facet), zap.String("value", st.value), zap.Stringer("mode", st.mode),
		zap.Bool("idempotency_key", st.keyed), zap.Bool("replayed", res.Replayed),
		zap.Int("chunks", st.chunks), zap.Uint64("ids", st.ids), zap.Uint64("bytes", st.bytes),
		zap.Uint64("added", res.Added), zap.Uint64("removed", res.Removed), zap.Uint64("unchanged", res.Unchanged),
		zap.Uint64("new_users", res.NewUsers), zap.Uint64("cardinality", res.Cardinality),
		zap.Uint64("version", res.Version), zap.Duration("took", took),
		zap.Float64("ids_per_second", float64(st.ids)/max(took.Seconds(), 1e-9)))
	return nil
}

// streamError is grpcError for a stream handler: errors the stream itself
// returned are already statuses and pass through.
func streamError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return grpcError(err)
}

// release gives back the ids st holds in s.inFlight.
func (s *Segments) release(st *uploadStats) {
	s.inFlight.Add(-st.held)
	st.held = 0
}

func (s *Segments) upload(stream personadpb.Segments_UploadServer, w *idleWatch, st *uploadStats) (segments.Result, error) {
	defer s.release(st) // runs last, once what the upload staged is discarded
	first := new(personadpb.UploadRequest)
	err := w.recv(stream, first)
	if errors.Is(err, io.EOF) {
		return segments.Result{}, &ValidationError{Path: "upload.header", Msg: "the stream is empty: the first message must hold the header"}
	}
	if err != nil {
		return segments.Result{}, inUpload(err, -1)
	}
	h := first.GetHeader()
	if h == nil {
		return segments.Result{}, &ValidationError{Path: "upload.header", Msg: "the first message must hold the header"}
	}
	st.header = h
	mode, err := checkHeader(h)
	if err != nil {
		return segments.Result{}, err
	}
	st.facet, st.value, st.mode, st.keyed = h.Facet, h.Value, mode, h.IdempotencyKey != ""
	u, err := s.store.NewUpload(h.Facet, h.Value, mode, h.IdempotencyKey)
	if err != nil {
		return segments.Result{}, err
	}
	defer u.Discard() // takes back what a failed upload staged; no-op after Commit
	u.Expect(min(h.ExpectedIds, s.cfg.MaxUploadIDs))
	// Receiving (and unmarshaling) the next chunk overlaps resolving this
	// one (interning its new ids): a worker goroutine, owned here, runs
	// AddMany; it never blocks on the network, so closing its channel and
	// waiting always ends it.
	type work struct {
		chunk  int
		ids    []string
		packed []byte // ids_packed, after ids
		first  uint64 // position of the chunk's first id in the upload, from 1
		req    *personadpb.UploadRequest
	}
	todo := make(chan work, 2)
	// Messages are received into requests the worker hands back once
	// resolved, so that their ids_packed memory is reused (uploadcodec.go):
	// one per chunk in todo, one resolving, one receiving.
	free := make(chan *personadpb.UploadRequest, cap(todo)+2)
	recycle := func(req *personadpb.UploadRequest) {
		select {
		case free <- req:
		default:
		}
	}
	// resolve interns w's ids; the resolved ids keep no reference to the
	// message's memory.
	resolve := func(w work) error {
		// badID names the invalid id at index j of field, the pos-th id of
		// the upload (from 1).
		badID := func(field string, j int, pos uint64, id string) error {
			return &ValidationError{
				Path: fmt.Sprintf("upload.chunk[%d].%s[%d]", w.chunk, field, j),
				Msg:  fmt.Sprintf("user id %d of the upload %s", pos, segments.UserIDProblem(id)),
			}
		}
		if j, err := u.AddMany(w.ids); err != nil {
			if errors.Is(err, segments.ErrBadUserID) {
				return badID("ids", j, w.first+uint64(j), w.ids[j])
			}
			return err // the dictionary is full
		}
		if len(w.packed) == 0 {
			return nil
		}
		if _, j, err := u.AddPacked(w.packed); err != nil {
			if errors.Is(err, segments.ErrBadUserID) {
				return badID("ids_packed", j, w.first+uint64(len(w.ids)+j), string(packedID(w.packed, j)))
			}
			return err
		}
		return nil
	}
	var addErr error
	var addPanic *goPanic // panicked with again below, once the worker is done
	var failed atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for w := range todo {
			if !failed.Load() {
				func() {
					defer catchPanic(&addPanic)
					addErr = resolve(w)
				}()
				if addErr != nil || addPanic != nil {
					failed.Store(true) // the rest is received and dropped
				}
			}
			recycle(w.req)
		}
	})
	next := func() *personadpb.UploadRequest {
		select {
		case req := <-free:
			return req
		default:
			return new(personadpb.UploadRequest)
		}
	}
	err = s.receive(stream, w, st, next, func(chunk int, req *personadpb.UploadRequest, first uint64) bool {
		c := req.GetChunk()
		todo <- work{chunk, c.Ids, c.IdsPacked, first, req}
		return !failed.Load()
	})
	close(todo)
	wg.Wait()
	if addPanic != nil {
		panic(addPanic)
	}
	if err == nil {
		err = addErr
	}
	if err != nil {
		return segments.Result{}, err
	}
	if err := stream.Context().Err(); err != nil {
		return segments.Result{}, err
	}
	if !w.commit() {
		return segments.Result{}, idleError(s.cfg.UploadIdleTimeout)
	}
	res, err := s.store.Commit(u)
	if err != nil {
		return segments.Result{}, err
	}
	s.release(st) // before the answer: a client that has it may upload again
	return res, stream.SendAndClose(&personadpb.UploadResponse{
		Ids: res.IDs, Added: res.Added, Removed: res.Removed, Unchanged: res.Unchanged,
		NewUsers: res.NewUsers, Cardinality: res.Cardinality, Version: res.Version, Replayed: res.Replayed,
	})
}

// receive reads an upload's chunks after the header, each into the
// message next returns, checking the limits, and hands each to add, until
// the client closes the stream (nil), add returns false (nil: the caller
// has the error), or an error.
func (s *Segments) receive(stream personadpb.Segments_UploadServer, w *idleWatch, st *uploadStats, next func() *personadpb.UploadRequest,
	add func(chunk int, req *personadpb.UploadRequest, first uint64) bool) error {
	for i := 0; ; i++ {
		req := next()
		err := w.recv(stream, req)
		if errors.Is(err, io.EOF) {
			return stream.Context().Err()
		}
		if err != nil {
			return inUpload(err, i) // malformed, or the stream broke: nothing applied
		}
		c := req.GetChunk()
		if c == nil {
			msg := "only the first message may hold a header; later ones hold chunks"
			if req.GetHeader() == nil {
				msg = "the message holds neither a chunk nor a header; every message after the header holds a chunk"
			}
			return &ValidationError{Path: fmt.Sprintf("upload.chunk[%d]", i), Msg: msg}
		}
		st.chunks++
		packed := countPacked(c.IdsPacked)
		if n := len(c.Ids) + packed; n > s.cfg.MaxChunkIDs {
			path := fmt.Sprintf("upload.chunk[%d].ids", i)
			if len(c.Ids) == 0 {
				path += "_packed"
			}
			return &LimitError{Path: path,
				Got: fmt.Sprintf("%d ids", n), Limit: fmt.Sprintf("%d ids per chunk (MaxChunkIDs)", s.cfg.MaxChunkIDs)}
		}
		n := uint64(len(c.Ids) + packed)
		if st.ids+n > s.cfg.MaxUploadIDs {
			return &LimitError{Path: "upload",
				Got: fmt.Sprintf("%d ids", st.ids+n), Limit: fmt.Sprintf("%d ids per upload (MaxUploadIDs)", s.cfg.MaxUploadIDs)}
		}
		if total := s.inFlight.Add(n); total > s.cfg.MaxInFlightIDs {
			s.inFlight.Add(-n)
			return &LimitError{Path: fmt.Sprintf("upload.chunk[%d]", i),
				Got:   fmt.Sprintf("%d ids in uploads in flight with this chunk's", total),
				Limit: fmt.Sprintf("%d ids in all uploads in flight (MaxInFlightIDs); retry once others end", s.cfg.MaxInFlightIDs)}
		}
		st.held += n
		for _, id := range c.Ids {
			st.bytes += uint64(len(id))
		}
		st.bytes += uint64(len(c.IdsPacked) - packed) // less the separators, at most one per id
		if len(c.IdsPacked) > 0 && c.IdsPacked[len(c.IdsPacked)-1] != '\n' {
			st.bytes++ // the last id had none
		}
		first := st.ids + 1
		st.ids += n
		if !add(i, req, first) {
			return nil
		}
	}
}

// countPacked is how many ids an ids_packed field holds: one per
// newline, plus a last one not followed by one.
func countPacked(p []byte) int {
	n := bytes.Count(p, []byte{'\n'})
	if len(p) > 0 && p[len(p)-1] != '\n' {
		n++
	}
	return n
}

// packedID returns id j (from 0) of an ids_packed field, for error
// messages.
func packedID(p []byte, j int) []byte {
	for ; j > 0; j-- {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return nil
		}
		p = p[i+1:]
	}
	if i := bytes.IndexByte(p, '\n'); i >= 0 {
		p = p[:i]
	}
	return p
}

// checkHeader validates an upload header, returning its mode.
func checkHeader(h *personadpb.UploadHeader) (segments.Mode, error) {
	if err := checkSegmentName("upload.header.", h.Facet, h.Value); err != nil {
		return 0, err
	}
	if len(h.IdempotencyKey) > 255 {
		return 0, &ValidationError{Path: "upload.header.idempotency_key", Msg: fmt.Sprintf("is %d bytes, the limit is 255", len(h.IdempotencyKey))}
	}
	switch h.Mode {
	case personadpb.UploadMode_UPLOAD_MODE_REPLACE:
		return segments.Replace, nil
	case personadpb.UploadMode_UPLOAD_MODE_ADD:
		return segments.Add, nil
	case personadpb.UploadMode_UPLOAD_MODE_REMOVE:
		return segments.Remove, nil
	case personadpb.UploadMode_UPLOAD_MODE_UNSPECIFIED:
		return 0, &ValidationError{Path: "upload.header.mode", Msg: "required: UPLOAD_MODE_REPLACE, UPLOAD_MODE_ADD or UPLOAD_MODE_REMOVE"}
	}
	return 0, &ValidationError{Path: "upload.header.mode", Msg: fmt.Sprintf("%d is not an upload mode: want UPLOAD_MODE_REPLACE, UPLOAD_MODE_ADD or UPLOAD_MODE_REMOVE", h.Mode)}
}

// checkSegmentName validates a facet and value, their paths starting with
// prefix.
func checkSegmentName(prefix, facet, value string) error {
	if !rules.IsFacet(facet) {
		return &ValidationError{Path: prefix + "facet", Msg: quoteCut(facet) + " must match [a-z][a-z0-9_]{0,31}"}
	}
	if !rules.IsValue(value) {
		return &ValidationError{Path: prefix + "value", Msg: quoteCut(value) + " must match [a-z0-9][a-z0-9._-]{0,63}"}
	}
	return nil
}

// List implements personad.v1.Segments/List.
func (s *Segments) List(_ context.Context, req *personadpb.ListRequest) (*personadpb.ListResponse, error) {
	if req.Facet != "" && !rules.IsFacet(req.Facet) {
		return nil, grpcError(&ValidationError{Path: "facet", Msg: quoteCut(req.Facet) + " must match [a-z][a-z0-9_]{0,31}"})
	}
	snap := s.store.Current()
	resp := &personadpb.ListResponse{Version: snap.Version(), Users: uint64(snap.Dict().Len())}
	for _, seg := range snap.Segments() {
		if req.Facet != "" && seg.Facet != req.Facet {
			continue
		}
		info := &personadpb.SegmentInfo{
			Facet: seg.Facet, Value: seg.Value,
			Cardinality: seg.Users.GetCardinality(),
			Version:     seg.Version,
			Bytes:       seg.Users.GetSizeInBytes(),
		}
		if !seg.Updated.IsZero() {
			info.Updated = timestamppb.New(seg.Updated)
		}
		resp.Segments = append(resp.Segments, info)
	}
	return resp, nil
}

// Lookup implements personad.v1.Segments/Lookup. It tests every segment:
// an admin call, not the bid path.
func (s *Segments) Lookup(_ context.Context, req *personadpb.LookupRequest) (*personadpb.LookupResponse, error) {
	if n := len(req.UserId); n == 0 || n > segments.MaxIDLen {
		return nil, grpcError(&ValidationError{Path: "user_id", Msg: fmt.Sprintf("is %d bytes; ids are 1 to %d bytes", n, segments.MaxIDLen)})
	}
	snap := s.store.Current()
	resp := &personadpb.LookupResponse{Version: snap.Version()}
	uid, ok := snap.User(req.UserId)
	if !ok {
		return resp, nil
	}
	resp.Found = true
	for _, seg := range snap.Segments() {
		if seg.Users.Contains(uid) {
			resp.Segments = append(resp.Segments, &personadpb.SegmentRef{Facet: seg.Facet, Value: seg.Value})
		}
	}
	return resp, nil
}

// Delete implements personad.v1.Segments/Delete.
func (s *Segments) Delete(_ context.Context, req *personadpb.DeleteRequest) (*personadpb.DeleteResponse, error) {
	start := time.Now()
	if err := checkSegmentName("", req.Facet, req.Value); err != nil {
		return nil, grpcError(err)
	}
	res, err := s.store.Delete(req.Facet, req.Value)
	if err != nil {
		s.log.Info("delete failed", zap.String("facet", req.Facet), zap.String("value", req.Value), zap.Error(err))
		return nil, grpcError(err)
	}
	resp := &personadpb.DeleteResponse{Removed: res.Removed, Version: res.Version}
	if s.cfg.Engine != nil {
		if r := s.cfg.Engine.Rules(); r != nil {
			n := r.Naming(engine.Fact{Facet: req.Facet, Value: req.Value})
			resp.CampaignsTargeting, resp.CampaignsExcluding, resp.CampaignsPersonalizing = n.Targeting, n.Excluding, n.Personalizing
			resp.CampaignsPaused, resp.RulesVersion = n.Paused, r.Version()
		}
	}
	s.log.Info("segment deleted", zap.String("facet", req.Facet), zap.String("value", req.Value),
		zap.Uint64("removed", res.Removed), zap.Uint64("version", res.Version),
		zap.Int("campaigns_targeting", len(resp.CampaignsTargeting)), zap.Int("campaigns_excluding", len(resp.CampaignsExcluding)),
		zap.Int("campaigns_personalizing", len(resp.CampaignsPersonalizing)), zap.String("rules_version", resp.RulesVersion),
		zap.Duration("took", time.Since(start)))
	return resp, nil
}

// segmentMetrics are the Segments service's collectors.
type segmentMetrics struct {
	uploads  *prometheus.CounterVec
	ids      prometheus.Counter
	bytes    prometheus.Counter
	duration prometheus.Histogram
}

func newSegmentMetrics(reg prometheus.Registerer, store *segments.Store, inFlight *atomic.Uint64) (*segmentMetrics, error) {
	m := &segmentMetrics{
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "personad_segment_uploads_total",
			Help: "Segment uploads by outcome: ok, invalid (bad input or over a limit), aborted (the stream broke, its client cancelled it, or it went idle for the upload idle timeout), failed (not durable, internal).",
		}, []string{"outcome"}),
		ids: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "personad_segment_upload_ids_total",
			Help: "User ids received in applied segment uploads, duplicates included (not in replays of an idempotency key, which apply nothing).",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "personad_segment_upload_id_bytes_total",
			Help: "Bytes of user ids received in applied segment uploads (not in replays of an idempotency key).",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "personad_segment_upload_duration_seconds",
			Help: "Time from an upload's first message to its acknowledgement, applied uploads only (not replays of an idempotency key).",
			// 1ms doubling to ~65s: from a handful of ids to tens of millions.
			Buckets: prometheus.ExponentialBuckets(1e-3, 2, 17),
		}),
	}
	for _, o := range []string{"ok", "invalid", "aborted", "failed"} {
		m.uploads.WithLabelValues(o)
	}
	version := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "personad_segments_version",
		Help: "Version of the segment snapshot decisions use.",
	}, func() float64 { return float64(store.Current().Version()) })
	count := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "personad_segments",
		Help: "Segments in the current snapshot.",
	}, func() float64 { return float64(store.Current().Len()) })
	users := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "personad_segment_users",
		Help: "Users in the segment store's dictionary.",
	}, func() float64 { return float64(store.Current().Dict().Len()) })
	mapped := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "personad_segment_dictionary_mapped_bytes",
		Help: "Memory the user dictionary holds outside the Go heap (not in the go_memstats figures), in bytes, arrays its growth replaced included until the next garbage collection.",
	}, func() float64 { return float64(segments.MappedBytes()) })
	inFlightIDs := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "personad_segment_upload_ids_in_flight",
		Help: "User ids received by the segment uploads in flight, not yet committed or ended (bounded by MaxInFlightIDs, 200M).",
	}, func() float64 { return float64(inFlight.Load()) })
	logFailing := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "personad_segments_log_failing",
		Help: "1 once the segment store's write-ahead log takes no more changes (a failed fsync: what reached the disk is unknown), until a restart; uploads and deletes are then refused, UNAVAILABLE, naming the file and the error. A write the disk refused (full, read-only) is cut back and is not this: the next upload may succeed.",
	}, func() float64 {
		if store.LogErr() != nil {
			return 1
		}
		return 0
	})
	for _, c := range []prometheus.Collector{m.uploads, m.ids, m.bytes, m.duration, version, count, users, mapped, inFlightIDs, logFailing} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// upload counts an upload by the outcome its status code means, and
// returns it.
func (m *segmentMetrics) upload(code codes.Code) string {
	o := "failed"
	switch code {
	case codes.OK:
		o = "ok"
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.ResourceExhausted:
		o = "invalid"
	case codes.Canceled, codes.DeadlineExceeded, codes.Aborted:
		o = "aborted"
	}
	m.uploads.WithLabelValues(o).Inc()
	return o
}
