package reload

import (
	"syscall"
	"time"
)

// usage returns the page faults the process has taken that needed no
// I/O, and its CPU time (user and system, every thread: the collector's
// too), so far. On a VM, each first touch of a page of memory costs
// several microseconds, and a reload whose heap grows takes tens of
// thousands of faults.
func usage() (faults int64, cpu time.Duration) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, 0
	}
	return ru.Minflt, time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
