//go:build race

package ledger

// raceEnabled: the race detector makes sync.Pool (also regexp's) drop
// items on purpose, so allocation counts are not asserted under it.
const raceEnabled = true
