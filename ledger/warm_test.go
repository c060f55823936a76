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

// TestWarmFrequencyCaps: WarmFrequency gives the share the campaigns that
// have a frequency cap, with their windows, as their limits change, and
// nothing for user 0 or when no campaign is capped.
func TestWarmFrequencyCaps(t *testing.T) {
	w := &recordingWarmer{}
	cfg := memConfig(newFakeClock(t0))
	cfg.Frequency = w
	l := newLedger(t, cfg)
	now := t0.UnixNano()
	warm := func() []FrequencyCap {
		t.Helper()
		w.got = nil
		if err := l.WarmFrequency(context.Background(), 7, now); err != nil {
			t.Fatal(err)
		}
		if err := l.WarmFrequency(context.Background(), 0, now); err != nil {
			t.Fatal(err)
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
	mustCampaign(t, l, "open", Limits{Pacing: PacingASAP})
	if got := warm(); got != nil || l.WarmsFrequency() {
		t.Errorf("no capped campaign: Warm got %v (WarmsFrequency %v), want no call", got, l.WarmsFrequency())
	}
	mustCampaign(t, l, "a", Limits{Pacing: PacingASAP, CapMax: 2, CapWindow: time.Hour})
	mustCampaign(t, l, "b", Limits{Pacing: PacingASAP, CapMax: 1, CapWindow: time.Minute})
	want := []FrequencyCap{{"a", time.Hour}, {"b", time.Minute}}
	if diff := cmp.Diff(want, warm()); diff != "" {
		t.Errorf("two capped campaigns (-want +got):\n%s", diff)
	}
	mustCampaign(t, l, "a", Limits{Pacing: PacingASAP, CapMax: 3, CapWindow: 24 * time.Hour}) // another window
	mustCampaign(t, l, "b", Limits{Pacing: PacingASAP})                                       // uncapped
	mustCampaign(t, l, "open", Limits{Pacing: PacingASAP, CapMax: 1, CapWindow: time.Hour})   // capped
	want = []FrequencyCap{{"open", time.Hour}, {"a", 24 * time.Hour}}
	if diff := cmp.Diff(want, warm()); diff != "" {
		t.Errorf("after the limits changed (-want +got):\n%s", diff)
	}
	// The rules now hold only a and b (the engine's SetRules): open is
	// no longer read; b is once capped again.
	l.SetFrequencyCampaigns([]*Campaign{l.Lookup("a"), nil, l.Lookup("b")})
	want = []FrequencyCap{{"a", 24 * time.Hour}}
	if diff := cmp.Diff(want, warm()); diff != "" {
		t.Errorf("after SetFrequencyCampaigns(a, b) (-want +got):\n%s", diff)
	}
	mustCampaign(t, l, "b", Limits{Pacing: PacingASAP, CapMax: 1, CapWindow: time.Minute})
	want = []FrequencyCap{{"a", 24 * time.Hour}, {"b", time.Minute}}
	if diff := cmp.Diff(want, warm()); diff != "" {
		t.Errorf("after b is capped again (-want +got):\n%s", diff)
	}
}
