//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package main

// openFileLimit is fallback where there is no RLIMIT_NOFILE.
func openFileLimit(fallback uint64) uint64 { return fallback }
