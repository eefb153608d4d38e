package postgres_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/url"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	sumdb "golang.org/x/mod/sumdb/tlog"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store/postgres"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/tlog"
)

const (
	sender = "poststelle@stadt.example"
	court  = "eingang@amtsgericht.example"
)

var t0 = time.Date(2026, 11, 23, 10, 15, 2, 123456000, time.UTC)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b) // never returns an error; crashes the program if randomness fails
	return b
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// fixture is a message to one local recipient, ready for CreateMessage:
// its payload blob stored, a SubmissionAcceptance and a Delivery.
type fixture struct {
	msg    *broker.Message
	copies []broker.Copy
	evs    []broker.Evidence
}

func newFixture(t testing.TB, st *postgres.Store) fixture {
	t.Helper()
	ctx := context.Background()
	payload := randomBytes(100)
	blob, err := st.WriteBlob(ctx, bytes.NewReader(payload), 1<<20)
	if err != nil {
		t.Fatalf("WriteBlob: %v", err)
	}
	id, err := envelope.NewID()
	if err != nil {
		t.Fatal(err)
	}
	env := &envelope.Envelope{
		Version: envelope.Version, ID: id, From: sender, To: []string{court},
		Subject: "Bescheid", Type: "Bescheid", Created: t0.Add(-time.Second), Expires: t0.Add(7 * 24 * time.Hour),
		PayloadSHA256: hex.EncodeToString(blob.SHA256[:]), PayloadSize: blob.Size,
		Files: []envelope.File{{Name: "bescheid.pdf", Size: 90, SHA256: digest([]byte("bescheid"))}},
	}
	raw, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m := &broker.Message{
		Envelope: raw, Signature: randomBytes(64), Header: env, EnvelopeSHA256: envelope.Digest(raw),
		Received: t0, Blob: blob.ID, Expires: t0.Add(7 * 24 * time.Hour),
	}
	delivery := randomBytes(200)
	return fixture{
		msg:    m,
		copies: []broker.Copy{{MessageID: id, Recipient: court, Received: t0, State: broker.StateDelivered, Local: true, Head: digest(delivery)}},
		evs: []broker.Evidence{
			{MessageID: id, Sender: sender, Type: "SubmissionAcceptance", DER: randomBytes(200)},
			{MessageID: id, Sender: sender, Recipient: court, Type: "Delivery", DER: delivery},
		},
	}
}

func (f fixture) create(t testing.TB, st *postgres.Store) []broker.Evidence {
	t.Helper()
	evs, err := st.CreateMessage(context.Background(), f.msg, f.copies, f.evs, nil)
	if err != nil {
		t.Fatalf("CreateMessage: %v", err)
	}
	return evs
}

// connect opens a plain connection to dsn for looking at the tables.
func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestLog_TwoProcessesAppendGapFree has two stores on one database (as
// two kurierd processes have) create messages and race on the same
// copies' chains at once: every leaf index is given once, the log's
// roots and proofs match a tree built independently (golang.org/x/mod's
// sumdb/tlog) from the stored evidence, and of two steps from the same
// head exactly one wins.
func TestLog_TwoProcessesAppendGapFree(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	stores := []*postgres.Store{open(t, dsn), open(t, dsn)}
	const writers, perWriter = 4, 10
	// The fixtures are made first: t.Fatal must not be called from the
	// writers' goroutines.
	fixtures := make([][]fixture, 2*writers)
	var ids []string
	for w := range fixtures {
		for range perWriter {
			f := newFixture(t, stores[w%2])
			fixtures[w] = append(fixtures[w], f)
			ids = append(ids, f.msg.ID())
		}
	}
	var wg sync.WaitGroup
	for w := range fixtures {
		wg.Go(func() {
			st, other := stores[w%2], stores[(w+1)%2]
			for _, f := range fixtures[w] {
				if _, err := st.CreateMessage(ctx, f.msg, f.copies, f.evs, nil); err != nil {
					t.Errorf("CreateMessage: %v", err)
					return
				}
				if wins := raceStep(t, []*postgres.Store{st, other}, f.copies[0]); wins != 1 {
					t.Errorf("%d of two steps from one head succeeded, want 1", wins)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	leaves := leavesByIndex(t, stores[0], ids)
	if want := 2 * writers * perWriter * 3; len(leaves) != want {
		t.Fatalf("%d evidence in the log, want %d", len(leaves), want)
	}
	checkLog(t, stores[1], leaves)
}

// raceStep has each store try the same step on c at once and returns how
// many succeeded; the others must fail with broker.ErrConflict.
func raceStep(t *testing.T, stores []*postgres.Store, c broker.Copy) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for _, st := range stores {
		wg.Go(func() {
			der := randomBytes(150)
			next := c
			next.State, next.Head = broker.StateRetrieved, digest(der)
			_, err := st.AppendEvidence(context.Background(), broker.Step{
				Evidence: broker.Evidence{MessageID: c.MessageID, Sender: sender, Recipient: c.Recipient, Type: "Retrieval", DER: der},
				PrevHead: c.Head, Next: next,
			})
			switch {
			case err == nil:
				mu.Lock()
				wins++
				mu.Unlock()
			case !errors.Is(err, broker.ErrConflict):
				t.Errorf("AppendEvidence: %v, want success or ErrConflict", err)
			}
		})
	}
	wg.Wait()
	return wins
}

// leavesByIndex returns the DER of every evidence of the messages, by
// leaf index, failing t if an index is given twice or skipped.
func leavesByIndex(t *testing.T, st *postgres.Store, ids []string) [][]byte {
	t.Helper()
	byIndex := map[uint64][]byte{}
	for _, id := range ids {
		evs, err := st.Evidence(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if _, dup := byIndex[ev.LeafIndex]; dup {
				t.Fatalf("leaf index %d given twice", ev.LeafIndex)
			}
			byIndex[ev.LeafIndex] = ev.DER
		}
	}
	leaves := make([][]byte, len(byIndex))
	for i := range leaves {
		der, ok := byIndex[uint64(i)]
		if !ok {
			t.Fatalf("no evidence at leaf index %d of %d: the log has a gap", i, len(byIndex))
		}
		leaves[i] = der
	}
	return leaves
}

// checkLog compares the store's log with one built from leaves by
// golang.org/x/mod/sumdb/tlog (RFC 6962 hashing, written apart from the
// merkle module the store uses).
func checkLog(t *testing.T, st *postgres.Store, leaves [][]byte) {
	t.Helper()
	ctx := context.Background()
	n := uint64(len(leaves))
	if size, err := st.LogSize(ctx); err != nil || size != n {
		t.Fatalf("LogSize = %d, %v; want %d", size, err, n)
	}
	var stored []sumdb.Hash
	for i, der := range leaves {
		hs, err := sumdb.StoredHashes(int64(i), der, sumdb.HashReaderFunc(func(idx []int64) ([]sumdb.Hash, error) {
			out := make([]sumdb.Hash, len(idx))
			for j, x := range idx {
				out[j] = stored[x]
			}
			return out, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
	}
	reader := sumdb.HashReaderFunc(func(idx []int64) ([]sumdb.Hash, error) {
		out := make([]sumdb.Hash, len(idx))
		for j, x := range idx {
			out[j] = stored[x]
		}
		return out, nil
	})
	checkpoints := map[uint64]tlog.Checkpoint{}
	for _, size := range []uint64{1, 2, 7, n / 2, n - 1, n} {
		want, err := sumdb.TreeHash(int64(size), reader)
		if err != nil {
			t.Fatal(err)
		}
		got, err := st.LogRoot(ctx, size)
		if err != nil || !bytes.Equal(got, want[:]) {
			t.Fatalf("LogRoot(%d) = %x, %v; want %x", size, got, err, want[:])
		}
		checkpoints[size] = tlog.Checkpoint{Origin: "stadt.example/log", Size: size, Root: got}
	}
	for _, index := range []uint64{0, 1, n / 3, n - 1} {
		p, err := st.InclusionProof(ctx, index, n)
		if err != nil {
			t.Fatalf("InclusionProof(%d, %d): %v", index, n, err)
		}
		if err := tlog.VerifyInclusion(leaves[index], index, p, checkpoints[n]); err != nil {
			t.Errorf("inclusion proof of leaf %d: %v", index, err)
		}
	}
	for _, size := range []uint64{1, 7, n / 2} {
		p, err := st.ConsistencyProof(ctx, size, n)
		if err != nil {
			t.Fatalf("ConsistencyProof(%d, %d): %v", size, n, err)
		}
		if err := tlog.VerifyConsistency(checkpoints[size], checkpoints[n], p); err != nil {
			t.Errorf("consistency proof from %d to %d: %v", size, n, err)
		}
	}
}

// TestBlob_LargeStreamsInChunks stores a payload of 20 MiB and reads it
// back: it lands in 20 chunks of at most ChunkSize bytes, and in neither
// direction does the heap grow by anything like the payload's size.
func TestBlob_LargeStreamsInChunks(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	st := open(t, dsn)
	const size = 20 << 20
	src := func() io.Reader { return io.LimitReader(mrand.NewChaCha8([32]byte{1}), size) }
	want := sha256.New()
	io.Copy(want, src())

	var blob broker.Blob
	written := allocated(func() {
		var err error
		if blob, err = st.WriteBlob(ctx, src(), size); err != nil {
			t.Fatalf("WriteBlob: %v", err)
		}
	})
	if blob.Size != size || !bytes.Equal(blob.SHA256[:], want.Sum(nil)) {
		t.Fatalf("WriteBlob = %d bytes with SHA-256 %x, want %d with %x", blob.Size, blob.SHA256, size, want.Sum(nil))
	}
	var chunks, largest int
	err := connect(t, dsn).QueryRow(ctx, "SELECT count(*), max(length(data)) FROM blob_chunks WHERE blob = $1", blob.ID).Scan(&chunks, &largest)
	if err != nil {
		t.Fatal(err)
	}
	if chunks != size/postgres.ChunkSize || largest > postgres.ChunkSize {
		t.Errorf("the blob is in %d chunks of at most %d bytes, want %d of at most %d", chunks, largest, size/postgres.ChunkSize, postgres.ChunkSize)
	}

	got := sha256.New()
	read := allocated(func() {
		r, err := st.OpenBlob(ctx, blob.ID)
		if err != nil {
			t.Fatalf("OpenBlob: %v", err)
		}
		defer r.Close()
		if _, err := io.CopyBuffer(got, r, make([]byte, 32<<10)); err != nil {
			t.Fatalf("read blob: %v", err)
		}
	})
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Error("the blob read back is not the one written")
	}
	// A few chunks' worth for buffers, not the payload's 20 MiB.
	const bound = 8 * postgres.ChunkSize
	t.Logf("heap grew by %d KiB writing, %d KiB reading a %d KiB blob", written>>10, read>>10, size>>10)
	if written > bound || read > bound {
		t.Errorf("the heap grew by %d bytes writing and %d reading a blob of %d, want at most %d each", written, read, size, bound)
	}

	// Over the limit: refused, and nothing of it is left.
	if _, err := st.WriteBlob(ctx, src(), size-1); !errors.Is(err, broker.ErrTooLarge) {
		t.Errorf("WriteBlob past max: %v, want ErrTooLarge", err)
	}
	var blobs int
	if err := connect(t, dsn).QueryRow(ctx, "SELECT count(*) FROM blobs").Scan(&blobs); err != nil || blobs != 1 {
		t.Errorf("%d blobs stored after a refused one (%v), want only the first", blobs, err)
	}
}

// allocated returns by how much the heap grew at most while f ran, above
// what was live before, sampled every millisecond with the collector set
// to run at 20% growth (so that garbage does not count, and what is
// retained does).
func allocated(f func()) uint64 {
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, ms.HeapAlloc
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
			}
		}
	}()
	f()
	close(stop)
	<-sampled
	return peak - base
}

// TestMigrate_OnceAndIdempotent opens a new database from two processes
// at once, and again later: the schema is migrated once, to the newest
// version, and a later Open keeps what is stored. A database of an older
// version is migrated with its data; one of a newer schema than this code
// knows is refused.
func TestMigrate_OnceAndIdempotent(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			st, err := postgres.Open(ctx, dsn)
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			st.Close()
		})
	}
	wg.Wait()
	st := open(t, dsn)
	f := newFixture(t, st)
	f.create(t, st)
	st.Close()

	st = open(t, dsn)
	if _, err := st.Message(ctx, f.msg.ID()); err != nil {
		t.Errorf("Message after reopening: %v", err)
	}
	conn := connect(t, dsn)
	var version int
	if err := conn.QueryRow(ctx, "SELECT version FROM "+postgres.VersionTable).Scan(&version); err != nil || version != 3 {
		t.Errorf("schema version %d (%v), want 3", version, err)
	}
	var tables int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'log_head'").Scan(&tables); err != nil || tables != 1 {
		t.Errorf("%d log_head tables (%v), want 1", tables, err)
	}

	// A database of version 1, with messages: Open migrates it to 3, each
	// copy's state taken from its record.
	for _, sql := range []string{
		"ALTER TABLE outbound DROP COLUMN lease_holder, DROP COLUMN lease_until_ns",
		"DROP INDEX copies_waiting", "ALTER TABLE copies DROP COLUMN state", "UPDATE " + postgres.VersionTable + " SET version = 1",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	st = open(t, dsn)
	var state string
	if err := conn.QueryRow(ctx, "SELECT state FROM copies WHERE message_id = $1", f.msg.ID()).Scan(&state); err != nil || state != string(broker.StateDelivered) {
		t.Errorf("copy state after the migration to version 2: %q, %v; want %q", state, err, broker.StateDelivered)
	}
	if b, err := st.Backlog(ctx); err != nil || b.Unfetched.Count != 1 {
		t.Errorf("Backlog after the migration: %+v, %v; want 1 unfetched", b, err)
	}

	if _, err := conn.Exec(ctx, "UPDATE "+postgres.VersionTable+" SET version = 99"); err != nil {
		t.Fatal(err)
	}
	if st, err := postgres.Open(ctx, dsn); err == nil {
		st.Close()
		t.Error("Open of a database with a newer schema succeeded")
	}
}

// TestOpen_RefusesAsynchronousCommit: with synchronous_commit off, an
// acknowledged message could be lost in a crash, so Open refuses.
func TestOpen_RefusesAsynchronousCommit(t *testing.T) {
	u, err := url.Parse(pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("synchronous_commit", "off")
	u.RawQuery = q.Encode()
	dsn := u.String()
	if st, err := postgres.Open(context.Background(), dsn); err == nil {
		st.Close()
		t.Fatal("Open with synchronous_commit off succeeded")
	}
}

// TestOpen_RefusesRolledBackLog: a log shorter than the mark that MarkLog
// wrote (as after a failover to a standby that was behind) is refused.
func TestOpen_RefusesRolledBackLog(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	st := open(t, dsn)
	newFixture(t, st).create(t, st)
	if err := st.MarkLog(ctx, 2); err != nil {
		t.Fatalf("MarkLog: %v", err)
	}
	if err := st.MarkLog(ctx, 3); err == nil {
		t.Error("MarkLog beyond the log succeeded")
	}
	st.Close()
	if _, err := connect(t, dsn).Exec(ctx, "UPDATE log_head SET mark_size = 3"); err != nil {
		t.Fatal(err)
	}
	if st, err := postgres.Open(ctx, dsn); !errors.Is(err, postgres.ErrRolledBack) {
		if err == nil {
			st.Close()
		}
		t.Fatalf("Open of a log behind its mark: %v, want ErrRolledBack", err)
	}
}

// waitFor polls query on conn until it returns a row, for at most 20 s.
func waitFor(t *testing.T, conn *pgx.Conn, what, query string, args ...any) int {
	t.Helper()
	for range 400 {
		var pid int
		err := conn.QueryRow(context.Background(), query, args...).Scan(&pid)
		if err == nil {
			return pid
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not seen within 20 s", what)
	return 0
}

// TestFault_TerminatedBackendStoresNothing kills the server process of a
// CreateMessage (pg_terminate_backend) after it has written the message
// and its copy, while it waits for the log: nothing of it is stored, the
// log is unchanged, and the same message can be created afterwards.
func TestFault_TerminatedBackendStoresNothing(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	st := open(t, dsn)
	newFixture(t, st).create(t, st)
	f := newFixture(t, st)

	// Another session holds the log's head, so that CreateMessage stops
	// in the middle of its transaction.
	holder := connect(t, dsn)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT size FROM log_head FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := st.CreateMessage(ctx, f.msg, f.copies, f.evs, nil)
		done <- err
	}()
	watcher := connect(t, dsn)
	pid := waitFor(t, watcher, "CreateMessage waiting for the log", `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`)
	if _, err := watcher.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("CreateMessage succeeded on a terminated connection")
	}
	tx.Rollback(ctx)

	if _, err := st.Message(ctx, f.msg.ID()); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("Message after the failed create: %v, want ErrNotFound", err)
	}
	if _, err := st.Copy(ctx, f.msg.ID(), court); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("Copy after the failed create: %v, want ErrNotFound", err)
	}
	if evs, err := st.Evidence(ctx, f.msg.ID()); err != nil || len(evs) != 0 {
		t.Errorf("Evidence after the failed create: %d, %v; want none", len(evs), err)
	}
	if n, err := st.LogSize(ctx); err != nil || n != 2 {
		t.Errorf("LogSize after the failed create = %d, %v; want 2", n, err)
	}
	evs := f.create(t, st)
	if evs[0].LeafIndex != 2 || evs[1].LeafIndex != 3 {
		t.Errorf("leaf indexes %d, %d after the failed create, want 2, 3", evs[0].LeafIndex, evs[1].LeafIndex)
	}
}

// TestFault_CommitAnswerLostIsUnknownOutcome makes every commit wait for
// a synchronous standby that does not exist, and loses a CreateMessage's
// answer while its commit waits, by giving the call up or by killing its
// connection (pg_terminate_backend): PostgreSQL has committed it locally,
// so the answer must be broker.ErrUnknownOutcome, and the same message
// again is broker.ErrExists.
func TestFault_CommitAnswerLostIsUnknownOutcome(t *testing.T) {
	for _, kill := range []bool{false, true} {
		t.Run(map[bool]string{false: "GivenUp", true: "ConnectionKilled"}[kill], func(t *testing.T) {
			ctx := context.Background()
			dsn := pgtest.DSN(t)
			st := open(t, dsn)
			f := newFixture(t, st)
			// Probed in a database of its own, whose waiting sessions the
			// watcher below does not see; created first, as CREATE
			// DATABASE commits too.
			probe := pgtest.DSN(t)
			pgtest.Reconfigure(t, "synchronous_standby_names", "nonexistent_standby")
			waitForSyncRep(t, probe)

			watcher := connect(t, dsn)
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := st.CreateMessage(cctx, f.msg, f.copies, f.evs, nil)
				done <- err
			}()
			pid := waitFor(t, watcher, "CreateMessage's commit waiting for the standby", `SELECT pid FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event = 'SyncRep' AND pid <> pg_backend_pid()`)
			if kill {
				if _, err := watcher.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
					t.Fatal(err)
				}
			} else {
				cancel()
			}
			if err := <-done; !errors.Is(err, broker.ErrUnknownOutcome) {
				t.Fatalf("CreateMessage whose commit answer was lost: %v, want ErrUnknownOutcome", err)
			}
			// Without the standby setting, a commit still waiting completes.
			for _, sql := range []string{"ALTER SYSTEM RESET synchronous_standby_names", "SELECT pg_reload_conf()"} {
				if _, err := watcher.Exec(ctx, sql); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := st.CreateMessage(ctx, f.msg, f.copies, f.evs, nil); !errors.Is(err, broker.ErrExists) {
				t.Errorf("CreateMessage again: %v, want ErrExists (the commit had been applied)", err)
			}
		})
	}
}

// waitForSyncRep returns once commits in dsn's database wait for the
// synchronous standby: the setting reaches the server's processes a
// moment after the reload.
func waitForSyncRep(t *testing.T, dsn string) {
	t.Helper()
	conn := connect(t, dsn)
	for i := range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := conn.Exec(ctx, fmt.Sprintf("CREATE TABLE probe_%d ()", i))
		cancel()
		if err != nil {
			return // the commit waited: sync rep is on (the connection is gone)
		}
	}
	t.Fatal("commits do not wait for the synchronous standby")
}

// TestSweepBlobs_SafeWithCreateMessage: the sweep deletes orphaned blobs
// past the grace period only, never a message's payload, and skips the
// blob of a CreateMessage under way in another process, which then
// succeeds.
func TestSweepBlobs_SafeWithCreateMessage(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	st, other := open(t, dsn), open(t, dsn)
	used := newFixture(t, st)
	used.create(t, st)
	orphan, err := st.WriteBlob(ctx, bytes.NewReader(randomBytes(100)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	recent, err := st.WriteBlob(ctx, bytes.NewReader(randomBytes(100)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	taking := newFixture(t, st)
	conn := connect(t, dsn)
	if _, err := conn.Exec(ctx, "UPDATE blobs SET started = now() - interval '2 hours' WHERE id <> $1", recent.ID); err != nil {
		t.Fatal(err)
	}

	// A CreateMessage of the other process holds its blob and waits for
	// the log, which this session holds.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT size FROM log_head FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := other.CreateMessage(ctx, taking.msg, taking.copies, taking.evs, nil)
		done <- err
	}()
	waitFor(t, connect(t, dsn), "CreateMessage waiting for the log", `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`)
	n, err := st.SweepBlobs(ctx, time.Hour)
	if err != nil || n != 1 {
		t.Errorf("SweepBlobs = %d, %v; want the one orphan", n, err)
	}
	tx.Rollback(ctx)
	if err := <-done; err != nil {
		t.Errorf("CreateMessage during the sweep: %v", err)
	}

	if _, err := st.OpenBlob(ctx, orphan.ID); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("OpenBlob of the swept orphan: %v, want ErrNotFound", err)
	}
	for _, id := range []string{used.msg.Blob, taking.msg.Blob, recent.ID} {
		r, err := st.OpenBlob(ctx, id)
		if err != nil {
			t.Errorf("OpenBlob of a blob the sweep must keep: %v", err)
			continue
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			t.Errorf("read a blob the sweep must keep: %v", err)
		}
		r.Close()
	}
}

// TestSweepBlobs_GraceFromCompletion: a payload whose upload began long
// ago is kept once it is complete, for the message its uploader is about
// to create: the grace period counts from the upload's end.
func TestSweepBlobs_GraceFromCompletion(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	st := open(t, dsn)
	conn := connect(t, dsn)
	pr, pw := io.Pipe()
	written := make(chan broker.Blob, 1)
	go func() {
		b, err := st.WriteBlob(ctx, pr, 2*postgres.ChunkSize)
		if err != nil {
			t.Errorf("WriteBlob: %v", err)
		}
		written <- b
	}()
	go pw.Write(randomBytes(postgres.ChunkSize)) // the first chunk: the header is stored with it
	waitFor(t, conn, "the upload under way", "SELECT 1 FROM blobs WHERE NOT complete")
	if _, err := conn.Exec(ctx, "UPDATE blobs SET started = now() - interval '2 hours' WHERE NOT complete"); err != nil {
		t.Fatal(err)
	}
	pw.Write(randomBytes(100))
	pw.Close()
	b := <-written
	if n, err := st.SweepBlobs(ctx, time.Hour); err != nil || n != 0 {
		t.Errorf("SweepBlobs = %d, %v; want nothing swept", n, err)
	}
	r, err := st.OpenBlob(ctx, b.ID)
	if err != nil {
		t.Fatalf("OpenBlob of the payload just uploaded: %v", err)
	}
	r.Close()
}

// TestCreateMessage_RaceOfTwoProcesses: the same message handed to two
// processes at once (a client retrying on the other) is stored once: one
// call succeeds, the other answers broker.ErrExists, and the log holds
// its evidence once. Another envelope under the same id, at once, is
// broker.ErrDuplicate.
func TestCreateMessage_RaceOfTwoProcesses(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	stores := []*postgres.Store{open(t, dsn), open(t, dsn)}
	const rounds = 10
	for i := range rounds {
		f := newFixture(t, stores[0])
		g := newFixture(t, stores[0]) // another blob, for the second call
		m := *f.msg
		m.Blob = g.msg.Blob
		h := *m.Header
		h.PayloadSHA256, h.PayloadSize = g.msg.Header.PayloadSHA256, g.msg.Header.PayloadSize
		m.Header = &h
		if i%2 == 1 {
			m.EnvelopeSHA256 = digest([]byte("another envelope"))
		}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for j, msg := range []*broker.Message{f.msg, &m} {
			wg.Go(func() { _, errs[j] = stores[j].CreateMessage(ctx, msg, f.copies, f.evs, nil) })
		}
		wg.Wait()
		want := broker.ErrExists
		if i%2 == 1 {
			want = broker.ErrDuplicate
		}
		if (errs[0] == nil) == (errs[1] == nil) || !(errors.Is(errs[0], want) || errors.Is(errs[1], want)) {
			t.Fatalf("round %d: the two calls answered %v and %v, want one success and one %v", i, errs[0], errs[1], want)
		}
	}
	if n, err := stores[1].LogSize(ctx); err != nil || n != 2*rounds {
		t.Errorf("LogSize = %d, %v; want %d: each message's evidence once", n, err, 2*rounds)
	}
}

// TestBlob_NeverServedInPart: a blob deleted while it is read fails with
// broker.ErrNotFound, and one whose stored bytes changed fails at its end
// with broker.ErrDamaged, never ending as if whole.
func TestBlob_NeverServedInPart(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	st := open(t, dsn)
	payload := randomBytes(3*postgres.ChunkSize - 5)
	write := func() broker.Blob {
		blob, err := st.WriteBlob(ctx, bytes.NewReader(payload), int64(len(payload)))
		if err != nil {
			t.Fatal(err)
		}
		return blob
	}

	deleted := write()
	r, err := st.OpenBlob(ctx, deleted.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.ReadFull(r, make([]byte, postgres.ChunkSize)); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteBlob(ctx, deleted.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, r); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("reading on after DeleteBlob: %v, want ErrNotFound", err)
	}

	damaged := write()
	if _, err := connect(t, dsn).Exec(ctx, "UPDATE blob_chunks SET data = set_byte(data, 99, 255 - get_byte(data, 99)) WHERE blob = $1 AND seq = 1", damaged.ID); err != nil {
		t.Fatal(err)
	}
	r2, err := st.OpenBlob(ctx, damaged.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if n, err := io.Copy(io.Discard, r2); !errors.Is(err, broker.ErrDamaged) {
		t.Errorf("reading a changed blob: %d bytes, %v; want ErrDamaged", n, err)
	}
}
