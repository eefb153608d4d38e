package tlog_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"kurier.dev/kurier/tlog"
)

// leaves returns n distinct stand-ins for evidence DER files.
func leaves(n int) [][]byte {
	d := make([][]byte, n)
	for i := range d {
		d[i] = fmt.Appendf(nil, "evidence %d", i)
	}
	return d
}

func checkpoint(d [][]byte) tlog.Checkpoint {
	return tlog.Checkpoint{Origin: origin, Size: uint64(len(d)), Root: refRoot(d)}
}

// flip returns a deep copy of p with one bit of hash i flipped.
func flip(p [][]byte, i int) [][]byte {
	q := make([][]byte, len(p))
	for j := range p {
		q[j] = bytes.Clone(p[j])
	}
	q[i][len(q[i])/2] ^= 0x10
	return q
}

func TestLeafHash(t *testing.T) {
	if got, want := tlog.LeafHash([]byte("der")), refLeaf([]byte("der")); !bytes.Equal(got, want) {
		t.Errorf("LeafHash = %x, want %x", got, want)
	}
	if got, want := tlog.EmptyRoot(), refRoot(nil); !bytes.Equal(got, want) {
		t.Errorf("EmptyRoot = %x, want %x", got, want)
	}
}

func TestVerifyInclusion(t *testing.T) {
	d := leaves(33)
	for size := 1; size <= len(d); size++ {
		c := checkpoint(d[:size])
		for i := range size {
			p := refPath(i, d[:size])
			if err := tlog.VerifyInclusion(d[i], uint64(i), p, c); err != nil {
				t.Fatalf("leaf %d of %d: %v", i, size, err)
			}
			refused := map[string]error{
				"other evidence": tlog.VerifyInclusion(append(bytes.Clone(d[i]), '!'), uint64(i), p, c),
				"index beyond":   tlog.VerifyInclusion(d[i], uint64(size), p, c),
				"other root":     tlog.VerifyInclusion(d[i], uint64(i), p, tlog.Checkpoint{Origin: origin, Size: c.Size, Root: flip([][]byte{c.Root}, 0)[0]}),
				"extra hash":     tlog.VerifyInclusion(d[i], uint64(i), append(p, c.Root), c),
			}
			if size > 1 {
				refused["other index"] = tlog.VerifyInclusion(d[i], uint64((i+1)%size), p, c)
				refused["smaller size"] = tlog.VerifyInclusion(d[i], uint64(i), p, checkpoint(d[:size-1]))
				refused["flipped bit"] = tlog.VerifyInclusion(d[i], uint64(i), flip(p, len(p)-1), c)
				refused["missing hash"] = tlog.VerifyInclusion(d[i], uint64(i), p[:len(p)-1], c)
			}
			if size < len(d) {
				// The proof was for another tree size. (A proof can fit the
				// shape of another size; only that tree's real root tells.)
				refused["larger size"] = tlog.VerifyInclusion(d[i], uint64(i), p, checkpoint(d[:size+1]))
			}
			for name, err := range refused {
				if !errors.Is(err, tlog.ErrProof) {
					t.Fatalf("leaf %d of %d, %s: err %v, want ErrProof", i, size, name, err)
				}
			}
		}
	}

	t.Run("bounds", func(t *testing.T) {
		c := checkpoint(d)
		p := refPath(5, d)
		long := make([][]byte, tlog.MaxProofLen+1)
		for i := range long {
			long[i] = make([]byte, tlog.HashSize)
		}
		short := append([][]byte{p[0][:31]}, p[1:]...)
		for name, err := range map[string]error{
			"too many hashes": tlog.VerifyInclusion(d[5], 5, long, c),
			"short hash":      tlog.VerifyInclusion(d[5], 5, short, c),
			"short root":      tlog.VerifyInclusion(d[5], 5, p, tlog.Checkpoint{Size: c.Size, Root: c.Root[:31]}),
			"empty tree":      tlog.VerifyInclusion(d[0], 0, nil, tlog.Checkpoint{Root: tlog.EmptyRoot()}),
		} {
			if !errors.Is(err, tlog.ErrProof) {
				t.Errorf("%s: err %v, want ErrProof", name, err)
			}
		}
	})
}

func TestVerifyConsistency(t *testing.T) {
	d := leaves(40)
	for n := 0; n <= len(d); n++ {
		newer := checkpoint(d[:n])
		for m := 0; m <= n; m++ {
			older := checkpoint(d[:m])
			p := refProof(m, d[:n])
			if err := tlog.VerifyConsistency(older, newer, p); err != nil {
				t.Fatalf("%d to %d: %v", m, n, err)
			}
			if m == 0 {
				continue
			}
			// A fork: the newer tree has another leaf where the older one had d[m-1].
			fork := append([][]byte(nil), d[:n]...)
			fork[m-1] = []byte("forged")
			refused := map[string]error{
				"fork":      tlog.VerifyConsistency(older, checkpoint(fork), refProof(m, fork)),
				"other log": tlog.VerifyConsistency(older, tlog.Checkpoint{Origin: tlog.Origin("kreis-soest.example"), Size: newer.Size, Root: newer.Root}, p),
			}
			if m < n {
				refused["rollback"] = tlog.VerifyConsistency(newer, older, p)
				refused["flipped bit"] = tlog.VerifyConsistency(older, newer, flip(p, len(p)-1))
				refused["flipped bit in the first hash"] = tlog.VerifyConsistency(older, newer, flip(p, 0))
				refused["older size off by one"] = tlog.VerifyConsistency(checkpoint(d[:m-1]), newer, p)
				refused["missing hash"] = tlog.VerifyConsistency(older, newer, p[:len(p)-1])
			} else {
				refused["other root, same size"] = tlog.VerifyConsistency(older, checkpoint(fork), nil)
				refused["equal sizes, non-empty proof"] = tlog.VerifyConsistency(older, newer, [][]byte{older.Root})
			}
			for name, err := range refused {
				if !errors.Is(err, tlog.ErrProof) {
					t.Fatalf("%d to %d, %s: err %v, want ErrProof", m, n, name, err)
				}
			}
		}
	}

	t.Run("bounds", func(t *testing.T) {
		long := make([][]byte, tlog.MaxProofLen+1)
		for i := range long {
			long[i] = make([]byte, tlog.HashSize)
		}
		older, newer := checkpoint(d[:3]), checkpoint(d)
		for name, err := range map[string]error{
			"too many hashes":     tlog.VerifyConsistency(older, newer, long),
			"short hash":          tlog.VerifyConsistency(older, newer, [][]byte{make([]byte, 31)}),
			"short root":          tlog.VerifyConsistency(tlog.Checkpoint{Origin: origin, Size: 3, Root: older.Root[:31]}, newer, refProof(3, d)),
			"empty tree, a root":  tlog.VerifyConsistency(tlog.Checkpoint{Origin: origin, Root: older.Root}, newer, nil),
			"proof from the void": tlog.VerifyConsistency(checkpoint(nil), newer, refProof(3, d)),
		} {
			if !errors.Is(err, tlog.ErrProof) {
				t.Errorf("%s: err %v, want ErrProof", name, err)
			}
		}
	})
}
