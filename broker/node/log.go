package node

import (
	"context"
	"fmt"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/tlog"
)

// Checkpoint signs and returns the log's current checkpoint. Signing is
// cheap (Ed25519) and deterministic for one tree size, so every call signs
// afresh rather than keeping a checkpoint that could fall behind the log.
// It signs only once the store's high-water mark covers the size, so that
// the node can never restart on a log shorter than a checkpoint it handed
// out and re-issue positions that checkpoint covers.
func (n *Node) Checkpoint(ctx context.Context) ([]byte, tlog.Checkpoint, error) {
	size, err := n.store.LogSize(ctx)
	if err != nil {
		return nil, tlog.Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	if err := n.store.MarkLog(ctx, size); err != nil {
		return nil, tlog.Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	root, err := n.store.LogRoot(ctx, size)
	if err != nil {
		return nil, tlog.Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	c := tlog.Checkpoint{Origin: tlog.Origin(n.domain), Size: size, Root: root}
	signed, err := tlog.Sign(c, n.logKey)
	if err != nil {
		return nil, tlog.Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	return signed, c, nil
}

// InclusionProof proves that leaf index is in the tree of size leaves;
// size 0 means the current size. It returns the size it used.
func (n *Node) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, uint64, error) {
	size, err := n.treeSize(ctx, size)
	if err != nil {
		return nil, 0, err
	}
	if index >= size {
		return nil, 0, fmt.Errorf("%w: leaf %d is not in a tree of %d leaves", broker.ErrInvalid, index, size)
	}
	p, err := n.store.InclusionProof(ctx, index, size)
	if err != nil {
		return nil, 0, fmt.Errorf("inclusion proof of leaf %d in %d: %w", index, size, err)
	}
	return p, size, nil
}

// ConsistencyProof proves that the tree of to leaves extends the tree of
// from leaves; to 0 means the current size. It returns the size it used.
func (n *Node) ConsistencyProof(ctx context.Context, from, to uint64) ([][]byte, uint64, error) {
	to, err := n.treeSize(ctx, to)
	if err != nil {
		return nil, 0, err
	}
	if from > to {
		return nil, 0, fmt.Errorf("%w: tree size %d is larger than %d", broker.ErrInvalid, from, to)
	}
	p, err := n.store.ConsistencyProof(ctx, from, to)
	if err != nil {
		return nil, 0, fmt.Errorf("consistency proof from %d to %d: %w", from, to, err)
	}
	return p, to, nil
}

// treeSize returns size, or the log's current size for 0; a size the log
// has not reached is broker.ErrNotFound.
func (n *Node) treeSize(ctx context.Context, size uint64) (uint64, error) {
	current, err := n.store.LogSize(ctx)
	if err != nil {
		return 0, fmt.Errorf("log size: %w", err)
	}
	switch {
	case size == 0:
		return current, nil
	case size > current:
		return 0, fmt.Errorf("%w: the log has %d leaves, not %d", broker.ErrNotFound, current, size)
	}
	return size, nil
}
