package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPair_Failover commits rows on a synchronous pair through its
// multi-host DSN, kills the primary and promotes the standby: every row
// whose commit answered is on the new primary, and the same DSN writes
// to it.
func TestPair_Failover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := StartPair(t, PairOptions{Synchronous: true})
	db := p.CreateDatabase()
	dsn := p.DSN(db)
	exec := func(sql string, args ...any) error {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql, args...)
		return err
	}
	if err := exec("CREATE TABLE t (n int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	for n := range 20 {
		if err := exec("INSERT INTO t VALUES ($1)", n); err != nil {
			t.Fatal(err)
		}
	}
	p.KillPrimary()
	if err := exec("INSERT INTO t VALUES (100)"); err == nil {
		t.Fatal("a write succeeded with the primary dead and the standby not promoted")
	}
	p.Promote()
	if err := exec("INSERT INTO t VALUES (20)"); err != nil {
		t.Fatalf("write through the multi-host DSN after the promotion: %v", err)
	}
	conn, err := pgx.Connect(ctx, p.StandbyDSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var count, max int
	if err := conn.QueryRow(ctx, "SELECT count(*), max(n) FROM t").Scan(&count, &max); err != nil {
		t.Fatal(err)
	}
	if count != 21 || max != 20 {
		t.Errorf("the promoted standby holds %d rows up to %d, want 21 up to 20", count, max)
	}
}
