package main

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
)

func TestConnLimits(t *testing.T) {
	for _, tc := range []struct {
		nofile uint64
		want   int
	}{
		{20000, 8750},     // 2500 left for files
		{1024, 384},       // 256 left for files
		{1 << 20, 458752}, // a systemd unit's LimitNOFILE=1048576
		{200, 1},
	} {
		if got := connLimits(tc.nofile); got != tc.want {
			t.Errorf("connLimits(%d) = %d, want %d", tc.nofile, got, tc.want)
		}
	}
}

// TestLimitListener: a listener holds at most its limit of connections;
// one past it is closed at once and counted, and a connection that ends
// makes room for the next.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := prometheus.NewCounter(prometheus.CounterOpts{Name: "refused"})
	l := newLimitListener(inner, 2, refused, zaptest.NewLogger(t))
	defer l.Close()
	accepted := make(chan net.Conn)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedByServer waits for the server to close c.
	closedByServer := func(c net.Conn) bool {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(time.Minute)) // a bound, should the server keep it
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return errors.Is(err, io.EOF) || (err != nil && !(errors.As(err, &ne) && ne.Timeout()))
	}

	dial()
	dial()
	a1, a2 := <-accepted, <-accepted
	c3 := dial()
	if !closedByServer(c3) {
		t.Fatal("a third connection was kept, want it closed: the limit is 2")
	}
	if got := testutil.ToFloat64(refused); got != 1 {
		t.Errorf("refused connections counted %v, want 1", got)
	}
	a1.Close()
	a1.Close() // a second Close gives nothing back twice
	dial()
	a4 := <-accepted
	c5 := dial()
	if !closedByServer(c5) {
		t.Fatal("a connection past the limit after one ended was kept, want it closed")
	}
	if got := testutil.ToFloat64(refused); got != 2 {
		t.Errorf("refused connections counted %v, want 2", got)
	}
	a2.Close()
	a4.Close()
}
