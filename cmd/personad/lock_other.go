//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package main

import "os"

// flock does not lock where there is no flock(2): nothing stops a second
// personad on the same data dir there.
func flock(*os.File) error { return nil }
