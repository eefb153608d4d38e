package pgtest

import (
	"context"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestCluster_TakesOnlyThePassword: the cluster's loopback port, which
// every user of the machine can reach, lets nobody in without the
// password, and the DSN tests get has it.
func TestCluster_TakesOnlyThePassword(t *testing.T) {
	if os.Getenv(EnvDSN) != "" {
		t.Skip("the server is " + EnvDSN + "'s, not one this test binary started")
	}
	t.Setenv("PGPASSFILE", os.DevNull)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := DSN(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect with the DSN given: %v", err)
	}
	conn.Close(ctx)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	for name, user := range map[string]*url.Userinfo{
		"no password":  url.User("postgres"),
		"a wrong one":  url.UserPassword("postgres", "postgres"),
		"another role": url.User("root"),
	} {
		u.User = user
		if conn, err := pgx.Connect(ctx, u.String()); err == nil {
			conn.Close(ctx)
			t.Errorf("connected over 127.0.0.1 with %s", name)
		}
	}
}

func TestMain(m *testing.M) { Main(m) }
