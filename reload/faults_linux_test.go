package reload

import "syscall"

// minorFaults returns the page faults the process has taken that needed
// no I/O: on a VM, each first touch of a page of memory costs several
// microseconds, and a reload whose heap grows takes tens of thousands.
func minorFaults() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Minflt
}
