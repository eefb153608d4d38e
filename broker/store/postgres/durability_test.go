package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store/postgres"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
)

// A rollback under a running store (a failover under a pool that
// reconnects, as the package doc advertises) is caught: MarkLog refuses a
// log that no longer holds what this process marked, so no checkpoint of
// a forked log is signed, and the next Open refuses the log too.
func TestFault_RollbackUnderRunningStore(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	st := open(t, dsn)
	newFixture(t, st).create(t, st)
	if err := st.MarkLog(ctx, 2); err != nil {
		t.Fatal(err)
	}
	signed, err := st.LogRoot(ctx, 2) // what a checkpoint of size 2 signed
	if err != nil {
		t.Fatal(err)
	}
	// Leaf 1 lost, the mark kept (the case ErrRolledBack is for).
	conn := connect(t, dsn)
	for _, sql := range []string{
		"DELETE FROM evidence WHERE log = '' AND leaf_index = 1",
		"DELETE FROM log_nodes WHERE (level = 0 AND idx = 1) OR (level = 1 AND idx = 0)",
		"UPDATE log_head SET size = 1, hashes = ARRAY[(SELECT hash FROM log_nodes WHERE level = 0 AND idx = 0)]",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	evs := newFixture(t, st).create(t, st)
	t.Logf("running store gave leaf indexes %d, %d after the rollback", evs[0].LeafIndex, evs[1].LeafIndex)
	if err := st.MarkLog(ctx, 3); !errors.Is(err, postgres.ErrRolledBack) {
		t.Errorf("MarkLog(3) on a log behind its mark: %v, want ErrRolledBack", err)
	}
	st.Close()
	st2, err := postgres.Open(ctx, dsn)
	if err == nil {
		defer st2.Close()
		now, _ := st2.LogRoot(ctx, 2)
		t.Errorf("Open accepted the forked log: root at size 2 is %x, a checkpoint signed %x (equal: %v)", now, signed, bytes.Equal(now, signed))
	}
}

// MarkLog of a size the mark already covers still writes, so that it
// waits for the synchronous standby: with a mark committed only locally
// (its own MarkLog's session ended in the standby wait), another
// process's MarkLog must not return before a standby has the leaves, or
// the node would sign a checkpoint over leaves no standby has.
func TestFault_MarkLogWaitsForStandby(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	st, other := open(t, dsn), open(t, dsn)
	f := newFixture(t, st)
	probe := pgtest.DSN(t)
	pgtest.Reconfigure(t, "synchronous_standby_names", "nonexistent_standby")
	waitForSyncRep(t, probe)
	watcher := connect(t, dsn)
	kill := func(what string, call func() error) {
		done := make(chan error, 1)
		go func() { done <- call() }()
		pid := waitFor(t, watcher, what, `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event = 'SyncRep' AND pid <> pg_backend_pid()`)
		if _, err := watcher.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %v", what, <-done)
	}
	kill("CreateMessage", func() error { _, err := st.CreateMessage(ctx, f.msg, f.copies, f.evs, nil); return err })
	kill("MarkLog", func() error { return st.MarkLog(ctx, 2) })
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	start := time.Now()
	err := other.MarkLog(cctx, 2)
	if err == nil {
		t.Errorf("MarkLog(2) returned nil after %v while no commit can reach the synchronous standby", time.Since(start))
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("MarkLog: %v", err)
	}
}

// A resubmission after ErrUnknownOutcome must not be answered ErrExists
// (the node hands out a receipt) from a message committed only locally:
// the commit whose answer was lost may still be on no synchronous standby.
func TestFault_ExistsOnlyOnceDurable(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	st := open(t, dsn)
	f := newFixture(t, st)
	probe := pgtest.DSN(t)
	pgtest.Reconfigure(t, "synchronous_standby_names", "nonexistent_standby")
	waitForSyncRep(t, probe)
	watcher := connect(t, dsn)
	done := make(chan error, 1)
	go func() { _, err := st.CreateMessage(ctx, f.msg, f.copies, f.evs, nil); done <- err }()
	pid := waitFor(t, watcher, "commit waiting", `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event = 'SyncRep' AND pid <> pg_backend_pid()`)
	if _, err := watcher.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	t.Logf("first: %v", <-done)
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	start := time.Now()
	_, err := st.CreateMessage(cctx, f.msg, f.copies, f.evs, nil)
	if errors.Is(err, broker.ErrExists) {
		t.Errorf("resubmission answered ErrExists after %v while the message is on no standby", time.Since(start))
	} else {
		t.Logf("resubmission: %v", err)
	}
}
