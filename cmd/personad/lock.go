package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// lockFile is the file in the data dir that one personad holds locked
// while it runs.
const lockFile = "personad.lock"

// errLocked is a data dir another process holds.
var errLocked = errors.New("in use by another personad")

// lockDir takes the directory flag names (the data dir, or a --ledger
// directory outside it) for this process, creating it when missing, and
// returns the func that releases it. Two servers on one data dir would
// each take the segment store and the ledger for their own: one removes
// the log files the other still appends to (acknowledged uploads lost at
// the next start) and both write the ledger's log. A second personad is
// refused, with the pid the lock file names. The lock is the kernel's
// (flock(2)), so a crash or kill -9 releases it; where there is no flock
// it is not taken (see lock_other.go).
func lockDir(flag, dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	name := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if err := flock(f); err != nil {
		f.Close()
		if !errors.Is(err, errLocked) {
			return nil, fmt.Errorf("%s %s: locking %s: %w", flag, dir, name, err)
		}
		holder := ""
		if b, rerr := os.ReadFile(name); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = fmt.Sprintf(" (pid %d)", pid)
			}
		}
		return nil, fmt.Errorf("%s %s: %w%s; give each server its own", flag, dir, errLocked, holder)
	}
	// The pid is for the message above; a failure to write it costs
	// nothing else.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0) //nolint:errcheck // informational
	}
	return func() { f.Close() }, nil
}
