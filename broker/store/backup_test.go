package store

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/tlog"
)

// restoreOpts are the options the tests restore with.
func restoreOpts() RestoreOptions {
	return RestoreOptions{Store: Options{Small: true, Logger: slog.New(slog.DiscardHandler)}}
}

// backupOf takes a backup of db.
func backupOf(t *testing.T, db *DB) ([]byte, BackupInfo) {
	t.Helper()
	var buf bytes.Buffer
	info, err := db.Backup(context.Background(), &buf)
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	return buf.Bytes(), info
}

// restoreTo restores b into a new directory and returns it.
func restoreTo(t *testing.T, b []byte) (string, RestoreResult) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "restored")
	res, err := Restore(context.Background(), dir, bytes.NewReader(b), restoreOpts())
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	return dir, res
}

// largePayload is above one chunk, so it is kept in a payload file.
const largePayload = chunkSize + 1000

func TestDB_Backup_RoundTrip(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "")
	want := payloads(t, db, 4, 1024)                      // small: inside badger
	for id, p := range payloads(t, db, 3, largePayload) { // large: payloads/<id>
		want[id] = p
	}
	// More evidence on a copy, and a message relayed elsewhere (outbound
	// queue, deadline index).
	f := newFixture(t, db, t0, court, kreis)
	f.relayed(t, kreis, kreisDomain, t0.Add(time.Hour))
	f.create(t, db)
	c, err := db.Copy(ctx, f.msg.ID(), court)
	if err != nil {
		t.Fatal(err)
	}
	appendStep(t, db, nextStep(t, *c, "Retrieval", broker.StateRetrieved))

	// A checkpoint signed before the backup, and evidence after it.
	signed := logSizeOf(t, db)
	if err := db.MarkLog(ctx, signed); err != nil {
		t.Fatal(err)
	}
	signedRoot, err := db.LogRoot(ctx, signed)
	if err != nil {
		t.Fatal(err)
	}
	payloads(t, db, 2, 1024)

	before := dump(t, db)
	b, info := backupOf(t, db)
	if info.LogSize != logSizeOf(t, db) || info.PayloadFiles != 3 || info.PayloadBytes != 3*largePayload || info.Keys != uint64(len(before)) {
		t.Errorf("BackupInfo = %+v; want the log's %d leaves, 3 payload files of %d bytes, %d keys", info, logSizeOf(t, db), largePayload, len(before))
	}
	if vinfo, err := VerifyBackup(ctx, bytes.NewReader(b)); err != nil || !cmp.Equal(vinfo, info) {
		t.Errorf("VerifyBackup = %+v, %v; want %+v", vinfo, err, info)
	}

	dir, res := restoreTo(t, b)
	if res.HadMark || res.RolledBack || res.Check.Problems != 0 || res.Check.Messages != 10 {
		t.Errorf("RestoreResult = %+v; want no mark, no rollback, 10 messages checked without problems", res)
	}
	restored, logs, err := openWithLogs(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restored.Close() })
	if strings.Contains(logs.String(), "level=ERROR") || strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("opening the restored store logged:\n%s", logs)
	}
	if diff := cmp.Diff(before, dump(t, restored)); diff != "" {
		t.Errorf("restored keys differ (-backed up +restored):\n%s", diff)
	}
	for id, p := range want {
		got, err := readAll(restored, id)
		if err != nil || !bytes.Equal(got, p) {
			t.Errorf("payload %s: %d bytes, %v; want the %d bytes stored", id, len(got), err, len(p))
		}
	}
	n, err := os.ReadDir(filepath.Join(dir, payloadDir))
	if err != nil || len(n) != 3 {
		t.Errorf("restored payload folder holds %d files (%v), want 3", len(n), err)
	}

	// The restored log is the backed-up one, consistent with the checkpoint.
	checkLog(t, restored)
	size := logSizeOf(t, restored)
	root, err := restored.LogRoot(ctx, size)
	if err != nil || size != info.LogSize || !bytes.Equal(root, info.LogRoot) {
		t.Fatalf("restored log: %d leaves, root %x, %v; the backup's: %d, %x", size, root, err, info.LogSize, info.LogRoot)
	}
	if r, err := restored.LogRoot(ctx, signed); err != nil || !bytes.Equal(r, signedRoot) {
		t.Errorf("restored root at the checkpoint's size %d: %x, %v; want %x", signed, r, err, signedRoot)
	}
	p, err := restored.ConsistencyProof(ctx, signed, size)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.VerifyConsistency(tlog.Checkpoint{Size: signed, Root: signedRoot}, tlog.Checkpoint{Size: size, Root: root}, p); err != nil {
		t.Errorf("consistency of the checkpoint before the backup with the restored log: %v", err)
	}
	// The restored node goes on where the backup ended.
	payloads(t, restored, 1, 1024)
	if got := logSizeOf(t, restored); got != size+2 {
		t.Errorf("after one more message the restored log has %d leaves, want %d", got, size+2)
	}
	if err := restored.Close(); err != nil {
		t.Fatal(err)
	}
	if res, problems := checkStore(t, dir); res.Problems != 0 {
		t.Errorf("Check of the restored store: %v", problems)
	}
}

func TestDB_Backup_Empty(t *testing.T) {
	db := openTest(t, "")
	b, info := backupOf(t, db)
	if info.LogSize != 0 || info.PayloadFiles != 0 {
		t.Errorf("BackupInfo of an empty store = %+v", info)
	}
	dir, _ := restoreTo(t, b)
	if got := logSizeOf(t, openTest(t, dir)); got != 0 {
		t.Errorf("restored empty store has %d leaves", got)
	}
}

// TestDB_Backup_WhileWriting takes a backup while writers keep committing
// messages with small and large payloads and deleting unused payloads:
// every message in it has its payload and its evidence, and its log is a
// prefix of the node's.
func TestDB_Backup_WhileWriting(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "")
	payloads(t, db, 5, largePayload)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for w := range 3 {
		wg.Go(func() {
			for i := 0; i < 300; i++ {
				select {
				case <-stop:
					return
				default:
				}
				size := 1024
				if i%3 == 0 {
					size = largePayload
				}
				blob, err := db.WriteBlob(ctx, bytes.NewReader(randomBytes(t, size)), 1<<30)
				if err != nil {
					errs <- err
					return
				}
				if w == 0 && i%2 == 0 { // an upload given up
					if err := db.DeleteBlob(ctx, blob.ID); err != nil {
						errs <- err
						return
					}
					continue
				}
				f := buildFixture(t, blob, t0, court)
				if _, err := db.CreateMessage(ctx, f.msg, f.copies, f.evs, nil); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	// Let the writers get going, then back up while they write.
	for deadline := time.Now().Add(10 * time.Second); logSizeOf(t, db) < 20; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the writers committed nothing within 10s")
		}
	}
	b, info := backupOf(t, db)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
	after := logSizeOf(t, db)
	if after <= info.LogSize {
		t.Logf("the writers committed nothing after the backup began (log %d)", after)
	}

	dir, res := restoreTo(t, b)
	if res.Check.Problems != 0 {
		t.Fatalf("restored store has %d problems", res.Check.Problems)
	}
	restored := openTest(t, dir)
	checkLog(t, restored)
	for _, ev := range storedEvidence(t, restored) {
		if ev.Type == "SubmissionAcceptance" && len(evidenceOf(t, restored, ev.MessageID)) != 2 {
			t.Errorf("message %s restored without its Delivery", ev.MessageID)
		}
	}
	if n := countKeys(t, restored, []byte("m/")); uint64(2*n) != info.LogSize {
		t.Errorf("restored %d messages with %d leaves, want 2 leaves each", n, info.LogSize)
	}
	orig, err := db.LogRoot(ctx, info.LogSize)
	if err != nil || !bytes.Equal(orig, info.LogRoot) {
		t.Errorf("the node's root at the backup's size %d is %x (%v), the backup's %x", info.LogSize, orig, err, info.LogRoot)
	}
}

// blockingWriter accepts the first n bytes, then blocks until released.
type blockingWriter struct {
	n       int
	reached chan struct{}
	release chan struct{}
	once    sync.Once
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > w.n {
		w.once.Do(func() { close(w.reached) })
		<-w.release
	}
	return w.buf.Write(p)
}

func TestDB_Backup_HoldsPayloadDeletes(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "")
	payloads(t, db, 1, largePayload)
	blob, err := db.WriteBlob(ctx, bytes.NewReader(randomBytes(t, largePayload)), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	path := db.payloadPath(blob.ID)

	w := &blockingWriter{n: 1024, reached: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() { _, err := db.Backup(ctx, w); done <- err }()
	<-w.reached
	if err := db.DeleteBlob(ctx, blob.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("payload file deleted while a backup runs: %v", err)
	}
	if _, err := db.OpenBlob(ctx, blob.ID); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("OpenBlob of the deleted blob = %v, want ErrNotFound", err)
	}
	close(w.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("payload file still there after the backup ended: %v", err)
	}
}

func TestDB_Backup_Close(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, Options{Small: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	payloads(t, db, 2, largePayload)
	w := &blockingWriter{n: 1024, reached: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() { _, err := db.Backup(context.Background(), w); done <- err }()
	<-w.reached
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	deadline := time.Now().Add(10 * time.Second)
	for stopped := false; !stopped; time.Sleep(time.Millisecond) { // until Close has cancelled the backup
		if time.Now().After(deadline) {
			t.Fatal("Close did not cancel the backup within 10s")
		}
		db.holds.mu.Lock()
		stopped = db.holds.stopped
		db.holds.mu.Unlock()
	}
	close(w.release) // the writer returns; the backup sees it is cancelled
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("Backup during Close = %v, want ErrClosed", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := db.Backup(context.Background(), io.Discard); !errors.Is(err, ErrClosed) {
		t.Errorf("Backup after Close = %v, want ErrClosed", err)
	}
}

func TestDB_InUse(t *testing.T) {
	dir := t.TempDir()
	if inUse, err := InUse(dir); err != nil || inUse {
		t.Errorf("InUse of a closed store = %v, %v", inUse, err)
	}
	db := openTest(t, dir)
	if inUse, err := InUse(dir); err != nil || !inUse {
		t.Errorf("InUse of an open store = %v, %v", inUse, err)
	}
	db.Close()
	if inUse, err := InUse(dir); err != nil || inUse {
		t.Errorf("InUse after Close = %v, %v", inUse, err)
	}
}

// entry is one entry of a backup, for tests that rewrite one.
type entry struct {
	name string
	body []byte
	size int64 // the header's size, if not len(body)
}

// entries splits a backup into its entries.
func entries(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{name: hdr.Name, body: body})
	}
}

// join writes entries as a tar stream.
func join(t *testing.T, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		size := int64(len(e.body))
		if e.size != 0 {
			size = e.size
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Size: size, Mode: 0o600}); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.body) // short on purpose where size says more
	}
	tw.Close()
	return buf.Bytes()
}

func TestHostile_Restore(t *testing.T) {
	db := openTest(t, "")
	payloads(t, db, 3, 1024)
	payloads(t, db, 2, largePayload)
	good, _ := backupOf(t, db)
	es := entries(t, good)
	if es[0].name != backupManifestN || es[len(es)-1].name != backupEndN || !strings.HasPrefix(es[len(es)-2].name, "payloads/") {
		t.Fatalf("backup entries %v", es)
	}
	with := func(fn func(es []entry) []entry) []byte {
		c := make([]entry, len(es))
		for i, e := range es {
			c[i] = entry{name: e.name, body: bytes.Clone(e.body)}
		}
		return join(t, fn(c))
	}
	flipped := func(i int) []byte {
		return with(func(es []entry) []entry { es[i].body[len(es[i].body)/2] ^= 0x40; return es })
	}

	cases := map[string][]byte{
		"not a tar":             []byte(strings.Repeat("kein Archiv ", 100)),
		"empty":                 nil,
		"cut in the manifest":   good[:700],
		"cut in the keys":       good[:len(good)/3],
		"cut in a payload file": good[:len(good)-largePayload/2],
		"cut before the end":    join(t, es[:len(es)-1]),
		"flipped key frame":     flipped(1),
		"flipped payload file":  flipped(len(es) - 2),
		"no manifest":           with(func(es []entry) []entry { return es[1:] }),
		"manifest of a newer format": with(func(es []entry) []entry {
			es[0].body = bytes.Replace(es[0].body, []byte(`"version":1`), []byte(`"version":2`), 1)
			return es
		}),
		"manifest with an unknown field": with(func(es []entry) []entry {
			es[0].body = bytes.Replace(es[0].body, []byte(`{`), []byte(`{"extra":1,`), 1)
			return es
		}),
		"unknown entry": with(func(es []entry) []entry {
			return append(es[:2], append([]entry{{name: "notes.txt", body: []byte("hallo")}}, es[2:]...)...)
		}),
		"path outside the folder": with(func(es []entry) []entry {
			es[len(es)-2].name = "payloads/../../etc/" + es[len(es)-2].name[len("payloads/"):]
			return es
		}),
		"payload file twice": with(func(es []entry) []entry {
			return append(es[:len(es)-1], es[len(es)-2], es[len(es)-1])
		}),
		"payload file missing": with(func(es []entry) []entry {
			return append(es[:len(es)-2], es[len(es)-1])
		}),
		"payload of no message": with(func(es []entry) []entry {
			es[len(es)-2].name = payloadDir + "/" + strings.Repeat("f", blobIDLen)
			return es
		}),
		"frames out of order": with(func(es []entry) []entry { es[1].name = backupKeysDir + "00000001"; return es }),
		"absurd frame size": with(func(es []entry) []entry {
			es[1].size = 1 << 40
			return es[:2]
		}),
		"something after the end": with(func(es []entry) []entry {
			return append(es, entry{name: backupEndN, body: es[len(es)-1].body})
		}),
		"end record counts otherwise": with(func(es []entry) []entry {
			es[len(es)-1].body = bytes.Replace(es[len(es)-1].body, []byte(`"payload_files":2`), []byte(`"payload_files":1`), 1)
			return es
		}),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Restore(context.Background(), dir, bytes.NewReader(b), restoreOpts())
			if !errors.Is(err, ErrBadBackup) {
				t.Errorf("Restore = %v, want ErrBadBackup", err)
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Errorf("a refused restore left %v", left)
			}
			if _, err := VerifyBackup(context.Background(), bytes.NewReader(b)); err == nil && name != "flipped payload file" && name != "payload of no message" && name != "payload file missing" {
				t.Errorf("VerifyBackup accepted it")
			}
		})
	}
}

func TestHostile_RestoreNotEmpty(t *testing.T) {
	db := openTest(t, "")
	payloads(t, db, 1, 1024)
	b, _ := backupOf(t, db)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Restore(context.Background(), dir, bytes.NewReader(b), restoreOpts())
	if !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), "MANIFEST") {
		t.Errorf("Restore into a non-empty directory = %v, want ErrNotEmpty naming what is there", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "MANIFEST")); string(got) != "old" {
		t.Error("the refused restore changed what was there")
	}
	// A running node's directory: badger's files and lock.
	_, err = Restore(context.Background(), db.dir, bytes.NewReader(b), restoreOpts())
	if !errors.Is(err, ErrNotEmpty) {
		t.Errorf("Restore into an open store = %v, want ErrNotEmpty", err)
	}
}

func TestFaultRestoreRollback(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := openTest(t, dir)
	payloads(t, db, 3, 1024)
	old, oldInfo := backupOf(t, db)
	payloads(t, db, 3, largePayload)
	size := logSizeOf(t, db)
	if err := db.MarkLog(ctx, size); err != nil { // as before a checkpoint is signed
		t.Fatal(err)
	}
	current, _ := backupOf(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	markBytes, err := os.ReadFile(filepath.Join(dir, MarkFile))
	if err != nil {
		t.Fatal(err)
	}
	// The disk is lost but for the mark, kept as the recovery says.
	withMark := func(t *testing.T) string {
		d := filepath.Join(t.TempDir(), "data")
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, MarkFile), markBytes, 0o600); err != nil {
			t.Fatal(err)
		}
		return d
	}

	t.Run("older backup refused", func(t *testing.T) {
		d := withMark(t)
		_, err := Restore(ctx, d, bytes.NewReader(old), restoreOpts())
		if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), fmt.Sprintf("records %d", size)) || !strings.Contains(err.Error(), "-accept-rollback") {
			t.Fatalf("Restore of an older backup = %v, want ErrRolledBack naming the mark's %d leaves and the way to accept it", err, size)
		}
		left, _ := os.ReadDir(d)
		got, _ := os.ReadFile(filepath.Join(d, MarkFile))
		if len(left) != 1 || !bytes.Equal(got, markBytes) {
			t.Errorf("the refused restore left %v, mark %q; want the mark alone, as it was", left, got)
		}
	})

	t.Run("current backup keeps going", func(t *testing.T) {
		d := withMark(t)
		res, err := Restore(ctx, d, bytes.NewReader(current), restoreOpts())
		if err != nil || !res.HadMark || res.MarkSize != size || res.RolledBack {
			t.Fatalf("Restore of the current backup = %+v, %v", res, err)
		}
		if _, err := os.Stat(filepath.Join(d, RollbackFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a restore without rollback recorded one: %v", err)
		}
		if got := logSizeOf(t, openTest(t, d)); got != size {
			t.Errorf("restored log has %d leaves, want %d", got, size)
		}
	})

	t.Run("older backup accepted", func(t *testing.T) {
		d := withMark(t)
		opts := restoreOpts()
		opts.AcceptRollback = true
		opts.Now = func() time.Time { return t0 }
		res, err := Restore(ctx, d, bytes.NewReader(old), opts)
		if err != nil || !res.RolledBack || res.MarkSize != size || res.Backup.LogSize != oldInfo.LogSize {
			t.Fatalf("Restore accepting the rollback = %+v, %v", res, err)
		}
		rec, err := os.ReadFile(filepath.Join(d, RollbackFile))
		if err != nil || !strings.Contains(string(rec), fmt.Sprintf(`"mark_size":%d`, size)) || !strings.Contains(string(rec), fmt.Sprintf(`"restored_size":%d`, oldInfo.LogSize)) {
			t.Errorf("rollback record %q, %v", rec, err)
		}
		m, ok, err := readMark(d)
		if err != nil || !ok || m.Size != oldInfo.LogSize {
			t.Errorf("mark after an accepted rollback: %+v, %v, %v; want the restored %d leaves", m, ok, err, oldInfo.LogSize)
		}
		if got := logSizeOf(t, openTest(t, d)); got != oldInfo.LogSize {
			t.Errorf("restored log has %d leaves, want %d", got, oldInfo.LogSize)
		}
	})

	t.Run("forked backup refused", func(t *testing.T) {
		// Another store whose log reaches the mark's size with other leaves.
		other := openTest(t, "")
		payloads(t, other, int(size)/2+1, 1024)
		fork, _ := backupOf(t, other)
		d := withMark(t)
		_, err := Restore(ctx, d, bytes.NewReader(fork), restoreOpts())
		if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "forks") {
			t.Fatalf("Restore of a forked log = %v, want ErrRolledBack saying it forks", err)
		}
		if left, _ := os.ReadDir(d); len(left) != 1 {
			t.Errorf("the refused restore left %v", left)
		}
	})
}
