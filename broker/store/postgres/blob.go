package postgres

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"kurier.dev/kurier/broker"
)

// Payloads are stored as a row in blobs and rows of ChunkSize bytes in
// blob_chunks, each chunk written in its own statement, so that neither
// the process nor one transaction holds more than a chunk, and a slow
// upload holds no connection while it waits for the sender. The header is
// marked complete, with size and SHA-256, after the last chunk; only a
// complete blob can be given to a message (CreateMessage).

// ChunkSize is the most payload bytes one blob_chunks row holds.
const ChunkSize = 1 << 20

const blobIDLen = 32 // hex digits of 16 random bytes

func newBlobID() string {
	var b [blobIDLen / 2]byte
	rand.Read(b[:]) // never returns an error; crashes the program if randomness fails
	return hex.EncodeToString(b[:])
}

// validBlobID reports whether id has the form newBlobID produces.
func validBlobID(id string) bool {
	if len(id) != blobIDLen {
		return false
	}
	for _, c := range []byte(id) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// WriteBlob stores what r yields until EOF as a new blob and returns its
// id, size and SHA-256; memory use does not grow with the size. If r
// yields more than max bytes it stops reading and returns an error
// wrapping broker.ErrTooLarge. On every error it deletes what it wrote.
// A blob that no message references is an orphan until CreateMessage
// gives it one.
func (s *Store) WriteBlob(ctx context.Context, r io.Reader, max int64) (broker.Blob, error) {
	id := newBlobID()
	blob, err := s.writeBlob(ctx, id, r, max)
	if err != nil {
		if _, derr := s.pool.Exec(context.WithoutCancel(ctx), "DELETE FROM blobs WHERE id = $1 AND NOT complete", id); derr != nil {
			err = errors.Join(err, fmt.Errorf("delete partial blob: %w", derr))
		}
		return broker.Blob{}, fmt.Errorf("write blob %s: %w", id, err)
	}
	return blob, nil
}

// writeBlob sends the header with the first chunk and each further chunk
// as it is read, and the completed header with the last: a payload of one
// chunk, as most are, takes one round trip. Each part is committed without
// waiting for its WAL flush (see unsynced).
func (s *Store) writeBlob(ctx context.Context, id string, r io.Reader, max int64) (broker.Blob, error) {
	h := sha256.New()
	pbuf := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(pbuf)
	buf := *pbuf
	var size int64
	b := unsynced()
	b.Queue("INSERT INTO blobs (id) VALUES ($1)", id)
	for seq := int32(0); ; seq++ {
		n, last, err := readChunk(r, buf)
		if err != nil {
			return broker.Blob{}, err
		}
		if size += int64(n); size > max {
			return broker.Blob{}, fmt.Errorf("%w: payload larger than %d bytes", broker.ErrTooLarge, max)
		}
		if n > 0 {
			h.Write(buf[:n])
			b.Queue("INSERT INTO blob_chunks (blob, seq, data) VALUES ($1, $2, $3)", id, seq, buf[:n])
		}
		if last {
			break
		}
		// Sent before buf is read into again.
		if err := s.sendUnsynced(ctx, b); err != nil {
			return broker.Blob{}, fmt.Errorf("store chunk %d: %w", seq, err)
		}
		b = unsynced()
	}
	blob := broker.Blob{ID: id, Size: size}
	h.Sum(blob.SHA256[:0])
	b.Queue("UPDATE blobs SET complete = true, size = $2, sha256 = $3, started = now() WHERE id = $1",
		id, size, hex.EncodeToString(blob.SHA256[:]))
	if err := s.sendUnsynced(ctx, b); err != nil {
		return broker.Blob{}, fmt.Errorf("store payload: %w", err)
	}
	return blob, nil
}

// unsynced begins a batch of an upload's statements that sendUnsynced
// commits without waiting for its WAL to be flushed. A payload needs to be
// durable only once its message is: the synchronous commit of
// CreateMessage, which comes after, flushes all WAL written before its
// own, on the primary and on a synchronous standby, this payload's rows
// included. A crash before that loses only an upload whose submission was
// never answered; its partial rows, if any, are swept as orphans.
func unsynced() *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SET LOCAL synchronous_commit TO off")
	return b
}

// sendUnsynced commits b in one round trip. On an error the connection,
// left in the failed transaction, is closed by the pool, not reused.
func (s *Store) sendUnsynced(ctx context.Context, b *pgx.Batch) error {
	b.Queue("COMMIT")
	return s.unavailable(ctx, s.pool.SendBatch(ctx, b).Close())
}

// chunkBufs hold the buffers of uploads, a chunk each: most payloads are
// far smaller than a chunk, and a fresh chunk per upload would be most of
// what an upload allocates and clears.
var chunkBufs = sync.Pool{New: func() any { b := make([]byte, ChunkSize); return &b }}

// readChunk fills buf from r; last is true at EOF.
func readChunk(r io.Reader, buf []byte) (n int, last bool, err error) {
	n, err = io.ReadFull(r, buf)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return n, true, nil
	case err != nil:
		return 0, false, fmt.Errorf("read payload: %w", err)
	}
	return n, false, nil
}

// OpenBlob returns a reader of a complete blob's bytes, one chunk in
// memory at a time, or an error wrapping broker.ErrNotFound. At the end
// the reader checks size and SHA-256 against those recorded and reports a
// mismatch, or a chunk missing (the blob deleted meanwhile), as an error
// wrapping broker.ErrDamaged or broker.ErrNotFound instead of io.EOF.
func (s *Store) OpenBlob(ctx context.Context, id string) (io.ReadCloser, error) {
	if !validBlobID(id) {
		return nil, fmt.Errorf("open blob %q: %w", id, broker.ErrNotFound)
	}
	var size int64
	var sum string
	err := s.pool.QueryRow(ctx, "SELECT size, sha256 FROM blobs WHERE id = $1 AND complete", id).Scan(&size, &sum)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("open blob %s: %w", id, broker.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", id, err)
	}
	want, err := hex.DecodeString(sum)
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w: malformed SHA-256 %q", id, broker.ErrDamaged, sum)
	}
	return &blobReader{ctx: ctx, s: s, id: id, left: size, want: want, hash: sha256.New()}, nil
}

// blobReader reads a blob chunk by chunk.
type blobReader struct {
	ctx  context.Context
	s    *Store
	id   string
	next int32  // the next chunk's seq
	left int64  // bytes not yet fetched
	buf  []byte // the unread part of mem
	mem  []byte // the chunk buffer, ChunkSize bytes
	want []byte
	hash hash.Hash
	err  error
}

// Read reads from the current chunk, fetching the next when it is used up.
func (r *blobReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.fetch()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// fetch loads the next chunk into r.buf, or sets the end: io.EOF if the
// bytes are whole, an error otherwise.
func (r *blobReader) fetch() error {
	if r.left == 0 {
		if got := r.hash.Sum(nil); string(got) != string(r.want) {
			return fmt.Errorf("read blob %s: %w: SHA-256 of the stored bytes does not match the one recorded", r.id, broker.ErrDamaged)
		}
		return io.EOF
	}
	data, err := r.chunk()
	if errNoRows(err) {
		return fmt.Errorf("read blob %s: %w: chunk %d is gone (the blob was deleted)", r.id, broker.ErrNotFound, r.next)
	}
	if err != nil {
		return fmt.Errorf("read blob %s chunk %d: %w", r.id, r.next, err)
	}
	if len(data) == 0 || int64(len(data)) > r.left {
		return fmt.Errorf("read blob %s: %w: chunk %d is empty or overruns the recorded size", r.id, broker.ErrDamaged, r.next)
	}
	r.next++
	r.left -= int64(len(data))
	r.hash.Write(data)
	r.buf = data
	return nil
}

// chunk reads chunk r.next into the reader's one buffer, which it
// reuses: pgtype.DriverBytes lends the connection's buffer, so that no
// chunk is allocated afresh.
func (r *blobReader) chunk() ([]byte, error) {
	rows, err := r.s.pool.Query(r.ctx, "SELECT data FROM blob_chunks WHERE blob = $1 AND seq = $2", r.id, r.next)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, err
		}
		return nil, pgx.ErrNoRows
	}
	var data pgtype.DriverBytes
	if err := rows.Scan(&data); err != nil {
		return nil, err
	}
	if len(data) > ChunkSize {
		return nil, fmt.Errorf("%w: chunk of %d bytes, more than %d", broker.ErrDamaged, len(data), ChunkSize)
	}
	if r.mem == nil {
		r.mem = make([]byte, 0, ChunkSize)
	}
	r.mem = append(r.mem[:0], data...)
	return r.mem, rows.Err()
}

// Close releases the reader; it holds no connection between reads.
func (r *blobReader) Close() error {
	r.buf, r.err = nil, errors.New("blob reader closed")
	return nil
}

// DeleteBlob deletes a blob and its chunks. Deleting a blob that does not
// exist is not an error; deleting one that a stored message references is
// refused with an error wrapping broker.ErrState.
func (s *Store) DeleteBlob(ctx context.Context, id string) error {
	if !validBlobID(id) {
		return fmt.Errorf("delete blob %q: %w: not a blob id", id, broker.ErrInvalid)
	}
	err := s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "DELETE FROM blobs WHERE id = $1", id)
		return err
	})
	if code, _ := pgCode(err); code == codeForeignKeyViolation {
		return fmt.Errorf("delete blob %s: %w: it is a stored message's payload", id, broker.ErrState)
	}
	if err != nil {
		return fmt.Errorf("delete blob %s: %w", id, err)
	}
	return nil
}

// sweepBatch is how many orphans one sweep transaction deletes.
const sweepBatch = 100

// SweepBlobs deletes blobs that no stored message references and that
// were started, or if complete completed, more than grace ago (uploads
// that failed or were given up, whose process died before it could delete
// them), and returns how
// many it deleted. Safe with several processes sweeping and creating
// messages at once: a blob that a CreateMessage is taking is locked by it
// and skipped, and a CreateMessage that comes for a blob being swept
// waits and then finds it gone (broker.ErrNotFound). grace must exceed
// the longest upload and the longest wait from an upload's end until its
// message is created.
func (s *Store) SweepBlobs(ctx context.Context, grace time.Duration) (int, error) {
	total := 0
	for {
		var n int64
		var found int
		err := s.write(ctx, func(tx pgx.Tx) error {
			// Locked first, then checked again in a statement of its own,
			// whose snapshot sees every message committed before the lock.
			rows, err := tx.Query(ctx, `SELECT b.id FROM blobs b WHERE b.started < now() - $1::interval
				AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob = b.id)
				LIMIT $2 FOR UPDATE SKIP LOCKED`, grace, sweepBatch)
			if err != nil {
				return err
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			found = len(ids)
			tag, err := tx.Exec(ctx, `DELETE FROM blobs b WHERE b.id = ANY($1)
				AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob = b.id)`, ids)
			n = tag.RowsAffected()
			return err
		})
		if err != nil {
			return total, fmt.Errorf("sweep orphaned blobs: %w", err)
		}
		total += int(n)
		if found < sweepBatch {
			return total, nil
		}
	}
}
