package netlimit_test

import (
	"errors"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	"kurier.dev/kurier/broker/netlimit"
)

// dialFrom connects to addr from the loopback address local.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reports whether the server closed c: a read ends with
// EOF or a reset before the deadline instead of timing out.
func closedByServer(t *testing.T, c net.Conn, wait time.Duration) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

// TestHostileListener_Caps fills the per-source and the overall cap: a
// connection over either is closed at once, a connection given back makes
// room for the next, and the counts are right throughout.
func TestHostileListener_Caps(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := netlimit.Wrap(tcp, netlimit.Options{Max: 3, PerSource: 2, Logger: slog.New(slog.DiscardHandler)})
	defer lis.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	addr := tcp.Addr().String()
	next := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("no connection accepted")
			return nil
		}
	}

	a1, a2 := dialFrom(t, "127.0.0.2", addr), dialFrom(t, "127.0.0.2", addr)
	s1, s2 := next(), next()
	over := dialFrom(t, "127.0.0.2", addr)
	if !closedByServer(t, over, 5*time.Second) {
		t.Fatal("a third connection from one source was not closed")
	}
	b1 := dialFrom(t, "127.0.0.3", addr)
	next()
	full := dialFrom(t, "127.0.0.4", addr)
	if !closedByServer(t, full, 5*time.Second) {
		t.Fatal("a connection over the overall cap was not closed")
	}
	if n := lis.Open(); n != 3 {
		t.Fatalf("Open = %d, want 3", n)
	}
	for _, c := range []net.Conn{a1, a2, b1} {
		if closedByServer(t, c, 50*time.Millisecond) {
			t.Fatal("a connection within the caps was closed")
		}
	}
	// Closing twice gives back one place.
	s1.Close()
	s1.Close()
	if n := lis.Open(); n != 2 {
		t.Fatalf("Open after a close = %d, want 2", n)
	}
	dialFrom(t, "127.0.0.2", addr)
	next()
	if n := lis.Open(); n != 3 {
		t.Fatalf("Open = %d, want 3 again", n)
	}
	s2.Close()
	if !closedByServer(t, a2, 5*time.Second) {
		t.Fatal("closing the accepted side did not close the connection")
	}
}

// TestFaultRaiseFileLimit lowers the soft open-files limit, as a service
// manager may start the node with, and raises it to the hard limit again.
func TestFaultRaiseFileLimit(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max <= 512 {
		t.Skipf("hard open-files limit %d leaves nothing to raise", lim.Max)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) })
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 512, Max: lim.Max}); err != nil {
		t.Fatal(err)
	}
	n, err := netlimit.RaiseFileLimit()
	if err != nil || n != lim.Max {
		t.Fatalf("RaiseFileLimit = %d, %v; want the hard limit %d", n, err, lim.Max)
	}
	var now syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now); err != nil || now.Cur != lim.Max {
		t.Fatalf("soft limit after raising: %d (%v), want %d", now.Cur, err, lim.Max)
	}
}
