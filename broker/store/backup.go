package store

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/pb"
	"google.golang.org/protobuf/proto"

	"kurier.dev/kurier/broker"
)

// Backups. A backup is one tar stream, self-describing and checked end to
// end, holding the store as it was at one moment:
//
//	KURIER-BACKUP        the manifest (JSON of backupManifest): the backup's
//	                     and the store's format, when it was taken, and the
//	                     transparency log's size and root at that moment
//	badger/00000000 …    every key and value, in badger's backup framing
//	                     (uint64 little-endian length, then a pb.KVList),
//	                     one frame per entry, numbered from 0
//	payloads/<id> …      the payload file of every large payload that a
//	                     message references, in the order of their ids
//	KURIER-BACKUP-END    counts and the SHA-256 of every entry before it
//	                     (JSON of backupEnd): a stream cut short lacks it
//
// The keys are read in one badger read transaction, and everything else
// is read from it too: which payload files to copy, the log's size and
// root. badger's own DB.Backup is not used because, in badger's normal
// (unmanaged) mode, each of its goroutines opens a read transaction of its
// own, at its own moment, so its parts need not agree with each other.
//
// A payload file is written and synced before the header that says it is
// complete is committed (blob.go), so every file a snapshot references is
// on disk. Deleting a blob deletes the header first and the file after;
// while a backup runs, the store holds off every removal of a payload file
// (see backupHolds) until the last backup ends, so a file the snapshot
// references cannot go before it is copied. Each file is copied through the
// reader that checks its size and SHA-256 against its header, so a damaged
// payload fails the backup instead of being saved as if intact.

const (
	backupVersion   = 1
	backupManifestN = "KURIER-BACKUP"
	backupEndN      = "KURIER-BACKUP-END"
	backupKeysDir   = "badger/"
	// backupFrameTarget is the size at which a frame of keys is written;
	// a frame holds at least one key, so it can exceed it by one value.
	backupFrameTarget = 4 << 20
	// maxBackupFrame bounds a frame on restore: far above any frame
	// Backup writes (a value of the store is at most a few MB).
	maxBackupFrame = 64 << 20
	// maxBackupRecord bounds the manifest and the end record on restore.
	maxBackupRecord = 64 << 10
)

// BackupInfo describes a backup: when it was taken and what it holds.
type BackupInfo struct {
	Created     time.Time
	StoreFormat uint64
	// LogSize and LogRoot are the transparency log's at the moment of the
	// backup: a store restored from it has this log.
	LogSize uint64
	LogRoot []byte
	// Keys counts badger's keys; PayloadFiles and PayloadBytes the large
	// payloads, kept in files of their own.
	Keys, PayloadFiles, PayloadBytes uint64
}

// backupManifest is the first entry of a backup.
type backupManifest struct {
	Version     int       `json:"version"`
	StoreFormat uint64    `json:"store_format"`
	Created     time.Time `json:"created"`
	LogSize     uint64    `json:"log_size"`
	LogRoot     string    `json:"log_root"` // lowercase hex
	// ReadTS is the badger version the keys were read at: no key in the
	// backup has a higher one.
	ReadTS uint64 `json:"read_ts"`
}

// backupEnd is the last entry of a backup.
type backupEnd struct {
	Keys         uint64 `json:"keys"`
	PayloadFiles uint64 `json:"payload_files"`
	PayloadBytes uint64 `json:"payload_bytes"`
	// SHA256 is the digest of every entry before this one, each as its
	// name, a zero byte, its size (uint64 big-endian) and its content.
	SHA256 string `json:"sha256"`
}

// Backup writes a consistent backup of the store to w (see the format
// above) while the store keeps serving: readers and writers are not held
// up, and what is committed after the backup started is not in it. Large
// payload files that the backup references are not deleted until it ends.
// It returns an error wrapping broker.ErrDamaged if a value or payload
// cannot be read back intact, ErrClosed if the store is closed meanwhile,
// and ctx's error if it ends; on every error what was written to w is not a
// whole backup (it lacks the end record, and Restore refuses it).
func (db *DB) Backup(ctx context.Context, w io.Writer) (BackupInfo, error) {
	ctx, done, err := db.holds.begin(ctx, db)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("back up the store: %w", err)
	}
	defer done()
	txn := db.bdb.NewTransaction(false)
	defer txn.Discard()
	info, err := writeBackup(ctx, db, txn, w)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = fmt.Errorf("%w (%w)", cause, err)
		}
		return BackupInfo{}, fmt.Errorf("back up the store: %w", err)
	}
	return info, nil
}

// writeBackup writes the backup of what txn sees.
func writeBackup(ctx context.Context, db *DB, txn *badger.Txn, w io.Writer) (BackupInfo, error) {
	info := BackupInfo{Created: db.now().UTC().Truncate(time.Second)}
	m := backupManifest{Version: backupVersion, Created: info.Created, ReadTS: txn.ReadTs()}
	v, ok, err := get(txn, formatKey)
	if err != nil {
		return info, fmt.Errorf("read the store's format: %w", err)
	}
	if ok {
		if m.StoreFormat, err = decodeSeq(v); err != nil {
			return info, fmt.Errorf("read the store's format: %w", err)
		}
	}
	if m.LogSize, err = logSize(txn); err != nil {
		return info, err
	}
	if info.LogRoot, err = rootAt(txn, m.LogSize); err != nil {
		return info, fmt.Errorf("compute the log's root: %w", err)
	}
	m.LogRoot = hex.EncodeToString(info.LogRoot)
	info.StoreFormat, info.LogSize = m.StoreFormat, m.LogSize

	bw := &backupWriter{tw: tar.NewWriter(w), sum: sha256.New(), created: info.Created}
	if err := bw.record(backupManifestN, m); err != nil {
		return info, err
	}
	if info.Keys, err = bw.keys(ctx, txn); err != nil {
		return info, err
	}
	if info.PayloadFiles, info.PayloadBytes, err = bw.payloads(ctx, db, txn); err != nil {
		return info, err
	}
	end := backupEnd{Keys: info.Keys, PayloadFiles: info.PayloadFiles, PayloadBytes: info.PayloadBytes, SHA256: hex.EncodeToString(bw.sum.Sum(nil))}
	if err := bw.record(backupEndN, end); err != nil {
		return info, err
	}
	if err := bw.tw.Close(); err != nil {
		return info, fmt.Errorf("write the backup: %w", err)
	}
	return info, nil
}

// backupWriter writes a backup's entries and hashes them.
type backupWriter struct {
	tw      *tar.Writer
	sum     hash.Hash // of the entries so far, as backupEnd.SHA256 says
	created time.Time
	frames  int
}

// entryDigest hashes an entry's name and size into h, before its content.
func entryDigest(h hash.Hash, name string, size int64) {
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(size)))
}

// entry writes one tar entry of size bytes, which fill writes.
func (bw *backupWriter) entry(name string, size int64, fill func(w io.Writer) error) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o600, ModTime: bw.created, Format: tar.FormatPAX}
	if err := bw.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write the backup: %w", err)
	}
	sum := io.Writer(bw.sum)
	if name == backupEndN {
		sum = io.Discard // the end record is not part of its own digest
	} else {
		entryDigest(bw.sum, name, size)
	}
	return fill(io.MultiWriter(bw.tw, sum))
}

// record writes v as a JSON entry.
func (bw *backupWriter) record(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return bw.entry(name, int64(len(b)), func(w io.Writer) error {
		_, err := w.Write(b)
		if err != nil {
			return fmt.Errorf("write the backup: %w", err)
		}
		return nil
	})
}

// keys writes every key txn sees, and its value, in frames; it returns how
// many keys it wrote.
func (bw *backupWriter) keys(ctx context.Context, txn *badger.Txn) (uint64, error) {
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100})
	defer it.Close()
	var n uint64
	list, size := &pb.KVList{}, 0
	for it.Rewind(); it.Valid(); it.Next() {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		item := it.Item()
		v, err := item.ValueCopy(nil)
		if err != nil {
			return n, fmt.Errorf("%w: the value of key %q cannot be read (%v); run kurierd -check-store", broker.ErrDamaged, item.Key(), err)
		}
		list.Kv = append(list.Kv, &pb.KV{Key: item.KeyCopy(nil), Value: v, Version: item.Version(), ExpiresAt: item.ExpiresAt()})
		n++
		if size += len(v) + len(item.Key()); size >= backupFrameTarget {
			if err := bw.frame(list); err != nil {
				return n, err
			}
			list, size = &pb.KVList{}, 0
		}
	}
	if len(list.Kv) > 0 {
		if err := bw.frame(list); err != nil {
			return n, err
		}
	}
	return n, nil
}

// frame writes one frame of keys.
func (bw *backupWriter) frame(list *pb.KVList) error {
	b, err := proto.Marshal(list)
	if err != nil {
		return fmt.Errorf("encode keys for the backup: %w", err)
	}
	name := fmt.Sprintf("%s%08d", backupKeysDir, bw.frames)
	bw.frames++
	return bw.entry(name, int64(8+len(b)), func(w io.Writer) error {
		if _, err := w.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(b)))); err != nil {
			return fmt.Errorf("write the backup: %w", err)
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("write the backup: %w", err)
		}
		return nil
	})
}

// payloads copies the payload file of every complete large blob that a
// message references in txn, checking each against its header.
func (bw *backupWriter) payloads(ctx context.Context, db *DB, txn *badger.Txn) (files, bytes uint64, err error) {
	err = referencedFiles(ctx, txn, func(id string, h blobHeader) error {
		if err := bw.payload(db, id, h); err != nil {
			return err
		}
		files++
		bytes += uint64(h.Size)
		return nil
	})
	return files, bytes, err
}

// referencedFiles calls fn, in id order, for every complete blob kept in a
// payload file that a message references in txn: what a backup copies
// and a restore must have received. Uploads in progress and orphans are
// left out (Open sweeps them after a restore).
func referencedFiles(ctx context.Context, txn *badger.Txn, fn func(id string, h blobHeader) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: blobsPrefix})
	defer it.Close()
	for it.Seek(blobsPrefix); it.Valid(); {
		if err := ctx.Err(); err != nil {
			return err
		}
		id, kind, ok := parseBlobKey(it.Item().Key())
		if !ok {
			it.Next()
			continue
		}
		if kind == blobKeyChunk {
			it.Seek(blobHeaderKey(id)) // skip to the header
			continue
		}
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("%w: the header of blob %s cannot be read (%v)", broker.ErrDamaged, id, err)
		}
		it.Next()
		h, err := decodeBlobHeader(v)
		if err != nil {
			return fmt.Errorf("blob %s: %w", id, err)
		}
		if !h.Complete || !h.File {
			continue
		}
		if referenced, err := has(txn, blobRefKey(id)); err != nil {
			return err
		} else if !referenced {
			continue
		}
		if err := fn(id, h); err != nil {
			return err
		}
	}
	return nil
}

// payload copies one payload file.
func (bw *backupWriter) payload(db *DB, id string, h blobHeader) error {
	want, err := hex.DecodeString(h.SHA256)
	if err != nil || len(want) != sha256.Size || h.Size < 0 {
		return fmt.Errorf("blob %s: malformed header", id)
	}
	f, err := os.Open(db.payloadPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: the payload file of blob %s is missing; run kurierd -check-store", broker.ErrDamaged, id)
	}
	if err != nil {
		return fmt.Errorf("open payload file: %w", err)
	}
	defer f.Close()
	r := &fileReader{f: f, id: id, left: h.Size, want: want, hash: sha256.New()}
	return bw.entry(payloadDir+"/"+id, h.Size, func(w io.Writer) error {
		// fileReader ends with io.EOF only once size and digest match.
		if _, err := io.Copy(w, r); err != nil {
			return fmt.Errorf("copy payload file %s: %w", id, err)
		}
		return nil
	})
}

// backupHolds keeps track of the backups in progress. While any runs, the
// removal of payload files is held off (removePayload), and done removes
// what was held off once the last one ends. Close cancels the backups in
// progress (their cause is ErrClosed) and waits for them before badger
// closes. mu is taken only for the fields, never while DB.mu is held.
//
// A backup that a crash ends leaves the held-off files without headers,
// which the sweep deletes (sweepFiles).
type backupHolds struct {
	running sync.WaitGroup // Add under DB.mu held shared, before Close marks the store closed

	mu      sync.Mutex
	n       int // backups in progress
	stopped bool
	cancels map[*int]context.CancelCauseFunc
	held    []string // payload files whose removal waits for the backups
}

// begin registers a backup and returns its context and the function that
// ends it.
func (h *backupHolds) begin(ctx context.Context, db *DB) (context.Context, func(), error) {
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return nil, nil, ErrClosed
	}
	h.running.Add(1)
	db.mu.RUnlock()

	ctx, cancel := context.WithCancelCause(ctx)
	key := new(int)
	h.mu.Lock()
	h.n++
	if h.cancels == nil {
		h.cancels = map[*int]context.CancelCauseFunc{}
	}
	h.cancels[key] = cancel
	if h.stopped {
		cancel(ErrClosed)
	}
	h.mu.Unlock()

	done := func() {
		h.mu.Lock()
		delete(h.cancels, key)
		h.n--
		var remove []string
		if h.n == 0 {
			remove, h.held = h.held, nil
		}
		h.mu.Unlock()
		cancel(nil)
		for _, id := range remove {
			// A file left by a failure here has no header: the sweep
			// deletes it.
			os.Remove(db.payloadPath(id))
		}
		h.running.Done()
	}
	return ctx, done, nil
}

// stop cancels every backup in progress and waits for them (Close).
func (h *backupHolds) stop() {
	h.mu.Lock()
	h.stopped = true
	for _, cancel := range h.cancels {
		cancel(ErrClosed)
	}
	h.mu.Unlock()
	h.running.Wait()
}

// hold reports whether a backup is in progress and, if so, records id's
// payload file for removal when the last one ends.
func (h *backupHolds) hold(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return false
	}
	h.held = append(h.held, id)
	return true
}

// removePayload removes a blob's payload file, whose header is gone, or
// holds its removal off while a backup is in progress. A backup that
// begins after the header was deleted does not reference the file, so it
// is the backups already running that the hold is for.
func (db *DB) removePayload(id string) error {
	if db.holds.hold(id) {
		return nil
	}
	if err := os.Remove(db.payloadPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Exists reports whether dir holds a store (badger's manifest), without
// opening it: Open would make a new one.
func Exists(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, badger.ManifestFilename))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look for a store in %s: %w", dir, err)
	}
	return true, nil
}
