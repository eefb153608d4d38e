package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/transparency-dev/merkle/compact"

	"kurier.dev/kurier/broker"
)

// The committer: one goroutine that turns many write requests into few
// synced badger transactions.
//
// A request is a function run inside the shared transaction. It first does
// all its reads and checks and only then writes, so a request that fails a
// check leaves nothing behind. Each write is also recorded in the batch, so
// that if a request fails after it started writing (badger.ErrTxnTooBig
// being the realistic case), the transaction can be rebuilt from the writes
// of the requests before it.
//
// The committer takes whatever is queued, up to maxBatchLength requests or
// about maxBatchBytes, runs the requests in order, commits once and answers
// each request with its own result. If one request does not fit into the
// transaction any more, what is there is committed and that request runs
// again in a fresh transaction; if it does not fit alone, it fails with an
// error wrapping broker.ErrTooLarge. If a commit fails, every request of the
// batch gets the error.
//
// Requests read what earlier requests of the same batch wrote (a badger
// transaction reads its own pending writes), so they behave as if committed
// one by one in queue order.
//
// Every key a request reads (m/, c/, n/, o/, s/, r/, b/<blob>/h) is written
// only by committer requests (and by Open, before the committer starts). So the shared transaction never conflicts with another
// one (badger's conflict detection stays on to catch a mistake).
//
// The transparency log's compact range (see log.go): DB.tree is the log as
// committed, each batch works on a clone of it, try snapshots the batch's range before each request and
// puts the snapshot back if the request fails, and a successful commit
// makes the batch's range DB.tree. A failed commit has an unknown outcome
// (badger may have applied part of it, or all of it and failed to sync), so
// the committer then reads the log back from badger instead of guessing;
// see reloadLog.

// A deferred request (enqueue) is one that nobody waits for: a small
// payload's blob, which only the message created after it references. The
// committer does not commit a batch of deferred requests alone: it waits
// for a request that somebody waits for, normally the same message's
// CreateMessage, queued right after it, and commits both with one sync.
// That halves the syncs of a small submission without weakening any answer:
// CreateMessage is committed after the blob (queue order), so when it
// returns the blob is durable; if the blob's commit fails, the store fails
// and CreateMessage with it; and a blob lost in a crash before that was an
// orphan. deferLimit bounds how long a deferred request waits for company.

const (
	maxBatchLength = 256
	maxBatchBytes  = 1 << 20
	deferLimit     = 20 * time.Millisecond
	followLimit    = 2 * time.Millisecond
)

// request is one unit of work for the committer.
type request struct {
	gone     <-chan struct{}    // the caller's ctx.Done(): skip the request if closed before it runs
	size     int                // estimated bytes written, for the batch bound
	run      func(*batch) error // checks, then writes; results go to variables it captured
	done     chan error         // buffered; receives exactly one answer
	deferred bool               // nobody waits for the answer (see enqueue)
	blob     string             // a deferred blob write: the blob's id
	settles  string             // the id of the blob this request references or deletes, if any
	flush    bool               // commit its batch without waiting for more (barrier)
}

// write is one recorded write of a batch.
type write struct {
	key, val []byte
	del      bool
}

// batch is the committer's shared transaction.
type batch struct {
	db     *DB
	txn    *badger.Txn
	tree   *compact.Range // the log with the leaves of this txn; nil if the log is unusable (DB.logErr)
	writes []write        // writes of the requests in reqs, in order
	reqs   []*request     // requests whose writes are in txn
	err    error          // set if txn could not be rebuilt; fails the batch
}

// submit queues a request and waits for its answer. ctx is honoured while
// waiting in either place; a ctx error after the request was queued means
// the outcome is unknown (see the package comment).
func (db *DB) submit(ctx context.Context, size int, run func(*batch) error) error {
	return db.submitFor(ctx, size, "", run)
}

// submitFor is submit for a request that references or deletes the blob
// settles, which a deferred write of it waits for (see gather).
func (db *DB) submitFor(ctx context.Context, size int, settles string, run func(*batch) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return db.queue(ctx, &request{gone: ctx.Done(), size: size, run: run, done: make(chan error, 1), settles: settles})
}

// queue hands r to the committer and waits for its answer.
func (db *DB) queue(ctx context.Context, r *request) error {
	if err := db.hand(ctx, r); err != nil {
		return err
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("outcome unknown: %w", ctx.Err())
	}
}

// hand gives r to the committer, unless the store is closed or ctx ends
// first (then nothing is written).
func (db *DB) hand(ctx context.Context, r *request) error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return ErrClosed
	}
	if r.deferred {
		db.deferred.Add(1) // before the committer can answer it
	}
	select {
	case db.reqs <- r:
		return nil
	case <-ctx.Done():
		if r.deferred {
			db.deferred.Add(-1)
		}
		return ctx.Err()
	}
}

// enqueue queues a deferred request and returns without waiting for it
// to run or commit: its outcome shows in the requests that depend on it,
// which are queued after it (see deferLimit).
func (db *DB) enqueue(ctx context.Context, blob string, size int, run func(*batch) error) error {
	if err := db.Err(); err != nil {
		return err
	}
	return db.hand(ctx, &request{size: size, run: run, done: make(chan error, 1), deferred: true, blob: blob})
}

// barrier returns once every request queued before it is committed: the
// committer runs requests in queue order.
func (db *DB) barrier(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &request{gone: ctx.Done(), run: func(*batch) error { return nil }, done: make(chan error, 1), flush: true}
	return db.queue(ctx, r)
}

func (db *DB) commitLoop() {
	defer close(db.committerDone)
	queue := make([]*request, 0, db.maxBatchLength)
	for {
		first, ok := <-db.reqs
		if !ok {
			return
		}
		queue = append(queue[:0], first)
		queue = db.gather(queue, first.size)
		db.runBatch(queue)
		clear(queue) // let answered requests be collected
	}
}

// gather adds what is queued to the batch, up to its bounds, and waits
// for more while the batch holds a small payload whose message has not
// come yet: a batch of deferred requests only waits, up to deferLimit, for
// a request somebody waits for; and a batch holding a deferred blob that
// no request in it references or deletes waits, up to followLimit after
// its first request, for the one that will. That request is on its way
// (the node queues the blob once the payload is in, and the message once
// its evidence is signed), and when it joins, the two share one sync
// instead of paying one each. Nothing else is waited for: a batch whose
// senders are all in it is committed at once.
func (db *DB) gather(queue []*request, size int) []*request {
	var g gathering
	g.add(queue[0])
	start := time.Now()
	for len(queue) < db.maxBatchLength && size < db.maxBatchBytes {
		var r *request
		var ok bool
		select {
		case r, ok = <-db.reqs:
		default:
			wait := g.wait(db, time.Since(start))
			if wait <= 0 {
				return queue
			}
			t := time.NewTimer(wait)
			select {
			case r, ok = <-db.reqs:
				t.Stop()
			case <-t.C:
				return queue
			}
		}
		if !ok {
			return queue // run this batch; the next receive ends the loop
		}
		g.add(r)
		queue = append(queue, r)
		size += r.size
	}
	return queue
}

// gathering is what gather knows of the batch it is gathering.
type gathering struct {
	waited  bool     // it holds a request somebody waits for
	flush   bool     // it holds a barrier
	pending []string // ids of deferred blobs no request in it settles yet
}

func (g *gathering) add(r *request) {
	g.waited = g.waited || !r.deferred
	g.flush = g.flush || r.flush
	if r.blob != "" {
		g.pending = append(g.pending, r.blob)
	}
	if r.settles != "" {
		g.pending = slices.DeleteFunc(g.pending, func(id string) bool { return id == r.settles })
	}
}

// wait is how long the batch should wait for its next request, elapsed
// after its first; 0 or less: not at all.
func (g *gathering) wait(db *DB, elapsed time.Duration) time.Duration {
	switch {
	case g.flush:
		return 0
	case !g.waited:
		return db.deferLimit - elapsed
	case len(g.pending) > 0:
		return db.followLimit - elapsed
	}
	return 0
}

// answer answers r. A deferred request stops counting as queued once it
// is answered, that is once it is committed or has failed.
func (db *DB) answer(r *request, err error) {
	if r.deferred {
		db.deferred.Add(-1)
	}
	r.done <- err
}

func (db *DB) runBatch(queue []*request) {
	if err := db.Err(); err != nil {
		for _, r := range queue {
			db.answer(r, err)
		}
		return
	}
	b := db.newBatch()
	for _, r := range queue {
		select {
		case <-r.gone:
			db.answer(r, context.Canceled) // nobody waits for it; nothing written
			continue
		default:
		}
		err := b.try(r)
		if errors.Is(err, badger.ErrTxnTooBig) && len(b.reqs) > 0 {
			db.commit(b)
			db.splits++
			b = db.newBatch()
			err = b.try(r)
		}
		if errors.Is(err, badger.ErrTxnTooBig) {
			err = fmt.Errorf("%w: the records of one request exceed a transaction (%w)", broker.ErrTooLarge, err)
		}
		if err != nil {
			db.answer(r, err)
		}
	}
	db.commit(b)
}

func (db *DB) newBatch() *batch {
	b := &batch{db: db, txn: db.bdb.NewTransaction(true)}
	b.tree, b.err = cloneRange(db.tree)
	return b
}

// try runs r in the batch. If r fails, it leaves the batch as it was
// before r (writes and log), and r is not answered.
func (b *batch) try(r *request) error {
	if b.err != nil {
		return b.err
	}
	tree, err := cloneRange(b.tree)
	if err != nil {
		return err
	}
	mark := len(b.writes)
	err = r.run(b)
	if err == nil {
		b.reqs = append(b.reqs, r)
		return nil
	}
	b.tree = tree
	if len(b.writes) > mark {
		b.writes = b.writes[:mark]
		b.rebuild()
	}
	return err
}

// rebuild replaces the transaction with a fresh one holding b.writes.
func (b *batch) rebuild() {
	b.txn.Discard()
	b.txn = b.db.bdb.NewTransaction(true)
	for _, w := range b.writes {
		var err error
		if w.del {
			err = b.txn.Delete(w.key)
		} else {
			err = b.txn.SetEntry(badger.NewEntry(w.key, w.val))
		}
		if err != nil {
			b.err = fmt.Errorf("rebuild transaction: %w", err)
			return
		}
	}
}

// commitTxn commits a batch's transaction; a variable so that the store's
// own tests can fail a commit after it was made, as a failed fsync would
// (no test machine can make badger's sync fail for real).
var commitTxn = func(txn *badger.Txn) error { return txn.Commit() }

// commit commits the batch and answers its requests. A store that failed
// commits nothing more, not even the rest of a batch split after the
// commit that failed it.
func (db *DB) commit(b *batch) {
	err := b.err
	if err == nil {
		err = db.Err()
	}
	switch {
	case len(b.reqs) == 0:
		b.txn.Discard()
		return
	case err == nil:
		db.commits.Add(1)
		err = commitTxn(b.txn)
		if err == nil {
			grew := b.tree != nil && (db.tree == nil || b.tree.End() > db.tree.End())
			db.tree = b.tree
			if grew {
				db.advanceMark()
			}
		} else if errors.Is(err, badger.ErrConflict) {
			db.reloadLog() // refused before anything was written
		} else {
			// The batch may be applied in memory without being durable:
			// the log is not marked past it, and the store takes no more
			// writes (see fail).
			err = db.fail(err)
		}
	default:
		b.txn.Discard() // nothing written: DB.tree is still what is on disk
	}
	if err != nil {
		err = fmt.Errorf("commit: %w", err)
	}
	for _, r := range b.reqs {
		db.answer(r, err)
	}
}

// get reads k as the shared transaction sees it.
func (b *batch) get(k []byte) ([]byte, bool, error) {
	return get(b.txn, k)
}

func (b *batch) has(k []byte) (bool, error) {
	return has(b.txn, k)
}

func (b *batch) set(k, v []byte) error {
	if err := b.txn.SetEntry(badger.NewEntry(k, v)); err != nil {
		return err
	}
	b.writes = append(b.writes, write{key: k, val: v})
	return nil
}

func (b *batch) del(k []byte) error {
	if err := b.txn.Delete(k); err != nil {
		return err
	}
	b.writes = append(b.writes, write{key: k, del: true})
	return nil
}

// saveCounters writes the log size. A request that appends to the log must
// call it as its last write.
func (b *batch) saveCounters() error {
	if b.tree == nil {
		return nil
	}
	return b.set(logSizeKey, encodeSeq(b.tree.End()))
}

// advanceMark hands the committed log's size and root to the high-water
// mark's writer (see mark.go), which makes them durable in the background.
func (db *DB) advanceMark() {
	root, err := db.tree.GetRootHash(nil)
	if err != nil {
		// Cannot happen for a range that starts at 0; the mark only lags.
		db.log.Error("compute the log root for the high-water mark", "err", err)
		return
	}
	// Every transaction up to a new reader's timestamp is committed.
	r := db.bdb.NewTransaction(false)
	commits := r.ReadTs()
	r.Discard()
	db.mark.advance(db.tree.End(), root, commits)
}
