//go:build !linux

package segments

// physicalMemory returns the machine's memory in bytes; ok is false when
// it cannot tell, as here.
func physicalMemory() (total uint64, ok bool) { return 0, false }
