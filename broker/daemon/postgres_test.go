package daemon_test

import (
	"context"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
	"kurier.dev/kurier/client"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestRun_PostgresMetrics runs two nodes of one development setup on one
// PostgreSQL database, in one process as two kurierd would run: a message
// sent through the first shows in the second's metrics, which read the
// backlog and the log from the database, and report no free disk space,
// which PostgreSQL's own monitoring watches.
func TestRun_PostgresMetrics(t *testing.T) {
	dsn := pgtest.DSN(t)
	dir := t.TempDir()
	ctx := context.Background()
	start := func(metrics bool) (*daemon.Config, *running) {
		cfg, err := daemon.DevStore(dir, "127.0.0.1:0", daemon.StoreConfig{Postgres: dsn})
		if err != nil {
			t.Fatal(err)
		}
		if metrics {
			if cfg.MetricsListener, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
				t.Fatal(err)
			}
		}
		return cfg, startRun(t, cfg, &logBuffer{})
	}
	cfg, first := start(false)
	watched, second := start(true)
	if first.addr == second.addr {
		t.Fatalf("both nodes listen on %s", first.addr)
	}
	agency, _ := dialDev(ctx, t, dir, "agency", first.addr, cfg.CRL)
	if _, err := agency.Send(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: "Klage",
		Documents: []client.Document{{Name: "klage.pdf", Data: []byte("%PDF-1.7 Klage")}}}, nil); err != nil {
		t.Fatal(err)
	}

	got := scrape(t, "http://"+watched.MetricsListener.Addr().String()+"/metrics")
	for _, w := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"kurier_mailbox_waiting_messages", map[string]string{"state": "unfetched"}, 1},
		{"kurier_mailbox_waiting_messages", map[string]string{"state": "unanswered"}, 0},
		{"kurier_log_leaves", nil, 2},
		{"kurier_submissions_total", map[string]string{"outcome": "accepted"}, 0}, // accepted by the first
	} {
		if v, ok := value(got, w.name, w.labels); !ok || v != w.want {
			t.Errorf("%s%v = %v (found %v), want %v", w.name, w.labels, v, ok, w.want)
		}
	}
	if _, ok := value(got, "kurier_disk_free_bytes", nil); ok {
		t.Error("a node on PostgreSQL reports the free space of a local disk it does not use")
	}
}

// TestRun_PostgresNoticesAfterListenerLoss runs two nodes of one
// development setup on one database and ends the second's listener of
// notices on the server, as a failover would: a subscriber through the
// second still hears of the message the first accepted while the
// listener was gone (the listener resyncs once it is back), and of the
// one the second accepted itself, at once.
func TestRun_PostgresNoticesAfterListenerLoss(t *testing.T) {
	dsn := pgtest.DSN(t)
	dir := t.TempDir()
	ctx := context.Background()
	start := func(name string) (*daemon.Config, *running) {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("application_name", name)
		u.RawQuery = q.Encode()
		cfg, err := daemon.DevStore(dir, "127.0.0.1:0", daemon.StoreConfig{Postgres: u.String()})
		if err != nil {
			t.Fatal(err)
		}
		return cfg, startRun(t, cfg, &logBuffer{})
	}
	cfg, first := start("kurier-first")
	_, second := start("kurier-second")
	viaFirst, _ := dialDev(ctx, t, dir, "agency", first.addr, cfg.CRL)
	viaSecond, _ := dialDev(ctx, t, dir, "agency", second.addr, cfg.CRL)
	court, _ := dialDev(ctx, t, dir, "court", second.addr, cfg.CRL)

	subCtx, stop := context.WithCancel(ctx)
	defer stop()
	heard, ready, done := make(chan string, 8), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- court.Subscribe(subCtx, func(e client.InboxEntry) error { heard <- e.ID; return nil },
			client.OnReady(func() error { close(ready); return nil }))
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Subscribe: %v", err)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var pid int32
	if err := conn.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = 'kurier-second' AND query ILIKE 'listen%'`).Scan(&pid); err != nil {
		t.Fatalf("find the second node's listener: %v", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1, 10000)", pid); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, via := range []*client.Client{viaFirst, viaSecond} {
		r, err := via.Send(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: "Klage",
			Documents: []client.Document{{Name: "klage.pdf", Data: []byte("%PDF-1.7 Klage")}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		want[r.MessageID] = true
	}
	deadline := time.After(30 * time.Second)
	for len(want) > 0 {
		select {
		case id := <-heard:
			if !want[id] {
				t.Fatalf("heard of %s, not one of %v, or twice", id, want)
			}
			delete(want, id)
		case err := <-done:
			t.Fatalf("Subscribe ended: %v", err)
		case <-deadline:
			t.Fatalf("the subscriber through the second node heard nothing of %v within 30 s", want)
		}
	}
}
