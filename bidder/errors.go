package bidder

import (
	"context"
	"errors"
	"net/http"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/personad/personad/ledger"
	"github.com/personad/personad/reload"
	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

// ValidationError is a malformed bid request: the field at Path (for
// example "imp[0].banner.format[2].w") and what is wrong with it.
type ValidationError struct {
	Path string
	Msg  string
}

// Error reads "bidder: imp[0].banner.format[2].w: must be > 0".
func (e *ValidationError) Error() string { return "bidder: " + e.Path + ": " + e.Msg }

// ErrBadBody is a request body that is not a JSON BidRequest (HTTP wire).
var ErrBadBody = errors.New("bidder: request body is not a valid BidRequest")

// ErrInternal is a failure inside the server, such as a recovered panic.
// Its details are logged, never sent.
var ErrInternal = errors.New("bidder: internal error")

// errorMapping is the one table from package errors to wire status: the
// gRPC code and the HTTP status of each kind of error. The first entry that
// matches wins; an error matching none is internal.
var errorMapping = []struct {
	match func(error) bool
	code  codes.Code
	http  int
	// reason, when set, is the google.rpc.ErrorInfo reason a gRPC
	// status carries (grpcError): ReasonNotApplied.
	reason string
}{
	{func(err error) bool { var v *ValidationError; return errors.As(err, &v) }, codes.InvalidArgument, http.StatusBadRequest, ""},
	{func(err error) bool { return errors.Is(err, ErrBadBody) }, codes.InvalidArgument, http.StatusBadRequest, ""},
	// Rules (rules.go): an invalid rule set, every error with its path.
	{func(err error) bool { var v rules.ValidationErrors; return errors.As(err, &v) }, codes.InvalidArgument, http.StatusBadRequest, ""},
	// Segments (segments.go and the segments package).
	{func(err error) bool { var l *LimitError; return errors.As(err, &l) }, codes.ResourceExhausted, http.StatusRequestEntityTooLarge, ""},
	{func(err error) bool {
		return errors.Is(err, segments.ErrBadUserID) || errors.Is(err, segments.ErrBadName)
	}, codes.InvalidArgument, http.StatusBadRequest, ""},
	{func(err error) bool { return errors.Is(err, segments.ErrNotFound) }, codes.NotFound, http.StatusNotFound, ""},
	{func(err error) bool { return errors.Is(err, segments.ErrKeyConflict) }, codes.FailedPrecondition, http.StatusConflict, ""},
	{func(err error) bool {
		return errors.Is(err, segments.ErrDictFull) || errors.Is(err, segments.ErrTooLarge) || errors.Is(err, segments.ErrTooManySegments)
	}, codes.ResourceExhausted, http.StatusInsufficientStorage, ""},
	// A log write the disk refused, cut back: certainly not applied. Before
	// ErrNotDurable, which it wraps.
	{func(err error) bool { return errors.Is(err, segments.ErrNotApplied) }, codes.Unavailable, http.StatusServiceUnavailable, ReasonNotApplied},
	{func(err error) bool {
		return errors.Is(err, segments.ErrNotDurable) || errors.Is(err, segments.ErrClosed)
	}, codes.Unavailable, http.StatusServiceUnavailable, ""},
	// Rules: an applied set the data dir could not take (a full or
	// read-only disk); nothing changed, and the message names the file
	// and the errno.
	{func(err error) bool { return errors.Is(err, reload.ErrNotPersisted) }, codes.Unavailable, http.StatusServiceUnavailable, ""},
	// Notices (notices.go and the ledger package).
	{func(err error) bool { return errors.Is(err, ledger.ErrForged) || errors.Is(err, ledger.ErrPrice) }, codes.InvalidArgument, http.StatusBadRequest, ""},
	{func(err error) bool { return errors.Is(err, ledger.ErrUnknownBid) }, codes.NotFound, http.StatusNotFound, ""},
	{func(err error) bool { return errors.Is(err, ledger.ErrConflict) }, codes.FailedPrecondition, http.StatusConflict, ""},
	// The durable log could not take the notice's record (a full or
	// read-only disk): not acknowledged (refusedNotice keeps the file and
	// the errno for the server's log), and the exchange's retry is
	// acknowledged once it is durable.
	{func(err error) bool {
		return errors.Is(err, ledger.ErrClosed) || errors.Is(err, ledger.ErrNotDurable)
	}, codes.Unavailable, http.StatusServiceUnavailable, ""},
	{func(err error) bool { return errors.Is(err, context.Canceled) }, codes.Canceled, 499, ""},
	{func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }, codes.DeadlineExceeded, http.StatusGatewayTimeout, ""},
	{func(err error) bool { return errors.Is(err, ErrInternal) }, codes.Internal, http.StatusInternalServerError, ""},
}

// mapError returns err's gRPC code and HTTP status, and the ErrorInfo
// reason its gRPC status carries ("" for none), from errorMapping.
func mapError(err error) (codes.Code, int, string) {
	for _, m := range errorMapping {
		if m.match(err) {
			return m.code, m.http, m.reason
		}
	}
	return codes.Internal, http.StatusInternalServerError, ""
}

// ErrorDomain and ReasonNotApplied are the google.rpc.ErrorInfo detail of
// an UNAVAILABLE status known to have applied nothing: a segment change
// whose write-ahead log record the disk refused (segments.ErrNotApplied),
// cut back, so that the change will not be applied by a restart either
// and may be sent again once there is room. An UNAVAILABLE without it (a
// failed fsync: a restart may apply the change; a connection's failure)
// leaves the outcome unknown. The reason is part of the public contract
// (the Segments service's proto comment).
const (
	ErrorDomain      = "personad"
	ReasonNotApplied = "NOT_APPLIED"
)

// grpcError turns a package error into a gRPC status error. Internal errors
// carry no detail to the client; an error errorMapping gives a reason
// (one known to have applied nothing: ReasonNotApplied) carries it as an
// ErrorInfo.
func grpcError(err error) error {
	code, _, reason := mapError(err)
	if code == codes.Internal {
		return status.Error(codes.Internal, ErrInternal.Error())
	}
	st := status.New(code, err.Error())
	if reason != "" {
		if withDetails, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}); derr == nil {
			st = withDetails
		}
	}
	return st.Err()
}
