// Package netlimit bounds the connections a server holds open: in all, and
// from one source address, so that no one host can take every file
// descriptor of the process and lock everybody else out. A connection over
// either cap is closed as soon as it is accepted, before any byte is read,
// so that refused connections hold no descriptor.
//
// Connections that never finish their handshake are a server's own
// business to time out (gRPC's ConnectionTimeout does, for Kurier); the
// caps here bound how many can be waiting meanwhile.
package netlimit

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// Options are the caps of a Listener.
type Options struct {
	// Max is how many connections may be open at once; 0 means no cap.
	Max int
	// PerSource is how many of them may come from one source: one IPv4
	// address, or one IPv6 /64 (what one site is usually given); 0 means
	// no cap.
	PerSource int
	// Logger is told, at most every 10 seconds, that connections were
	// refused; default slog.Default().
	Logger *slog.Logger
}

// Listener is a net.Listener that closes connections over its caps at
// once. Its methods are safe for concurrent use.
type Listener struct {
	net.Listener
	opts Options
	warn rate.Sometimes

	mu       sync.Mutex
	open     int
	bySource map[netip.Prefix]int
	refused  int // since the last warning
}

// Wrap returns l with the caps of o.
func Wrap(l net.Listener, o Options) *Listener {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Listener{Listener: l, opts: o, warn: rate.Sometimes{Interval: 10 * time.Second}, bySource: map[netip.Prefix]int{}}
}

// Accept returns the next connection within the caps; those over a cap
// are closed and not returned.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c.RemoteAddr())
		if reason := l.take(src); reason != "" {
			c.Close()
			l.refuse(src, reason)
			continue
		}
		return &conn{Conn: c, release: sync.OnceFunc(func() { l.give(src) })}, nil
	}
}

// Open returns how many accepted connections are open now.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// take counts one more connection from src, or says which cap forbids it.
func (l *Listener) take(src netip.Prefix) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.opts.Max > 0 && l.open >= l.opts.Max:
		return fmt.Sprintf("%d connections open, the most this node takes", l.open)
	case l.opts.PerSource > 0 && l.bySource[src] >= l.opts.PerSource:
		return fmt.Sprintf("%d connections open from this source, the most one source may hold", l.bySource[src])
	}
	l.open++
	l.bySource[src]++
	return ""
}

func (l *Listener) give(src netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.bySource[src]--; l.bySource[src] <= 0 {
		delete(l.bySource, src)
	}
}

// refuse counts a refused connection and warns now and then, never once
// per connection: a flood must not flood the log too.
func (l *Listener) refuse(src netip.Prefix, reason string) {
	l.mu.Lock()
	l.refused++
	n := l.refused
	l.mu.Unlock()
	l.warn.Do(func() {
		l.mu.Lock()
		l.refused = 0
		l.mu.Unlock()
		l.opts.Logger.Warn("connections refused over the connection cap", slog.String("source", src.String()), slog.String("reason", reason), slog.Int("refused", n))
	})
}

// sourceOf names the source a connection counts against: its IPv4
// address, or its IPv6 /64.
func sourceOf(a net.Addr) netip.Prefix {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Prefix{} // not IP: all such connections share one count
	}
	ip := ap.Addr().Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// conn gives its place back when closed, once however often Close is
// called.
type conn struct {
	net.Conn
	release func()
}

// Close gives the place back, then closes: the peer sees the close only
// once the count no longer holds it.
func (c *conn) Close() error {
	c.release()
	return c.Conn.Close()
}

// RaiseFileLimit raises the process's soft limit of open files
// (RLIMIT_NOFILE) to its hard limit, which is allowed without privileges,
// and returns the limit then in force. If raising fails, the current limit
// is returned with the error.
func RaiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read the open-files limit: %w", err)
	}
	if lim.Cur >= lim.Max {
		return lim.Cur, nil
	}
	raised := syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		return lim.Cur, fmt.Errorf("raise the open-files limit from %d to %d: %w", lim.Cur, lim.Max, err)
	}
	return lim.Max, nil
}
