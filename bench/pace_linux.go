//go:build linux && !pacetimer

package bench

import (
	"context"
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// pacer wakes the open loop's dispatcher when each request is due.
//
// The Go runtime's timers have millisecond resolution when the process is
// otherwise idle (the netpoller waits in whole milliseconds), so at 5,000
// requests/s a time.Timer wakes up to 1 ms late and the lag lands in every
// latency, which is measured from the intended time. A timerfd armed at the
// absolute due time on CLOCK_MONOTONIC (the clock Go's monotonic time reads)
// and read through the netpoller wakes within the kernel's timer slack
// (~50 µs) without blocking a thread or spinning a core that the server
// needs. Not safe for concurrent use.
type pacer struct {
	f     *os.File
	fd    int
	base  time.Time // the same instant as mono0, on Go's clock
	mono0 int64
	stop  func() bool
}

func newPacer(ctx context.Context) (*pacer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("timerfd_create", err)
	}
	p := &pacer{f: os.NewFile(uintptr(fd), "timerfd"), fd: fd}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		p.f.Close()
		return nil, os.NewSyscallError("clock_gettime", err)
	}
	p.base = time.Now()
	p.mono0 = ts.Nano()
	// Cancelling ctx unblocks a pending read.
	p.stop = context.AfterFunc(ctx, func() { _ = p.f.SetReadDeadline(time.Now()) })
	return p, nil
}

// until returns when at has come, or false when ctx ends first.
func (p *pacer) until(ctx context.Context, at time.Time) bool {
	for time.Until(at) > 0 {
		spec := unix.ItimerSpec{Value: unix.NsecToTimespec(p.mono0 + int64(at.Sub(p.base)))}
		if err := unix.TimerfdSettime(p.fd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
			time.Sleep(time.Until(at)) // cannot happen with a valid fd; degrade, don't fail
			break
		}
		var buf [8]byte
		if _, err := p.f.Read(buf[:]); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil {
				return false
			}
			time.Sleep(time.Until(at))
			break
		}
	}
	return ctx.Err() == nil
}

// Close releases the timerfd.
func (p *pacer) Close() error {
	p.stop()
	return p.f.Close()
}
