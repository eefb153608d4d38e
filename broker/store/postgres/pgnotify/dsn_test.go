package pgnotify_test

import (
	"context"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker/store/postgres/pgnotify"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
	"kurier.dev/kurier/internal/logbuf"
)

const secret = "Pw4Leak-x9Q7"

// TestOpen_DSNErrorHidesPassword: a DSN that does not parse is refused
// without its password.
func TestOpen_DSNErrorHidesPassword(t *testing.T) {
	for _, dsn := range pgtest.BadDSNs(secret) {
		_, err := pgnotify.Open(context.Background(), dsn, slog.New(slog.DiscardHandler))
		if err == nil {
			t.Fatalf("Open(%q) = nil error", dsn)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Open(%q) = %v: shows the password", dsn, err)
		}
	}
}

// TestConnectErrorHidesPassword: with a wrong password, Publish's error
// and what Listen logs about its failing connection leave it out.
func TestConnectErrorHidesPassword(t *testing.T) {
	srv := pgtest.NewServer(t)
	u, err := url.Parse(srv.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("postgres", secret)
	var logs logbuf.Buffer
	no, err := pgnotify.Open(context.Background(), u.String(), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer no.Close()
	err = no.Publish(context.Background(), "eingang@amtsgericht.example", "m1")
	if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "password authentication failed") {
		t.Errorf("Publish with a wrong password = %v, want the refusal without the password", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- no.Listen(ctx, pgnotify.Handler{Notice: func(context.Context, string, string) error { return nil }})
	}()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), "password authentication failed"); {
		if time.Now().After(deadline) {
			t.Fatalf("Listen logged no refused connection within 30s:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the listener's log shows the password:\n%s", logs.String())
	}
}
