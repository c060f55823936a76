package bench

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// Wire names for [Report.Wire].
const (
	WireGRPC     = "grpc"
	WireHTTP     = "http"
	WireHTTPGzip = "http+gzip"
)

// HTTPPath is personad's OpenRTB bid endpoint, the path an HTTP target
// given as HOST:PORT is sent to.
const HTTPPath = "/openrtb2/bid"

// headerNbr is the header of personad's 204 no-bid answer that carries
// the nbr (bidder.HeaderNbr; not imported, so that the harness does not
// link the server).
const headerNbr = "X-Personad-Nbr"

// HTTPConfig configures [DialHTTP].
type HTTPConfig struct {
	// Gzip sends Accept-Encoding: gzip and decodes gzip answers.
	Gzip bool
	// MaxConns is the number of idle keep-alive connections kept: at
	// least the requests in flight at once, so that no request waits for
	// a connection another has just released and then closed.
	MaxConns int
	// Timeout bounds connecting and waiting for an answer's headers; each
	// call is also bounded by its context.
	Timeout time.Duration
}

// httpWire sends requests as OpenRTB JSON over HTTP/1.1.
type httpWire struct {
	url    string
	gzip   bool
	client *http.Client
	bodies map[*personadpb.BidRequest][]byte // pre-encoded, read only
	conns  atomic.Int64                      // TCP connections opened
	gzr    sync.Pool                         // *gzip.Reader
	bufs   sync.Pool                         // *bytes.Buffer
}

// HTTPStatusError is an HTTP answer other than 200 or 204.
type HTTPStatusError struct {
	Status int
	// Msg is the error personad's JSON answer gives, naming the field
	// of a refused request; empty when the body has none.
	Msg string
}

func (e *HTTPStatusError) Error() string {
	if e.Msg != "" {
		return fmt.Sprintf("HTTP %d %s: %s", e.Status, http.StatusText(e.Status), e.Msg)
	}
	return fmt.Sprintf("HTTP %d %s", e.Status, http.StatusText(e.Status))
}

// BidURL is the URL an HTTP target addr is sent to: addr itself when it
// is an http:// or https:// URL, else http://addr/openrtb2/bid.
func BidURL(addr string) (string, error) {
	if u, err := url.Parse(addr); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		if u.Host == "" {
			return "", fmt.Errorf("URL %q has no host", addr)
		}
		if u.Path == "" {
			u.Path = HTTPPath
		}
		return u.String(), nil
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return "", fmt.Errorf("want HOST:PORT or an http:// URL")
	}
	return "http://" + addr + HTTPPath, nil
}

// DialHTTP makes a target that posts each request of reqs, encoded once
// here as protojson (the OpenRTB JSON personad's POST /openrtb2/bid
// takes), to addr ([BidURL]) over keep-alive HTTP/1.1 connections. A 200
// answer is decoded as a BidResponse; a 204 is a no-bid whose nbr is the
// X-Personad-Nbr header; any other status is an [*HTTPStatusError]. It
// waits until addr accepts a TCP connection or ctx ends.
func DialHTTP(ctx context.Context, addr string, reqs []*personadpb.BidRequest, cfg HTTPConfig) (*Target, error) {
	u, err := BidURL(addr)
	if err != nil {
		return nil, fmt.Errorf("bench: dial %s: %w", addr, err)
	}
	if cfg.MaxConns <= 0 {
		return nil, fmt.Errorf("bench: dial %s: connection count %d must be positive", addr, cfg.MaxConns)
	}
	if cfg.Timeout <= 0 {
		return nil, fmt.Errorf("bench: dial %s: timeout must be positive", addr)
	}
	hw := &httpWire{url: u, gzip: cfg.Gzip, bodies: make(map[*personadpb.BidRequest][]byte, len(reqs))}
	for _, r := range reqs {
		b, err := protojson.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("bench: encoding request %s: %w", r.GetId(), err)
		}
		hw.bodies[r] = b
	}
	dialer := &net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}
	hw.client = &http.Client{Transport: &http.Transport{
		Proxy: nil, // a loopback benchmark is never routed through a proxy
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, a)
			if err == nil {
				hw.conns.Add(1)
			}
			return c, err
		},
		MaxIdleConns:          cfg.MaxConns,
		MaxIdleConnsPerHost:   cfg.MaxConns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.Timeout,
		// Accept-Encoding is set by hand (Gzip), and the answer decoded
		// here, so that a plain run never asks for gzip.
		DisableCompression: true,
	}}
	pu, _ := url.Parse(u)
	host := pu.Host
	if pu.Port() == "" {
		host = net.JoinHostPort(pu.Hostname(), map[string]string{"http": "80", "https": "443"}[pu.Scheme])
	}
	for {
		c, err := dialer.DialContext(ctx, "tcp", host)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bench: dial %s: %w", u, err)
		case <-time.After(50 * time.Millisecond): // the server may still be starting
		}
	}
	return &Target{addr: u, http: hw}, nil
}

// bid posts req and reads the answer to its end, so that the connection
// is reused.
func (hw *httpWire) bid(ctx context.Context, req *personadpb.BidRequest) (*personadpb.BidResponse, error) {
	body, ok := hw.bodies[req]
	if !ok { // not one of DialHTTP's requests
		var err error
		if body, err = protojson.Marshal(req); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, hw.url, bytes.NewReader(body))
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	hr.Header["Content-Type"] = contentJSON
	if hw.gzip {
		hr.Header["Accept-Encoding"] = acceptGzip
	}
	resp, err := hw.client.Do(hr)
	if err != nil {
		return nil, transportError(ctx, err)
	}
	defer resp.Body.Close()
	buf, _ := hw.bufs.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	defer hw.bufs.Put(buf)
	buf.Reset()
	var rd io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, _ := hw.gzr.Get().(*gzip.Reader)
		if zr == nil {
			zr, err = gzip.NewReader(resp.Body)
		} else {
			err = zr.Reset(resp.Body)
		}
		if err != nil {
			return nil, answerError(ctx, err)
		}
		defer hw.gzr.Put(zr)
		rd = zr
	}
	if _, err := buf.ReadFrom(io.LimitReader(rd, maxAnswerSize+1)); err != nil {
		return nil, answerError(ctx, err)
	}
	if buf.Len() > maxAnswerSize {
		*buf = bytes.Buffer{} // its array is not pooled at that size
		return nil, status.Errorf(codes.ResourceExhausted, "HTTP %d answer larger than %d bytes", resp.StatusCode, maxAnswerSize)
	}
	if rd != resp.Body {
		_, _ = io.Copy(io.Discard, resp.Body) // past the gzip trailer
	}
	switch resp.StatusCode {
	case http.StatusOK:
		out := &personadpb.BidResponse{}
		if err := unmarshalAnswer.Unmarshal(buf.Bytes(), out); err != nil {
			return nil, status.Errorf(codes.Internal, "decoding the 200 answer: %v", err)
		}
		return out, nil
	case http.StatusNoContent:
		nbr, err := strconv.ParseInt(resp.Header.Get(headerNbr), 10, 32)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "204 answer: %s %q: %v", headerNbr, resp.Header.Get(headerNbr), err)
		}
		return &personadpb.BidResponse{Nbr: int32(nbr)}, nil
	default:
		// personad's error answers are JSON: {"error": "...", "field": ...}.
		var body struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(buf.Bytes(), &body) // another body: no message
		return nil, &HTTPStatusError{Status: resp.StatusCode, Msg: body.Error}
	}
}

// maxAnswerSize bounds an answer's body as read, decompressed when it is
// gzip: a server answering a huge body, or a small gzip one that
// inflates to gigabytes, fails the request with ResourceExhausted rather
// than filling the harness's memory and its pooled buffers. It is
// gRPC's default receive limit, to which the gRPC wire's answers are
// held with the same code (the demo's bid answer is about 1 KB).
const maxAnswerSize = 4 << 20

var (
	contentJSON     = []string{"application/json"}
	acceptGzip      = []string{"gzip"}
	unmarshalAnswer = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// answerError is the gRPC status of a failure to read an answer's body:
// Internal when it is gzip that does not decode (the server's fault, as
// a 200 whose JSON does not decode), else transportError's.
func answerError(ctx context.Context, err error) error {
	var corrupt flate.CorruptInputError
	if errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum) || errors.As(err, &corrupt) {
		return status.Errorf(codes.Internal, "decoding the gzip answer: %v", err)
	}
	return transportError(ctx, err)
}

// transportError is the gRPC status a failed HTTP call counts as:
// DeadlineExceeded when its context expired (its latency is recorded, as
// a gRPC timeout's), Unavailable otherwise (refused, reset).
func transportError(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}
