package tlog_test

import (
	"crypto/sha256"
	"math/bits"
)

// A reference implementation of RFC 6962, section 2.1, written from the
// RFC's recursive definitions and independent of the library the package
// uses, to check proofs against.

func refLeaf(d []byte) []byte {
	h := sha256.Sum256(append([]byte{0}, d...))
	return h[:]
}

func refNode(l, r []byte) []byte {
	h := sha256.Sum256(append(append([]byte{1}, l...), r...))
	return h[:]
}

// split returns the largest power of two smaller than n (n > 1).
func split(n int) int { return 1 << (bits.Len(uint(n-1)) - 1) }

// refRoot is MTH(D[n]).
func refRoot(d [][]byte) []byte {
	switch len(d) {
	case 0:
		h := sha256.Sum256(nil)
		return h[:]
	case 1:
		return refLeaf(d[0])
	}
	k := split(len(d))
	return refNode(refRoot(d[:k]), refRoot(d[k:]))
}

// refPath is PATH(m, D[n]), the inclusion proof of leaf m.
func refPath(m int, d [][]byte) [][]byte {
	if len(d) <= 1 {
		return nil
	}
	k := split(len(d))
	if m < k {
		return append(refPath(m, d[:k]), refRoot(d[k:]))
	}
	return append(refPath(m-k, d[k:]), refRoot(d[:k]))
}

// refProof is PROOF(m, D[n]), the consistency proof from size m to n.
func refProof(m int, d [][]byte) [][]byte {
	if m == 0 {
		return nil
	}
	return refSubproof(m, d, true)
}

func refSubproof(m int, d [][]byte, whole bool) [][]byte {
	n := len(d)
	if m == n {
		if whole {
			return nil
		}
		return [][]byte{refRoot(d)}
	}
	k := split(n)
	if m <= k {
		return append(refSubproof(m, d[:k], whole), refRoot(d[k:]))
	}
	return append(refSubproof(m-k, d[k:], false), refRoot(d[:k]))
}
