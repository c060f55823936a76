package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Options are the settings shared by every driver.
type Options struct {
	// Duration is the measured window; Warmup runs before it with the same
	// load and is not recorded.
	Duration time.Duration
	Warmup   time.Duration
	// Timeout bounds each call.
	Timeout time.Duration
	// ServerPID, when positive, is the server process whose CPU time over
	// the measured window is reported per request.
	ServerPID int
	// Progress, when set, receives a progress line every second.
	Progress io.Writer
}

// DefaultOptions are the defaults of the personabench flags.
func DefaultOptions() Options {
	return Options{Duration: 10 * time.Second, Warmup: 2 * time.Second, Timeout: time.Second}
}

func (o Options) validate() error {
	if o.Duration <= 0 {
		return errors.New("bench: duration must be positive")
	}
	if o.Warmup < 0 {
		return errors.New("bench: warm-up must not be negative")
	}
	if o.Timeout <= 0 {
		return errors.New("bench: timeout must be positive")
	}
	return nil
}

// cpuWindow samples a server's and this process's CPU time at the start and
// end of the measured window.
type cpuWindow struct {
	serverPID         int
	server0, client0  time.Duration
	serverErr, cliErr error
}

func (w *cpuWindow) start() {
	if w.serverPID > 0 {
		w.server0, w.serverErr = ProcessCPU(w.serverPID)
	}
	w.client0, w.cliErr = ProcessCPU(os.Getpid())
}

func (w *cpuWindow) finish(r *Report) {
	per := func(d time.Duration) float64 {
		if r.Completed == 0 {
			return 0
		}
		return float64(d.Microseconds()) / float64(r.Completed)
	}
	if w.serverPID > 0 && w.serverErr == nil {
		if s1, err := ProcessCPU(w.serverPID); err == nil {
			d := s1 - w.server0
			r.ServerCPU = &CPU{PID: w.serverPID, Seconds: d.Seconds(), PerRequestUS: per(d)}
		}
	}
	if w.cliErr == nil {
		if c1, err := ProcessCPU(os.Getpid()); err == nil {
			d := c1 - w.client0
			r.ClientCPU = &CPU{PID: os.Getpid(), Seconds: d.Seconds(), PerRequestUS: per(d)}
		}
	}
}

// progress prints one line a second until stopped.
type progress struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

func startProgress(w io.Writer, l *live, c *collector, begin, measureAt time.Time) *progress {
	p := &progress{stop: make(chan struct{})}
	if w == nil {
		return p
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		var lastDone int64
		last := begin
		for {
			select {
			case <-p.stop:
				return
			case now := <-tick.C:
				sent, done, errs := l.sent.Load(), l.done.Load(), l.errs.Load()
				p99, n := c.takeInterval()
				tail := "-"
				if n > 0 {
					tail = fmtDur(p99)
				}
				phase := "measure"
				if now.Before(measureAt) {
					phase = "warm-up"
				}
				rate := float64(done-lastDone) / now.Sub(last).Seconds()
				lastDone, last = done, now
				fmt.Fprintf(w, "[%5.1fs %s] sent %d  done %d  in flight %d  errors %d  %.0f/s  p99 %s\n",
					now.Sub(begin).Seconds(), phase, sent, done, sent-done, errs, rate, tail)
			}
		}
	}()
	return p
}

func (p *progress) Stop() {
	close(p.stop)
	p.wg.Wait()
}
