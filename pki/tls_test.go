package pki_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"kurier.dev/kurier/pki"
)

// tlsServer accepts connections with cfg, completes the handshake, writes
// "ok" and records each handshake's outcome.
type tlsServer struct {
	addr string
	mu   sync.Mutex
	errs []error
	done chan struct{}
}

func startServer(t *testing.T, cfg *tls.Config) *tlsServer {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{addr: ln.Addr().String(), done: make(chan struct{})}
	t.Cleanup(func() { ln.Close(); <-s.done })
	go func() {
		defer close(s.done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			tc := conn.(*tls.Conn)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			err = tc.Handshake()
			if err == nil {
				_, err = tc.Write([]byte("ok"))
			}
			s.mu.Lock()
			s.errs = append(s.errs, err)
			s.mu.Unlock()
			tc.Close()
		}
	}()
	return s
}

// lastErr returns the outcome of the last handshake the server finished.
func (s *tlsServer) lastErr(t *testing.T, n int) error {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		if len(s.errs) >= n {
			err := s.errs[n-1]
			s.mu.Unlock()
			return err
		}
		s.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("server saw fewer than %d handshakes", n)
	return nil
}

// dial connects with cfg and reads the server's "ok": with TLS 1.3 a
// refused client certificate shows only on the first read.
func dial(addr string, cfg *tls.Config) (resumed bool, err error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return false, err
	}
	if string(buf) != "ok" {
		return false, errors.New("unexpected reply")
	}
	return conn.ConnectionState().DidResume, nil
}

func TestTLS(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	ts := newTrustStore(t)
	srv := startServer(t, pki.ServerTLS(fx.node, ts, logger))
	handshakes := 0

	bob := issueTLSParticipant(t, "bob@stadt.example")
	if err := fx.ca.Revoke(bob.Cert.SerialNumber, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.ca.WriteCRL(time.Hour); err != nil {
		t.Fatal(err)
	}

	t.Run("participant", func(t *testing.T) {
		if _, err := dial(srv.addr, pki.ClientTLS(fx.alice, ts, "stadt.example")); err != nil {
			t.Fatal(err)
		}
		handshakes++
		if err := srv.lastErr(t, handshakes); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("second domain", func(t *testing.T) {
		if _, err := dial(srv.addr, pki.ClientTLS(fx.alice, ts, "kreis.example")); err != nil {
			t.Fatal(err)
		}
		handshakes++
	})
	t.Run("node as client", func(t *testing.T) {
		peer := issueNode(t, fx.ca, "land.example")
		if _, err := dial(srv.addr, pki.ClientTLS(peer, ts, "stadt.example")); err != nil {
			t.Fatal(err)
		}
		handshakes++
	})
	t.Run("revoked participant", func(t *testing.T) {
		if _, err := dial(srv.addr, pki.ClientTLS(bob, ts, "stadt.example")); err == nil {
			t.Fatal("revoked client got in")
		}
		handshakes++
		if err := srv.lastErr(t, handshakes); !errors.Is(err, pki.ErrRevoked) {
			t.Fatalf("server: %v, want ErrRevoked", err)
		}
		if !strings.Contains(logs.String(), "bob@stadt.example") || !strings.Contains(logs.String(), "level=WARN") {
			t.Errorf("refusal not logged with the peer: %s", logs.String())
		}
	})
	t.Run("foreign CA client", func(t *testing.T) {
		if _, err := dial(srv.addr, pki.ClientTLS(fx.foreign, ts, "stadt.example")); err == nil {
			t.Fatal("client from a foreign CA got in")
		}
		handshakes++
		if err := srv.lastErr(t, handshakes); err == nil {
			t.Fatal("server accepted a foreign client")
		}
	})
	t.Run("server does not serve domain", func(t *testing.T) {
		if _, err := dial(srv.addr, pki.ClientTLS(fx.alice, ts, "land.example")); err == nil {
			t.Fatal("client accepted a server for another domain")
		}
		handshakes++
	})
	t.Run("client refuses participant as server", func(t *testing.T) {
		// Even for a name the certificate carries, a server must be a node.
		cs := tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{fx.alice.Cert, fx.ca.Certificate()}}}
		if err := pki.ClientTLS(fx.alice, ts, "stadt.example").VerifyConnection(cs); !errors.Is(err, pki.ErrUnknownIdentity) {
			t.Fatalf("VerifyConnection = %v", err)
		}
	})
	t.Run("foreign server", func(t *testing.T) {
		foreignSrv := startServer(t, pki.ServerTLS(fx.foreign, ts, logger))
		if _, err := dial(foreignSrv.addr, pki.ClientTLS(fx.alice, ts, "stadt.example")); err == nil {
			t.Fatal("client accepted a server from a foreign CA")
		}
	})
}

// TestTLS_resumption checks that a client revoked after its first
// connection cannot come back on a TLS 1.3 session ticket.
func TestTLS_resumption(t *testing.T) {
	ts := newTrustStore(t)
	cfg := pki.ServerTLS(fx.node, ts, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var mu sync.Mutex
	var resumedAttempts int
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.DidResume {
			mu.Lock()
			resumedAttempts++
			mu.Unlock()
		}
		return verify(cs)
	}
	srv := startServer(t, cfg)

	carol := issueTLSParticipant(t, "carol@stadt.example")
	client := pki.ClientTLS(carol, ts, "stadt.example")
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	if _, err := dial(srv.addr, client); err != nil {
		t.Fatal(err)
	}
	resumed, err := dial(srv.addr, client)
	if err != nil {
		t.Fatal(err)
	}
	if !resumed {
		t.Fatal("second connection did not resume; the test would prove nothing")
	}

	if err := fx.ca.Revoke(carol.Cert.SerialNumber, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.ca.WriteCRL(time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(srv.addr, client); err == nil {
		t.Fatal("revoked client got in by resuming its session")
	}
	if err := srv.lastErr(t, 3); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("server: %v, want ErrRevoked", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if resumedAttempts < 2 {
		t.Errorf("server saw %d resumed handshakes, want the refused one among them", resumedAttempts)
	}
}
