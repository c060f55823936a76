package ledger

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// recordingWarmer is a FrequencyWarmer that remembers the caps of each
// Warm and allows everything.
type recordingWarmer struct {
	got [][]FrequencyCap
}

func (w *recordingWarmer) Allow(string, uint64, int32, int32, time.Duration, int64) bool {
	return true
}
func (w *recordingWarmer) Record(string, uint64, uint64, time.Duration, int64) {}
func (w *recordingWarmer) Close() error                                        { return nil }
func (w *recordingWarmer) Warm(_ context.Context, _ uint64, caps []FrequencyCap, _ int64) error {
	w.got = append(w.got, append([]FrequencyCap(nil), caps...))
	return nil
}

// TestWarmFrequencyCaps: WarmFrequency gives the share the caps it is
// given, and nothing for user 0 or no caps; Campaign.FrequencyCap follows
// the campaign's limits as they change.
func TestWarmFrequencyCaps(t *testing.T) {
	w := &recordingWarmer{}
	cfg := memConfig(newFakeClock(t0))
	cfg.Frequency = w
	l := newLedger(t, cfg)
	if !l.WarmsFrequency() {
		t.Fatal("WarmsFrequency false with a FrequencyWarmer configured")
	}
	now := t0.UnixNano()
	capsOf := func(cs ...*Campaign) []FrequencyCap {
		var caps []FrequencyCap
		for _, c := range cs {
			if fc, ok := c.FrequencyCap(); ok {
				caps = append(caps, fc)
			}
		}
		return caps
	}
	warm := func(caps []FrequencyCap) []FrequencyCap {
		t.Helper()
		w.got = nil
		for _, user := range []uint64{7, 0} {
			if err := l.WarmFrequency(context.Background(), user, caps, now); err != nil {
				t.Fatal(err)
			}
		}
		switch len(w.got) {
		case 0:
			return nil
		case 1:
			return w.got[0]
		}
		t.Fatalf("%d Warms, want at most 1 (none for user 0)", len(w.got))
		return nil
	}
	open := mustCampaign(t, l, "open", Limits{Pacing: PacingASAP})
	if got := warm(capsOf(open)); got != nil {
		t.Errorf("no capped campaign: Warm got %v, want no call", got)
	}
	a := mustCampaign(t, l, "a", Limits{Pacing: PacingASAP, CapMax: 2, CapWindow: time.Hour})
	b := mustCampaign(t, l, "b", Limits{Pacing: PacingASAP, CapMax: 1, CapWindow: time.Minute})
	want := []FrequencyCap{{"a", time.Hour}, {"b", time.Minute}}
	if diff := cmp.Diff(want, warm(capsOf(open, a, b))); diff != "" {
		t.Errorf("two capped campaigns (-want +got):\n%s", diff)
	}
	mustCampaign(t, l, "a", Limits{Pacing: PacingASAP, CapMax: 3, CapWindow: 24 * time.Hour}) // another window
	mustCampaign(t, l, "b", Limits{Pacing: PacingASAP})                                       // uncapped
	mustCampaign(t, l, "open", Limits{Pacing: PacingASAP, CapMax: 1, CapWindow: time.Hour})   // capped
	want = []FrequencyCap{{"open", time.Hour}, {"a", 24 * time.Hour}}
	if diff := cmp.Diff(want, warm(capsOf(open, a, b))); diff != "" {
		t.Errorf("after the limits changed (-want +got):\n%s", diff)
	}

	// Without a FrequencyWarmer nothing is read, and nothing allocated.
	bare := newLedger(t, memConfig(newFakeClock(t0)))
	if bare.WarmsFrequency() {
		t.Error("WarmsFrequency true without a FrequencyWarmer")
	}
	caps := capsOf(a, open)
	if allocs := testing.AllocsPerRun(100, func() { _ = bare.WarmFrequency(context.Background(), 7, caps, now) }); allocs != 0 {
		t.Errorf("WarmFrequency without a warmer allocated %.1f times, want 0", allocs)
	}
}
