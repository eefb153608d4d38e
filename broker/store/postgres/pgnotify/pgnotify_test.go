package pgnotify_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"kurier.dev/kurier/broker/store/postgres/pgnotify"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type heard struct{ recipient, id string }

// listen starts a listener of the notices on dsn, as one process of a
// node, and returns its Notices and what it hears; it waits until it
// listens.
func listen(ctx context.Context, t *testing.T, dsn string) (*pgnotify.Notices, <-chan heard) {
	t.Helper()
	no, err := pgnotify.Open(ctx, dsn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(no.Close)
	got := make(chan heard, 16)
	start(ctx, t, no, func(ctx context.Context, r, id string) error {
		got <- heard{r, id}
		return nil
	})
	return no, got
}

// start runs no's listener with notice until the test ends, and waits
// until it listens.
func start(ctx context.Context, t *testing.T, no *pgnotify.Notices, notice func(ctx context.Context, r, id string) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- no.Listen(ctx, pgnotify.Handler{Ready: func() { close(ready) }, Notice: notice})
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
// Notices reaches the listeners of every other process on the database,
// not its own, whose node told its subscribers already; one that is not
// a node's notice reaches no one, and the listener goes on.
func TestNotices_AcrossProcesses(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	pub, own := listen(ctx, t, dsn)
	_, one := listen(ctx, t, dsn)
	_, other := listen(ctx, t, dsn)

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

	// Notices reach a listener in the order they were sent: the first
	// its own process hears is one from another.
	foreign, err := pgnotify.Open(ctx, dsn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	last := heard{"poststelle@stadt.example", "0190c3a1-7d1e-7000-8000-000000000003"}
	if err := foreign.Publish(ctx, last.recipient, last.id); err != nil {
		t.Fatal(err)
	}
	expect(t, own, last)

	if err := pub.Publish(ctx, "", "x"); err == nil {
		t.Error("Publish took a notice without a recipient")
	}
}

// TestNotices_Bounded: each notice is handled with a deadline, so that a
// handler stuck on the database gives up and the next notice is heard.
func TestNotices_Bounded(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	no, err := pgnotify.Open(ctx, dsn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(no.Close)
	got := make(chan heard, 2)
	start(ctx, t, no, func(ctx context.Context, r, id string) error {
		if strings.HasSuffix(id, "1") {
			<-ctx.Done() // stuck until the deadline, if there is one
		}
		got <- heard{r, id}
		return ctx.Err()
	})
	pub, err := pgnotify.Open(ctx, dsn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for _, id := range []string{"0190c3a1-7d1e-7000-8000-000000000001", "0190c3a1-7d1e-7000-8000-000000000002"} {
		if err := pub.Publish(ctx, "eingang@amtsgericht.example", id); err != nil {
			t.Fatal(err)
		}
	}
	expect(t, got, heard{"eingang@amtsgericht.example", "0190c3a1-7d1e-7000-8000-000000000001"})
	expect(t, got, heard{"eingang@amtsgericht.example", "0190c3a1-7d1e-7000-8000-000000000002"})
}
