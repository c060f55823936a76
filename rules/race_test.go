//go:build race

package rules

// raceEnabled: the race detector slows Go code (yaml.v3's parser) some
// tenfold and assembly (bytes.Count) not at all, so the timing tests that
// compare the two skip under it.
const raceEnabled = true
