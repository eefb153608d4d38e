package daemon_test

import (
	"context"
	"net"
	"testing"

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
