//go:build !linux

package reload

import "time"

// minorFaults is not counted here.
func minorFaults() int64 { return 0 }

// usage is not measured here.
func usage() (faults int64, cpu time.Duration) { return 0, 0 }
