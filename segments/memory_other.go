//go:build !linux

package segments

// availableMemory returns the memory this process may use, in bytes, and
// says which; ok is false when it cannot tell, as here.
func availableMemory() (total uint64, of string, ok bool) { return 0, "", false }
