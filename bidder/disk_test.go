package bidder

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap/zaptest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/personad/personad/engine"
	"github.com/personad/personad/ledger"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/reload"
	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

// enospc is the error a write to a full disk returns, naming its file.
func enospc(path string) error {
	return &os.PathError{Op: "write", Path: path, Err: syscall.ENOSPC}
}

// persistFailing is a RulesManager whose Apply fails as reload's does
// when <data-dir>/rules-applied cannot take the set.
type persistFailing struct{ RulesManager }

func (persistFailing) Apply(*rules.RuleSet, reload.ApplyOptions) (*reload.Result, error) {
	return nil, fmt.Errorf("%w: %w", reload.ErrNotPersisted, enospc("/data/rules-applied/.current.json.tmp1"))
}

// TestRulesApplyDiskFull: an apply the data dir could not persist is
// UNAVAILABLE, the message naming the file and the errno, so that the
// planner learns what is wrong and that a retry may succeed. Before, it
// was INTERNAL, "bidder: internal error".
func TestRulesApplyDiskFull(t *testing.T) {
	h := newRulesHarness(t)
	svc := NewRulesService(persistFailing{h.mgr}, zaptest.NewLogger(t))
	_, err := svc.Apply(context.Background(), &personadpb.RulesApplyRequest{RuleSet: &personadpb.RuleSet{}})
	if st := status.Convert(err); st.Code() != codes.Unavailable ||
		!strings.Contains(st.Message(), "rules-applied/.current.json.tmp1") || !strings.Contains(st.Message(), "no space left on device") {
		t.Errorf("rules apply on a full disk: %v; want Unavailable naming the file and the errno", err)
	}
}

// TestNoticeDiskFull: a notice whose record the ledger's log could not
// write is UNAVAILABLE (HTTP 503), counted unavailable, the message
// saying to send it again but naming neither the server's file nor the
// errno (the operator's, in personad's log and /healthz); the
// exchange's retry is acknowledged once the disk takes it. Before, it
// was INTERNAL (500), "bidder: internal error", and its cause was
// logged nowhere.
func TestNoticeDiskFull(t *testing.T) {
	notice := refusedNotice("bill", 0xff,
		fmt.Errorf("%w: write: %w", ledger.ErrNotDurable, enospc("/data/ledger/log-0000000000000000.wal")))
	code, httpCode, _ := mapError(notice)
	if code != codes.Unavailable || httpCode != http.StatusServiceUnavailable {
		t.Errorf("notice on a full disk: %v / HTTP %d; want Unavailable / 503", code, httpCode)
	}
	const want = "bidder: bill notice: bid 00000000000000ff: ledger: log not durable: not acknowledged; send the notice again"
	if st := status.Convert(grpcError(notice)); st.Message() != want {
		t.Errorf("notice on a full disk: %q; want %q (no file, no errno)", st.Message(), want)
	}
	if classifyNotice(notice) != noticeUnavailable {
		t.Errorf("notice on a full disk counted as %s, want unavailable", noticeOutcomeNames[classifyNotice(notice)])
	}
}

// TestHealthzDegraded: a store whose durable log fails (Config.Degraded:
// the segment store's, after a failed fsync) is named on /healthz, which
// still answers 200 while bids are served. Before, only the ledger's log
// was: a segment store refusing every upload left /healthz at "ok".
func TestHealthzDegraded(t *testing.T) {
	eng, err := engine.New(engine.Config{PersonaCacheSize: 0}, testSegments())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	eng.SetRules(compileRules(t, testRules))
	var logErr error
	cfg := DefaultConfig()
	cfg.Engine, cfg.Logger = eng, zaptest.NewLogger(t)
	cfg.Degraded = []func() error{func() error { return logErr }}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	healthz := func() (int, string) {
		w := httptest.NewRecorder()
		srv.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, PathHealthz, nil))
		return w.Code, w.Body.String()
	}
	if code, body := healthz(); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz with every log writing: %d %q, want 200 \"ok\\n\"", code, body)
	}
	logErr = fmt.Errorf("%w: fsync /data/segments/wal-1.log: input/output error", segments.ErrNotDurable)
	want := "ok\ndegraded: " + logErr.Error() + "\n"
	if code, body := healthz(); code != http.StatusOK || body != want {
		t.Errorf("/healthz with the segment log failed: %d %q, want 200 %q", code, body, want)
	}
	// The checks are the Server's once New returns: the caller's slice,
	// changed after, is not read (a nil there panicked in /healthz).
	cfg.Degraded[0] = nil
	if code, body := healthz(); code != http.StatusOK || body != want {
		t.Errorf("/healthz after the caller's Degraded changed: %d %q, want 200 %q", code, body, want)
	}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "Degraded[0] is nil") {
		t.Errorf("New with a nil Degraded check: %v, want an error naming it", err)
	}
}

// TestSegmentsNotApplied: a segment change whose log write the disk
// refused, cut back, is UNAVAILABLE with an ErrorInfo of reason
// NOT_APPLIED, so that a client knows nothing was applied; one whose
// fsync failed (a restart may apply it) is UNAVAILABLE without it.
func TestSegmentsNotApplied(t *testing.T) {
	notApplied := func(err error) bool {
		for _, d := range status.Convert(err).Details() {
			if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Reason == ReasonNotApplied && ei.Domain == ErrorDomain {
				return true
			}
		}
		return false
	}
	refused := fmt.Errorf("segments: upload title:cmo: %w", fmt.Errorf("%w: write wal-1.log: %v", segments.ErrNotApplied, syscall.ENOSPC))
	fsync := fmt.Errorf("segments: upload title:cmo: %w", fmt.Errorf("%w: fsync wal-1.log: %v (the record may have reached the disk all the same: a restart may apply it)", segments.ErrNotDurable, syscall.EIO))
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"write refused", refused, true},
		{"fsync failed", fsync, false},
		{"log failed before", fmt.Errorf("%w: fsync wal-1.log: %v", segments.ErrNotDurable, syscall.EIO), false},
	} {
		err := grpcError(tc.err)
		if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != tc.err.Error() {
			t.Errorf("%s: %v, want UNAVAILABLE %q", tc.name, err, tc.err)
		}
		if got := notApplied(err); got != tc.want {
			t.Errorf("%s: NOT_APPLIED detail %v, want %v", tc.name, got, tc.want)
		}
	}
}
