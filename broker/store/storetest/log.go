package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/bits"
	"slices"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/tlog"
)

// The log is checked against two implementations that share nothing with
// a backend: refRoot, the tree hash of RFC 6962 section 2.1 written from
// its definition, for roots; and the in-memory tree of
// github.com/transparency-dev/merkle/testonly with that module's proof
// verifiers, for proofs.

// refRoot is MTH(D[n]) of RFC 6962, section 2.1.
func refRoot(d [][]byte) []byte {
	var h [sha256.Size]byte
	switch len(d) {
	case 0:
		h = sha256.Sum256(nil)
	case 1:
		h = sha256.Sum256(append([]byte{0}, d[0]...))
	default:
		k := 1 << (bits.Len(uint(len(d)-1)) - 1) // the largest power of two below len(d)
		h = sha256.Sum256(slices.Concat([]byte{1}, refRoot(d[:k]), refRoot(d[k:])))
	}
	return h[:]
}

// refTree returns the in-memory tree of the leaves.
func refTree(leaves [][]byte) *testonly.Tree {
	tree := testonly.New(rfc6962.DefaultHasher)
	tree.AppendData(leaves...)
	return tree
}

// checkRoot checks LogRoot(size) against both references and returns it.
func checkRoot(t *testing.T, st node.Store, tree *testonly.Tree, leaves [][]byte, size uint64) []byte {
	t.Helper()
	root, err := st.LogRoot(context.Background(), size)
	if err != nil {
		t.Fatalf("LogRoot(%d): %v", size, err)
	}
	if want := refRoot(leaves[:size]); !bytes.Equal(root, want) {
		t.Fatalf("LogRoot(%d) = %x, RFC 6962 says %x", size, root, want)
	}
	if want := tree.HashAt(size); !bytes.Equal(root, want) {
		t.Fatalf("LogRoot(%d) = %x, the reference tree says %x", size, root, want)
	}
	return root
}

// checkInclusion checks InclusionProof(index, size) against the
// reference tree and verifies it against root.
func checkInclusion(t *testing.T, st node.Store, tree *testonly.Tree, leaf []byte, index, size uint64, root []byte) {
	t.Helper()
	p, err := st.InclusionProof(context.Background(), index, size)
	if err != nil {
		t.Fatalf("InclusionProof(%d, %d): %v", index, size, err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, size, rfc6962.DefaultHasher.HashLeaf(leaf), p, root); err != nil {
		t.Fatalf("InclusionProof(%d, %d) does not verify: %v", index, size, err)
	}
	want, err := tree.InclusionProof(index, size)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(p, want, bytes.Equal) {
		t.Fatalf("InclusionProof(%d, %d) = %x, the reference tree's is %x", index, size, p, want)
	}
}

// checkConsistency checks ConsistencyProof(size1, size2) against the
// reference tree and verifies it between the roots.
func checkConsistency(t *testing.T, st node.Store, tree *testonly.Tree, size1, size2 uint64, root1, root2 []byte) {
	t.Helper()
	p, err := st.ConsistencyProof(context.Background(), size1, size2)
	if err != nil {
		t.Fatalf("ConsistencyProof(%d, %d): %v", size1, size2, err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, size1, size2, p, root1, root2); err != nil {
		t.Fatalf("ConsistencyProof(%d, %d) does not verify: %v", size1, size2, err)
	}
	want, err := tree.ConsistencyProof(size1, size2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(p, want, bytes.Equal) {
		t.Fatalf("ConsistencyProof(%d, %d) = %x, the reference tree's is %x", size1, size2, p, want)
	}
}

func testLogEmpty(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	if n, err := st.LogSize(ctx); n != 0 || err != nil {
		t.Errorf("LogSize = %d, %v; want 0", n, err)
	}
	empty := sha256.Sum256(nil)
	if root, err := st.LogRoot(ctx, 0); err != nil || !bytes.Equal(root, empty[:]) {
		t.Errorf("LogRoot(0) = %x, %v; want %x", root, err, empty)
	}
	if p, err := st.ConsistencyProof(ctx, 0, 0); err != nil || len(p) != 0 {
		t.Errorf("ConsistencyProof(0, 0) = %x, %v; want empty", p, err)
	}
	if _, err := st.LogRoot(ctx, 1); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("LogRoot(1) of an empty log: %v, want ErrNotFound", err)
	}
}

// logBuilder writes evidence with every method that logs some and keeps
// what the log must hold: the DER of each leaf, in leaf order.
type logBuilder struct {
	t      *testing.T
	st     node.Store
	leaves [][]byte
	ids    []string // every message id with evidence
}

// logged checks that evs (as a write returned them) took the next leaf
// indexes, in order, and records them; evidence of another log takes none.
func (b *logBuilder) logged(method string, evs ...broker.Evidence) {
	b.t.Helper()
	for _, ev := range evs {
		if ev.Log != "" {
			continue
		}
		if want := uint64(len(b.leaves)); ev.LeafIndex != want {
			b.t.Fatalf("%s gave leaf index %d, want %d: leaf indexes are given without gaps", method, ev.LeafIndex, want)
		}
		b.leaves = append(b.leaves, ev.DER)
	}
}

// round writes one message's worth of evidence through every method
// that logs: 7 leaves.
func (b *logBuilder) round(received time.Time) {
	t, st, ctx := b.t, b.st, context.Background()
	m := build(t, st, Agency, received, Court, Remote)
	evs, err := st.CreateMessage(ctx, m.Msg, m.Copies, m.Evidence, m.Outbound)
	if err != nil {
		t.Fatalf("CreateMessage: %v", err)
	}
	id := m.Msg.ID()
	b.ids = append(b.ids, id)
	b.logged("CreateMessage", evs...)
	b.logged("AppendEvidence", apply(t, st, step(t, Agency, m.Copies[0], "Retrieval", broker.StateRetrieved)))
	rejected, err := envelope.NewID()
	if err != nil {
		t.Fatal(err)
	}
	ev, err := st.AddEvidence(ctx, broker.Evidence{MessageID: rejected, Sender: Agency, Type: "SubmissionRejection", DER: random(t, 120)})
	if err != nil {
		t.Fatalf("AddEvidence: %v", err)
	}
	b.ids = append(b.ids, rejected)
	b.logged("AddEvidence", ev)
	const kreis = "poststelle@kreis-soest.example"
	more := []broker.Copy{
		{MessageID: id, Recipient: Other, Received: received, State: broker.StateDelivered, Head: digest([]byte("o")), Local: true},
		{MessageID: id, Recipient: kreis, Received: received, State: broker.StateRelaying, Head: digest([]byte("k"))},
	}
	added, err := st.AddCopies(ctx, id, m.Msg.EnvelopeSHA256, more, []broker.Evidence{
		{MessageID: id, Sender: Agency, Recipient: Other, Type: "Delivery", DER: random(t, 130)},
		{Log: tlog.Origin("kreis-soest.example"), LeafIndex: uint64(len(b.leaves)), MessageID: id, Sender: Agency, Recipient: kreis, Type: "Delivery", DER: random(t, 130)},
	})
	if err != nil {
		t.Fatalf("AddCopies: %v", err)
	}
	b.logged("AddCopies", added...)
	acc := step(t, Agency, m.copyOf(t, Remote), "RelayAcceptance", broker.StateRelaying)
	del := step(t, Agency, acc.Next, "Delivery", broker.StateDelivered)
	finished, err := st.FinishRelay(ctx, RemoteDomain, id, []broker.Step{acc, del}, true)
	if err != nil {
		t.Fatalf("FinishRelay: %v", err)
	}
	b.logged("FinishRelay", finished...)
}

// checkEvidenceLogged checks that every stored evidence of the node's own
// log is the leaf its index names.
func (b *logBuilder) checkEvidenceLogged() {
	b.t.Helper()
	for _, id := range b.ids {
		for _, ev := range evidenceOf(b.t, b.st, id) {
			if ev.Log != "" {
				continue
			}
			if ev.LeafIndex >= uint64(len(b.leaves)) || !bytes.Equal(b.leaves[ev.LeafIndex], ev.DER) {
				b.t.Errorf("stored %s of %s names leaf %d, which holds another evidence", ev.Type, id, ev.LeafIndex)
			}
		}
	}
}

func testLogProofs(t *testing.T, open Open) {
	st := open(t)
	b := &logBuilder{t: t, st: st}
	for i := range 6 {
		b.round(t0.Add(time.Duration(i) * time.Second))
	}
	n := uint64(len(b.leaves))
	if got := logSize(t, st); got != n {
		t.Fatalf("LogSize %d, want %d", got, n)
	}
	b.checkEvidenceLogged()
	tree := refTree(b.leaves)
	roots := make([][]byte, n+1)
	for size := range n + 1 {
		roots[size] = checkRoot(t, st, tree, b.leaves, size)
	}
	for size := uint64(1); size <= n; size++ {
		for i := range size {
			checkInclusion(t, st, tree, b.leaves[i], i, size, roots[size])
		}
	}
	for size2 := range n + 1 {
		for size1 := range size2 + 1 {
			checkConsistency(t, st, tree, size1, size2, roots[size1], roots[size2])
		}
	}
}

func testLogOutOfRange(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	Create(t, st, Agency, t0, Court, Other) // 3 leaves
	const max = ^uint64(0)
	for _, c := range []struct {
		name string
		call func() error
		want error
	}{
		{"LogRoot beyond the size", func() error { _, err := st.LogRoot(ctx, 4); return err }, broker.ErrNotFound},
		{"LogRoot far beyond", func() error { _, err := st.LogRoot(ctx, max); return err }, broker.ErrNotFound},
		{"InclusionProof, index at the size", func() error { _, err := st.InclusionProof(ctx, 3, 3); return err }, broker.ErrInvalid},
		{"InclusionProof, empty tree", func() error { _, err := st.InclusionProof(ctx, 0, 0); return err }, broker.ErrInvalid},
		{"InclusionProof, size beyond", func() error { _, err := st.InclusionProof(ctx, 0, 4); return err }, broker.ErrNotFound},
		{"InclusionProof, largest size", func() error { _, err := st.InclusionProof(ctx, 0, max); return err }, broker.ErrNotFound},
		{"ConsistencyProof, sizes reversed", func() error { _, err := st.ConsistencyProof(ctx, 3, 2); return err }, broker.ErrInvalid},
		{"ConsistencyProof, size beyond", func() error { _, err := st.ConsistencyProof(ctx, 1, 4); return err }, broker.ErrNotFound},
		{"ConsistencyProof, largest sizes", func() error { _, err := st.ConsistencyProof(ctx, max-1, max); return err }, broker.ErrNotFound},
	} {
		if err := c.call(); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func testMarkLog(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	if err := st.MarkLog(ctx, 0); err != nil {
		t.Errorf("MarkLog(0) of an empty log: %v", err)
	}
	Create(t, st, Agency, t0, Court, Other) // 3 leaves
	for _, size := range []uint64{3, 1, 3} {
		if err := st.MarkLog(ctx, size); err != nil {
			t.Errorf("MarkLog(%d) of a log of 3: %v", size, err)
		}
	}
	// Beyond the log no mark can cover it: an error, at once or once the
	// backend gives up waiting for the log to grow.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := st.MarkLog(short, 4); err == nil {
		t.Error("MarkLog(4) of a log of 3 succeeded")
	}
	if n := logSize(t, st); n != 3 {
		t.Errorf("LogSize %d after MarkLog, want 3", n)
	}
}
