// Package tcpproxy is a TCP proxy for tests that need a backend (Redis)
// to go away under a client's feet: it forwards connections from its own
// port on 127.0.0.1 to the backend until the test cuts it, in one of the
// ways a network can fail, and may heal it again.
//
// Only test code imports it (internal/deptest checks that no production
// package does).
//
// The ways it fails:
//
//   - Partition: the open connections are closed (a client sees them end
//     and redials), and new ones are accepted but never answered.
//   - Silence: the open connections stay open but forward nothing more in
//     either direction, and new ones are accepted but never answered: every
//     call waits for its timeout, nothing tells the client to redial.
//   - Close: the proxy stops listening and closes every connection: a
//     redial is refused at once, Redis "gone" rather than unreachable.
//
// Heal ends a Partition or Silence: the connections held during it are
// closed (their clients redial) and new ones are forwarded again. While a
// reply delay is set (SetReplyDelay), each read from the backend waits
// that long before it is forwarded: the backend applied the command, the
// client times out first.
package tcpproxy

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// state is what the proxy does with traffic now.
type state int32

const (
	forwarding state = iota
	partitioned
	silenced
	closed
)

// Proxy forwards TCP connections to a backend. It is safe for concurrent
// use.
type Proxy struct {
	ln      net.Listener
	backend string
	delay   atomic.Int64 // time.Duration each backend read waits
	state   atomic.Int32

	mu    sync.Mutex // guards conns and orders state changes with tracking
	conns []net.Conn // open connections: both sides of each forwarded one
	wg    sync.WaitGroup
}

// New starts a proxy to backend (host:port) on a free port of 127.0.0.1,
// forwarding; it is closed when the test ends, if not before.
func New(t testing.TB, backend string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, backend: backend}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port, for the client to dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) now() state { return state(p.state.Load()) }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.now() != forwarding {
			p.hold(c)
			continue
		}
		up, err := net.Dial("tcp", p.backend)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.now() != forwarding { // cut while dialling
			p.mu.Unlock()
			up.Close()
			p.hold(c)
			continue
		}
		p.conns = append(p.conns, c, up)
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(up, c, nil)
		go p.pipe(c, up, &p.delay)
	}
}

// hold keeps c open and never answers it, until Heal or Close.
func (p *Proxy) hold(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.now() == closed {
		c.Close()
		return
	}
	p.conns = append(p.conns, c)
}

// pipe copies src to dst until either ends, each read waiting *delay
// first if delay is not nil. While silenced it reads and drops, and an
// end is not passed on: the other side stays open and hears nothing.
func (p *Proxy) pipe(dst, src net.Conn, delay *atomic.Int64) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if delay != nil {
				if d := time.Duration(delay.Load()); d > 0 {
					time.Sleep(d)
				}
			}
			if p.now() != silenced {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					dst.Close()
					return
				}
			}
		}
		if err != nil {
			if p.now() != silenced {
				dst.Close()
			}
			return
		}
	}
}

// Partition closes the open connections (a client sees them end and
// redials) and accepts new ones but never answers them.
func (p *Proxy) Partition() { p.cut(partitioned, true) }

// Silence forwards nothing more: open connections stay open and silent,
// new ones are accepted but never answered. Unlike Partition, a client
// is not told to redial; every call waits for its timeout.
func (p *Proxy) Silence() { p.cut(silenced, false) }

// Heal ends a Partition or Silence: the connections held open during it
// are closed (their clients redial), and new ones are forwarded again.
// It does nothing to a proxy that is forwarding or closed.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.now(); s == forwarding || s == closed {
		return
	}
	p.closeConnsLocked()
	p.state.Store(int32(forwarding))
}

func (p *Proxy) cut(s state, closeOpen bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.now() == closed {
		return
	}
	p.state.Store(int32(s))
	if closeOpen {
		p.closeConnsLocked()
	}
}

// SetReplyDelay makes each read from the backend wait d before it is
// forwarded (0, the default, forwards at once). It applies to open
// connections too.
func (p *Proxy) SetReplyDelay(d time.Duration) { p.delay.Store(int64(d)) }

// Close stops listening, so that a new connection is refused, closes every
// open one and waits for the proxy's goroutines. It may be called more
// than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.state.Store(int32(closed))
	p.closeConnsLocked()
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) closeConnsLocked() {
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
