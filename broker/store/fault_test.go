package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kurier.dev/kurier/broker"
)

// Faults of the disk, produced for real: the crash is a child process (this
// test binary again) that writes to a store and is killed with SIGKILL, so
// badger's write-ahead log and value log are left as a crash leaves them;
// the damage is a byte flipped in badger's own files.

const (
	childDir     = "KURIER_STORE_CHILD_DIR"
	childCount   = "KURIER_STORE_CHILD_COUNT"
	childPayload = "KURIER_STORE_CHILD_PAYLOAD"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childDir); dir != "" {
		os.Exit(crashChild(dir))
	}
	os.Exit(m.Run())
}

// childT lets the fixtures run in the child, where there is no testing.T.
type childT struct{ testing.TB }

func (childT) Helper() {}
func (childT) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, args...)
	os.Exit(2)
}
func (childT) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

// crashChild stores messages, says "done <log size>" once every one is
// acknowledged and the high-water mark covers them (as after a signed
// checkpoint), and waits to be killed.
func crashChild(dir string) int {
	n, _ := strconv.Atoi(os.Getenv(childCount))
	size, _ := strconv.Atoi(os.Getenv(childPayload))
	db, err := Open(dir, Options{Small: true, Logger: slog.New(slog.DiscardHandler), GCInterval: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx := context.Background()
	t := childT{}
	for range n {
		blob, err := db.WriteBlob(ctx, bytes.NewReader(randomBytes(t, size)), 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		buildFixture(t, blob, t0, court).create(t, db)
	}
	logSize, err := db.LogSize(ctx)
	if err == nil {
		err = db.MarkLog(ctx, logSize)
	}
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("done %d\n", logSize)
	select {}
}

// crash runs a child that stores n messages with payloads of size bytes in
// dir and kills it once they are acknowledged. It returns the log size the
// child reached.
func crash(t *testing.T, dir string, n, size int) uint64 {
	t.Helper()
	cmd, line := startChild(t, "^$", childDir+"="+dir, childCount+"="+strconv.Itoa(n), childPayload+"="+strconv.Itoa(size))
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	cmd.Wait()
	logSize, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "done ")), 10, 64)
	if err != nil {
		t.Fatalf("child said %q", line)
	}
	return logSize
}

// startChild re-runs the test binary as a child with the tests run
// selects and env added, and returns it once it has printed its first
// line, with that line; the child is the caller's to kill.
func startChild(t *testing.T, run string, env ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run="+run)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: %v; stderr: %s", err, stderr.String())
	}
	return cmd, line
}

// flip inverts one byte of the file at off.
func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// biggest returns the file matching pattern in dir with the most data, and
// where its data ends.
func biggest(t *testing.T, dir, pattern string) (string, int64) {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(names) == 0 {
		t.Fatalf("no %s in %s (%v)", pattern, dir, err)
	}
	best, bestEnd := "", int64(-1)
	for _, n := range names {
		end, err := dataEnd(n)
		if err != nil {
			t.Fatal(err)
		}
		if end > bestEnd {
			best, bestEnd = n, end
		}
	}
	return best, bestEnd
}

// logs collects what a store logs.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(lockedWriter{l}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logs) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.buf.String() }

type lockedWriter struct{ l *logs }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	return w.l.buf.Write(p)
}

func openWithLogs(dir string) (*DB, *logs, error) {
	l := &logs{}
	db, err := Open(dir, Options{Small: true, Logger: l.logger(), GCInterval: -1})
	return db, l, err
}

func TestFaultCrash(t *testing.T) {
	t.Run("kill without damage loses nothing acknowledged", func(t *testing.T) {
		dir := t.TempDir()
		size := crash(t, dir, 50, 1024)
		db, l, err := openWithLogs(dir)
		if err != nil {
			t.Fatalf("Open after a crash: %v", err)
		}
		defer db.Close()
		if got := logSizeOf(t, db); got != size || size != 100 {
			t.Errorf("log size %d after the crash, the child reached %d (want 100)", got, size)
		}
		if strings.Contains(l.String(), "level=ERROR") {
			t.Errorf("a clean crash was reported as damage:\n%s", l)
		}
	})

	t.Run("flipped byte in the write-ahead log: open refused", func(t *testing.T) {
		dir := t.TempDir()
		size := crash(t, dir, 400, 1024)
		if size != 800 {
			t.Fatalf("child reached log size %d, want 800", size)
		}
		wal, end := biggest(t, dir, "*.mem")
		flip(t, wal, end/2)
		for attempt := range 2 { // badger cut the file at the first try: refused still
			db, l, err := openWithLogs(dir)
			if err == nil {
				n := logSizeOf(t, db)
				db.Close()
				t.Fatalf("attempt %d: Open succeeded with %d of 800 leaves: lost evidence, and its positions would be issued again", attempt, n)
			}
			if !errors.Is(err, ErrRolledBack) {
				t.Fatalf("attempt %d: Open: %v, want ErrRolledBack", attempt, err)
			}
			for _, want := range []string{"800 were committed", "restore the data directory from a backup"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("attempt %d: error %q does not say %q", attempt, err, want)
				}
			}
			if attempt == 0 && !strings.Contains(l.String(), "level=ERROR msg=\"badger lost committed transactions") {
				t.Errorf("the loss was not logged at ERROR:\n%s", l)
			}
		}
	})
}

// readAll reads a payload whole as the node's Fetch does.
func readAll(db *DB, id string) ([]byte, error) {
	r, err := db.OpenBlob(context.Background(), id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// payloads stores n messages with payloads of size bytes and returns them
// by blob id.
func payloads(t *testing.T, db *DB, n, size int) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for range n {
		p := randomBytes(t, size)
		blob, err := db.WriteBlob(context.Background(), bytes.NewReader(p), 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		buildFixture(t, blob, t0, court).create(t, db)
		out[blob.ID] = p
	}
	return out
}

// checkServed reads every payload: each is either whole and right or
// fails with broker.ErrDamaged. It returns how many were damaged.
func checkServed(t *testing.T, db *DB, want map[string][]byte) int {
	t.Helper()
	damaged := 0
	for id, p := range want {
		got, err := readAll(db, id)
		switch {
		case errors.Is(err, broker.ErrDamaged):
			if damaged == 0 {
				t.Logf("first damaged payload: %v", err)
			}
			damaged++
		case err != nil:
			t.Errorf("payload %s: %v, want broker.ErrDamaged or the payload", id, err)
		case !bytes.Equal(got, p):
			t.Errorf("payload %s served with other bytes and no error", id)
		}
	}
	return damaged
}

func TestFaultValueLog(t *testing.T) {
	// 100 KiB payloads go to the value log (valueThreshold).
	const n, size = 60, 100 << 10

	t.Run("after a clean shutdown", func(t *testing.T) {
		dir := t.TempDir()
		db := openTest(t, dir)
		want := payloads(t, db, n, size)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		vlog, end := biggest(t, dir, "*.vlog")
		flip(t, vlog, end*3/4)

		db, l, err := openWithLogs(dir)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer db.Close()
		for _, w := range []string{"level=ERROR", filepath.Base(vlog), "shut down cleanly"} {
			if !strings.Contains(l.String(), w) {
				t.Errorf("the log does not say %q:\n%s", w, l)
			}
		}
		damaged := checkServed(t, db, want)
		if damaged == 0 || damaged == n {
			t.Errorf("%d of %d payloads damaged, want some after a flip at 3/4 of the value log", damaged, n)
		}
	})

	t.Run("after a crash", func(t *testing.T) {
		dir := t.TempDir()
		crash(t, dir, n, size)
		vlog, end := biggest(t, dir, "*.vlog")
		flip(t, vlog, end*3/4)
		db, l, err := openWithLogs(dir)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		for _, w := range []string{"level=ERROR", filepath.Base(vlog), "at a crash"} {
			if !strings.Contains(l.String(), w) {
				t.Errorf("the log does not say %q:\n%s", w, l)
			}
		}
		var ids []string
		if err := db.bdb.View(func(txn *badger.Txn) error {
			scan(txn, []byte("r/"), func(k, _ []byte, _ error) { ids = append(ids, string(k[2:])) })
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		damaged := 0
		for _, id := range ids {
			_, err := readAll(db, id) // the reader checks the digest at the end
			switch {
			case errors.Is(err, broker.ErrDamaged):
				damaged++
			case err != nil:
				t.Errorf("payload %s: %v, want broker.ErrDamaged or the payload", id, err)
			}
		}
		if len(ids) != n || damaged == 0 || damaged == n {
			t.Errorf("%d of %d payloads damaged, want some", damaged, len(ids))
		}
		db.Close()
	})
}

func TestFaultTable(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	payloads(t, db, 200, 1024)
	vals := map[string][]byte{}
	if err := db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			vals[string(it.Item().KeyCopy(nil))] = v
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil { // flushes the memtable to a table
		t.Fatal(err)
	}
	sst, end := biggest(t, dir, "*.sst")
	flip(t, sst, end/3)

	t.Run("refused at open", func(t *testing.T) {
		db, _, err := openWithLogs(dir)
		if err == nil {
			db.Close()
			t.Fatal("Open succeeded on a damaged table")
		}
		for _, w := range []string{filepath.Base(sst), "damaged", "restore the data directory"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
	})

	t.Run("OnBlockRead serves no damaged bytes", func(t *testing.T) {
		// What Open relies on for damage that appears while it runs:
		// badger itself, in the mode Open sets, on the damaged table. A
		// damaged block's keys read as absent (badger drops the block's
		// error), or badger panics decoding the block before it checks
		// it (in every mode), which stops the node; the next Open refuses
		// the table.
		bo := badgerOptions(dir, Options{Small: true, Logger: slog.New(slog.DiscardHandler)}.withDefaults())
		bdb, err := badger.Open(bo)
		if err != nil {
			t.Fatalf("badger.Open: %v", err)
		}
		defer bdb.Close()
		failed, missing := 0, 0
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Logf("badger panicked reading the damaged table: %v", r)
					failed++
				}
			}()
			for k, want := range vals {
				if err := bdb.View(func(txn *badger.Txn) error {
					v, ok, err := get(txn, []byte(k))
					switch {
					case err != nil:
						failed++
					case !ok:
						missing++
					case !bytes.Equal(v, want):
						t.Errorf("key %q: damaged value served", k)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
		}()
		t.Logf("of %d keys, %d failed to read, %d read as absent", len(vals), failed, missing)
		if failed+missing == 0 {
			t.Error("no key of the damaged block was refused: was the flip in a data block?")
		}
	})
}

func TestFaultRollback(t *testing.T) {
	ctx := context.Background()
	dir, backup := t.TempDir(), t.TempDir()
	db := openTest(t, dir)
	payloads(t, db, 10, 1024)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	copyDir(t, dir, backup)
	db = openTest(t, dir)
	payloads(t, db, 10, 1024)
	if err := db.MarkLog(ctx, logSizeOf(t, db)); err != nil { // as before a checkpoint is signed
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	t.Run("shorter log", func(t *testing.T) {
		restore(t, backup, dir)
		_, err := Open(dir, Options{Small: true, Logger: slog.New(slog.DiscardHandler)})
		if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "40 were committed") {
			t.Fatalf("Open of a rolled back store: %v, want ErrRolledBack naming 40 leaves", err)
		}
	})

	t.Run("forked log", func(t *testing.T) {
		// The backup grows elsewhere to the same size with other evidence.
		fork := t.TempDir()
		copyDir(t, backup, fork)
		fdb := openTest(t, fork)
		payloads(t, fdb, 10, 1024)
		if err := fdb.Close(); err != nil {
			t.Fatal(err)
		}
		restore(t, fork, dir)
		_, err := Open(dir, Options{Small: true, Logger: slog.New(slog.DiscardHandler)})
		if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "forked") {
			t.Fatalf("Open of a forked store: %v, want ErrRolledBack saying forked", err)
		}
	})
}

// copyDir copies the files of src into dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
}

// restore replaces dir's files with backup's, keeping dir's mark, as the
// documented recovery says.
func restore(t *testing.T, backup, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != MarkFile {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	mark, err := os.ReadFile(filepath.Join(dir, MarkFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, MarkFile)); err != nil {
		t.Fatal(err)
	}
	copyDir(t, backup, dir)
	if err := os.WriteFile(filepath.Join(dir, MarkFile), mark, 0o600); err != nil {
		t.Fatal(err)
	}
}

// checkStore runs Check on dir and returns the problems by kind.
func checkStore(t *testing.T, dir string) (CheckResult, map[string][]Problem) {
	t.Helper()
	byKind := map[string][]Problem{}
	res, err := Check(context.Background(), dir, CheckOptions{
		Store:  Options{Small: true, Logger: slog.New(slog.DiscardHandler)},
		Report: func(p Problem) { byKind[p.Kind] = append(byKind[p.Kind], p) },
	})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	n := 0
	for _, ps := range byKind {
		n += len(ps)
	}
	if n != res.Problems {
		t.Errorf("Check counted %d problems, reported %d", res.Problems, n)
	}
	return res, byKind
}

func TestFaultCheck(t *testing.T) {
	t.Run("clean store", func(t *testing.T) {
		dir := t.TempDir()
		db := openTest(t, dir)
		payloads(t, db, 20, 1024)
		payloads(t, db, 5, 300<<10) // chunked, in the value log
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		res, problems := checkStore(t, dir)
		want := CheckResult{Messages: 25, Payloads: 25, Copies: 25, Evidence: 50, Leaves: 50}
		if res != want || len(problems) != 0 {
			t.Errorf("Check of a clean store: %+v %v, want %+v and no problems", res, problems, want)
		}
	})

	t.Run("value log flipped", func(t *testing.T) {
		dir := t.TempDir()
		db := openTest(t, dir)
		payloads(t, db, 60, 100<<10)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		vlog, end := biggest(t, dir, "*.vlog")
		flip(t, vlog, end*3/4)
		_, problems := checkStore(t, dir)
		if len(problems["log file"]) != 1 || !strings.Contains(problems["log file"][0].Where, filepath.Base(vlog)) {
			t.Errorf("log file problems %v, want the cut of %s", problems["log file"], vlog)
		}
		if n := len(problems["payload"]); n == 0 || n == 60 {
			t.Errorf("%d damaged payloads reported, want some of 60", n)
		}
	})

	t.Run("write-ahead log flipped after a crash", func(t *testing.T) {
		dir := t.TempDir()
		crash(t, dir, 100, 1024)
		wal, end := biggest(t, dir, "*.mem")
		flip(t, wal, end/2)
		_, problems := checkStore(t, dir)
		if len(problems["log file"]) == 0 || len(problems["mark"]) != 1 || !strings.Contains(problems["mark"][0].Detail, "200") {
			t.Errorf("problems %v, want the lost transactions and the log behind its mark of 200", problems)
		}
		// Check wrote no mark: the store is still refused.
		if _, err := Open(dir, Options{Small: true, Logger: slog.New(slog.DiscardHandler)}); !errors.Is(err, ErrRolledBack) {
			t.Errorf("Open after Check: %v, want ErrRolledBack", err)
		}
	})

	t.Run("tree node wrong", func(t *testing.T) {
		// Damage behind badger's checksums (a bug, or a rewrite by hand)
		// cannot come from a flipped byte, so it is written through badger.
		dir := t.TempDir()
		db := openTest(t, dir)
		payloads(t, db, 4, 1024)
		if err := db.bdb.Update(func(txn *badger.Txn) error {
			return txn.Set(treeNodeKey(1, 1), make([]byte, 32))
		}); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		_, problems := checkStore(t, dir)
		if len(problems["log"]) != 1 || !strings.Contains(problems["log"][0].String(), "tree node 1 at level 1") {
			t.Errorf("problems %v, want tree node 1 at level 1", problems)
		}
	})
}

func TestFaultMark(t *testing.T) {
	t.Run("follows commits without MarkLog", func(t *testing.T) {
		dir := t.TempDir()
		db := openTest(t, dir)
		payloads(t, db, 3, 1024)
		timeout := time.After(10 * time.Second)
		for {
			db.mark.mu.Lock()
			durable, written := db.mark.durable, db.mark.written
			db.mark.mu.Unlock()
			if durable == 6 {
				break
			}
			select {
			case <-written:
			case <-timeout:
				t.Fatalf("the mark stayed at %d of 6 leaves", durable)
			}
		}
		m, ok, err := readMark(dir)
		if err != nil || !ok || m.Size != 6 || m.Clean {
			t.Fatalf("mark on disk %+v (%v, %v), want size 6, not clean", m, ok, err)
		}
		root, err := db.LogRoot(context.Background(), 6)
		if err != nil || !equalRoot(m, root) {
			t.Errorf("mark root %s, log root %x (%v)", m.Root, root, err)
		}
	})

	t.Run("written on first open and clean at close", func(t *testing.T) {
		dir := t.TempDir()
		db := openTest(t, dir)
		if m, ok, err := readMark(dir); err != nil || !ok || m.Size != 0 || m.Clean {
			t.Fatalf("mark after the first open %+v (%v, %v), want size 0, not clean", m, ok, err)
		}
		payloads(t, db, 2, 1024)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if m, ok, err := readMark(dir); err != nil || !ok || m.Size != 4 || !m.Clean {
			t.Fatalf("mark after Close %+v (%v, %v), want size 4, clean", m, ok, err)
		}
	})

	t.Run("MarkLog beyond the log", func(t *testing.T) {
		db := openTest(t, "")
		if err := db.MarkLog(context.Background(), 1); err == nil {
			t.Error("MarkLog(1) of an empty log succeeded")
		}
	})
}

func TestFaultCheckNoStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	_, err := Check(context.Background(), dir, CheckOptions{Report: func(Problem) {}})
	if err == nil || !strings.Contains(err.Error(), "no store there") {
		t.Errorf("Check of a missing store: %v", err)
	}
	if _, serr := os.Stat(dir); serr == nil {
		t.Error("Check created a store")
	}
}

// TestFaultFailedCommit fails a commit after badger made it, as a failed
// fsync would (the one fault no test machine produces for real: see
// commitTxn). The request gets an error wrapping ErrFailed, Failed is
// closed, every later write is refused without being written, no
// checkpoint can be marked past what was durable, and reads go on. After
// a restart the store takes writes again and holds what badger made
// durable.
func TestFaultFailedCommit(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	ctx := context.Background()
	before := newFixture(t, db, time.Now(), court)
	before.create(t, db)
	if err := db.MarkLog(ctx, logSizeOf(t, db)); err != nil {
		t.Fatal(err)
	}
	marked := logSizeOf(t, db)

	failing := newFixture(t, db, time.Now(), court) // its payload is written before
	eio := errors.New("input/output error")
	real := commitTxn
	commitTxn = func(txn *badger.Txn) error {
		if err := real(txn); err != nil {
			return err
		}
		return eio
	}
	defer func() { commitTxn = real }()
	_, err := db.CreateMessage(ctx, failing.msg, failing.copies, failing.evs, nil)
	if !errors.Is(err, ErrFailed) || !errors.Is(err, eio) {
		t.Fatalf("CreateMessage with a failing commit: %v, want ErrFailed and the cause", err)
	}
	commitTxn = real
	select {
	case <-db.Failed():
	default:
		t.Fatal("Failed is not closed after a failed commit")
	}

	after := buildFixture(t, broker.Blob{ID: failing.msg.Blob, SHA256: [32]byte{1}, Size: 1}, time.Now(), court)
	snapshot := dump(t, db)
	if _, err := db.CreateMessage(ctx, after.msg, after.copies, after.evs, nil); !errors.Is(err, ErrFailed) {
		t.Fatalf("CreateMessage after the failure: %v, want ErrFailed", err)
	}
	if _, err := db.WriteBlob(ctx, bytes.NewReader(randomBytes(t, 300<<10)), 1<<20); !errors.Is(err, ErrFailed) {
		t.Fatalf("WriteBlob after the failure: %v, want ErrFailed", err)
	}
	checkUnchanged(t, db, snapshot)
	if err := db.MarkLog(ctx, logSizeOf(t, db)); !errors.Is(err, ErrFailed) {
		t.Fatalf("MarkLog after the failure: %v, want ErrFailed: no checkpoint may cover the failed batch", err)
	}
	if m, _, err := readMark(dir); err != nil || m.Size != marked {
		t.Fatalf("mark after the failure: size %d (%v), want %d, from before it", m.Size, err, marked)
	}
	if _, err := db.Message(ctx, before.msg.Header.ID); err != nil {
		t.Fatalf("read after the failure: %v", err)
	}

	db = reopen(t, db, dir)
	if _, err := db.Message(ctx, failing.msg.Header.ID); err != nil {
		t.Fatalf("the message badger did commit, after a restart: %v", err)
	}
	newFixture(t, db, time.Now(), court).create(t, db)
}

// TestFaultMarkLogUnderLoad takes checkpoints the way the node does (the
// log's size as a reader sees it, then MarkLog) while writers commit: a
// commit is visible to readers a moment before the committer hands its
// size to the mark, and MarkLog must wait for that rather than fail.
func TestFaultMarkLogUnderLoad(t *testing.T) {
	db := openTest(t, "")
	ctx := context.Background()
	stop := make(chan struct{})
	var writers sync.WaitGroup
	for range 4 {
		writers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				newFixture(t, db, time.Now(), court).create(t, db)
			}
		})
	}
	defer writers.Wait()
	defer close(stop)
	for i := range 300 {
		size, err := db.LogSize(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.MarkLog(ctx, size); err != nil {
			t.Fatalf("checkpoint %d: MarkLog(%d) under load: %v", i, size, err)
		}
	}
}

// TestFaultTornUnlistedTable leaves a half-written table that badger's
// manifest does not list, as a crash while badger flushes or compacts
// does: it is not damage (badger deletes it on open), so Open and Check
// must not refuse the store for it.
func TestFaultTornUnlistedTable(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	newFixture(t, db, time.Now(), court).create(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "999999.sst"), randomBytes(t, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	var problems []string
	res, err := Check(context.Background(), dir, CheckOptions{
		Store:  Options{Small: true, Logger: slog.New(slog.DiscardHandler)},
		Report: func(p Problem) { problems = append(problems, p.String()) },
	})
	if err != nil || res.Problems != 0 {
		t.Fatalf("Check with a torn table the manifest does not list: %v, problems %q", err, problems)
	}
	openTest(t, dir)
}

// TestFaultMarkFlips flips each byte of the high-water mark in turn: every
// one must make Open refuse the store, since a mark that reads as
// something else (a key's name changed, a number cut short) would defend
// less than the log it stands for.
func TestFaultMarkFlips(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	newFixture(t, db, time.Now(), court).create(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, MarkFile)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range good {
		flipped := bytes.Clone(good)
		flipped[i] ^= 0xff
		if err := os.WriteFile(path, flipped, 0o600); err != nil {
			t.Fatal(err)
		}
		if db, err := Open(dir, Options{Small: true, Logger: slog.New(slog.DiscardHandler)}); err == nil {
			db.Close()
			t.Fatalf("Open accepted the mark with byte %d (%q) flipped: %s", i, good[i], flipped)
		}
	}
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	openTest(t, dir)
}

// TestFaultEmptyLogFile leaves an empty write-ahead log and an empty value
// log, as a crash does while badger deletes a replayed log (it truncates
// the file to zero before removing it) or creates one: badger alone then
// refuses to open the store; Open must not.
func TestFaultEmptyLogFile(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	f := newFixture(t, db, time.Now(), court)
	f.create(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"00009.mem", "000009.vlog"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	db = openTest(t, dir)
	if _, err := db.Message(context.Background(), f.msg.Header.ID); err != nil {
		t.Fatalf("the message after an empty log file was removed: %v", err)
	}
}

// A large payload's file that is damaged, cut, extended or gone after it
// was stored is refused as damaged when read, never served as the payload.
func TestFaultPayloadFile(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"flipped byte", func(t *testing.T, path string) { flip(t, path, 3*chunkSize/2) }},
		{"cut short", func(t *testing.T, path string) {
			if err := os.Truncate(path, 2*chunkSize); err != nil {
				t.Fatal(err)
			}
		}},
		{"longer", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("appended"))
			f.Close()
		}},
		{"gone", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			db := openTest(t, dir)
			f := newFixture(t, db, t0, court)
			f.create(t, db)
			blob, err := db.WriteBlob(ctx, bytes.NewReader(randomBytes(t, 3*chunkSize)), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			g := buildFixture(t, blob, t0, court)
			g.create(t, db)
			db = reopen(t, db, dir)
			tt.damage(t, db.payloadPath(blob.ID))

			rc, err := db.OpenBlob(ctx, blob.ID)
			if err == nil {
				_, err = io.ReadAll(rc)
				rc.Close()
			}
			if !errors.Is(err, broker.ErrDamaged) {
				t.Errorf("reading a damaged payload file: err %v, want ErrDamaged", err)
			}
			readBlob(t, db, f.msg.Blob) // the small payload beside it is intact
		})
	}
}

// A batch split because it outgrew a transaction commits its first part
// and goes on with the rest; if that first commit fails the store, the
// rest must fail too, not be committed to a store that lost its
// predecessor (a payload deferred into the first part, say).
func TestFaultFailedCommitBeforeSplit(t *testing.T) {
	db := openTest(t, "", func(o *Options) { o.MemTableSize = 1 << 20 }) // transactions of about 150 KiB
	ctx := context.Background()
	release, started := make(chan struct{}), make(chan struct{})
	go db.submit(ctx, 0, func(*batch) error { close(started); <-release; return nil })
	<-started // the committer is busy: what follows is queued as one batch
	queue := func(size int, keys int) chan error {
		done := make(chan error, 1)
		before := len(db.reqs)
		go func() {
			done <- db.submit(ctx, size, func(b *batch) error {
				for i := range keys {
					if err := b.set(fmt.Appendf(nil, "zz/%d/%d", size, i), make([]byte, size/keys)); err != nil {
						return err
					}
				}
				return nil
			})
		}()
		for len(db.reqs) == before {
			runtime.Gosched()
		}
		return done
	}
	big := queue(140<<10, 4)
	after := queue(40<<10, 1) // does not fit beside big: the batch splits

	eio := errors.New("input/output error")
	real := commitTxn
	calls := 0 // only the committer calls it
	commitTxn = func(txn *badger.Txn) error {
		calls++
		if err := real(txn); err != nil || calls != 2 {
			return err
		}
		return eio // the batch of big, committed but not synced
	}
	defer func() { commitTxn = real }()
	close(release)
	if err := <-big; !errors.Is(err, ErrFailed) {
		t.Fatalf("the request whose commit failed: %v, want ErrFailed", err)
	}
	if err := <-after; !errors.Is(err, ErrFailed) {
		t.Fatalf("the request split off after the failed commit: %v, want ErrFailed", err)
	}
	if db.splits != 1 || calls != 2 {
		t.Errorf("%d splits, %d commits: want the batch split once, and nothing committed after the failure", db.splits, calls)
	}
}

// A store copied or restored without its payload folder is refused at
// start, naming the folder, rather than opened with every large payload
// unreadable; a store of the layout before payload files gets the folder.
func TestFaultPayloadDirMissing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := openTest(t, dir)
	if _, err := db.WriteBlob(ctx, bytes.NewReader(randomBytes(t, 2*chunkSize)), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, payloadDir)); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{Small: true, Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, broker.ErrDamaged) || !strings.Contains(err.Error(), payloadDir) {
		t.Fatalf("Open without the payload folder: %v, want ErrDamaged naming it", err)
	}

	// Format 2 had no payload folder: Open makes it and records format 3.
	bdb, err := badger.Open(badgerOptions(dir, Options{Small: true}.withDefaults()))
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(func(txn *badger.Txn) error { return txn.Set(formatKey, encodeSeq(2)) }); err != nil {
		t.Fatal(err)
	}
	if err := bdb.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, dir)
	if fi, err := os.Stat(filepath.Join(dir, payloadDir)); err != nil || !fi.IsDir() {
		t.Fatalf("payload folder after opening a format 2 store: %v", err)
	}
	if err := db.view(ctx, func(txn *badger.Txn) error {
		v, _, err := get(txn, formatKey)
		if err == nil && string(v) != string(encodeSeq(currentFormat)) {
			err = fmt.Errorf("format %x, want %d", v, currentFormat)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// A payload file that fails to sync fails the store, as a failed commit
// does: the upload is refused and no later write is taken.
func TestFaultPayloadSyncFails(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "")
	eio := errors.New("input/output error")
	real := syncPayload
	syncPayload = func(*os.File) error { return eio }
	defer func() { syncPayload = real }()
	if _, err := db.WriteBlob(ctx, bytes.NewReader(randomBytes(t, 2*chunkSize)), 1<<20); !errors.Is(err, ErrFailed) || !errors.Is(err, eio) {
		t.Fatalf("WriteBlob with a failing sync: %v, want ErrFailed and the cause", err)
	}
	select {
	case <-db.Failed():
	default:
		t.Fatal("Failed is not closed after a failed payload sync")
	}
	syncPayload = real
	if _, err := db.WriteBlob(ctx, strings.NewReader("small"), 100); !errors.Is(err, ErrFailed) {
		t.Fatalf("WriteBlob after the failure: %v, want ErrFailed", err)
	}
}
