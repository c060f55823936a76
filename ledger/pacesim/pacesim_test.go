package pacesim

import (
	"flag"
	"testing"
)

var sim = flag.Bool("sim", false, "run the full 1,000-campaign pacing simulation and check the issue's goals")

// TestSimulate runs a small simulation in every test run, and the issue's
// full scenario with -sim. Under the race detector (without -sim) it runs
// a smaller one still, whose campaigns are too small for the pacing and
// delivery goals' sampling floor: it checks the invariants (overspend,
// frequency caps) there, and make test runs the goals' size without the
// detector (test-norace).
func TestSimulate(t *testing.T) {
	cfg := DefaultConfig()
	goals := true
	switch {
	case *sim:
	case raceEnabled:
		cfg.Campaigns = 40
		cfg.ImpressionsPerDay = 1000
		cfg.WarmupDays = 1
		goals = false
	default:
		cfg.Campaigns = 100
		cfg.ImpressionsPerDay = 4000
	}
	rep, err := Simulate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rep.Days {
		t.Logf("%+v", d)
	}
	t.Log(rep)
	d := rep.Days[len(rep.Days)-1]
	if d.MaxOverspend > 0.005 {
		t.Errorf("overspend %.3f%% of a daily budget, goal <= 0.5%%", 100*d.MaxOverspend)
	}
	if d.FrequencyViolations != 0 {
		t.Errorf("%d frequency-cap violations", d.FrequencyViolations)
	}
	if !goals {
		return
	}
	// Both runs are deterministic (seeded), so these bounds do not flake;
	// the small run's campaigns are small, so its sampling floor is high.
	if d.PacingErrorMean > 0.10 {
		t.Errorf("pacing error %.2f%%, goal <= 10%%", 100*d.PacingErrorMean)
	}
	if d.DeliveryMean < 0.98 {
		t.Errorf("delivery %.2f%%, goal >= 98%%", 100*d.DeliveryMean)
	}
}
