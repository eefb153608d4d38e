package metrics_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/metrics"
	"kurier.dev/kurier/broker/store"
)

// TestMetrics_BacklogReadOncePerInterval: the backlog reads the whole
// store, so scrapes within BacklogInterval share one read, and a store
// that cannot be read costs the scrape only those gauges.
func TestMetrics_BacklogReadOncePerInterval(t *testing.T) {
	db, err := store.Open(t.TempDir(), store.Options{Small: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var reads atomic.Int32
	start := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	var elapsed atomic.Int64 // the test's clock, read by the server's goroutines
	now := func() time.Time { return start.Add(time.Duration(elapsed.Load())) }
	m := metrics.New(metrics.Sources{
		Backlog: func(ctx context.Context) (broker.Backlog, error) {
			reads.Add(1)
			return db.Backlog(ctx)
		},
		LogSize:      db.LogSize,
		Domains:      []string{"kreis-soest.example"},
		CertNotAfter: start.Add(30 * 24 * time.Hour),
		Now:          now,
		Logger:       slog.New(slog.DiscardHandler),
	})
	srv := httptest.NewServer(m.Handler(func() bool { return false }))
	defer srv.Close()

	body := get(t, srv.URL+"/metrics", http.StatusOK)
	for _, want := range []string{
		`kurier_outbound_queued_messages{domain="kreis-soest.example"} 0`,
		`kurier_mailbox_waiting_messages{state="unfetched"} 0`,
		`kurier_node_certificate_expiry_seconds 2.592e+06`,
		`kurier_log_leaves 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the scrape has no line %q", want)
		}
	}
	elapsed.Add(int64(metrics.BacklogInterval - time.Second))
	get(t, srv.URL+"/metrics", http.StatusOK)
	if n := reads.Load(); n != 1 {
		t.Fatalf("two scrapes within the interval read the backlog %d times, want once", n)
	}
	elapsed.Add(int64(metrics.BacklogInterval))
	db.Close() // from now on every read of the store fails
	body = get(t, srv.URL+"/metrics", http.StatusOK)
	if n := reads.Load(); n != 2 {
		t.Fatalf("a scrape after the interval did not read the backlog again (%d reads)", n)
	}
	if strings.Contains(body, "kurier_mailbox_waiting_messages") || strings.Contains(body, "kurier_log_leaves") {
		t.Error("gauges of a store that cannot be read are still served")
	}
	if !strings.Contains(body, "kurier_node_certificate_expiry_seconds") || !strings.Contains(body, "go_goroutines") {
		t.Error("a store that cannot be read took the other metrics with it")
	}

	get(t, srv.URL+"/readyz", http.StatusServiceUnavailable)
	get(t, srv.URL+"/healthz", http.StatusOK)
}

func get(t *testing.T, url string, want int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Fatalf("GET %s = %d, want %d:\n%s", url, resp.StatusCode, want, b)
	}
	return string(b)
}
