//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package main

import "syscall"

// openFileLimit is how many file descriptors personad may open (the Go
// runtime raised the soft limit to the hard one at start), or fallback
// when it cannot be read.
func openFileLimit(fallback uint64) uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur == 0 {
		return fallback
	}
	return l.Cur
}
