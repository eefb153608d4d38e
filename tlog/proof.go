package tlog

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// checkProof checks the form of a proof: at most MaxProofLen hashes of
// HashSize bytes.
func checkProof(p [][]byte) error {
	if len(p) > MaxProofLen {
		return fmt.Errorf("%w: %d hashes, at most %d", ErrProof, len(p), MaxProofLen)
	}
	for i, h := range p {
		if len(h) != HashSize {
			return fmt.Errorf("%w: hash %d is %d bytes, want %d", ErrProof, i, len(h), HashSize)
		}
	}
	return nil
}

func checkRoot(c Checkpoint) error {
	if len(c.Root) != HashSize {
		return fmt.Errorf("%w: checkpoint root hash is %d bytes, want %d", ErrProof, len(c.Root), HashSize)
	}
	return nil
}

// mismatch rewords the library's errors, whose root mismatch message
// prints hashes as lists of decimal bytes.
func mismatch(err error) error {
	var rm proof.RootMismatchError
	if errors.As(err, &rm) {
		return fmt.Errorf("%w: the proof leads to root %x, the checkpoint has %x", ErrProof, rm.CalculatedRoot, rm.ExpectedRoot)
	}
	return fmt.Errorf("%w: %v", ErrProof, err)
}

// VerifyInclusion checks that the evidence der is leaf index of the tree
// that checkpoint c describes, given the inclusion proof (the audit path
// of RFC 6962, section 2.1.1, as the node's store returns it). Errors wrap
// ErrProof. It does not check c's signature: Open does.
func VerifyInclusion(der []byte, index uint64, p [][]byte, c Checkpoint) error {
	if err := checkProof(p); err != nil {
		return err
	}
	if err := checkRoot(c); err != nil {
		return err
	}
	if index >= c.Size {
		return fmt.Errorf("%w: leaf %d is not in a tree of size %d", ErrProof, index, c.Size)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, c.Size, LeafHash(der), p, c.Root); err != nil {
		return fmt.Errorf("leaf %d in tree of size %d: %w", index, c.Size, mismatch(err))
	}
	return nil
}

// VerifyConsistency checks that the tree of checkpoint newer extends the
// tree of checkpoint older (append-only: same leaves, more of them), given
// the consistency proof (RFC 6962, section 2.1.2). Both must be of the same
// origin, and newer may not be smaller. Equal sizes need an empty proof and
// equal roots. Errors wrap ErrProof. It does not check the signatures: Open
// does.
func VerifyConsistency(older, newer Checkpoint, p [][]byte) error {
	if err := checkProof(p); err != nil {
		return err
	}
	if err := checkRoot(older); err != nil {
		return err
	}
	if err := checkRoot(newer); err != nil {
		return err
	}
	if older.Origin != newer.Origin {
		return fmt.Errorf("%w: checkpoints of two logs, %q and %q", ErrProof, older.Origin, newer.Origin)
	}
	if older.Size > newer.Size {
		return fmt.Errorf("%w: tree size went back from %d to %d", ErrProof, older.Size, newer.Size)
	}
	if older.Size == 0 && !bytes.Equal(older.Root, EmptyRoot()) {
		return fmt.Errorf("%w: empty tree with root %x", ErrProof, older.Root)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, older.Size, newer.Size, p, older.Root, newer.Root); err != nil {
		return fmt.Errorf("tree of size %d to %d: %w", older.Size, newer.Size, mismatch(err))
	}
	return nil
}
