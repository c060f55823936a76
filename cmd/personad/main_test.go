package main

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/personad/personad/bench/world"
)

func TestMain(m *testing.M) {
	// The in-process starts with --demo (TestRunUsageErrors,
	// TestFailedStartLeavesNoWorld) test whether a world is seeded and
	// what a failed start leaves in the data dir, which does not depend
	// on its size; the demo's million users took 30-70 s a start under
	// the race detector on a loaded 2-core machine.
	demoWorld = world.SmallConfig
	goleak.VerifyTestMain(m)
}
