//go:build !linux

package reload

import "time"

// usage (page faults and CPU time) is not measured here.
func usage() (faults int64, cpu time.Duration) { return 0, 0 }
