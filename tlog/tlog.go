// Package tlog holds the per-node transparency log's formats — checkpoints
// in the C2SP checkpoint (signed note) format, and proof verification —
// shared by the node and offline verifiers.
//
// # The log
//
// Every node keeps one append-only Merkle tree over every evidence it
// issued, or first received from its issuer (a recipient's
// Acknowledgement), hashed as RFC 6962 prescribes: a leaf is the evidence's
// whole DER file, its hash is SHA-256(0x00 || DER) (LeafHash), an inner
// node's is SHA-256(0x01 || left || right). broker/store appends to the
// tree in the same transaction that stores the evidence, so such evidence
// is always in the log and none is in it twice. Evidence relayed back from
// other nodes is in their logs, not in this one.
//
// # Checkpoints
//
// A checkpoint names the tree's size and root hash. Its body is exactly
// three lines (https://c2sp.org/tlog-checkpoint):
//
//	stadt.example/kurier-log
//	1234
//	CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
//
// the origin, the size in decimal without leading zeros, and the root hash
// in standard base64. Kurier writes no extension lines and refuses
// checkpoints that have any, so that what a verifier parsed is all that was
// signed. The body is signed as a signed note
// (https://c2sp.org/signed-note) with an Ed25519 key whose name is the
// origin (golang.org/x/mod/sumdb/note); further signatures (witness
// cosignatures, a rotated key) may follow and are ignored.
//
// A node's origin is Origin(domain): its domain followed by
// "/kurier-log", for example "stadt.example/kurier-log". The domain makes
// the origin unique among Kurier nodes and lets a verifier check that a
// checkpoint belongs to the node that issued an evidence; the suffix keeps
// it apart from other logs the same operator may run. Open refuses a
// checkpoint whose origin is not the verifier key's name.
//
// # Limits
//
// Everything here may come from an untrusted party, so sizes are bounded: a
// signed checkpoint is at most MaxCheckpointSize bytes, a proof at most
// MaxProofLen hashes of HashSize bytes each.
package tlog

import (
	"errors"
	"fmt"
	"strings"

	"github.com/transparency-dev/merkle/rfc6962"

	"kurier.dev/kurier/address"
)

// Sentinel errors, wrapped with detail; check them with errors.Is.
var (
	// ErrMalformed: a checkpoint or signed note does not parse.
	ErrMalformed = errors.New("malformed checkpoint")
	// ErrSignature: a checkpoint is not signed by the expected key, or its
	// origin is not the key's name.
	ErrSignature = errors.New("checkpoint signature not valid")
	// ErrProof: an inclusion or consistency proof does not hold.
	ErrProof = errors.New("log proof not valid")
)

const (
	// HashSize is the size of every hash in the log (SHA-256).
	HashSize = 32
	// MaxProofLen bounds the hashes of one proof. Proofs in a tree of up to
	// 2^64 leaves are shorter.
	MaxProofLen = 64
	// MaxCheckpointSize bounds a signed checkpoint.
	MaxCheckpointSize = 16 << 10
)

// OriginSuffix follows the node's domain in its log's origin.
const OriginSuffix = "/kurier-log"

// Origin returns the origin of the log of the node serving domain, which
// is also the name of the node's checkpoint key.
func Origin(domain string) string { return domain + OriginSuffix }

// OriginDomain returns the domain of a Kurier log's origin, the inverse of
// Origin; it fails for an origin that is not a domain followed by
// OriginSuffix.
func OriginDomain(origin string) (string, error) {
	d, ok := strings.CutSuffix(origin, OriginSuffix)
	if !ok {
		return "", fmt.Errorf("origin %q does not end in %q", origin, OriginSuffix)
	}
	if err := address.CheckDomain(d); err != nil {
		return "", fmt.Errorf("origin %q: %w", origin, err)
	}
	return d, nil
}

// LeafHash returns the RFC 6962 leaf hash of an evidence's DER file:
// SHA-256(0x00 || der).
func LeafHash(der []byte) []byte { return rfc6962.DefaultHasher.HashLeaf(der) }

// EmptyRoot is the root hash of the empty tree, SHA-256 of nothing.
func EmptyRoot() []byte { return rfc6962.DefaultHasher.EmptyRoot() }
