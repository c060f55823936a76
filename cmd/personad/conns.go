package main

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// A client that opens connections and keeps them (an idle HTTP
// keep-alive connection stays for httpIdleTimeout, an idle gRPC one for
// 15 minutes) could take every file descriptor personad may open: then
// neither listener accepts (other exchanges and planners are refused,
// "accept4: too many open files") and the segment store and the ledger
// cannot open the files they write. So each listener holds at most
// maxConns connections, leaving the rest of the descriptors to the other
// listener and to the files: a connection past the limit is closed as
// soon as it is accepted, and counted.

// fileReserve is how many file descriptors connLimits leaves for
// personad's files (segment logs and snapshots, the ledger's log, rules
// files, the lock), at least.
const fileReserve = 256

// connLimits returns how many connections each of the two listeners may
// hold when personad may open nofile descriptors: an eighth of them (at
// least fileReserve) are left for files, and the gRPC and HTTP listeners
// share the rest evenly.
func connLimits(nofile uint64) int {
	reserve := max(nofile/8, fileReserve)
	if nofile <= reserve+2 {
		return 1
	}
	return int((nofile - reserve) / 2)
}

// limitListener is a net.Listener that holds at most max connections at
// once, closing the ones past it as it accepts them. It is safe for
// concurrent use.
type limitListener struct {
	net.Listener
	max     int64
	open    atomic.Int64
	refused prometheus.Counter
	log     *zap.Logger
	warned  atomic.Bool // the first refusal since the listener was last below the limit is logged
}

func newLimitListener(l net.Listener, max int, refused prometheus.Counter, log *zap.Logger) *limitListener {
	return &limitListener{Listener: l, max: int64(max), refused: refused, log: log}
}

// Accept returns the next connection within the limit.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if n := l.open.Add(1); n > l.max {
			l.open.Add(-1)
			l.refused.Inc()
			c.Close()
			if !l.warned.Swap(true) {
				l.log.Warn("connection limit reached; closing new connections until one ends",
					zap.String("listener", l.Addr().String()), zap.Int64("max_connections", l.max))
			}
			continue
		}
		return &limitedConn{Conn: c, l: l}, nil
	}
}

// limitedConn gives its place back when closed, once.
type limitedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if c.l.open.Add(-1) < c.l.max {
			c.l.warned.Store(false)
		}
	})
	return err
}
