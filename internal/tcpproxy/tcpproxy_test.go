package tcpproxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// echo starts a backend that writes back what it reads, closed when the
// test ends.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { io.Copy(c, c); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// quiet is how long a connection that should hear nothing is listened to.
const quiet = 150 * time.Millisecond

// roundTrip writes msg on c and reads it back within a generous bound.
func roundTrip(t *testing.T, c net.Conn, msg string) error {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		t.Fatalf("read %q, want %q", buf, msg)
	}
	return nil
}

// silent reports whether c hears nothing and stays open for quiet.
func silent(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(quiet))
	n, err := c.Read(make([]byte, 1))
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	t.Logf("read %d bytes, %v; want nothing until the deadline", n, err)
	return false
}

// ended reports whether c is closed by the other side within a generous
// bound, with nothing read.
func ended(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n == 0 && err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	t.Logf("read %d bytes, %v; want the connection ended", n, err)
	return false
}

// forwarded starts a proxy to an echo backend and a connection through
// it that has had an answer.
func forwarded(t *testing.T) (*Proxy, net.Conn) {
	t.Helper()
	p := New(t, echo(t))
	c := dial(t, p.Addr())
	if err := roundTrip(t, c, "x"); err != nil {
		t.Fatal(err)
	}
	return p, c
}

func TestForward(t *testing.T) {
	p := New(t, echo(t))
	c := dial(t, p.Addr())
	for _, msg := range []string{"PING\r\n", "a second command"} {
		if err := roundTrip(t, c, msg); err != nil {
			t.Fatalf("forwarding: %v", err)
		}
	}
}

// TestPartition: the open connection ends, a new one is accepted and
// hears nothing; Heal closes that one and forwards again.
func TestPartition(t *testing.T) {
	p, before := forwarded(t)
	p.Partition()
	if !ended(t, before) {
		t.Error("partitioned: the open connection was not closed")
	}
	during := dial(t, p.Addr()) // accepted: the dial succeeds
	during.Write([]byte("PING\r\n"))
	if !silent(t, during) {
		t.Error("partitioned: a new connection was answered or closed")
	}
	p.Heal()
	if !ended(t, during) {
		t.Error("healed: the connection held during the partition was not closed")
	}
	if err := roundTrip(t, dial(t, p.Addr()), "after"); err != nil {
		t.Errorf("healed: %v", err)
	}
}

// TestSilence: the open connection stays open and hears nothing, what
// it sends is not forwarded, and a new one is accepted and hears
// nothing; Heal closes both and forwards again.
func TestSilence(t *testing.T) {
	p, before := forwarded(t)
	p.Silence()
	before.Write([]byte("PING\r\n"))
	if !silent(t, before) {
		t.Error("silenced: the open connection was answered or closed")
	}
	during := dial(t, p.Addr())
	during.Write([]byte("PING\r\n"))
	if !silent(t, during) {
		t.Error("silenced: a new connection was answered or closed")
	}
	p.Heal()
	for name, c := range map[string]net.Conn{"open before": before, "opened during": during} {
		if !ended(t, c) {
			t.Errorf("healed: the connection %s the silence was not closed", name)
		}
	}
	if err := roundTrip(t, dial(t, p.Addr()), "after"); err != nil {
		t.Errorf("healed: %v", err)
	}
}

// TestReplyDelay: with a delay set each answer comes that late, on an open
// connection too; set back to 0, at once.
func TestReplyDelay(t *testing.T) {
	p := New(t, echo(t))
	c := dial(t, p.Addr())
	const d = 200 * time.Millisecond
	p.SetReplyDelay(d)
	start := time.Now()
	if err := roundTrip(t, c, "slow"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < d {
		t.Errorf("answer took %v with a delay of %v", took, d)
	}
	p.SetReplyDelay(0)
	c.SetReadDeadline(time.Now().Add(d / 2))
	if _, err := c.Write([]byte("fast")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Errorf("with the delay back to 0, no answer within %v: %v", d/2, err)
	}
}

// TestClose: the open connection ends, a new one is refused, and Close
// may be called again (and is, when the test ends).
func TestClose(t *testing.T) {
	p, c := forwarded(t)
	p.Close()
	if !ended(t, c) {
		t.Error("closed: the open connection was not closed")
	}
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		c.Close()
		t.Error("closed: a new connection was accepted, want refused")
	}
	p.Close()
}

// TestBackendDown: a connection the backend refuses is closed at once.
func TestBackendDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	p := New(t, down)
	if !ended(t, dial(t, p.Addr())) {
		t.Error("backend down: the connection was not closed")
	}
}
