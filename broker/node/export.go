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
)

// Export is what the node contributes to a message's evidence bundle:
// everything in it that only the node has. The client adds the signer
// certificates it verified them with.
type Export struct {
	Message  *broker.Message
	Evidence []broker.Evidence // each recipient's chain in order, recipients in the envelope's order
	// Proofs[i] is the inclusion proof of Evidence[i] in Checkpoint's tree.
	Proofs     [][][]byte
	Checkpoint []byte
	TreeSize   uint64
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
	digests := make([]string, len(evs))
	for i, ev := range evs {
		p, _, err := n.InclusionProof(ctx, ev.LeafIndex, cp.Size)
		if err != nil {
			return nil, fmt.Errorf("export %s: %w", id, err)
		}
		x.Proofs = append(x.Proofs, p)
		digests[i] = evidence.Digest(ev.DER)
	}
	for _, from := range since {
		if from > cp.Size {
			return nil, fmt.Errorf("%w: an older checkpoint of %d leaves cannot precede this log's %d", broker.ErrInvalid, from, cp.Size)
		}
		if from == 0 {
			// The empty tree precedes every tree; the proof is empty.
			x.Consistency = append(x.Consistency, bundle.Consistency{From: 0, Proof: [][]byte{}})
			continue
		}
		p, _, err := n.ConsistencyProof(ctx, from, cp.Size)
		if err != nil {
			return nil, fmt.Errorf("export %s: %w", id, err)
		}
		x.Consistency = append(x.Consistency, bundle.Consistency{From: from, Proof: p})
	}
	if x.CRL, err = n.CRL(); err != nil {
		return nil, fmt.Errorf("export %s: %w", id, err)
	}
	ix := bundle.Index{
		Version: bundle.IndexVersion, MessageID: id, RequestedBy: caller.Address,
		Time: n.now(), Origin: cp.Origin, LogKey: n.logVKey, TreeSize: cp.Size, Evidence: digests,
		CRLSHA256: evidence.Digest(x.CRL),
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
