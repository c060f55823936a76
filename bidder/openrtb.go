package bidder

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// HTTP paths served by Handler.
const (
	PathBid     = "/openrtb2/bid"
	PathHealthz = "/healthz"
	PathMetrics = "/metrics"
)

// HeaderNbr carries the OpenRTB no-bid reason of a 204 No Content answer.
const HeaderNbr = "X-Personad-Nbr"

// headerOpenRTBVersion is OpenRTB's header naming the protocol version of
// a request or answer; every answer of PathBid carries openRTBVersion.
const (
	headerOpenRTBVersion = "X-Openrtb-Version"
	openRTBVersion       = "2.6"
)

// Header values of every bid answer, shared so that setting them does
// not allocate (http.Header.Set makes a one-element slice per call):
// they are assigned to canonical keys, and net/http only reads them (an
// Add would copy: each has no room to grow).
var (
	headerVersion2_6     = []string{openRTBVersion}
	headerJSON           = []string{"application/json"}
	headerGzip           = []string{"gzip"}
	headerAcceptEncoding = []string{"Accept-Encoding"}
)

var (
	// An exchange's request holds many OpenRTB fields personad does not
	// read (source, at, wseat, regs.ext, banner.mimes, …): ignored, as a
	// bidder must, rather than refused. A declared field of the wrong
	// type is still an error.
	unmarshalJSON = protojson.UnmarshalOptions{DiscardUnknown: true}
	marshalJSON   = protojson.MarshalOptions{UseProtoNames: true}
)

// Handler returns the HTTP mux:
//
//	POST /openrtb2/bid  OpenRTB 2.6 JSON bid request (the same JSON the gRPC
//	                    wire takes): 200 + BidResponse on a bid, 204 No
//	                    Content + X-Personad-Nbr on a no-bid (200 with the
//	                    BidResponse when ext.debug is set; tmax counts
//	                    from the handler's start, the body's reading and
//	                    decoding included), 400 + JSON error
//	                    naming the field on invalid input (its path also
//	                    when the JSON does not decode: a wrong type, a
//	                    duplicate field; OpenRTB fields personad does not
//	                    read are ignored), 413 over the size
//	                    limit (as sent, and decompressed), 415 for a
//	                    non-JSON Content-Type or a Content-Encoding
//	                    other than gzip or identity. Every answer, an
//	                    error too, carries X-Openrtb-Version: 2.6.
//	                    With Config.HTTPGzip (the default), a 200 answer
//	                    carries Vary: Accept-Encoding and, when the
//	                    request's Accept-Encoding accepts gzip (q-values
//	                    read: "gzip;q=0" refuses, "*" accepts) and the
//	                    answer has 256 bytes or more, is gzip with
//	                    Content-Encoding: gzip (OpenRTB 2.6 §2.4); a
//	                    204 has no body, and error answers (about 100
//	                    bytes) are never compressed. Another method
//	                    is 405 + Allow: POST + JSON error, with
//	                    X-Openrtb-Version too.
//	GET  /healthz       200 "ok" when rules are loaded and serving, else 503;
//	                    a line "degraded: ..." while the ledger's log cannot be
//	                    written, and one for each Config.Degraded check that fails.
//	GET  /notice/win?t=TOKEN[&price=P]
//	GET  /notice/bill?t=TOKEN&price=P
//	GET  /notice/loss?t=TOKEN[&reason=R]
//	                    win, billing and loss notices (with a Ledger): the
//	                    bids' nurl, burl and lurl. 200 + {"bid": ...} when
//	                    applied (or already applied: notices are
//	                    idempotent), else 400 (forged token, bad price),
//	                    404 (unknown bid), 409 (conflicting bill), 503,
//	                    with {"error": ..., "field": ...}; see
//	                    personad.v1.Notices. Another method (HEAD too:
//	                    a prefetch settles nothing) is 405 + Allow: GET
//	                    + JSON error.
//	GET  /metrics       Prometheus metrics of Config.Metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+PathBid, s.recoverHTTP(http.HandlerFunc(s.serveBid)))
	mux.HandleFunc(PathBid, s.serveBidMethod)
	mux.HandleFunc("GET "+PathHealthz, s.serveHealthz)
	if s.cfg.Ledger != nil {
		mux.Handle("GET "+PathNoticeWin, s.recoverHTTP(s.serveNotice(kindWin)))
		mux.Handle("GET "+PathNoticeBill, s.recoverHTTP(s.serveNotice(kindBill)))
		mux.Handle("GET "+PathNoticeLoss, s.recoverHTTP(s.serveNotice(kindLoss)))
		// Other methods: the JSON 405 of serveNoticeMethod, not the
		// mux's text/plain one.
		for path, kind := range map[string]noticeKind{PathNoticeWin: kindWin, PathNoticeBill: kindBill, PathNoticeLoss: kindLoss} {
			mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) { s.serveNoticeMethod(w, r, kind) })
		}
	}
	mux.Handle("GET "+PathMetrics, promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	return mux
}

// serveBidMethod answers PathBid's methods other than POST: 405 with
// Allow: POST, as the mux would, but as the bid endpoint's other errors
// (X-Openrtb-Version, a JSON body with nbr 2), counted invalid, rather
// than the mux's plain-text answer without the version.
func (s *Server) serveBidMethod(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(headerOpenRTBVersion, openRTBVersion)
	w.Header().Set("Allow", http.MethodPost)
	s.metrics.requests[wireHTTP][outcomeInvalid].Inc()
	writeError(w, http.StatusMethodNotAllowed, fmt.Errorf("bidder: method %s: want POST", r.Method), "")
}

func (s *Server) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !s.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "not serving\n")
		return
	}
	io.WriteString(w, "ok\n")
	// Still serving bids, but the embedded ledger cannot write its log,
	// or another store its own: say so, a line each (probes read the
	// status, 200).
	if l := s.cfg.Ledger; l != nil {
		if err := l.LogErr(); err != nil {
			io.WriteString(w, "degraded: "+err.Error()+"\n")
		}
	}
	for _, check := range s.cfg.Degraded {
		if err := check(); err != nil {
			io.WriteString(w, "degraded: "+err.Error()+"\n")
		}
	}
}

func (s *Server) serveBid(w http.ResponseWriter, r *http.Request) {
	// tmax runs from here: a body that is slow to arrive, or to decode,
	// leaves the decision less time (none: a no-bid, nbr 1).
	arrived := time.Now()
	// Every answer says the OpenRTB version personad speaks (OpenRTB 2.6
	// §2.5), an error's too, a panic's 500 written by recoverHTTP
	// included: the header is set before anything can fail.
	w.Header()[headerOpenRTBVersion] = headerVersion2_6
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			s.metrics.requests[wireHTTP][outcomeInvalid].Inc()
			writeError(w, http.StatusUnsupportedMediaType, fmt.Errorf("bidder: Content-Type %q: want application/json", ct), "")
			return
		}
	}
	buf := bodyPool.Get().(*bytes.Buffer)
	defer putBody(buf)
	buf.Reset()
	if code, err := s.readBody(w, r, buf); err != nil {
		s.metrics.requests[wireHTTP][outcomeInvalid].Inc()
		writeError(w, code, err, "")
		return
	}
	body := buf.Bytes()
	req := &personadpb.BidRequest{}
	if err := unmarshalJSON.Unmarshal(body, req); err != nil {
		s.metrics.requests[wireHTTP][outcomeInvalid].Inc()
		writeError(w, http.StatusBadRequest, fmt.Errorf("%w: %v", ErrBadBody, err), decodeErrorPath(body, err))
		return
	}
	resp, err := s.decide(r.Context(), req, wireHTTP, arrived)
	if err != nil {
		_, code, _ := mapError(err)
		var ve *ValidationError
		field := ""
		if errors.As(err, &ve) {
			field = ve.Path
		}
		writeError(w, code, err, field)
		return
	}
	h := w.Header()
	if len(resp.Seatbid) == 0 {
		h.Set(HeaderNbr, strconv.Itoa(int(resp.Nbr)))
		if resp.Ext == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	// The request's buffer is done with (protojson copies what it keeps):
	// the response is written into it.
	out, err := marshalJSON.MarshalAppend(body[:0], resp)
	if err != nil { // cannot happen for a message we built
		writeError(w, http.StatusInternalServerError, ErrInternal, "")
		return
	}
	if cap(out) > buf.Cap() { // out outgrew it: pool the larger array
		*buf = *bytes.NewBuffer(out[:0])
	}
	h["Content-Type"] = headerJSON
	if s.cfg.HTTPGzip {
		// The answer depends on Accept-Encoding whichever it is.
		h["Vary"] = headerAcceptEncoding
		if len(out) >= gzipMinSize && acceptsGzip(r.Header["Accept-Encoding"]) {
			h["Content-Encoding"] = headerGzip
			writeGzip(w, out) // an error is the client's connection: nothing to answer
			return
		}
	}
	w.Write(out)
}

// readBody reads r's body into buf: at most MaxRecvMsgSize bytes as sent
// and, with Content-Encoding gzip (exchanges compress their requests),
// at most MaxRecvMsgSize bytes once decompressed, so that a small
// compressed body cannot make the server inflate a large one: a zip bomb
// is read only up to the limit, then refused (413). An encoding other
// than gzip or identity is 415, naming it. On error it returns the HTTP
// status to answer.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) (int, error) {
	limit := int64(s.cfg.MaxRecvMsgSize)
	body := http.MaxBytesReader(w, r.Body, limit)
	switch enc := r.Header.Get("Content-Encoding"); {
	case enc == "" || strings.EqualFold(enc, "identity"):
		_, err := buf.ReadFrom(body)
		return bodyError(err, "")
	case strings.EqualFold(enc, "gzip") || strings.EqualFold(enc, "x-gzip"):
		zr, _ := gzipPool.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(body)
		} else {
			err = zr.Reset(body)
		}
		if err != nil {
			return bodyError(err, "decompressing: ")
		}
		// A pooled reader keeps this body until its next Reset: the
		// request's, done with once the handler returns.
		defer gzipPool.Put(zr)
		n, err := buf.ReadFrom(io.LimitReader(zr, limit+1))
		if err != nil {
			return bodyError(err, "decompressing: ")
		}
		if n > limit {
			return http.StatusRequestEntityTooLarge, fmt.Errorf("bidder: request body exceeds %d bytes once decompressed", limit)
		}
		return 0, nil
	default:
		return http.StatusUnsupportedMediaType, fmt.Errorf("bidder: Content-Encoding %q: want gzip or identity", enc)
	}
}

// bodyError is readBody's answer to an error reading the body: 413 for a
// body over the limit as sent, else 400. what prefixes the error: the
// step that failed.
func bodyError(err error, what string) (int, error) {
	if err == nil {
		return 0, nil
	}
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("bidder: request body exceeds %d bytes", mbe.Limit)
	}
	return http.StatusBadRequest, fmt.Errorf("%w: %s%v", ErrBadBody, what, err)
}

// gzipPool recycles the decompressors of gzip request bodies (each holds
// some 40 KB of tables and window).
var gzipPool sync.Pool // *gzip.Reader

// bodyPool recycles the OpenRTB JSON wire's request and response buffers.
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// putBody returns buf to bodyPool unless one huge request grew it.
func putBody(buf *bytes.Buffer) {
	if buf.Cap() <= 64<<10 {
		bodyPool.Put(buf)
	}
}

// httpError is the JSON body of an HTTP error answer.
type httpError struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
	// Nbr is 2 (invalid request) for a client error, 1 otherwise.
	Nbr int32 `json:"nbr"`
}

func writeError(w http.ResponseWriter, code int, err error, field string) {
	nbr := NbrInvalidRequest
	if code >= 500 {
		nbr = NbrTechnicalError
	}
	msg := err.Error()
	if code == http.StatusInternalServerError {
		msg = ErrInternal.Error()
	}
	body, _ := json.Marshal(httpError{Error: msg, Field: field, Nbr: nbr})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(body, '\n'))
}

// recoverHTTP turns a panic in h into a 500, logged and counted.
func (s *Server) recoverHTTP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.panicked("http", r.URL.Path, p)
				s.metrics.requests[wireHTTP][outcomeError].Inc()
				writeError(w, http.StatusInternalServerError, ErrInternal, "")
			}
		}()
		h.ServeHTTP(w, r)
	})
}
