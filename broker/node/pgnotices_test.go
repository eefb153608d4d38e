package node_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/broker/store/postgres"
	"kurier.dev/kurier/broker/store/postgres/pgnotify"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
)

// pgProcess returns a node as one kurierd process on the database dsn
// would run it: its own store connections, and its own notices carried
// by PostgreSQL, whose listener runs until the test ends. Its
// connections carry the application name name.
func pgProcess(t *testing.T, h *harness, dsn, name string, opts ...pgnotify.Option) *node.Node {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	st, err := postgres.Open(ctx, u.String(), postgres.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	no, err := pgnotify.Open(ctx, u.String(), logger, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(no.Close)
	n := h.newNodeOn(st, node.Limits{}, no)
	ctx, cancel := context.WithCancel(ctx)
	ready, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		no.Listen(ctx, pgnotify.Handler{Ready: func() { close(ready) }, Notice: n.Announce, Resync: n.Resync})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s does not listen for notices within 10 s", name)
	}
	return n
}

// TestNode_NoticesThroughPostgres runs two processes of a node on one
// PostgreSQL database. A subscriber on the second hears once of each
// message either accepts; of those the second accepts while its
// listener's connection is gone, at once; and of those the first
// accepts meanwhile, once the listener is back, tried again after a
// growing wait, without doing anything itself.
func TestNode_NoticesThroughPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	h := newHarness(t, node.Limits{})
	waits, release := make(chan time.Duration, 8), make(chan time.Time)
	after := func(d time.Duration) <-chan time.Time { waits <- d; return release }
	a := pgProcess(t, h, dsn, "kurier-a")
	b := pgProcess(t, h, dsn, "kurier-b", pgnotify.WithClock(time.Now, after))
	ch, cancel, err := b.Subscribe(participant(court))
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	submit := func(n *node.Node) string {
		t.Helper()
		m := newMessage(t, fx.IDs[agency], agency, court)
		if _, err := n.Submit(ctx, participant(agency), m.bytes, m.sig, bytes.NewReader(m.payload)); err != nil {
			t.Fatal(err)
		}
		return m.env.ID
	}
	heard := func(want, why string) {
		t.Helper()
		if e := next(t, ch); e.Message.ID() != want {
			t.Fatalf("heard of %s, want %s (%s)", e.Message.ID(), want, why)
		}
	}

	heard(submit(b), "accepted here")
	// b's own notice of the first came back before a's of the second.
	heard(submit(a), "accepted by the other process, the first not twice")

	// The test's own connection is to the maintenance database, which the
	// ALTER DATABASE below leaves open.
	u := must(url.Parse(dsn))
	db := pgx.Identifier{strings.TrimPrefix(u.Path, "/")}.Sanitize()
	u.Path = "/postgres"
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	terminateListener(ctx, t, conn, "kurier-b")
	wantWait(t, waits, time.Second)
	heard(submit(b), "accepted here while the listener is down")
	missed := submit(a) // its notice reaches no one on b
	none(t, ch)

	// The database refuses connections: the listener tries again later
	// each time.
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+db+" WITH ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	release <- time.Now()
	wantWait(t, waits, 2*time.Second)
	release <- time.Now()
	wantWait(t, waits, 4*time.Second)
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+db+" WITH ALLOW_CONNECTIONS true"); err != nil {
		t.Fatal(err)
	}
	release <- time.Now()
	// The resync finds the earlier messages too, but announces only what
	// the subscriber was not told: the first it hears is the missed one.
	heard(missed, "missed while the listener was down")
	heard(submit(a), "accepted by the other process once the listener is back")
	none(t, ch)
}

// terminateListener ends the server process of the listener whose
// connections carry the application name name, as a failover or an
// administrator would, and waits until it is gone.
func terminateListener(ctx context.Context, t *testing.T, conn *pgx.Conn, name string) {
	t.Helper()
	var pid int32
	err := conn.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query ILIKE 'listen%'`, name).Scan(&pid)
	if err != nil {
		t.Fatalf("find the listener of %s: %v", name, err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1, 10000)", pid); err != nil {
		t.Fatal(err)
	}
}

// wantWait checks that the listener waits want before it connects again.
func wantWait(t *testing.T, waits <-chan time.Duration, want time.Duration) {
	t.Helper()
	select {
	case d := <-waits:
		if d != want {
			t.Fatalf("the listener waits %v before it connects again, want %v", d, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the listener does not notice within 10 s that its connection is gone")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
