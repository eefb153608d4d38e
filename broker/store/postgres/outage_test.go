package postgres_test

import (
	"context"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store/postgres"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
)

// storeCalls are calls of each kind the store makes (a statement on the
// pool, a query's rows, a row, a read and a write transaction), each
// returning its error.
func storeCalls(st *postgres.Store) map[string]func(context.Context) error {
	return map[string]func(context.Context) error{
		"LogSize (row)": func(ctx context.Context) error { _, err := st.LogSize(ctx); return err },
		"Inbox (rows)": func(ctx context.Context) error {
			_, _, err := st.Inbox(ctx, "eingang@amtsgericht.example", "", 10)
			return err
		},
		"Sent (read transaction)": func(ctx context.Context) error {
			_, _, err := st.Sent(ctx, "poststelle@stadt.example", "", 10)
			return err
		},
		"WriteBlob (statements)": func(ctx context.Context) error {
			_, err := st.WriteBlob(ctx, strings.NewReader("%PDF-1.7"), 1<<20)
			return err
		},
		"SweepBlobs (write transaction)": func(ctx context.Context) error { _, err := st.SweepBlobs(ctx, time.Hour); return err },
		"Backlog":                        func(ctx context.Context) error { _, err := st.Backlog(ctx); return err },
	}
}

// TestStore_DatabaseOutage: while PostgreSQL is down, every call of the
// store fails with broker.ErrStoreUnavailable (an ErrUnavailable, which
// the node answers as Unavailable, to try again), with the cause kept for
// the log; once the server is back, the same store works again.
func TestStore_DatabaseOutage(t *testing.T) {
	srv := pgtest.NewServer(t)
	st := open(t, srv.DSN(t))
	calls := storeCalls(st)
	ctx := context.Background()
	for name, call := range calls {
		if err := call(ctx); err != nil {
			t.Fatalf("%s before the outage: %v", name, err)
		}
	}

	srv.Stop(t)
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := call(ctx)
		cancel()
		if !errors.Is(err, broker.ErrStoreUnavailable) || !errors.Is(err, broker.ErrUnavailable) {
			t.Errorf("%s while the database is down = %v, want broker.ErrStoreUnavailable", name, err)
		}
		if errors.Is(err, broker.ErrUnknownOutcome) {
			t.Errorf("%s while the database is down = %v: no write was sent, so its outcome is known", name, err)
		}
		if err != nil && strings.HasSuffix(err.Error(), broker.ErrStoreUnavailable.Error()) {
			t.Errorf("%s while the database is down = %v, want the failed connection kept for the log", name, err)
		}
	}

	srv.Start(t)
	for name, call := range calls {
		// A connection idle in the pool since before the stop may be
		// found broken once; that too is the database's unavailability.
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := call(ctx)
			if err == nil {
				break
			}
			if !errors.Is(err, broker.ErrStoreUnavailable) {
				t.Fatalf("%s after the restart = %v, want success or broker.ErrStoreUnavailable", name, err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s fails 30s after the restart: %v", name, err)
			}
		}
	}
}

// TestStore_CallerDeadline: a call whose own deadline has passed, on a
// database that is up, fails with that deadline, not as an outage.
func TestStore_CallerDeadline(t *testing.T) {
	st := open(t, pgtest.DSN(t))
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	for name, call := range storeCalls(st) {
		if err := call(ctx); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, broker.ErrUnavailable) {
			t.Errorf("%s past its deadline = %v, want context.DeadlineExceeded alone", name, err)
		}
	}
}

// TestStore_BackendTerminated: a call whose server process is ended under
// it (as failover tools and pg_terminate_backend do, SQLSTATE 57P01)
// fails with broker.ErrStoreUnavailable, and the next call works.
func TestStore_BackendTerminated(t *testing.T) {
	dsn := pgtest.DSN(t)
	st := open(t, dsn)
	ctx := context.Background()
	locker, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(ctx)
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1 FROM log_head FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- st.MarkLog(ctx, 0) }() // waits for the head's lock
	var pid int
	for deadline := time.Now().Add(30 * time.Second); pid == 0; {
		err := locker.QueryRow(ctx, "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'").Scan(&pid)
		if err != nil {
			t.Fatal(err)
		}
		if pid == 0 && time.Now().After(deadline) {
			t.Fatal("MarkLog does not wait for the log head's lock")
		}
	}
	if _, err := locker.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, broker.ErrStoreUnavailable) {
		t.Errorf("MarkLog whose connection was terminated = %v, want broker.ErrStoreUnavailable", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkLog(ctx, 0); err != nil {
		t.Errorf("MarkLog after the terminated one: %v", err)
	}
}

// TestStore_SlowIsNotUnreachable: a call whose deadline passes while it
// waits for a lock that another session holds fails with its deadline,
// not as an outage, and a readiness ping meanwhile, with every connection
// of the store's pool busy, says that the database answers.
func TestStore_SlowIsNotUnreachable(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	st := open(t, dsn, postgres.WithMaxConns(1))
	f := newFixture(t, st)
	holder := connect(t, dsn)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT size FROM log_head FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := st.CreateMessage(ctx, f.msg, f.copies, f.evs, nil)
		done <- err
	}()
	waitFor(t, connect(t, dsn), "CreateMessage waiting for the log", `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`)
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	if err := st.Ping(pctx); err != nil {
		t.Errorf("Ping with the pool's one connection busy: %v, want the database to answer", err)
	}
	cancel()
	err = <-done
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, broker.ErrStoreUnavailable) {
		t.Errorf("CreateMessage past its deadline behind a lock = %v, want its deadline and no outage", err)
	}
}

// TestWriteBlob_TerminatedIsUnavailable: an upload whose connection the
// server ended (57P01) fails as an outage, which the client tries again.
func TestWriteBlob_TerminatedIsUnavailable(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	st := open(t, dsn)
	conn := connect(t, dsn)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := st.WriteBlob(ctx, pr, 2*postgres.ChunkSize)
		done <- err
	}()
	go pw.Write(randomBytes(postgres.ChunkSize))
	waitFor(t, conn, "the upload under way", "SELECT 1 FROM blobs WHERE NOT complete")
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"); err != nil {
		t.Fatal(err)
	}
	pw.Write(randomBytes(100))
	pw.Close()
	err := <-done
	if !errors.Is(err, broker.ErrStoreUnavailable) {
		t.Errorf("WriteBlob whose connection was terminated = %v, want broker.ErrStoreUnavailable", err)
	}
}

// TestPing_FirstHostNotAnswering: after a failover to the second server
// of a multi-host DSN, with the first one not answering, the store works,
// and so does the readiness ping (700 ms, as /readyz gives it), from the
// first on.
func TestPing_FirstHostNotAnswering(t *testing.T) {
	ctx := context.Background()
	u, err := url.Parse(pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	p := newPartition(t, u.Host)
	p.cut.Store(true)
	u.Host = p.l.Addr().String() + "," + u.Host
	q := u.Query()
	q.Set("connect_timeout", "1")
	u.RawQuery = q.Encode()
	st := open(t, u.String())
	if _, err := st.LogSize(ctx); err != nil {
		t.Fatalf("LogSize: %v", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancel()
	if err := st.Ping(pctx); err != nil {
		t.Errorf("Ping while the store works = %v, want nil", err)
	}
	if _, err := st.LogSize(ctx); err != nil {
		t.Fatalf("LogSize: %v", err)
	}
}

// TestStore_ReadOnlyServerDropsConnection: a write refused by a server
// that no longer takes writes (as a demoted primary reached through an
// address that moved) fails as an outage, and its connection is closed
// rather than handed out again, so that the next one goes to wherever
// the address leads now.
func TestStore_ReadOnlyServerDropsConnection(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	st := open(t, dsn, postgres.WithMaxConns(1))
	f := newFixture(t, st)
	admin := connect(t, dsn)
	exec := func(sql string) {
		t.Helper()
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	// The store's next session starts read-only.
	exec("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database()); END $$")
	exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
	var err error
	for range 3 { // the first call may meet the terminated connection
		if _, err = st.LogSize(ctx); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	var session int
	if err := admin.QueryRow(ctx, `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&session); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateMessage(ctx, f.msg, f.copies, f.evs, nil); !errors.Is(err, broker.ErrStoreUnavailable) {
		t.Fatalf("CreateMessage on a read-only server = %v, want broker.ErrStoreUnavailable", err)
	}
	// The server ends the session once it reads the connection's end.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var open bool
		if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)", session).Scan(&open); err != nil {
			t.Fatal(err)
		}
		if !open {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection that met a read-only server is still open")
		}
	}
	exec("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET default_transaction_read_only', current_database()); END $$")
	if _, err := st.CreateMessage(ctx, f.msg, f.copies, f.evs, nil); err != nil {
		t.Errorf("CreateMessage once the server takes writes again: %v", err)
	}
}
