package daemon

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store/postgres"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
)

// TestStoreProbe: the probe of a store on PostgreSQL says reachable while
// the database answers, pings it again only once its answer is
// probeFresh old, and says unreachable while the database is down, and
// reachable again once it is back.
func TestStoreProbe(t *testing.T) {
	srv := pgtest.NewServer(t)
	st, err := postgres.Open(context.Background(), srv.DSN(t), postgres.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pings := 0
	var last error
	p := newStoreProbe(func(ctx context.Context) error {
		pings++
		last = st.Ping(ctx)
		return last
	}, slog.New(slog.DiscardHandler))
	now := time.Unix(1_800_000_000, 0)
	p.now = func() time.Time { return now }

	if !p.reachable() || pings != 1 {
		t.Fatalf("reachable = false or %d pings with the database up (%v)", pings, last)
	}
	srv.Stop(t)
	now = now.Add(probeFresh - time.Millisecond)
	if !p.reachable() || pings != 1 {
		t.Errorf("a probe within probeFresh of the last pinged again (%d pings) or changed its answer", pings)
	}
	now = now.Add(time.Millisecond)
	if p.reachable() || pings != 2 {
		t.Fatalf("reachable = true (%d pings) with the database down", pings)
	}
	if !errors.Is(last, broker.ErrStoreUnavailable) {
		t.Errorf("ping with the database down = %v, want broker.ErrStoreUnavailable", last)
	}
	if p.reachable() || pings != 2 {
		t.Errorf("an unreachable answer was not kept for probeFresh (%d pings)", pings)
	}

	srv.Start(t)
	// A connection idle in the pool since before the stop may be found
	// broken by a ping or two first.
	for deadline := time.Now().Add(30 * time.Second); ; {
		now = now.Add(probeFresh)
		if p.reachable() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unreachable 30s after the database restarted: %v", last)
		}
	}
}

// TestStoreProbe_Badger: a store in the process needs no probe, and is
// reachable while the process runs.
func TestStoreProbe_Badger(t *testing.T) {
	if p := newStoreProbe(badgerBackend{}.ping(), slog.New(slog.DiscardHandler)); p != nil || !p.reachable() {
		t.Errorf("probe of a badger store = %v", p)
	}
}
