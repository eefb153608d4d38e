package postgres_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
)

// partition forwards TCP connections to a server until cut, then drops
// every byte both ways, as a network that loses the server's host does:
// no connection is refused or reset, each just never hears back.
type partition struct {
	l      net.Listener
	target string
	cut    atomic.Bool
	wg     sync.WaitGroup
}

func newPartition(t *testing.T, target string) *partition {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &partition{l: l, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(func() { l.Close(); p.wg.Wait() })
	return p
}

func (p *partition) accept() {
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		conns = append(conns, c)
		if p.cut.Load() {
			p.wg.Go(func() { io.Copy(io.Discard, c) })
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		conns = append(conns, s)
		p.wg.Go(func() { p.pipe(s, c) })
		p.wg.Go(func() { p.pipe(c, s) })
	}
}

// pipe copies from src to dst until src ends, dropping what it reads
// once the partition is cut.
func (p *partition) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestStore_NetworkPartition: once the database's host cannot be heard
// from, calls fail with their deadline (a connection of before waits for
// its answer, a new one for its handshake), or with
// broker.ErrStoreUnavailable once a connection attempt has failed; nothing
// else. A readiness ping says so at once. Once the network is back, the
// store works again.
func TestStore_NetworkPartition(t *testing.T) {
	srv := pgtest.NewServer(t)
	u, err := url.Parse(srv.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	p := newPartition(t, "127.0.0.1:"+strconv.Itoa(srv.Port()))
	u.Host = p.l.Addr().String()
	st := open(t, u.String())
	ctx := context.Background()
	if _, err := st.LogSize(ctx); err != nil {
		t.Fatal(err)
	}

	p.cut.Store(true)
	for range 5 {
		ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := st.LogSize(ctx)
		cancel()
		if !errors.Is(err, broker.ErrStoreUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("LogSize across the partition = %v, want broker.ErrStoreUnavailable or its deadline", err)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	if err := st.Ping(pctx); !errors.Is(err, broker.ErrStoreUnavailable) {
		t.Errorf("Ping across the partition = %v, want broker.ErrStoreUnavailable", err)
	}
	cancel()

	p.cut.Store(false)
	for deadline := time.Now().Add(30 * time.Second); ; {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := st.LogSize(ctx)
		cancel()
		if err == nil {
			break
		}
		t.Logf("LogSize after the partition: %v", err)
		if time.Now().After(deadline) {
			t.Fatalf("LogSize fails 30s after the partition ended: %v", err)
		}
	}
}
