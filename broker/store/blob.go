package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kurier.dev/kurier/broker"
)

// Blobs are sealed payloads. A payload of less than one chunk is stored in
// badger, as chunk 0 under its header, in a single request. A larger one
// is stored in a file of its own, payloads/<id> in the store's folder,
// written with write(2) and fsynced, because badger would map it into the
// node's memory (its value log is a memory-mapped file: a 200 MB payload
// would add 200 MB to the node's resident size and pay a page fault per
// 4 KiB) and rewrite it on value-log GC.
//
// Life of a large blob: WriteBlob writes the header first (incomplete,
// with the start time), then the file (synced, and its folder), then marks
// the header complete with size, SHA-256 and that the bytes are in a file.
// CreateMessage accepts only a complete blob and records that the message
// references it; from then on the blob is not an orphan. Deleting a blob
// deletes the header first (in the committer, where it cannot race with
// CreateMessage) and the file or chunks after, so a crash in between
// leaves a file or chunks without a header, which the sweep removes.
// Stores written before payload files keep their chunks in badger (up to
// 4 MiB per transaction), which OpenBlob and the deletes still read.

const (
	chunkSize = 256 << 10
	// deleteGroup is how many chunk keys one delete transaction removes.
	deleteGroup = 4096
	// payloadDir is the folder, inside the store's, of the payload files.
	payloadDir = "payloads"
)

// blobHeader is stored at b/<id>/h.
type blobHeader struct {
	Started  time.Time `json:"started"`
	Complete bool      `json:"complete"`
	Size     int64     `json:"size,omitempty"`
	SHA256   string    `json:"sha256,omitempty"` // lowercase hex, as envelopes write it
	File     bool      `json:"file,omitempty"`   // the bytes are in payloads/<id>, not in chunks
}

func decodeBlobHeader(v []byte) (blobHeader, error) {
	var h blobHeader
	if err := json.Unmarshal(v, &h); err != nil {
		return h, fmt.Errorf("decode blob header: %w", err)
	}
	return h, nil
}

func newBlobID() string {
	var b [blobIDLen / 2]byte
	rand.Read(b[:]) // never returns an error; crashes the program if randomness fails
	return hex.EncodeToString(b[:])
}

func (db *DB) getChunk() *[]byte  { return db.chunks.Get().(*[]byte) }
func (db *DB) putChunk(b *[]byte) { db.chunks.Put(b) }

// WriteBlob stores what r yields until EOF as a new blob and returns its
// id, size and SHA-256. Memory use does not grow with the size.
//
// If r yields more than max bytes, WriteBlob stops reading and returns an
// error wrapping broker.ErrTooLarge. On every error (a reader error, ctx
// ending, a limit) it deletes what it wrote. The blob counts as an orphan,
// deleted by SweepBlobs after the grace period or at the next Open, until a
// message created with CreateMessage references it.
//
// A payload of less than one chunk is not synced on its own: it is
// committed with the next write that is waited for, normally the
// CreateMessage that references it, which is therefore durable only with
// it (see enqueue). OpenBlob finds it at once all the same.
func (db *DB) WriteBlob(ctx context.Context, r io.Reader, max int64) (broker.Blob, error) {
	w := &blobWriter{db: db, id: newBlobID(), hash: sha256.New(), max: max}
	blob, err := w.write(ctx, r)
	if err != nil {
		if w.touched {
			if derr := db.deleteBlob(context.WithoutCancel(ctx), w.id, false, time.Time{}); derr != nil {
				err = errors.Join(err, fmt.Errorf("delete partial blob: %w", derr))
			}
		}
		return broker.Blob{}, fmt.Errorf("write blob %s: %w", w.id, err)
	}
	return blob, nil
}

type blobWriter struct {
	db      *DB
	id      string
	hash    hash.Hash
	max     int64
	size    int64
	touched bool      // something may have been written
	started time.Time // header's start time
}

// makePayloadDir makes the folder of the payload files, durably.
func makePayloadDir(dir string) error {
	p := filepath.Join(dir, payloadDir)
	if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("make the payload folder: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("make the payload folder: %w", err)
	}
	return checkPayloadDir(dir)
}

// checkPayloadDir refuses a store whose payload folder is missing or not
// a folder.
func checkPayloadDir(dir string) error {
	p := filepath.Join(dir, payloadDir)
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: the payload folder %s is missing; a store is its whole data directory, payloads/ included: restore it from the backup (copy the folder recursively)", broker.ErrDamaged, p)
	case err != nil:
		return fmt.Errorf("payload folder: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("%w: %s is not a folder", broker.ErrDamaged, p)
	}
	return nil
}

// payloadPath is where the bytes of a large blob are kept.
func (db *DB) payloadPath(id string) string {
	return filepath.Join(db.dir, payloadDir, id)
}

// readChunk fills buf from r. last reports that r is at EOF.
func (w *blobWriter) readChunk(r io.Reader, buf []byte) (n int, last bool, err error) {
	n, err = io.ReadFull(r, buf)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		last, err = true, nil
	case err != nil:
		return 0, false, fmt.Errorf("read payload: %w", err)
	}
	w.size += int64(n)
	if w.size > w.max {
		return 0, false, fmt.Errorf("%w: payload larger than %d bytes", broker.ErrTooLarge, w.max)
	}
	w.hash.Write(buf[:n])
	return n, last, nil
}

func (w *blobWriter) write(ctx context.Context, r io.Reader) (broker.Blob, error) {
	if err := ctx.Err(); err != nil {
		return broker.Blob{}, err
	}
	w.started = w.db.now().UTC()
	buf := w.db.getChunk()
	n, last, err := w.readChunk(r, *buf)
	if err != nil {
		w.db.putChunk(buf)
		return broker.Blob{}, err
	}
	if last {
		// Small payload: header and chunk in one committer request. The
		// request may outlive this call (if ctx ends while it waits), so it
		// gets its own copy rather than a pooled buffer.
		only := append([]byte(nil), (*buf)[:n]...)
		w.db.putChunk(buf)
		return w.finish(ctx, only)
	}

	// Large payload: header first, the file, then complete the header.
	defer w.db.putChunk(buf)
	w.touched = true
	hv, err := json.Marshal(blobHeader{Started: w.started})
	if err != nil {
		return broker.Blob{}, err
	}
	if err := w.db.submit(ctx, len(hv), func(b *batch) error {
		return b.set(blobHeaderKey(w.id), hv)
	}); err != nil {
		return broker.Blob{}, err
	}
	if err := w.writeFile(ctx, r, *buf, n); err != nil {
		return broker.Blob{}, err
	}
	return w.finish(ctx, nil)
}

// syncPayload syncs a payload file; a variable so that the store's tests
// can fail it, as a disk would (no test machine makes fsync fail for real).
var syncPayload = (*os.File).Sync

// writeFile writes the payload's file: the first n bytes in buf, then the
// rest of r, through buf; then it syncs the file and its folder.
func (w *blobWriter) writeFile(ctx context.Context, r io.Reader, buf []byte, n int) error {
	f, err := os.OpenFile(w.db.payloadPath(w.id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create payload file: %w", err)
	}
	defer f.Close() // after Sync and Close below, a no-op
	for last := false; ; {
		if _, err := f.Write(buf[:n]); err != nil {
			return fmt.Errorf("write payload file: %w", err)
		}
		if last {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if n, last, err = w.readChunk(r, buf); err != nil {
			return err
		}
	}
	// A failed sync fails the store, as a failed commit does: Linux
	// reports a failed write-back once, so a later sync of the folder
	// could succeed without another upload's entry being on disk.
	if err := syncPayload(f); err != nil {
		return w.db.fail(fmt.Errorf("sync payload file: %w", err))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close payload file: %w", err)
	}
	if err := syncDir(filepath.Dir(f.Name())); err != nil {
		return w.db.fail(fmt.Errorf("sync payload folder: %w", err))
	}
	return nil
}

// finish marks the blob complete, together with the only chunk if one is
// given (a small payload written in one request).
func (w *blobWriter) finish(ctx context.Context, only []byte) (broker.Blob, error) {
	blob := broker.Blob{ID: w.id, Size: w.size}
	w.hash.Sum(blob.SHA256[:0])
	small := !w.touched
	hv, err := json.Marshal(blobHeader{Started: w.started, Complete: true, Size: w.size, SHA256: hex.EncodeToString(blob.SHA256[:]), File: !small})
	if err != nil {
		return broker.Blob{}, err
	}
	w.touched = true
	hk := blobHeaderKey(w.id)
	write := func(b *batch) error {
		if !small {
			if ok, err := b.has(hk); err != nil {
				return err
			} else if !ok {
				return fmt.Errorf("%w: blob was deleted while being written (upload longer than the sweep grace period?)", broker.ErrConflict)
			}
		}
		if len(only) > 0 {
			if err := b.set(blobChunkKey(w.id, 0), only); err != nil {
				return err
			}
		}
		return b.set(hk, hv)
	}
	if small {
		// Synced with the message that references it (see enqueue).
		err = w.db.enqueue(ctx, w.id, len(hv)+len(only), write)
	} else {
		err = w.db.submit(ctx, len(hv), write)
	}
	if err != nil {
		return broker.Blob{}, err
	}
	return blob, nil
}

// OpenBlob returns a reader of the blob's bytes, one chunk in memory at a
// time, or an error wrapping broker.ErrNotFound if there is no complete blob
// with the id. At the end the reader checks the bytes' SHA-256 against the
// one recorded when the blob was written and reports a mismatch (or a
// payload file of another size, or missing) as an error wrapping
// broker.ErrDamaged instead of io.EOF. A blob deleted while it is read is
// either read to its end (a payload file stays readable while open) or
// fails with broker.ErrNotFound (chunks), never cut short silently.
func (db *DB) OpenBlob(ctx context.Context, id string) (io.ReadCloser, error) {
	if !validBlobID(id) {
		return nil, fmt.Errorf("open blob %q: %w", id, broker.ErrNotFound)
	}
	// Counted before the lookup: a deferred blob committed in between has
	// been counted, so a miss is looked up again after the barrier.
	queued := db.deferred.Load()
	h, err := db.blobHeader(ctx, id)
	if errors.Is(err, broker.ErrNotFound) && queued > 0 {
		// It may be a small blob still queued (see enqueue). Whatever the
		// barrier's outcome (a failed store still reads), look again.
		db.barrier(ctx)
		h, err = db.blobHeader(ctx, id)
	}
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", id, err)
	}
	want, err := hex.DecodeString(h.SHA256)
	if err != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("open blob %s: malformed header digest", id)
	}
	if h.File {
		f, err := os.Open(db.payloadPath(id))
		if errors.Is(err, fs.ErrNotExist) {
			if _, herr := db.blobHeader(ctx, id); errors.Is(herr, broker.ErrNotFound) {
				return nil, fmt.Errorf("open blob %s: deleted meanwhile: %w", id, broker.ErrNotFound)
			}
			// The header is complete, so the file was synced: lost since.
			return nil, fmt.Errorf("open blob %s: %w: the payload file is missing", id, broker.ErrDamaged)
		}
		if err != nil {
			return nil, fmt.Errorf("open blob %s: %w", id, err)
		}
		return &fileReader{f: f, id: id, left: h.Size, want: want, hash: sha256.New()}, nil
	}
	return &blobReader{db: db, id: id, size: h.Size, want: want, hash: sha256.New()}, nil
}

// fileReader reads a payload file, checking its size and SHA-256 against
// the header: a mismatch is an error instead of io.EOF.
type fileReader struct {
	f    *os.File
	id   string
	left int64 // bytes the header says are still to come
	want []byte
	hash hash.Hash
	err  error // sticky
}

func (r *fileReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.left == 0 {
		r.err = r.end()
		return 0, r.err
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.f.Read(p)
	r.hash.Write(p[:n])
	r.left -= int64(n)
	switch {
	case errors.Is(err, io.EOF) && r.left > 0:
		r.err = fmt.Errorf("read blob %s: %w: the payload file is %d bytes short of the recorded size", r.id, broker.ErrDamaged, r.left)
	case err != nil && !errors.Is(err, io.EOF):
		r.err = fmt.Errorf("read blob %s: %w", r.id, err)
	}
	return n, r.err
}

// end checks, at the recorded size, that the file ends and its digest
// matches.
func (r *fileReader) end() error {
	var one [1]byte
	if n, _ := r.f.Read(one[:]); n > 0 {
		return fmt.Errorf("read blob %s: %w: the payload file is longer than the recorded size", r.id, broker.ErrDamaged)
	}
	return endOfBlob(r.id, r.hash, r.want)
}

// endOfBlob is io.EOF if the bytes hashed into h have the digest want,
// else the error that they are damaged.
func endOfBlob(id string, h hash.Hash, want []byte) error {
	if got := h.Sum(nil); string(got) != string(want) {
		return fmt.Errorf("read blob %s: %w: SHA-256 of the stored bytes does not match the one recorded", id, broker.ErrDamaged)
	}
	return io.EOF
}

// Close closes the file.
func (r *fileReader) Close() error {
	r.err = errors.New("read blob: reader closed")
	return r.f.Close()
}

// blobHeader reads the header of a complete blob.
func (db *DB) blobHeader(ctx context.Context, id string) (blobHeader, error) {
	var h blobHeader
	err := db.view(ctx, func(txn *badger.Txn) error {
		v, ok, err := get(txn, blobHeaderKey(id))
		if err != nil {
			return err
		}
		if !ok {
			return broker.ErrNotFound
		}
		if h, err = decodeBlobHeader(v); err != nil {
			return err
		}
		if !h.Complete {
			return fmt.Errorf("still being written: %w", broker.ErrNotFound)
		}
		return nil
	})
	return h, err
}

type blobReader struct {
	db   *DB
	id   string
	size int64  // from the header
	read int64  // bytes of chunks fetched so far
	next uint32 // next chunk to fetch
	buf  []byte // the current chunk
	off  int    // read position in buf
	want []byte
	hash hash.Hash
	err  error // sticky
}

func (r *blobReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.off == len(r.buf) {
		if r.err = r.fetch(); r.err != nil {
			return 0, r.err
		}
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	return n, nil
}

// fetch loads the next chunk into buf, or returns io.EOF after the last one
// if the digest matches.
func (r *blobReader) fetch() error {
	if r.read == r.size {
		return endOfBlob(r.id, r.hash, r.want)
	}
	k := blobChunkKey(r.id, r.next)
	err := r.db.view(context.Background(), func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			// Deleted meanwhile (the header goes first), or lost.
			if ok, herr := has(txn, blobHeaderKey(r.id)); herr == nil && ok {
				return fmt.Errorf("%w: chunk %d of a stored payload is missing", broker.ErrDamaged, r.next)
			}
			return fmt.Errorf("chunk %d missing (blob deleted?): %w", r.next, broker.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if r.buf, err = item.ValueCopy(r.buf[:0]); err != nil {
			// The key is there but its value cannot be read back: a value
			// log cut or damaged (see integrity.go).
			return fmt.Errorf("%w: chunk %d cannot be read (%v)", broker.ErrDamaged, r.next, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read blob %s: %w", r.id, err)
	}
	if len(r.buf) == 0 || r.read+int64(len(r.buf)) > r.size {
		return fmt.Errorf("read blob %s: %w: chunk %d is empty or overruns the recorded size %d (a value log cut on open reads back empty)", r.id, broker.ErrDamaged, r.next, r.size)
	}
	r.hash.Write(r.buf)
	r.read += int64(len(r.buf))
	r.next++
	r.off = 0
	return nil
}

// Close releases the reader.
func (r *blobReader) Close() error {
	r.err, r.buf = errors.New("read blob: reader closed"), nil
	return nil
}

// DeleteBlob deletes a blob. Deleting a blob that does not exist is not an
// error; deleting one that a stored message references is refused with an
// error wrapping broker.ErrState.
func (db *DB) DeleteBlob(ctx context.Context, id string) error {
	if !validBlobID(id) {
		return fmt.Errorf("delete blob %q: %w: not a blob id", id, broker.ErrInvalid)
	}
	if err := db.deleteBlob(ctx, id, false, time.Time{}); err != nil {
		return fmt.Errorf("delete blob %s: %w", id, err)
	}
	return nil
}

// errSkip tells the sweep that a candidate turned out to be in use.
var errSkip = errors.New("blob in use")

// deleteBlob deletes the header (in the committer, refusing if a message
// references the blob), then the chunks. For the sweep (sweep true), a
// reference is errSkip rather than ErrState, and a non-zero cutoff also
// skips a blob started at or after it.
func (db *DB) deleteBlob(ctx context.Context, id string, sweep bool, cutoff time.Time) error {
	hk := blobHeaderKey(id)
	err := db.submitFor(ctx, len(hk), id, func(b *batch) error {
		if owner, ok, err := b.get(blobRefKey(id)); err != nil {
			return err
		} else if ok {
			if sweep {
				return errSkip
			}
			return fmt.Errorf("%w: blob is the payload of message %s", broker.ErrState, owner)
		}
		v, ok, err := b.get(hk)
		if err != nil || !ok {
			return err // no header: only chunks are left, if anything
		}
		if !cutoff.IsZero() {
			h, err := decodeBlobHeader(v)
			if err != nil {
				return err
			}
			if !h.Started.Before(cutoff) {
				return errSkip
			}
		}
		return b.del(hk)
	})
	if err != nil {
		return err
	}
	if !validBlobID(id) {
		return fmt.Errorf("%w: blob id %q", broker.ErrInvalid, id) // keys are the store's own: cannot happen
	}
	if err := db.removePayload(id); err != nil {
		return fmt.Errorf("delete payload file: %w", err)
	}
	return db.deleteChunks(ctx, id)
}

// deleteChunks deletes all chunks of a blob whose header is gone.
func (db *DB) deleteChunks(ctx context.Context, id string) error {
	prefix := blobChunkPrefix(id)
	for {
		var keys [][]byte
		if err := db.view(ctx, func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			defer it.Close()
			for it.Seek(prefix); it.Valid() && len(keys) < deleteGroup; it.Next() {
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			return nil
		}); err != nil {
			return fmt.Errorf("list chunks: %w", err)
		}
		if len(keys) == 0 {
			return nil
		}
		if err := db.update(func(txn *badger.Txn) error {
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("delete chunks: %w", err)
		}
	}
}

// SweepBlobs deletes blobs that no stored message references and that were
// started more than Options.BlobGrace ago (so that uploads in progress,
// which no message can reference yet, survive), and chunks and payload
// files left without a header by an interrupted delete. It returns how
// many blobs (and headerless files) it deleted.
// Open runs the same sweep without the grace period, before anything can be
// uploading. The reference check and the header's deletion happen in the
// committer, so a sweep cannot delete a blob that CreateMessage is just
// attaching: one of the two sees the other.
func (db *DB) SweepBlobs(ctx context.Context) (int, error) {
	n, err := db.sweep(ctx, db.grace)
	if err != nil {
		return n, fmt.Errorf("sweep blobs: %w", err)
	}
	return n, nil
}

// sweep deletes orphan blobs; grace 0 deletes every unreferenced blob.
func (db *DB) sweep(ctx context.Context, grace time.Duration) (int, error) {
	var cutoff time.Time
	if grace > 0 {
		cutoff = db.now().Add(-grace)
	}
	var candidates []string
	err := db.view(ctx, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: blobsPrefix})
		defer it.Close()
		cur, chunks := "", false // blob at hand, and whether it has chunks
		done := func() {
			if chunks {
				candidates = append(candidates, cur) // chunks without a header
			}
		}
		for it.Seek(blobsPrefix); it.Valid(); {
			if err := ctx.Err(); err != nil {
				return err
			}
			id, kind, ok := parseBlobKey(it.Item().Key())
			if !ok {
				it.Next()
				continue
			}
			if id != cur {
				done()
				cur, chunks = id, false
			}
			if kind == blobKeyChunk {
				chunks = true
				it.Seek(blobHeaderKey(id)) // skip the other chunks
				continue
			}
			chunks = false // has a header: decided here
			referenced, err := has(txn, blobRefKey(id))
			if err != nil {
				return err
			}
			if !referenced {
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				h, err := decodeBlobHeader(v)
				if err != nil {
					return fmt.Errorf("blob %s: %w", id, err)
				}
				if grace == 0 || h.Started.Before(cutoff) {
					candidates = append(candidates, id)
				}
			}
			it.Next()
		}
		done()
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range candidates {
		err := db.deleteBlob(ctx, id, true, cutoff)
		if errors.Is(err, errSkip) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("delete orphan blob %s: %w", id, err)
		}
		n++
	}
	files, err := db.sweepFiles(ctx)
	return n + files, err
}

// sweepFiles deletes payload files without a header, which an interrupted
// delete leaves. A file is created only after its header is committed, so
// no upload in progress has one.
func (db *DB) sweepFiles(ctx context.Context) (int, error) {
	d, err := os.Open(filepath.Join(db.dir, payloadDir))
	if err != nil {
		return 0, fmt.Errorf("list payload files: %w", err)
	}
	defer d.Close()
	n := 0
	for {
		// In batches: the folder holds a file per large payload ever kept.
		names, err := d.Readdirnames(1024)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("list payload files: %w", err)
		}
		m, err := db.sweepNames(ctx, names)
		n += m
		if err != nil {
			return n, err
		}
	}
}

// sweepNames deletes those of the payload files named that have no header.
func (db *DB) sweepNames(ctx context.Context, names []string) (int, error) {
	var headless []string
	if err := db.view(ctx, func(txn *badger.Txn) error {
		for _, id := range names {
			if !validBlobID(id) {
				continue
			}
			found, err := has(txn, blobHeaderKey(id))
			if err != nil {
				return err
			}
			if !found {
				headless = append(headless, id)
			}
		}
		return nil
	}); err != nil {
		return 0, err
	}
	for i, id := range headless {
		if err := db.removePayload(id); err != nil {
			return i, fmt.Errorf("delete orphan payload file: %w", err)
		}
	}
	return len(headless), nil
}

func has(txn *badger.Txn, k []byte) (bool, error) {
	_, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}
