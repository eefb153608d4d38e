package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
)

// ReceiveEvidence stores evidence that caller, the node of a recipient,
// sends back about a message this node relayed to it (Retrieval,
// Acknowledgement, Rejection, NonDelivery), so that the sender sees the whole chain
// at its own node. ev.Log names the log that holds it, one of the caller's.
// Evidence stored before is accepted again. Evidence that does not follow
// the copy's chain is broker.ErrState while the copy is still open (an
// earlier evidence may still be on its way), and dropped with a warning
// once the copy's chain has ended here.
//
// Security: only the node that serves the recipient's domain may send
// evidence about that recipient, and each evidence must verify now and be
// signed by whom its type requires; this node stores it, but does not
// enter it into its own log.
func (n *Node) ReceiveEvidence(ctx context.Context, caller pki.Peer, ev broker.Evidence) error {
	if caller.Kind != pki.KindNode {
		return fmt.Errorf("%w: only node certificates may send evidence back, not %s", broker.ErrForbidden, caller)
	}
	parsed, err := evidence.Parse(ev.DER)
	if err != nil {
		return fmt.Errorf("%w: %v", broker.ErrInvalid, err)
	}
	st := parsed.Statement
	if !pushable[st.Type] {
		return fmt.Errorf("%w: %s is not sent back; only Retrieval, Acknowledgement, Rejection and NonDelivery are, the rest comes with the relay's answer", broker.ErrInvalid, st.Type)
	}
	if !caller.Serves(address.DomainOf(st.Recipient)) {
		return fmt.Errorf("%w: %s does not serve the domain of %s and may not send evidence about that copy", broker.ErrForbidden, caller, st.Recipient)
	}
	m, err := n.store.Message(ctx, st.MessageID)
	if errors.Is(err, broker.ErrNotFound) || err == nil && !n.domains[address.DomainOf(m.Header.From)] {
		return fmt.Errorf("%w: no message %s sent from this node", broker.ErrNotFound, st.MessageID)
	}
	if err != nil {
		return fmt.Errorf("receive evidence of %s: %w", st.MessageID, err)
	}
	c, err := n.store.Copy(ctx, m.ID(), st.Recipient)
	if errors.Is(err, broker.ErrNotFound) || err == nil && c.Local {
		return fmt.Errorf("%w: message %s was not relayed to %s", broker.ErrNotFound, m.ID(), st.Recipient)
	}
	if err != nil {
		return fmt.Errorf("receive evidence of %s: %w", m.ID(), err)
	}
	if c.State == broker.StateRelaying {
		// Only the relay's answer, checked against what was relayed,
		// moves a copy out of relaying.
		return fmt.Errorf("%w: message %s has not been relayed to %s yet", broker.ErrState, m.ID(), c.Recipient)
	}
	chain, err := n.chainOf(ctx, c)
	if err != nil {
		return err
	}
	digest := evidence.Digest(ev.DER)
	for _, e := range chain {
		if evidence.Digest(e.DER) == digest {
			return nil // stored before
		}
	}
	if st.PreviousSHA256 != c.Head {
		if final(c.State) {
			n.log.Warn("evidence sent back does not follow the ended chain; dropped", slog.String(broker.LogMsgID, m.ID()), slog.String(broker.LogMailbox, c.Recipient), slog.String("type", string(st.Type)), slog.String(broker.LogPeer, caller.String()))
			return nil
		}
		// The copy has been relayed, so every earlier evidence has come
		// (with the answer, or pushed in order): one that does not follow
		// never will.
		return fmt.Errorf("%w: the %s does not follow the newest evidence of the copy (%s); an evidence before it was lost or refused", broker.ErrInvalid, st.Type, c.Head)
	}
	if _, err := n.extend(caller, m, c.Recipient, chain, []broker.Evidence{ev}); err != nil {
		return err
	}
	next := *c
	next.State, next.Head, next.Deadline = stateAfter(st.Type, c.State), digest, timeZero
	ev.MessageID, ev.Sender, ev.Recipient, ev.Type = m.ID(), m.Header.From, c.Recipient, string(st.Type)
	_, err = n.store.AppendEvidence(ctx, broker.Step{Evidence: ev, PrevHead: c.Head, Next: next})
	if errors.Is(err, broker.ErrConflict) {
		return fmt.Errorf("%w: the copy changed meanwhile; send it again", broker.ErrState)
	}
	if err != nil {
		return fmt.Errorf("receive evidence of %s: %w", m.ID(), err)
	}
	n.log.Info("evidence received: "+string(st.Type), slog.String(broker.LogMsgID, m.ID()), slog.String(broker.LogMailbox, c.Recipient), slog.String(broker.LogPeer, caller.String()))
	return nil
}

// pushable are the evidence types that a recipient's node sends back.
var pushable = map[evidence.Type]bool{evidence.Retrieval: true, evidence.Acknowledgement: true, evidence.Rejection: true, evidence.NonDelivery: true}

// final reports whether a copy in state s takes no more evidence.
func final(s broker.State) bool {
	return s == broker.StateAcknowledged || s == broker.StateRejected || s == broker.StateUndeliverable
}

// chainOf returns the evidence of a copy's chain, in order.
func (n *Node) chainOf(ctx context.Context, c *broker.Copy) ([]broker.Evidence, error) {
	all, err := n.store.Evidence(ctx, c.MessageID)
	if err != nil {
		return nil, fmt.Errorf("evidence of %s: %w", c.MessageID, err)
	}
	var chain []broker.Evidence
	for _, ev := range all {
		if ev.Recipient == c.Recipient {
			chain = append(chain, ev)
		}
	}
	return chain, nil
}
