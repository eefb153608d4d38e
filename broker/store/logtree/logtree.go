// Package logtree is the arithmetic of the node's transparency log as the
// stores keep it: an RFC 6962 Merkle tree whose every node of every
// perfect subtree (the leaf hashes at level 0) is stored once complete and
// never changed, numbered as github.com/transparency-dev/merkle/compact
// numbers them. From such nodes it computes the tree's compact range, its
// root at any size and its inclusion and consistency proofs, with the
// merkle module's compact and proof packages; a store only reads and
// writes the nodes, through a Read of its own. Appending to a range
// (compact.Range.Append) reports each node that becomes complete, for the
// store to write.
//
// The nodes a proof needs that are not perfect subtrees (at most one per
// proof, on the right edge of a smaller tree) are hashed from perfect ones
// (proof.Nodes.Rehash), so stored nodes suffice for every size up to the
// log's.
package logtree

import (
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/tlog"
)

// Read returns the hashes of the stored nodes ids, in their order, or an
// error if one is missing or malformed. A store reads them in one
// consistent view of a log that has the tree's size (it checks that
// first), so that a root or proof is of one tree.
type Read func(ids []compact.NodeID) ([][]byte, error)

var (
	hasher  = rfc6962.DefaultHasher
	factory = &compact.RangeFactory{Hash: hasher.HashChildren}
)

// Empty returns the compact range of an empty log.
func Empty() *compact.Range { return factory.NewEmptyRange(0) }

// New returns the compact range of the log's first size leaves from its
// hashes (compact.Range.Hashes), as a store kept them.
func New(size uint64, hashes [][]byte) (*compact.Range, error) {
	r, err := factory.NewRange(0, size, hashes)
	if err != nil {
		return nil, fmt.Errorf("log range of size %d: %w", size, err)
	}
	return r, nil
}

// Load reads the compact range of the log's first size leaves.
func Load(size uint64, read Read) (*compact.Range, error) {
	hashes, err := read(compact.RangeNodes(0, size, nil))
	if err != nil {
		return nil, err
	}
	return New(size, hashes)
}

// Root returns the root hash of the tree of the first size leaves (SHA-256
// of nothing for 0).
func Root(size uint64, read Read) ([]byte, error) {
	if size == 0 {
		return tlog.EmptyRoot(), nil
	}
	r, err := Load(size, read)
	if err != nil {
		return nil, err
	}
	return r.GetRootHash(nil)
}

// Inclusion returns the proof that leaf index is in the tree of the given
// size (RFC 6962 audit path, to check with tlog.VerifyInclusion), or an
// error wrapping broker.ErrInvalid if index is not below size.
func Inclusion(index, size uint64, read Read) ([][]byte, error) {
	if index >= size {
		return nil, fmt.Errorf("%w: leaf %d is not in a tree of size %d", broker.ErrInvalid, index, size)
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", broker.ErrInvalid, err)
	}
	return rehash(nodes, read)
}

// Consistency returns the proof that the tree of size1 is a prefix of the
// tree of size2 (RFC 6962, to check with tlog.VerifyConsistency), empty if
// size1 is 0 or equals size2, or an error wrapping broker.ErrInvalid if
// size1 exceeds size2.
func Consistency(size1, size2 uint64, read Read) ([][]byte, error) {
	if size1 > size2 {
		return nil, fmt.Errorf("%w: tree size %d is larger than %d", broker.ErrInvalid, size1, size2)
	}
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", broker.ErrInvalid, err)
	}
	return rehash(nodes, read)
}

// rehash reads a proof's stored nodes and hashes its ephemeral one.
func rehash(nodes proof.Nodes, read Read) ([][]byte, error) {
	hashes, err := read(nodes.IDs)
	if err != nil {
		return nil, err
	}
	return nodes.Rehash(hashes, hasher.HashChildren)
}
