package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker/store/postgres"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
)

// secret is the password of the DSNs below, distinctive enough that
// finding it in an error can only mean it leaked.
const secret = "Pw4Leak-x9Q7"

// TestOpen_DSNErrorHidesPassword: a DSN that does not parse is refused
// with why, but without the DSN or its password.
func TestOpen_DSNErrorHidesPassword(t *testing.T) {
	for _, dsn := range pgtest.BadDSNs(secret) {
		_, err := postgres.Open(context.Background(), dsn, postgres.WithLogger(slog.New(slog.DiscardHandler)))
		if err == nil {
			t.Fatalf("Open(%q) = nil error", dsn)
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%+v", err), secret) {
			t.Errorf("Open(%q) = %v: shows the password", dsn, err)
		}
		if !strings.Contains(err.Error(), "the DSN does not parse") {
			t.Errorf("Open(%q) = %v, want it to say that the DSN does not parse", dsn, err)
		}
	}
	_, err := postgres.ParseConfig("host=127.0.0.1 password=" + secret + " port=notaport")
	if err == nil || !strings.Contains(err.Error(), "invalid port") {
		t.Errorf("ParseConfig with a bad port = %v, want it to name the port", err)
	}
}

// TestOpen_ConnectErrorHidesPassword: a wrong password, and a server that
// is not there, are refused without the password given.
func TestOpen_ConnectErrorHidesPassword(t *testing.T) {
	srv := pgtest.NewServer(t)
	u, err := url.Parse(srv.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("postgres", secret)
	wrong := u.String()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := l.Addr().String()
	l.Close()
	for _, dsn := range []string{
		wrong,
		fmt.Sprintf("host=127.0.0.1 port=%d dbname=postgres user=postgres password='%s x' sslmode=disable", srv.Port(), secret),
		"postgres://kurier:" + secret + "@" + gone + "/kurier?sslmode=disable&connect_timeout=5",
		"host=" + strings.Split(gone, ":")[0] + " port=" + strings.Split(gone, ":")[1] + " password=" + secret + " sslmode=disable",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := postgres.Open(ctx, dsn, postgres.WithLogger(slog.New(slog.DiscardHandler)))
		cancel()
		if err == nil {
			t.Fatalf("Open(%q) = nil error", dsn)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("Open(%q) = %v: shows the password", dsn, err)
		}
		t.Logf("Open: %v", err)
	}
}
