package webverify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ErrNotLoopback is returned by Listen for an address other than this
// computer's own.
var ErrNotLoopback = errors.New("the verifier's page is served only on this computer (127.0.0.1, [::1] or localhost)")

// Listen listens on addr, which must be a loopback address with a port
// (127.0.0.1:8080, localhost:0). The page is the verifier itself, and
// over plain HTTP across a network anyone on the way could hand out one
// that passes everything; for other computers, put the folder of WriteDir
// on an HTTPS server instead.
func Listen(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("serve the verifier on %q: want HOST:PORT, such as 127.0.0.1:8080: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("serve the verifier on %s: %w; for other computers write the page with --write-web and put it on an HTTPS web server", addr, ErrNotLoopback)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("serve the verifier: %w", err)
	}
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		ln.Close()
		return nil, fmt.Errorf("serve the verifier on %s: %s resolves to %s: %w", addr, host, ip, ErrNotLoopback)
	}
	return ln, nil
}

// Serve serves Handler on ln until ctx is done, then lets requests under
// way finish for up to five seconds. It closes ln.
func Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("serve the verifier: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("stop serving the verifier: %w", err)
	}
	<-done // http.ErrServerClosed
	return nil
}

// URL returns the address of the page served on ln.
func URL(ln net.Listener) string {
	return "http://" + ln.Addr().String() + "/"
}
