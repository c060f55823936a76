package segments

import "golang.org/x/sys/unix"

// physicalMemory returns the machine's memory in bytes; ok is false when
// it cannot tell.
func physicalMemory() (total uint64, ok bool) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, false
	}
	return uint64(si.Totalram) * uint64(si.Unit), true
}
