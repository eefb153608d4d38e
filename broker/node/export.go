package node

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/tlog"
)

// Export is what the node contributes to a message's evidence bundle:
// everything in it that only the node has. The client adds the signer
// certificates it verified them with.
type Export struct {
	Message  *broker.Message
	Evidence []broker.Evidence // each recipient's chain in order, recipients in the envelope's order
	// Proofs[i] is the inclusion proof of Evidence[i] in the tree of its
	// log's checkpoint: Checkpoint for this node's own evidence, the Logs
	// entry of its Log for another node's.
	Proofs     [][][]byte
	Checkpoint []byte
	TreeSize   uint64
	// Logs holds the other nodes' logs that hold some of Evidence, each as
	// that node served it when the export was made, in order of first use.
	Logs []RemoteLog
	// Consistency holds a proof from each tree size the caller asked for
	// to TreeSize.
	Consistency []bundle.Consistency
	// Index is the node's signed bundle.Index.
	Index []byte
	CRL   []byte
}

// Export gathers message id's bundle for caller, the sender or a
// recipient, with the evidence the caller may see (the sender every
// recipient's, a recipient its own). since lists tree sizes of older
// checkpoints the caller holds; the export proves the current tree
// consistent with each. Every proof leads to one checkpoint, taken after
// the evidence was read, so it covers all of it.
func (n *Node) Export(ctx context.Context, caller pki.Peer, id string, since []uint64) (*Export, error) {
	if len(since) > bundle.MaxConsistency {
		return nil, fmt.Errorf("%w: %d older tree sizes, at most %d", broker.ErrInvalid, len(since), bundle.MaxConsistency)
	}
	evs, err := n.Evidence(ctx, caller, id)
	if err != nil {
		return nil, err
	}
	if len(evs) > bundle.MaxEvidence {
		return nil, fmt.Errorf("%w: message %s has %d evidence, a bundle holds at most %d", broker.ErrTooLarge, id, len(evs), bundle.MaxEvidence)
	}
	m, err := n.store.Message(ctx, id)
	if errors.Is(err, broker.ErrNotFound) {
		// Only rejections: the node keeps no envelope of a refused message.
		return nil, fmt.Errorf("%w: message %s was refused, so there is no bundle of it; its SubmissionRejection is its evidence (kurier evidence)", broker.ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", id, err)
	}
	// Rejections of other envelopes that once claimed this id are not
	// about this message; all other evidence is of the stored envelope.
	evs = slices.DeleteFunc(evs, func(ev broker.Evidence) bool {
		if ev.Type != string(evidence.SubmissionRejection) {
			return false
		}
		st, err := evidence.Parse(ev.DER)
		return err != nil || st.Statement.EnvelopeSHA256 != m.EnvelopeSHA256
	})
	evs = byRecipient(evs, m.Header.To)
	signed, cp, err := n.Checkpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", id, err)
	}
	x := &Export{Message: m, Evidence: evs, Checkpoint: signed, TreeSize: cp.Size}
	if err := n.exportProofs(ctx, x); err != nil {
		return nil, fmt.Errorf("export %s: %w", id, err)
	}
	digests := make([]string, len(evs))
	for i, ev := range evs {
		digests[i] = evidence.Digest(ev.DER)
	}
	if x.Consistency, err = n.consistency(ctx, since, cp.Size); err != nil {
		return nil, fmt.Errorf("export %s: %w", id, err)
	}
	if x.CRL, err = n.CRL(); err != nil {
		return nil, fmt.Errorf("export %s: %w", id, err)
	}
	ix := bundle.Index{
		Version: bundle.IndexVersion, MessageID: id, RequestedBy: caller.Address,
		Time: n.now(), Origin: cp.Origin, LogKey: n.logVKey, TreeSize: cp.Size, Evidence: digests,
		CRLSHA256: evidence.Digest(x.CRL),
	}
	for _, l := range x.Logs {
		ix.Logs = append(ix.Logs, bundle.IndexLog{Origin: l.Origin, LogKey: l.LogKey, TreeSize: l.TreeSize})
	}
	b, err := ix.Marshal()
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", id, err)
	}
	if x.Index, err = cms.Sign(b, n.signer); err != nil {
		return nil, fmt.Errorf("export %s: sign index: %w", id, err)
	}
	return x, nil
}

// consistency proves the own log's tree of size leaves consistent with
// each older tree size in since.
func (n *Node) consistency(ctx context.Context, since []uint64, size uint64) ([]bundle.Consistency, error) {
	var out []bundle.Consistency
	for _, from := range since {
		if from > size {
			return nil, fmt.Errorf("%w: an older checkpoint of %d leaves cannot precede this log's %d", broker.ErrInvalid, from, size)
		}
		if from == 0 {
			// The empty tree precedes every tree; the proof is empty.
			out = append(out, bundle.Consistency{From: 0, Proof: [][]byte{}})
			continue
		}
		p, _, err := n.ConsistencyProof(ctx, from, size)
		if err != nil {
			return nil, err
		}
		out = append(out, bundle.Consistency{From: from, Proof: p})
	}
	return out, nil
}

// exportProofs proves every evidence of x in its log: this node's own in
// x's checkpoint, another node's in that node's current checkpoint, which
// is asked for (and checked) here.
func (n *Node) exportProofs(ctx context.Context, x *Export) error {
	x.Proofs = make([][][]byte, len(x.Evidence))
	others := map[string][]int{} // origin → indexes into x.Evidence
	var order []string
	for i, ev := range x.Evidence {
		if ev.Log != "" && ev.Log != n.LogOrigin() {
			if len(others[ev.Log]) == 0 {
				order = append(order, ev.Log)
			}
			others[ev.Log] = append(others[ev.Log], i)
			continue
		}
		p, _, err := n.InclusionProof(ctx, ev.LeafIndex, x.TreeSize)
		if err != nil {
			return err
		}
		x.Proofs[i] = p
	}
	for _, origin := range order {
		rl, err := n.remoteProofs(ctx, origin, x, others[origin])
		if err != nil {
			return err
		}
		x.Logs = append(x.Logs, rl)
	}
	return nil
}

// remoteProofs asks the node of origin's log for the proofs of the
// evidence of x at idx, and checks each.
func (n *Node) remoteProofs(ctx context.Context, origin string, x *Export, idx []int) (RemoteLog, error) {
	if n.peers == nil {
		return RemoteLog{}, fmt.Errorf("%w: evidence in the log %s, whose node is not configured here", broker.ErrUnavailable, origin)
	}
	leaves := make([]uint64, len(idx))
	for j, i := range idx {
		leaves[j] = x.Evidence[i].LeafIndex
	}
	rl, proofs, err := n.peers.LogProofs(ctx, origin, leaves)
	if err != nil {
		return RemoteLog{}, fmt.Errorf("prove the evidence in the log %s: %w", origin, err)
	}
	cp, err := tlog.Open(rl.Checkpoint, rl.LogKey)
	if err != nil {
		return RemoteLog{}, fmt.Errorf("%w: the checkpoint of %s: %v", broker.ErrSignature, origin, err)
	}
	for j, i := range idx {
		ev := x.Evidence[i]
		if err := tlog.VerifyInclusion(ev.DER, ev.LeafIndex, proofs[j], cp); err != nil {
			return RemoteLog{}, fmt.Errorf("%w: the log %s does not prove its %s of %s at leaf %d: %v", broker.ErrSignature, origin, ev.Type, ev.Recipient, ev.LeafIndex, err)
		}
		x.Proofs[i] = proofs[j]
	}
	return rl, nil
}

// byRecipient orders evidence, given in order of issue, into one chain per
// recipient, recipients in the order of to; evidence of anyone else keeps
// its order at the end.
func byRecipient(evs []broker.Evidence, to []string) []broker.Evidence {
	rank := func(r string) int {
		if i := slices.Index(to, r); i >= 0 {
			return i
		}
		return len(to)
	}
	out := slices.Clone(evs)
	slices.SortStableFunc(out, func(a, b broker.Evidence) int { return rank(a.Recipient) - rank(b.Recipient) })
	return out
}
