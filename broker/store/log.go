package store

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"github.com/transparency-dev/merkle/compact"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store/logtree"
	"kurier.dev/kurier/tlog"
)

// The transparency log: an append-only Merkle tree (RFC 6962 hashing) over
// every evidence of the node's own log, in the order stored. Leaf i is the
// DER file of the evidence with LeafIndex i; its hash is
// tlog.LeafHash(DER).
//
// The committer appends each evidence's leaf in the same badger transaction
// that stores the evidence (putEvidence), so the two commit together or not
// at all: no evidence is stored without being logged, and none is logged
// twice (a repeated CreateMessage stores nothing and returns ErrExists).
//
// The committer keeps the log's right edge in memory as a compact range
// (github.com/transparency-dev/merkle/compact): the hashes of the at most
// 64 perfect subtrees that make up [0, size). Appending a leaf reports every
// node that becomes complete, and each is written under t/<level><index>,
// so the store holds every node of every perfect subtree, including the
// leaf hashes at level 0. A node never changes once written. Roots and
// proofs for any size up to the current one are computed from these nodes
// by package logtree, which the PostgreSQL store shares.
//
// s/logsize holds the size; it and the nodes are read in one read
// transaction, so a reader sees a consistent tree. Open and reloadLog
// rebuild the compact range from s/logsize and the nodes.

// cloneRange returns a copy of r that shares nothing that Append changes.
// A nil r (the log is unusable) gives nil.
func cloneRange(r *compact.Range) (*compact.Range, error) {
	if r == nil {
		return nil, nil
	}
	c, err := logtree.New(r.End(), slices.Clone(r.Hashes()))
	if err != nil {
		return nil, fmt.Errorf("copy the log's compact range: %w", err)
	}
	return c, nil
}

// appendLeaf appends a leaf hash to the batch's log, writes every node
// that becomes complete, and returns the leaf's index. If it fails, the
// caller's request fails and try restores the range.
func (b *batch) appendLeaf(hash []byte) (uint64, error) {
	if b.tree == nil {
		return 0, b.db.logErr
	}
	index := b.tree.End()
	var err error
	visit := func(id compact.NodeID, h []byte) {
		if err == nil {
			err = b.set(treeNodeKey(id.Level, id.Index), h)
		}
	}
	if aerr := b.tree.Append(hash, visit); aerr != nil {
		return 0, fmt.Errorf("append leaf %d to the log: %w", index, aerr)
	}
	return index, err
}

// reloadLog replaces the committer's range with the log as badger has it,
// after a failed commit. If that cannot be read back consistently, the log
// is unusable until the store is reopened: every request that would append
// to it fails with DB.logErr. (Open reads the log after badger has replayed
// its write-ahead log, which drops a transaction that was not written
// whole.)
func (db *DB) reloadLog() {
	var tree *compact.Range
	err := db.bdb.View(func(txn *badger.Txn) error {
		var err error
		tree, err = loadLog(txn)
		return err
	})
	if err != nil {
		db.tree = nil
		db.logErr = fmt.Errorf("transparency log unusable until the store is reopened: read back after a failed commit: %w", err)
		// Log it: the error reaches callers only later, with other requests.
		db.log.Error("transparency log unusable until the store is reopened", "err", err)
		return
	}
	db.tree = tree
	db.advanceMark() // the failed commit may have been applied
}

// loadLog reads the log's compact range. It refuses a log with a leaf
// entry or leaf hash beyond its size, which the next append would write
// again.
func loadLog(txn *badger.Txn) (*compact.Range, error) {
	size, err := logSize(txn)
	if err != nil {
		return nil, err
	}
	r, err := logtree.Load(size, nodeReader(txn))
	if err != nil {
		return nil, err
	}
	for _, k := range [][]byte{leafKey(size), treeNodeKey(0, size)} {
		if ok, err := has(txn, k); err != nil {
			return nil, err
		} else if ok {
			return nil, fmt.Errorf("log of size %d has an entry for leaf %d already", size, size)
		}
	}
	return r, nil
}

// logSize reads the log's size; no key means an empty log.
func logSize(txn *badger.Txn) (uint64, error) {
	v, ok, err := get(txn, logSizeKey)
	if err != nil || !ok {
		return 0, err
	}
	n, err := decodeSeq(v)
	if err != nil {
		return 0, fmt.Errorf("log size: %w", err)
	}
	return n, nil
}

// nodeReader reads stored tree nodes in txn.
func nodeReader(txn *badger.Txn) logtree.Read {
	return func(ids []compact.NodeID) ([][]byte, error) { return loadNodes(txn, ids) }
}

// loadNodes reads the hashes of stored tree nodes.
func loadNodes(txn *badger.Txn, ids []compact.NodeID) ([][]byte, error) {
	hashes := make([][]byte, len(ids))
	for i, id := range ids {
		h, ok, err := get(txn, treeNodeKey(id.Level, id.Index))
		if err != nil {
			return nil, err
		}
		if !ok || len(h) != tlog.HashSize {
			return nil, fmt.Errorf("log node %d at level %d missing or malformed", id.Index, id.Level)
		}
		hashes[i] = h
	}
	return hashes, nil
}

// checkSize returns an error wrapping broker.ErrNotFound if the log is
// smaller than size.
func checkSize(txn *badger.Txn, size uint64) error {
	n, err := logSize(txn)
	if err != nil {
		return err
	}
	if size > n {
		return fmt.Errorf("%w: the log has %d entries, not %d", broker.ErrNotFound, n, size)
	}
	return nil
}

// LogSize returns the number of evidence in the node's transparency log.
func (db *DB) LogSize(ctx context.Context) (uint64, error) {
	var n uint64
	err := db.view(ctx, func(txn *badger.Txn) error {
		var err error
		n, err = logSize(txn)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("load log size: %w", err)
	}
	return n, nil
}

// LogRoot returns the root hash of the log's tree of the given size (the
// tree of the first size evidence; SHA-256 of nothing for size 0). It
// returns an error wrapping broker.ErrNotFound if the log is smaller.
func (db *DB) LogRoot(ctx context.Context, size uint64) ([]byte, error) {
	var root []byte
	err := db.view(ctx, func(txn *badger.Txn) error {
		if err := checkSize(txn, size); err != nil {
			return err
		}
		var err error
		root, err = rootAt(txn, size)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load log root of size %d: %w", size, err)
	}
	return root, nil
}

// rootAt computes the root hash of the log's tree of size leaves from the
// stored nodes; the caller has checked that the log has them.
func rootAt(txn *badger.Txn, size uint64) ([]byte, error) {
	return logtree.Root(size, nodeReader(txn))
}

// InclusionProof returns the proof that leaf index is in the log's tree of
// the given size (RFC 6962 audit path, to check with tlog.VerifyInclusion).
// It returns an error wrapping broker.ErrInvalid if index is not below
// size, and broker.ErrNotFound if the log is smaller than size.
func (db *DB) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	p, err := logtree.Inclusion(index, size, db.proofReader(ctx, size))
	if err != nil {
		return nil, fmt.Errorf("load inclusion proof of leaf %d in tree of size %d: %w", index, size, err)
	}
	return p, nil
}

// ConsistencyProof returns the proof that the log's tree of size1 is a
// prefix of its tree of size2 (RFC 6962 consistency proof, to check with
// tlog.VerifyConsistency); it is empty if size1 is 0 or size1 equals
// size2. It returns an error wrapping broker.ErrInvalid if size1 exceeds
// size2, and broker.ErrNotFound if the log is smaller than size2.
func (db *DB) ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error) {
	p, err := logtree.Consistency(size1, size2, db.proofReader(ctx, size2))
	if err != nil {
		return nil, fmt.Errorf("load consistency proof from tree size %d to %d: %w", size1, size2, err)
	}
	return p, nil
}

// proofReader reads a proof's nodes in one read transaction, in which
// the log has size leaves (broker.ErrNotFound otherwise).
func (db *DB) proofReader(ctx context.Context, size uint64) logtree.Read {
	return func(ids []compact.NodeID) ([][]byte, error) {
		var hashes [][]byte
		err := db.view(ctx, func(txn *badger.Txn) error {
			if err := checkSize(txn, size); err != nil {
				return err
			}
			var err error
			hashes, err = loadNodes(txn, ids)
			return err
		})
		return hashes, err
	}
}

// LogLeaf returns the evidence at leaf index of the log. It returns an
// error wrapping broker.ErrNotFound if the log has no such leaf.
func (db *DB) LogLeaf(ctx context.Context, index uint64) (broker.Evidence, error) {
	var ev broker.Evidence
	err := db.view(ctx, func(txn *badger.Txn) error {
		n, err := logSize(txn)
		if err != nil {
			return err
		}
		if index >= n {
			return fmt.Errorf("%w: the log has %d entries", broker.ErrNotFound, n)
		}
		ek, ok, err := get(txn, leafKey(index))
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("leaf entry missing")
		}
		id, pos, ok := parseEvidenceKey(ek)
		if !ok {
			return fmt.Errorf("malformed leaf entry %q", ek)
		}
		v, ok, err := get(txn, ek)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("evidence %d of %s is in the log but not stored", pos, id)
		}
		if ev, err = decodeEvidence(v); err != nil {
			return err
		}
		if ev.LeafIndex != index || ev.Log != "" {
			return fmt.Errorf("evidence %d of %s at this leaf names leaf index %d of log %q", pos, id, ev.LeafIndex, ev.Log)
		}
		return nil
	})
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("load log leaf %d: %w", index, err)
	}
	return ev, nil
}
