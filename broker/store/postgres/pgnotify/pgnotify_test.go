package pgnotify_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"kurier.dev/kurier/broker/store/postgres/pgnotify"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type heard struct{ recipient, id string }

// listen starts a listener of the notices on dsn, as one process of a
// node, and returns what it hears; it waits until it listens.
func listen(ctx context.Context, t *testing.T, dsn string) <-chan heard {
	t.Helper()
	no, err := pgnotify.Open(ctx, dsn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(no.Close)
	ctx, cancel := context.WithCancel(ctx)
	got := make(chan heard, 16)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- no.Listen(ctx, func() { close(ready) }, func(_ context.Context, r, id string) error {
			got <- heard{r, id}
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Listen ended with %v, want context.Canceled", err)
		}
	})
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("the listener did not listen within 10 s")
	}
	return got
}

func expect(t *testing.T, got <-chan heard, want heard) {
	t.Helper()
	select {
	case h := <-got:
		if h != want {
			t.Fatalf("heard %+v, want %+v", h, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("heard nothing within 10 s, want %+v", want)
	}
}

// TestNotices_AcrossProcesses: a notice published through one process's
// Notices reaches the listeners of every process on the database, its
// own included; one that is not a node's notice reaches no one, and the
// listener goes on.
func TestNotices_AcrossProcesses(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	one, other := listen(ctx, t, dsn), listen(ctx, t, dsn)
	pub, err := pgnotify.Open(ctx, dsn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	want := heard{"eingang@amtsgericht.example", "0190c3a1-7d1e-7000-8000-000000000001"}
	if err := pub.Publish(ctx, want.recipient, want.id); err != nil {
		t.Fatal(err)
	}
	expect(t, one, want)
	expect(t, other, want)

	// Whatever else may send on the channel.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, payload := range []string{"not json", `{"r":"","m":"x"}`, fmt.Sprintf(`{"r":"a@b.example","m":"%01100d"}`, 0)} {
		if _, err := conn.Exec(ctx, "SELECT pg_notify($1, $2)", pgnotify.Channel, payload); err != nil {
			t.Fatal(err)
		}
	}
	next := heard{"poststelle@stadt.example", "0190c3a1-7d1e-7000-8000-000000000002"}
	if err := pub.Publish(ctx, next.recipient, next.id); err != nil {
		t.Fatal(err)
	}
	expect(t, one, next) // and nothing of the three before it
	expect(t, other, next)

	if err := pub.Publish(ctx, "", "x"); err == nil {
		t.Error("Publish took a notice without a recipient")
	}
}
