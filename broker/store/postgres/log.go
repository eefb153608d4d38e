package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/transparency-dev/merkle/compact"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store/logtree"
	"kurier.dev/kurier/tlog"
)

// The transparency log: an append-only Merkle tree (RFC 6962 hashing)
// over every evidence of the node's own log, leaf i being the DER of the
// evidence with leaf_index i (hash tlog.LeafHash(DER)).
//
// The one row of log_head holds the size and the compact range of the
// tree (github.com/transparency-dev/merkle/compact): the hashes of its at
// most 64 perfect subtrees. A transaction that stores evidence of this
// node's log locks that row (SELECT … FOR UPDATE) after the other rows it
// locks (copies, evidence positions), appends the leaves to the range, and writes the evidence,
// every node that became complete (into log_nodes) and the new head in
// one more round trip before it commits. Several processes thus append
// one after the other, in commit order: no index is given twice or
// skipped, whatever crashes, since an aborted transaction releases the
// lock and writes nothing. (The primary keys of log_nodes and of own
// evidence's leaf_index would refuse a second writer of an index even
// without the lock.) Roots and proofs for any size up to the current one
// are computed from log_nodes, which holds every node of every perfect
// subtree, by package logtree, which the badger store shares.
//
// The lock is held from the append to the end of the commit, fsync
// included, so appends to the log are as many a second as the database
// commits one after another; BenchmarkCreateMessage measures it beside
// the same writes without the log, and BenchmarkLogAppend beside a
// prototype of an integrator (docs/SCALING.md says why the append stays
// serialised).

// querier is what reads need of a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// logAppend is an append to the log within a transaction: the leaves
// appended and the nodes that became complete.
type logAppend struct {
	tree   *compact.Range
	levels []int16
	idxs   []int64
	hashes [][]byte
}

// scanLogHead reads the row of log_head (size, hashes) that the caller
// locked, and returns its range, to append to.
func scanLogHead(row pgx.Row) (*logAppend, error) {
	var size int64
	var hashes [][]byte
	if err := row.Scan(&size, &hashes); err != nil {
		return nil, fmt.Errorf("lock the log: %w", err)
	}
	r, err := logtree.New(uint64(size), hashes)
	if err != nil {
		return nil, fmt.Errorf("the log's head is malformed: %w", err)
	}
	return &logAppend{tree: r}, nil
}

// append adds a leaf hash and returns its index.
func (a *logAppend) append(leaf []byte) (uint64, error) {
	index := a.tree.End()
	err := a.tree.Append(leaf, func(id compact.NodeID, h []byte) {
		a.levels = append(a.levels, int16(id.Level))
		a.idxs = append(a.idxs, int64(id.Index))
		a.hashes = append(a.hashes, h)
	})
	if err != nil {
		return 0, fmt.Errorf("append leaf %d to the log: %w", index, err)
	}
	return index, nil
}

// queue adds the writes of the append to batch.
func (a *logAppend) queue(b *pgx.Batch) {
	b.Queue("UPDATE log_head SET size = $1, hashes = $2", int64(a.tree.End()), a.tree.Hashes())
	b.Queue("INSERT INTO log_nodes (level, idx, hash) SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])",
		a.levels, a.idxs, a.hashes)
}

// logSize reads the log's size.
func logSize(ctx context.Context, q querier) (uint64, error) {
	var n int64
	if err := q.QueryRow(ctx, "SELECT size FROM log_head").Scan(&n); err != nil {
		return 0, fmt.Errorf("read the log's size: %w", err)
	}
	return uint64(n), nil
}

// checkSize returns an error wrapping broker.ErrNotFound if the log is
// smaller than size.
func checkSize(ctx context.Context, q querier, size uint64) error {
	n, err := logSize(ctx, q)
	if err != nil {
		return err
	}
	if size > n {
		return fmt.Errorf("%w: the log has %d entries, not %d", broker.ErrNotFound, n, size)
	}
	return nil
}

// loadNodes reads the hashes of stored tree nodes, in the order of ids.
func loadNodes(ctx context.Context, q querier, ids []compact.NodeID) ([][]byte, error) {
	levels, idxs := make([]int16, len(ids)), make([]int64, len(ids))
	for i, id := range ids {
		levels[i], idxs[i] = int16(id.Level), int64(id.Index)
	}
	rows, err := q.Query(ctx, `SELECT n.ord, t.hash FROM unnest($1::smallint[], $2::bigint[]) WITH ORDINALITY AS n (level, idx, ord)
		JOIN log_nodes t ON t.level = n.level AND t.idx = n.idx`, levels, idxs)
	if err != nil {
		return nil, fmt.Errorf("read log nodes: %w", err)
	}
	hashes := make([][]byte, len(ids))
	var ord int64
	var h []byte
	_, err = pgx.ForEachRow(rows, []any{&ord, &h}, func() error {
		if ord < 1 || ord > int64(len(ids)) || len(h) != tlog.HashSize {
			return fmt.Errorf("log node %d is malformed", ord)
		}
		hashes[ord-1] = bytes.Clone(h)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read log nodes: %w", err)
	}
	for i, h := range hashes {
		if h == nil {
			return nil, fmt.Errorf("log node %d at level %d is missing", ids[i].Index, ids[i].Level)
		}
	}
	return hashes, nil
}

// nodeReader reads stored tree nodes with q.
func nodeReader(ctx context.Context, q querier) logtree.Read {
	return func(ids []compact.NodeID) ([][]byte, error) { return loadNodes(ctx, q, ids) }
}

// rootAt computes the root of the tree of size leaves; the caller has
// checked that the log has them.
func rootAt(ctx context.Context, q querier, size uint64) ([]byte, error) {
	return logtree.Root(size, nodeReader(ctx, q))
}

// LogSize returns the number of evidence in the node's transparency log.
func (s *Store) LogSize(ctx context.Context) (uint64, error) {
	return logSize(ctx, s.pool)
}

// LogRoot returns the root hash of the log's tree of the given size
// (SHA-256 of nothing for 0), or an error wrapping broker.ErrNotFound if
// the log is smaller.
func (s *Store) LogRoot(ctx context.Context, size uint64) ([]byte, error) {
	var root []byte
	err := s.read(ctx, func(tx pgx.Tx) error {
		if err := checkSize(ctx, tx, size); err != nil {
			return err
		}
		var err error
		root, err = rootAt(ctx, tx, size)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load log root of size %d: %w", size, err)
	}
	return root, nil
}

// InclusionProof returns the proof that leaf index is in the log's tree of
// the given size (RFC 6962 audit path): broker.ErrInvalid if index is not
// below size, broker.ErrNotFound if the log is smaller than size.
func (s *Store) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	p, err := logtree.Inclusion(index, size, s.proofReader(ctx, size))
	if err != nil {
		return nil, fmt.Errorf("load inclusion proof of leaf %d in tree of size %d: %w", index, size, err)
	}
	return p, nil
}

// ConsistencyProof returns the proof that the log's tree of size1 is a
// prefix of its tree of size2 (RFC 6962), empty if size1 is 0 or equals
// size2: broker.ErrInvalid if size1 exceeds size2, broker.ErrNotFound if
// the log is smaller than size2.
func (s *Store) ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error) {
	p, err := logtree.Consistency(size1, size2, s.proofReader(ctx, size2))
	if err != nil {
		return nil, fmt.Errorf("load consistency proof from tree size %d to %d: %w", size1, size2, err)
	}
	return p, nil
}

// proofReader reads a proof's nodes in one read transaction, in which
// the log has size leaves (broker.ErrNotFound otherwise).
func (s *Store) proofReader(ctx context.Context, size uint64) logtree.Read {
	return func(ids []compact.NodeID) ([][]byte, error) {
		var hashes [][]byte
		err := s.read(ctx, func(tx pgx.Tx) error {
			if err := checkSize(ctx, tx, size); err != nil {
				return err
			}
			var err error
			hashes, err = loadNodes(ctx, tx, ids)
			return err
		})
		return hashes, err
	}
}

// MarkLog records, durably, that the log reached size, with its root
// there, unless a mark covers it already; Open refuses a log behind the
// mark (ErrRolledBack). The mark is a row of the same database: it
// survives what the evidence survives, so it catches a failover to a
// standby or a restore that lost evidence only as far as the mark was
// replicated or backed up, which a synchronous standby ensures. It
// returns an error wrapping broker.ErrNotFound if size exceeds the log.
//
// It also refuses, with ErrRolledBack, a log that no longer holds what
// this process marked before: one rolled back under the running process,
// mark and all, by a failover to a standby that had not received it. The
// mark is always written, also when it covers size already, so that the
// call returns only once a synchronous standby has the log up to size.
func (s *Store) MarkLog(ctx context.Context, size uint64) error {
	var root []byte
	err := s.write(ctx, func(tx pgx.Tx) error {
		var logSize, markSize int64
		var markRoot []byte
		if err := tx.QueryRow(ctx, "SELECT size, mark_size, mark_root FROM log_head FOR UPDATE").Scan(&logSize, &markSize, &markRoot); err != nil {
			return fmt.Errorf("read the log's head: %w", err)
		}
		if size > uint64(logSize) {
			return fmt.Errorf("%w: the log has %d entries, not %d", broker.ErrNotFound, logSize, size)
		}
		if err := holds(ctx, tx, uint64(logSize), uint64(markSize), markRoot); err != nil {
			return err
		}
		s.mu.Lock()
		mine := s.marked
		s.mu.Unlock()
		if mine.root != nil {
			if err := holds(ctx, tx, uint64(logSize), mine.size, mine.root); err != nil {
				return err
			}
		}
		var err error
		if root, err = rootAt(ctx, tx, size); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE log_head SET mark_root = CASE WHEN mark_size < $1 THEN $2 ELSE mark_root END,
			mark_size = greatest(mark_size, $1)`, int64(size), root)
		return err
	})
	if err != nil {
		return fmt.Errorf("mark the transparency log at size %d: %w", size, err)
	}
	s.mu.Lock()
	if size > s.marked.size || s.marked.root == nil {
		s.marked.size, s.marked.root = size, root
	}
	s.mu.Unlock()
	return nil
}

// holds refuses, with ErrRolledBack, a log of logSize entries that is
// shorter than a mark at size or has another root there.
func holds(ctx context.Context, tx pgx.Tx, logSize, size uint64, want []byte) error {
	if size > logSize {
		return fmt.Errorf("%w: the log has %d entries, a mark says %d", ErrRolledBack, logSize, size)
	}
	root, err := rootAt(ctx, tx, size)
	if err != nil {
		return fmt.Errorf("check the log's mark: %w", err)
	}
	if !bytes.Equal(root, want) {
		return fmt.Errorf("%w: the log's root at size %d is not the mark's", ErrRolledBack, size)
	}
	return nil
}

// checkMark refuses a log that is shorter than its mark or has another
// root at the mark's size.
func (s *Store) checkMark(ctx context.Context) error {
	return s.read(ctx, func(tx pgx.Tx) error {
		var size, markSize int64
		var markRoot []byte
		if err := tx.QueryRow(ctx, "SELECT size, mark_size, mark_root FROM log_head").Scan(&size, &markSize, &markRoot); err != nil {
			return fmt.Errorf("read the log's head: %w", err)
		}
		return holds(ctx, tx, uint64(size), uint64(markSize), markRoot)
	})
}

// errNoRows reports whether err says that a query found nothing.
func errNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }
