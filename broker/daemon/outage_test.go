package daemon_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/pki"
)

// TestRun_DatabaseOutage runs a node on a PostgreSQL server that is
// stopped under it and started again: meanwhile its calls answer
// Unavailable with what to do (not an internal error) and /readyz says
// not ready; once the server is back, both recover, without a restart
// of the node. Nothing it logs shows the database's password.
func TestRun_DatabaseOutage(t *testing.T) {
	srv := pgtest.NewServer(t)
	dir := t.TempDir()
	cfg, err := daemon.DevStore(dir, "127.0.0.1:0", daemon.StoreConfig{Postgres: srv.DSN(t)})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MetricsListener, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	node := startRun(t, cfg, &logs)
	readyz := "http://" + cfg.MetricsListener.Addr().String() + "/readyz"
	ctx := context.Background()
	id, err := pki.LoadIdentity(daemon.DevIdentity(dir, "court"))
	if err != nil {
		t.Fatal(err)
	}
	court, err := client.Dial(ctx, node.addr, id, client.WithCRL(cfg.CRL), client.WithRetry(0))
	if err != nil {
		t.Fatal(err)
	}
	defer court.Close()
	if _, err := court.Inbox(ctx); err != nil {
		t.Fatalf("Inbox with the database up: %v", err)
	}
	awaitReady(t, readyz, http.StatusOK)

	srv.Stop(t)
	_, err = court.Inbox(ctx)
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "database cannot be reached now; try again") {
		t.Errorf("Inbox with the database down = %v, want Unavailable saying to try again", err)
	} else if strings.Contains(st.Message(), "127.0.0.1") || strings.Contains(st.Message(), "connect") {
		t.Errorf("Inbox with the database down tells the caller how it failed: %q", st.Message())
	}
	t.Logf("Inbox with the database down: %v", err)
	awaitReady(t, readyz, http.StatusServiceUnavailable)

	srv.Start(t)
	awaitReady(t, readyz, http.StatusOK)
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, err := court.Inbox(ctx)
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("Inbox after the database restarted: %v", err)
		}
	}
	if strings.Contains(logs.String(), pgtest.Password) {
		t.Errorf("the node's log shows the database's password:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "the store cannot be reached") {
		t.Errorf("the node did not log that its store could not be reached:\n%s", logs.String())
	}
}

// awaitReady polls url until it answers code, for at most 30s.
func awaitReady(t *testing.T, url string, code int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := 0
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if got = resp.StatusCode; got == code {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %v, want %d within 30s", url, got, err, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
