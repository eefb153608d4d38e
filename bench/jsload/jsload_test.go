package jsload

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestMain lets the test binary serve as the server child StartServer
// re-executes.
func TestMain(m *testing.M) {
	MaybeServeChild()
	os.Exit(m.Run())
}

// testTimeout bounds each test's work against the server.
const testTimeout = 30 * time.Second

// startServer starts a server child for t, stopped at t's end.
func startServer(t *testing.T, cfg ServerConfig) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s, err := StartServer(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Kill() })
	return s
}

// connectJS connects a JetStream client to s, closed at t's end.
func connectJS(t *testing.T, s *Server) jetstream.JetStream {
	t.Helper()
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// The server runs with the JetStream configuration it was given (every
// write synced, the store where asked), and what it acknowledged is in the
// store: killed without a chance to flush and started again on the same
// store, it holds every message.
func TestServer_RestartKeepsStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	dir := t.TempDir()
	cfg := ServerConfig{Dir: dir, StoreDir: filepath.Join(dir, "store")}
	srv := startServer(t, cfg)

	v, err := srv.Varz(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The server keeps its streams in a folder "jetstream" of store_dir.
	wantStore := filepath.Join(cfg.StoreDir, "jetstream")
	if c := v.JetStream.Config; c == nil || !c.SyncAlways || c.StoreDir != wantStore {
		t.Fatalf("server's JetStream configuration %+v, want sync_always and store_dir %s", c, wantStore)
	}

	const messages = 200
	payload := bytes.Repeat([]byte("kurier"), 200)
	js := connectJS(t, srv)
	if _, err := CreateStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	tally := Publish(ctx, js, messages, 4, payload)
	if len(tally.Latencies) != messages || tally.Errors != 0 {
		t.Fatalf("published %d with %d errors (first: %s), want %d without errors", len(tally.Latencies), tally.Errors, tally.FirstError, messages)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}

	srv = startServer(t, cfg)
	js = connectJS(t, srv)
	stream, err := js.Stream(ctx, Stream)
	if err != nil {
		t.Fatalf("stream after the restart: %v", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != messages || info.State.LastSeq != messages {
		t.Fatalf("after the restart the stream holds %d messages, the last %d; want %d", info.State.Msgs, info.State.LastSeq, messages)
	}
	last, err := stream.GetMsg(ctx, messages)
	if err != nil {
		t.Fatal(err)
	}
	if last.Subject != Subject || !bytes.Equal(last.Data, payload) {
		t.Fatalf("the last message after the restart is %d bytes on %q, want the %d bytes published on %q", len(last.Data), last.Subject, len(payload), Subject)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
}

// With TLS the server speaks TLS 1.3 and accepts only a client with a
// certificate from the run's CA.
func TestServer_MutualTLS(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, ServerConfig{Dir: dir, StoreDir: filepath.Join(dir, "store"), TLS: true})

	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	state, err := nc.TLSConnectionState()
	if err != nil {
		t.Fatal(err)
	}
	if state.Version != tls.VersionTLS13 {
		t.Errorf("TLS version %s, want TLS 1.3", tls.VersionName(state.Version))
	}

	noCert := srv.tls.Clone()
	noCert.Certificates = nil
	if nc, err := nats.Connect(srv.URL(), nats.Secure(noCert), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("a client without a certificate was let in")
	}
}

// A run publishes every message, reports the server's sync setting as the
// server states it and its CPU and memory, and leaves nothing in the
// store's directory.
func TestRun(t *testing.T) {
	storeDir := t.TempDir()
	const messages = 200
	r, err := Run(context.Background(), Config{Messages: messages, Size: 1024, Concurrency: 4, TLS: true, StoreDir: storeDir, Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	if r.Published != messages || r.Stored == nil || *r.Stored != messages || r.Errors != 0 || r.TimedOut {
		t.Fatalf("published %d, stored %v, errors %d (first: %s), timed out %t; want %d each, no errors", r.Published, r.Stored, r.Errors, r.FirstError, r.TimedOut, messages)
	}
	if !r.SyncAlways || !r.TLS || r.ServerVersion == "" {
		t.Errorf("sync_always %t, tls %t, server version %q; want both true and a version", r.SyncAlways, r.TLS, r.ServerVersion)
	}
	if r.PublishPerS <= 0 || r.PublishP50Ms <= 0 || r.PublishP99Ms < r.PublishP50Ms {
		t.Errorf("rate %.1f/s, p50 %.2f ms, p99 %.2f ms; want a positive rate and p50 ≤ p99", r.PublishPerS, r.PublishP50Ms, r.PublishP99Ms)
	}
	if r.ServerCPUUsPerMsg == nil || r.ServerPeakRSSBytes == nil || *r.ServerPeakRSSBytes <= 0 || r.SelfCPUUsPerMsg == nil || r.SelfPeakRSSBytes == nil {
		t.Errorf("server CPU %v, RSS %v, own CPU %v, RSS %v; want all measured", r.ServerCPUUsPerMsg, r.ServerPeakRSSBytes, r.SelfCPUUsPerMsg, r.SelfPeakRSSBytes)
	}
	left, err := os.ReadDir(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("the run left %d entries in the store's directory", len(left))
	}
}

func TestPercentileMs(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var d []time.Duration
		for _, v := range n {
			d = append(d, time.Duration(v)*time.Millisecond)
		}
		return d
	}
	var hundred []int
	for i := 100; i >= 1; i-- {
		hundred = append(hundred, i)
	}
	for _, c := range []struct {
		name string
		d    []time.Duration
		p    int
		want float64
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 99, 7},
		{"median of four is the second", ms(4, 1, 3, 2), 50, 2},
		{"p99 of a hundred is the 99th", ms(hundred...), 99, 99},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := percentileMs(c.d, c.p); got != c.want {
				t.Errorf("percentileMs(%v, %d) = %v, want %v", c.d, c.p, got, c.want)
			}
		})
	}
}
