//go:build race

package pacesim

// raceEnabled: under the race detector the simulation runs ~10× slower,
// so TestSimulate runs a smaller one there (make test-norace runs the
// goals' size without it).
const raceEnabled = true
