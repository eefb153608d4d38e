package logtree_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store/logtree"
)

// nodes is a store of tree nodes in memory, written as a store writes
// them: every node that Append reports.
type nodes map[compact.NodeID][]byte

func (n nodes) read(ids []compact.NodeID) ([][]byte, error) {
	out := make([][]byte, len(ids))
	for i, id := range ids {
		h, ok := n[id]
		if !ok {
			return nil, fmt.Errorf("node %+v missing", id)
		}
		out[i] = h
	}
	return out, nil
}

// grow appends n leaves to an empty range, storing every node, and
// returns the store, the range and the reference tree of the same leaves.
func grow(t *testing.T, n int) (nodes, *compact.Range, *testonly.Tree) {
	t.Helper()
	store, r, ref := nodes{}, logtree.Empty(), testonly.New(rfc6962.DefaultHasher)
	for i := range n {
		leaf := []byte(fmt.Sprintf("evidence %d", i))
		ref.AppendData(leaf)
		err := r.Append(rfc6962.DefaultHasher.HashLeaf(leaf), func(id compact.NodeID, h []byte) { store[id] = h })
		if err != nil {
			t.Fatal(err)
		}
	}
	return store, r, ref
}

// Roots and proofs computed from the stored nodes are the reference
// tree's at every size, so a store that keeps the nodes Append reports
// serves every checkpoint and proof of its past.
func TestFromStoredNodes(t *testing.T) {
	const n = 21
	store, r, ref := grow(t, n)
	for size := uint64(0); size <= n; size++ {
		root, err := logtree.Root(size, store.read)
		if err != nil || !bytes.Equal(root, ref.HashAt(size)) {
			t.Fatalf("Root(%d) = %x, %v; the reference tree's is %x", size, root, err, ref.HashAt(size))
		}
		for i := uint64(0); i < size; i++ {
			p, err := logtree.Inclusion(i, size, store.read)
			want, _ := ref.InclusionProof(i, size)
			if err != nil || !slices.EqualFunc(p, want, bytes.Equal) {
				t.Fatalf("Inclusion(%d, %d) = %x, %v; want %x", i, size, p, err, want)
			}
		}
		for s1 := uint64(0); s1 <= size; s1++ {
			p, err := logtree.Consistency(s1, size, store.read)
			want, _ := ref.ConsistencyProof(s1, size)
			if err != nil || !slices.EqualFunc(p, want, bytes.Equal) {
				t.Fatalf("Consistency(%d, %d) = %x, %v; want %x", s1, size, p, err, want)
			}
		}
	}
	loaded, err := logtree.Load(n, store.read)
	if err != nil || !slices.EqualFunc(loaded.Hashes(), r.Hashes(), bytes.Equal) {
		t.Fatalf("Load(%d) = %x, %v; the appended range is %x", n, loaded.Hashes(), err, r.Hashes())
	}
	again, err := logtree.New(n, slices.Clone(r.Hashes()))
	if err != nil || again.End() != n {
		t.Fatalf("New(%d, the range's hashes): %v", n, err)
	}
	if _, err := logtree.New(n, r.Hashes()[1:]); err == nil {
		t.Error("New accepted a range with a hash missing")
	}
}

// Arguments that name no proof are broker.ErrInvalid and read nothing; a
// proof of an empty tree still reads, so that the store can refuse a size
// beyond its log; the store's read errors reach the caller.
func TestArguments(t *testing.T) {
	refused := errors.New("the log has 3 entries")
	reads := 0
	read := func([]compact.NodeID) ([][]byte, error) { reads++; return nil, refused }
	if _, err := logtree.Inclusion(3, 3, read); !errors.Is(err, broker.ErrInvalid) {
		t.Errorf("Inclusion(3, 3): %v, want ErrInvalid", err)
	}
	if _, err := logtree.Consistency(4, 3, read); !errors.Is(err, broker.ErrInvalid) {
		t.Errorf("Consistency(4, 3): %v, want ErrInvalid", err)
	}
	if reads != 0 {
		t.Errorf("refused arguments read nodes %d times", reads)
	}
	if _, err := logtree.Consistency(0, 5, read); !errors.Is(err, refused) {
		t.Errorf("Consistency(0, 5): %v, want the read's error", err)
	}
	if _, err := logtree.Inclusion(0, 5, read); !errors.Is(err, refused) {
		t.Errorf("Inclusion(0, 5): %v, want the read's error", err)
	}
	if _, err := logtree.Root(5, read); !errors.Is(err, refused) {
		t.Errorf("Root(5): %v, want the read's error", err)
	}
	if root, err := logtree.Root(0, read); err != nil || !bytes.Equal(root, rfc6962.DefaultHasher.EmptyRoot()) {
		t.Errorf("Root(0) = %x, %v; want SHA-256 of nothing", root, err)
	}
}
