// Package store keeps a Kurier node's durable state in badger: messages,
// recipients' copies (mailboxes), evidence and sealed payloads (blobs). It is
// the only package that imports badger, and keys.go is the only file that
// knows the key layout.
//
// # Durability
//
// Every write is fsynced before the method that made it returns nil
// (badger's SyncWrites is always on). Values are checked against their
// checksums when read (VerifyValueChecksum), and table blocks too
// (OnBlockRead). A write that fails in badger (its commit or fsync) puts
// the store in the failed state: every later write gets ErrFailed, no
// checkpoint can be marked, and the daemon stops the node (Failed),
// because after a failed fsync nothing in memory is known to be on disk.
//
// # Damage and rollback
//
// badger cuts a damaged write-ahead or value log on open without a word and
// does not check tables on open. So Open checks every table before badger
// opens them and refuses a damaged one, logs at ERROR every log file that
// badger cut, and compares the transparency log with its high-water mark,
// a file beside badger's that it cannot cut: a log behind the mark is
// refused with ErrRolledBack. A payload that cannot be read back whole is
// broker.ErrDamaged. Check reads a stopped store whole and lists every
// damage. See integrity.go and mark.go.
//
// # Orphan blobs
//
// A payload is written (WriteBlob) before the message that references it
// (CreateMessage); a crash in between, or a caller that gives up, leaves an
// unreferenced blob. Open deletes every unreferenced blob, since nothing can
// be uploading then. SweepBlobs, for a running node, deletes only those
// older than Options.BlobGrace, so that uploads in progress survive; see
// blob.go for why it cannot race with CreateMessage.
//
// # Group commit
//
// badger fsyncs each transaction on its own, so many small synced
// transactions are slow. All metadata writes (CreateMessage,
// AppendEvidence, AddEvidence, blob headers, and the whole of a payload
// smaller than one 256 KiB chunk) are therefore requests to one committer
// goroutine, which runs every queued request in one shared transaction and
// commits it once; see commit.go. A small payload does not even wait for
// its own commit: it is committed with the message that references it. A
// larger payload is written to a file of its own outside badger (see
// blob.go), one 256 KiB chunk in memory at a time.
//
// A write method that returns an error wrapping context.Canceled or
// context.DeadlineExceeded has an unknown outcome: the request may already
// have been in a batch being committed. Callers treat that like a crash and
// read back (for CreateMessage, a repeat returns ErrExists).
//
// # Locks and ownership
//
// DB.mu is the only mutex besides the marker's and the backups' (below).
// Held shared, it keeps badger open: around every read transaction, every
// chunk delete transaction and every hand-over of a request to the
// committer. A backup's long read transaction is the exception: it holds
// DB.mu only to register, and Close cancels it and waits for it before
// badger closes (backupHolds), so that a slow reader of a backup cannot
// hold up Close and, behind it, every other reader. Close
// takes it exclusively, once, to mark the store closed. It is never held
// while waiting for a committer's answer, the committer never takes it,
// and nothing nests it (a goroutine holding it shared never asks for it
// again, which could deadlock behind Close).
//
// The committer goroutine owns, without locks, the shared write transaction
// and the transparency log's compact range (DB.tree). Nobody else assigns
// leaf indexes. The high-water mark's writer (marker) has its own mutex,
// taken only for its fields and never while DB.mu is held or a file is
// written; so is the backups' (backupHolds.mu).
//
// # Transparency log
//
// Every evidence of this node's own log (broker.Evidence.Log empty) is
// appended, in the transaction that stores it, to the node's append-only
// Merkle log (RFC 6962 hashing; the leaf is the evidence's DER file, see
// package tlog). Because evidence and log commit atomically, no such
// evidence is ever committed without being logged, and nothing is logged
// twice. Evidence that other nodes issued and relayed back is stored and
// chained, never logged here: it is in its issuer's log. LogSize, LogRoot,
// InclusionProof, ConsistencyProof and LogLeaf read the log; see log.go.
//
// # Queues
//
// The outbound queue (messages waiting for another domain's node), the
// push queue (evidence waiting to be sent back to a sender's node) and the
// deadline index of copies are written in the same transactions as the
// messages and evidence they follow from, so a crash never leaves a
// message that nobody will relay or an evidence that nobody will push; see
// queue.go.
package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/transparency-dev/merkle/compact"
)

// ErrClosed is returned by every method called after Close.
var ErrClosed = errors.New("store closed")

// ErrFailed is returned by every write after one failed in badger (its
// commit or fsync): what that write left in memory may not be on disk, and
// after a failed fsync the kernel may have dropped dirty pages, so nothing
// written later could be trusted either. The node must stop; on restart
// badger replays what is durable, and the high-water mark refuses a store
// that lost anything a checkpoint covers. Reads keep working meanwhile.
var ErrFailed = errors.New("the store failed to write and takes no more writes until the node is restarted")

// Options configure Open. The zero value is the production configuration.
type Options struct {
	// Logger receives badger's warnings and errors and the result of the
	// blob sweep at Open. Default slog.Default().
	Logger *slog.Logger

	// Memory settings. Zero means the production default: MemTableSize
	// 64 MB (three memtables), BlockCacheSize 512 MB, IndexCacheSize 128 MB,
	// NumCompactors 2. A transaction can hold at most about 15% of
	// MemTableSize.
	MemTableSize   int64
	BlockCacheSize int64
	IndexCacheSize int64
	NumCompactors  int

	// Small selects defaults for tests and tools that open many stores:
	// MemTableSize 8 MB (two), caches 16 MB, value log files 16 MB. Explicit
	// sizes above still win.
	Small bool

	// BlobGrace is how old an unreferenced blob must be before SweepBlobs
	// deletes it, so that a payload being uploaded right now (not yet
	// referenced by a message) survives. It must exceed the longest upload.
	// Default 24 hours. The sweep at Open ignores it (nothing is uploading).
	BlobGrace time.Duration

	// GCInterval is how often the value log is garbage collected, which is
	// what frees the disk space of deleted chunks of the stores written
	// before payload files (a payload file is freed when it is deleted).
	// Default 10 minutes; negative turns it off.
	GCInterval time.Duration

	// Now is the clock for blob ages. Default time.Now.
	Now func() time.Time
}

const (
	defaultMemTableSize   = 64 << 20
	defaultBlockCacheSize = 512 << 20
	defaultIndexCacheSize = 128 << 20
	defaultNumCompactors  = 2
	smallMemTableSize     = 8 << 20
	smallCacheSize        = 16 << 20
	smallValueLogFileSize = 16 << 20
	defaultBlobGrace      = 24 * time.Hour
	defaultGCInterval     = 10 * time.Minute

	// valueThreshold: values at least this large (unusually large
	// envelopes; the chunks of stores written before payload files) go to
	// the value log instead of the LSM tree, so compaction does not
	// rewrite them and a transaction of them costs only their keys against
	// the transaction size limit.
	valueThreshold = 64 << 10
)

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	mem, cache, index := int64(defaultMemTableSize), int64(defaultBlockCacheSize), int64(defaultIndexCacheSize)
	if o.Small {
		mem, cache, index = smallMemTableSize, smallCacheSize, smallCacheSize
	}
	if o.MemTableSize <= 0 {
		o.MemTableSize = mem
	}
	if o.BlockCacheSize <= 0 {
		o.BlockCacheSize = cache
	}
	if o.IndexCacheSize <= 0 {
		o.IndexCacheSize = index
	}
	if o.NumCompactors <= 0 {
		o.NumCompactors = defaultNumCompactors
	}
	if o.BlobGrace <= 0 {
		o.BlobGrace = defaultBlobGrace
	}
	if o.GCInterval == 0 {
		o.GCInterval = defaultGCInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// DB is a node's store. Its methods are safe for concurrent use.
type DB struct {
	dir    string
	bdb    *badger.DB
	log    *slog.Logger
	now    func() time.Time
	grace  time.Duration
	chunks sync.Pool // *[]byte of chunkSize, for blob writes
	leases leases    // see LeaseRelay

	mu     sync.RWMutex // see the package comment
	closed bool

	failOnce sync.Once
	failed   chan struct{} // closed by fail
	failErr  error         // why; written before failed is closed

	reqs          chan *request // to the committer; closed by Close
	committerDone chan struct{}
	deferred      atomic.Int64  // deferred requests queued and not yet answered (see enqueue)
	deferLimit    time.Duration // see commit.go
	followLimit   time.Duration // see gather
	stopGC        chan struct{}
	gcDone        chan struct{}

	// Owned by the committer goroutine once Open has returned.
	tree           *compact.Range // the transparency log as committed; nil if unusable
	logErr         error          // why tree is nil
	maxBatchBytes  int            // bound on the estimated bytes of one batch
	maxBatchLength int            // bound on the requests in one batch
	splits         int            // batches split on ErrTxnTooBig (read by tests after Close)
	commits        atomic.Int64   // synced transactions of the committer

	mark *marker // the log's high-water mark, written behind the committer

	holds backupHolds // backups in progress; see backup.go
}

// Open opens (or creates) the store in dir. Before badger opens its files,
// it checks every table's block checksums and refuses a damaged one; after,
// it logs at ERROR every log file badger cut (see integrity.go), and
// compares the transparency log with its high-water mark, refusing with an
// error wrapping ErrRolledBack if committed evidence is missing (see
// mark.go). It deletes blobs that no message references (left by a crash
// between WriteBlob and CreateMessage) and logs how many.
func Open(dir string, opts Options) (*DB, error) {
	opts = opts.withDefaults()
	bo := badgerOptions(dir, opts)
	bdb, m, err := openBadger(dir, bo, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	db := &DB{
		dir:            dir,
		bdb:            bdb,
		log:            opts.Logger,
		now:            opts.Now,
		grace:          opts.BlobGrace,
		reqs:           make(chan *request, 4*maxBatchLength),
		failed:         make(chan struct{}),
		committerDone:  make(chan struct{}),
		stopGC:         make(chan struct{}),
		gcDone:         make(chan struct{}),
		maxBatchBytes:  maxBatchBytes,
		maxBatchLength: maxBatchLength,
		deferLimit:     deferLimit,
		followLimit:    followLimit,
	}
	db.chunks.New = func() any { b := make([]byte, chunkSize); return &b }
	if err := db.load(m); err != nil {
		bdb.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	if err := upgrade(dir, bdb, opts.Logger); err != nil {
		bdb.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	logSize := db.tree.End()
	// The mark as the log is now, no longer clean: from here on a crash
	// may leave a torn write.
	now := mark{Size: logSize, Commits: bdb.MaxVersion()}
	if err := db.bdb.View(func(txn *badger.Txn) error {
		root, err := rootAt(txn, logSize)
		now.Root = hex.EncodeToString(root)
		return err
	}); err != nil {
		bdb.Close()
		return nil, fmt.Errorf("open store %s: compute the log root: %w", dir, err)
	}
	if err := writeMark(dir, now); err != nil {
		bdb.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	db.mark = newMarker(dir, now, opts.Logger)
	go db.commitLoop()
	go db.gcLoop(opts.GCInterval)

	// Nothing can be uploading yet, so every unreferenced blob is an orphan.
	n, err := db.sweep(context.Background(), 0)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	db.log.Info("store opened", "dir", dir, "orphan_blobs_deleted", n, "log_size", logSize)
	return db, nil
}

// badgerOptions are the badger options for a store in dir.
func badgerOptions(dir string, opts Options) badger.Options {
	bo := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithVerifyValueChecksum(true).
		// OnBlockRead checks each table block as it is read and returns an
		// error; the modes that check whole tables can panic (see
		// integrity.go), so Open checks the tables itself instead.
		WithChecksumVerificationMode(options.OnBlockRead).
		WithLogger(badgerLogger{opts.Logger}).
		WithMemTableSize(opts.MemTableSize).
		WithNumMemtables(3).
		WithBlockCacheSize(opts.BlockCacheSize).
		WithIndexCacheSize(opts.IndexCacheSize).
		WithNumCompactors(opts.NumCompactors).
		WithValueThreshold(valueThreshold)
	if opts.Small {
		bo = bo.WithNumMemtables(2).WithValueLogFileSize(smallValueLogFileSize)
	}
	return bo
}

// openBadger checks the tables, notes where the log files' data ends,
// opens badger and reports what it cut. It returns the high-water mark,
// if there is one (Size 0 and Root empty if not).
func openBadger(dir string, bo badger.Options, logger *slog.Logger) (*badger.DB, *mark, error) {
	if err := verifyTables(dir, bo); err != nil {
		return nil, nil, err
	}
	m, ok, err := readMark(dir)
	if err != nil {
		return nil, nil, err
	}
	removeMarkTemps(dir)
	if err := removeEmptyLogs(dir, logger); err != nil {
		return nil, nil, err
	}
	tails, err := scanTails(dir)
	if err != nil {
		return nil, nil, err
	}
	bdb, err := badger.Open(bo)
	if err != nil {
		return nil, nil, err
	}
	reportTruncation(tails, ok && m.Clean, logger)
	if !ok {
		return bdb, nil, nil
	}
	checkCommits(bdb, m, logger)
	return bdb, &m, nil
}

// load reads the transparency log into the committer's range and checks
// it against the high-water mark m (nil if there is none yet).
func (db *DB) load(m *mark) error {
	return db.bdb.View(func(txn *badger.Txn) error {
		var err error
		if db.tree, err = loadLog(txn); err != nil {
			return fmt.Errorf("load transparency log: %w", err)
		}
		if m != nil {
			if err := checkMark(txn, *m, db.tree.End()); err != nil {
				return err
			}
		}
		// A store of a version without the log holds evidence but no log;
		// giving it an empty one would log new evidence from leaf 0 beside
		// evidence this version cannot read.
		v, ok, err := get(txn, legacySeqKey)
		if err != nil {
			return fmt.Errorf("load legacy evidence counter: %w", err)
		}
		if ok && db.tree.End() == 0 {
			if n, err := decodeSeq(v); err != nil || n > 0 {
				return errors.New("the store holds evidence but no transparency log (written by a version without one)")
			}
		}
		return nil
	})
}

// Close waits for queued writes to be committed, stops the committer and
// closes badger. Calls after the first return nil.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	close(db.reqs)
	db.mu.Unlock()

	db.holds.stop() // backups read badger: they end before it closes
	<-db.committerDone
	close(db.stopGC)
	<-db.gcDone
	db.mark.close()
	if err := db.bdb.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	// badger is closed whole: the next Open knows no write was under way.
	db.mark.mu.Lock()
	last := db.mark.want
	db.mark.mu.Unlock()
	last.Clean = true
	if err := writeMark(db.dir, last); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// fail puts the store in the failed state after a write failed with
// cause, logs it, and returns the error every write now gets (see
// ErrFailed). Only the first failure counts.
func (db *DB) fail(cause error) error {
	db.failOnce.Do(func() {
		db.failErr = fmt.Errorf("%w: %w", ErrFailed, cause)
		db.log.Error("the store failed to write; it takes no more writes, and the node must be restarted once the disk is checked", "err", cause)
		close(db.failed)
	})
	return db.failErr
}

// Failed is closed once a write has failed in badger; Err then says why.
// The daemon stops the node on it.
func (db *DB) Failed() <-chan struct{} { return db.failed }

// Err returns nil, or, once the store has failed, an error wrapping
// ErrFailed and the write error that caused it.
func (db *DB) Err() error {
	select {
	case <-db.failed:
		return db.failErr
	default:
		return nil
	}
}

// view runs fn in a read transaction, with the store held open.
func (db *DB) view(ctx context.Context, fn func(txn *badger.Txn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return ErrClosed
	}
	return db.bdb.View(fn)
}

// update runs fn in its own synced write transaction, outside the
// committer. Only for keys the committer never reads (blob chunks).
func (db *DB) update(fn func(txn *badger.Txn) error) error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return ErrClosed
	}
	if err := db.Err(); err != nil {
		return err
	}
	txn := db.bdb.NewTransaction(true)
	defer txn.Discard()
	if err := fn(txn); err != nil {
		return err // nothing written
	}
	if err := commitTxn(txn); errors.Is(err, badger.ErrConflict) {
		return err // refused before anything was written
	} else if err != nil {
		return db.fail(err)
	}
	return nil
}

// get returns the value at k, or ok false if there is none.
func get(txn *badger.Txn, k []byte) (v []byte, ok bool, err error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v, err = item.ValueCopy(nil)
	if err != nil {
		return nil, false, err
	}
	return v, true, nil
}

// gcLoop garbage-collects the value log every interval until Close. badger
// rewrites at most one file per call, so each round calls it until there is
// nothing left to rewrite.
func (db *DB) gcLoop(interval time.Duration) {
	defer close(db.gcDone)
	if interval < 0 {
		<-db.stopGC
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-db.stopGC:
			return
		case <-t.C:
		}
		for {
			select {
			case <-db.stopGC:
				return
			default:
			}
			err := db.bdb.RunValueLogGC(0.5)
			if err == nil {
				continue
			}
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				// No caller to return this to: the loop is the edge.
				db.log.Warn("value log garbage collection failed", "err", err)
			}
			break
		}
	}
}
