package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kurier.dev/kurier/broker"
)

func readBlob(t *testing.T, db *DB, id string) []byte {
	t.Helper()
	rc, err := db.OpenBlob(context.Background(), id)
	if err != nil {
		t.Fatalf("OpenBlob: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read blob: %v", err)
	}
	return b
}

func TestDB_WriteBlob(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "")
	tests := []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"just under a chunk", chunkSize - 1},
		{"one chunk", chunkSize},
		{"a chunk and a byte", chunkSize + 1},
		{"sixteen chunks and one", manyChunks + chunkSize},
		{"5 MiB", 5 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := randomBytes(t, tt.size)
			blob, err := db.WriteBlob(ctx, bytes.NewReader(data), int64(tt.size))
			if err != nil {
				t.Fatal(err)
			}
			if blob.Size != int64(tt.size) || blob.SHA256 != sha256.Sum256(data) || !validBlobID(blob.ID) {
				t.Errorf("WriteBlob = %+v, want size %d, SHA-256 %x", blob, tt.size, sha256.Sum256(data))
			}
			if got := readBlob(t, db, blob.ID); !bytes.Equal(got, data) {
				t.Errorf("read back %d bytes, not the %d written", len(got), len(data))
			}
		})
	}

	t.Run("small reads", func(t *testing.T) {
		data := randomBytes(t, 3*chunkSize+17)
		blob, err := db.WriteBlob(ctx, bytes.NewReader(data), 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := db.OpenBlob(ctx, blob.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		var got bytes.Buffer
		if _, err := io.CopyBuffer(&got, struct{ io.Reader }{rc}, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), data) {
			t.Error("read back other bytes")
		}
	})
}

// failingReader yields n bytes, then err.
type failingReader struct {
	n   int
	err error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(len(p), r.n, 10_000)
	r.n -= k
	return k, nil
}

func TestDB_WriteBlob_Fails(t *testing.T) {
	errBroken := errors.New("connection reset")
	tests := []struct {
		name string
		r    func(cancel func()) io.Reader
		max  int64
		want error
	}{
		{"too large, small", func(func()) io.Reader { return bytes.NewReader(make([]byte, 100)) }, 99, broker.ErrTooLarge},
		{"too large, in the file", func(func()) io.Reader { return bytes.NewReader(make([]byte, 3<<20)) }, 2<<20 + 5, broker.ErrTooLarge},
		{"too large, later in the file", func(func()) io.Reader { return bytes.NewReader(make([]byte, 6<<20)) }, manyChunks + chunkSize + 5, broker.ErrTooLarge},
		{"reader error at once", func(func()) io.Reader { return &failingReader{err: errBroken} }, 1 << 30, errBroken},
		{"reader error after a chunk", func(func()) io.Reader { return &failingReader{n: chunkSize + 5, err: errBroken} }, 1 << 30, errBroken},
		{"reader error after many chunks", func(func()) io.Reader { return &failingReader{n: 2*manyChunks + 5, err: errBroken} }, 1 << 30, errBroken},
		{"cancelled", func(cancel func()) io.Reader {
			return io.MultiReader(bytes.NewReader(make([]byte, manyChunks+chunkSize)), readerFunc(func([]byte) (int, error) {
				cancel()
				return 0, errBroken
			}))
		}, 1 << 30, errBroken},
		{"cancelled between chunks", func(cancel func()) io.Reader {
			return &cancellingReader{r: bytes.NewReader(make([]byte, 3*manyChunks)), after: manyChunks + 2*chunkSize, cancel: cancel}
		}, 1 << 30, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openTest(t, "")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, err := db.WriteBlob(ctx, tt.r(cancel), tt.max)
			if !errors.Is(err, tt.want) {
				t.Fatalf("WriteBlob: err %v, want %v", err, tt.want)
			}
			if n := countKeys(t, db, blobsPrefix); n != 0 {
				t.Errorf("%d blob keys left behind", n)
			}
			if files := payloadFiles(t, db); len(files) != 0 {
				t.Errorf("payload files left behind: %v", files)
			}
		})
	}
}

// manyChunks is a payload size of sixteen chunks.
const manyChunks = 16 * chunkSize

// payloadFiles lists the store's payload files.
func payloadFiles(t testing.TB, db *DB) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(db.dir, payloadDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// cancellingReader calls cancel once after bytes have been read.
type cancellingReader struct {
	r      io.Reader
	after  int
	cancel func()
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.after -= n; c.after <= 0 {
		c.cancel()
	}
	return n, err
}

func TestDB_DeleteBlob(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "")
	f := newFixture(t, db, t0, court)
	f.create(t, db)
	free, err := db.WriteBlob(ctx, bytes.NewReader(randomBytes(t, 2*chunkSize+1)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		id   string
		want error
	}{
		{"referenced", f.msg.Blob, broker.ErrState},
		{"unreferenced", free.ID, nil},
		{"again", free.ID, nil},
		{"never existed", newBlobID(), nil},
		{"malformed", "b/../x", broker.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := db.DeleteBlob(ctx, tt.id); !errors.Is(err, tt.want) {
				t.Fatalf("DeleteBlob: err %v, want %v", err, tt.want)
			}
		})
	}
	readBlob(t, db, f.msg.Blob)
	if _, err := db.OpenBlob(ctx, free.ID); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("OpenBlob(deleted): err %v, want ErrNotFound", err)
	}
	if n := countKeys(t, db, blobChunkPrefix(free.ID)); n != 0 {
		t.Errorf("%d chunks of the deleted blob left", n)
	}

	t.Run("create after delete", func(t *testing.T) {
		g := newFixture(t, db, t0, court)
		if err := db.DeleteBlob(ctx, g.msg.Blob); err != nil {
			t.Fatal(err)
		}
		if _, err := db.CreateMessage(ctx, g.msg, g.copies, g.evs, nil); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("CreateMessage with a deleted blob: err %v, want ErrNotFound", err)
		}
	})

	// A reader of a deleted blob either reads it whole (a payload file
	// stays readable while open) or fails with ErrNotFound (chunks), but
	// never yields part of it as if it were all.
	t.Run("deleted while reading", func(t *testing.T) {
		data := randomBytes(t, 3*chunkSize)
		b, err := db.WriteBlob(ctx, bytes.NewReader(data), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := db.OpenBlob(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		head := make([]byte, 10)
		if _, err := io.ReadFull(rc, head); err != nil {
			t.Fatal(err)
		}
		if err := db.DeleteBlob(ctx, b.ID); err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(rc)
		if err != nil && !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("reading on: err %v, want ErrNotFound or the whole payload", err)
		}
		if err == nil && !bytes.Equal(append(head, rest...), data) {
			t.Errorf("reading on yielded other bytes than were written")
		}
		if files := payloadFiles(t, db); len(files) != 0 {
			t.Errorf("payload files of deleted blobs left: %v", files)
		}
	})
}

// clock is a settable clock for Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

func TestDB_SweepBlobs(t *testing.T) {
	ctx := context.Background()

	t.Run("at reopen", func(t *testing.T) {
		dir := t.TempDir()
		db := openTest(t, dir)
		f := newFixture(t, db, t0, court)
		f.create(t, db)
		small, err := db.WriteBlob(ctx, strings.NewReader("orphan"), 100)
		if err != nil {
			t.Fatal(err)
		}
		large, err := db.WriteBlob(ctx, bytes.NewReader(randomBytes(t, manyChunks+1)), 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		// Chunks whose header is gone, as a crash during a delete leaves them.
		headless := newBlobID()
		if err := db.update(func(txn *badger.Txn) error {
			return txn.Set(blobChunkKey(headless, 0), []byte("left over"))
		}); err != nil {
			t.Fatal(err)
		}
		// And a payload file whose header is gone.
		if err := os.WriteFile(db.payloadPath(newBlobID()), []byte("left over"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}

		var logs bytes.Buffer
		db = openTest(t, dir, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
		if !strings.Contains(logs.String(), "orphan_blobs_deleted=4") {
			t.Errorf("Open logged %q, want orphan_blobs_deleted=4", logs.String())
		}
		if files := payloadFiles(t, db); len(files) != 0 {
			t.Errorf("payload files left after the sweep: %v", files)
		}
		for _, id := range []string{small.ID, large.ID} {
			if _, err := db.OpenBlob(ctx, id); !errors.Is(err, broker.ErrNotFound) {
				t.Errorf("OpenBlob(orphan): err %v, want ErrNotFound", err)
			}
		}
		if n := countKeys(t, db, blobsPrefix); n != 2 {
			t.Errorf("%d blob keys left, want the referenced blob's chunk and header", n)
		}
		readBlob(t, db, f.msg.Blob)
	})

	t.Run("after the grace period", func(t *testing.T) {
		clk := &clock{now: t0}
		db := openTest(t, "", func(o *Options) { o.Now, o.BlobGrace = clk.Now, time.Hour })
		f := newFixture(t, db, t0, court)
		f.create(t, db)
		old, err := db.WriteBlob(ctx, bytes.NewReader(randomBytes(t, chunkSize+1)), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		// An upload that started before the grace period and is still running.
		reached, resume := make(chan struct{}), make(chan struct{})
		running := &blockingReader{data: randomBytes(t, 3*chunkSize), at: 2 * chunkSize, reached: reached, resume: resume}
		done := make(chan error)
		go func() { _, err := db.WriteBlob(ctx, running, 1<<20); done <- err }()
		<-reached

		clk.Advance(2 * time.Hour)
		fresh, err := db.WriteBlob(ctx, strings.NewReader("fresh"), 100)
		if err != nil {
			t.Fatal(err)
		}
		n, err := db.SweepBlobs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Errorf("SweepBlobs = %d, want 2 (the old orphan and the overlong upload)", n)
		}
		if _, err := db.OpenBlob(ctx, old.ID); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("OpenBlob(old orphan): err %v, want ErrNotFound", err)
		}
		readBlob(t, db, fresh.ID)
		readBlob(t, db, f.msg.Blob)

		// The overlong upload finds its blob gone and cleans up after itself.
		close(resume)
		if err := <-done; !errors.Is(err, broker.ErrConflict) {
			t.Errorf("WriteBlob of the swept upload: err %v, want ErrConflict", err)
		}
		if n := countKeys(t, db, blobsPrefix); n != 4 {
			t.Errorf("%d blob keys left, want 4 (two blobs, one chunk each)", n)
		}
	})
}

// blockingReader yields data, pausing once at offset at until resume is
// closed.
type blockingReader struct {
	data            []byte
	off, at         int
	reached, resume chan struct{}
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if r.off == r.at && r.reached != nil {
		close(r.reached)
		r.reached = nil
		<-r.resume
	}
	if r.off == len(r.data) {
		return 0, io.EOF
	}
	end := len(r.data)
	if r.off < r.at {
		end = r.at
	}
	n := copy(p, r.data[r.off:end])
	r.off += n
	return n, nil
}

// A small payload is synced with the message that references it: one
// commit for both, and both there after a restart.
func TestDB_SmallBlobRidesWithMessage(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	db.deferLimit = time.Hour // however slow the test runs, the blob waits for its message
	ctx := context.Background()
	before := db.commits.Load()
	f := newFixture(t, db, time.Now(), court)
	f.create(t, db)
	if n := db.commits.Load() - before; n != 1 {
		t.Errorf("a small payload and its message took %d commits, want 1", n)
	}
	if n := db.deferred.Load(); n != 0 {
		t.Errorf("%d deferred writes still queued after the message was created", n)
	}
	db = reopen(t, db, dir)
	if _, err := db.Message(ctx, f.msg.ID()); err != nil {
		t.Fatalf("message after a restart: %v", err)
	}
	if got := readBlob(t, db, f.msg.Blob); len(got) != int(f.msg.Header.PayloadSize) {
		t.Errorf("payload after a restart has %d bytes, want %d", len(got), f.msg.Header.PayloadSize)
	}
}

// A small payload nothing follows is still committed, after deferLimit;
// OpenBlob finds it before that.
func TestDB_SmallBlobAlone(t *testing.T) {
	db := openTest(t, "")
	ctx := context.Background()
	data := []byte("a payload nobody references")
	blob, err := db.WriteBlob(ctx, bytes.NewReader(data), 100)
	if err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, db, blob.ID); !bytes.Equal(got, data) {
		t.Fatalf("OpenBlob right after WriteBlob = %q, want %q", got, data)
	}
	if _, err := db.WriteBlob(ctx, strings.NewReader("another"), 100); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for db.deferred.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a deferred write was not committed within %s", deferLimit)
		}
		runtime.Gosched()
	}
}

// A batch that holds a small payload whose message has not come yet waits
// for that message, and the two share one sync.
func TestDB_BatchWaitsForItsPayloadsMessage(t *testing.T) {
	db := openTest(t, "")
	db.followLimit = time.Hour // the message always comes here; the wait is bounded in production
	ctx := context.Background()
	first := newFixture(t, db, time.Now(), court)
	if err := db.barrier(ctx); err != nil { // first's payload committed before
		t.Fatal(err)
	}
	release, started := make(chan struct{}), make(chan struct{})
	go db.submit(ctx, 0, func(*batch) error { close(started); <-release; return nil })
	<-started // the committer is busy: what follows queues up
	created := make(chan error, 1)
	go func() { _, err := db.CreateMessage(ctx, first.msg, first.copies, first.evs, nil); created <- err }()
	for len(db.reqs) < 1 {
		runtime.Gosched()
	}
	second := newFixture(t, db, time.Now(), court) // its payload, deferred, queues behind
	before := db.commits.Load()
	close(release)
	for len(db.reqs) > 0 { // the committer took both and waits for second's message
		runtime.Gosched()
	}
	second.create(t, db)
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	// One commit for the blocking request, one for both messages and the payload.
	if n := db.commits.Load() - before; n != 2 {
		t.Errorf("%d commits, want 2: the message after its payload should have joined the batch", n)
	}
}
