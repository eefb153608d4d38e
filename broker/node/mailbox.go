package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

// Inbox returns one page of the caller's mailbox, oldest first, and the
// token of the next page ("" after the last).
func (n *Node) Inbox(ctx context.Context, caller pki.Peer, pageToken string, pageSize int) ([]broker.InboxEntry, string, error) {
	if err := requireParticipant(caller); err != nil {
		return nil, "", err
	}
	entries, next, err := n.store.Inbox(ctx, caller.Address, pageToken, pageSize)
	if err != nil {
		return nil, "", fmt.Errorf("list mailbox %s: %w", caller.Address, err)
	}
	return entries, next, nil
}

// Subscribe returns a channel of new entries in the caller's mailbox and a
// function that ends the subscription. A subscriber that falls far behind
// misses notices; the mailbox listing stays complete.
func (n *Node) Subscribe(caller pki.Peer) (<-chan broker.InboxEntry, func(), error) {
	if err := requireParticipant(caller); err != nil {
		return nil, nil, err
	}
	ch, cancel := n.hub.subscribe(caller.Address)
	return ch, cancel, nil
}

// Fetch opens one message of the caller's mailbox: the stored message, the
// caller's copy, and a reader of the sealed payload that the caller must
// close. Once the payload has been passed on whole, call Retrieved.
// A message outside the caller's mailbox is broker.ErrNotFound, whether it
// exists or not.
func (n *Node) Fetch(ctx context.Context, caller pki.Peer, id string) (*broker.Message, *broker.Copy, io.ReadCloser, error) {
	m, c, err := n.ownCopy(ctx, caller, id)
	if err != nil {
		return nil, nil, nil, err
	}
	if c.State == broker.StateUndeliverable {
		return nil, nil, nil, fmt.Errorf("%w: message %s was not retrieved in time and is no longer delivered; its NonDelivery evidence says why", broker.ErrState, id)
	}
	r, err := n.store.OpenBlob(ctx, m.Blob)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("fetch %s: open payload: %w", id, err)
	}
	return m, c, r, nil
}

// Retrieved records that the caller has been sent its copy of message id
// whole: the first time, it issues Retrieval evidence; later, it returns
// the copy's newest evidence.
func (n *Node) Retrieved(ctx context.Context, caller pki.Peer, id string) (broker.Evidence, error) {
	for attempt := 0; ; attempt++ {
		m, c, err := n.ownCopy(ctx, caller, id)
		if err != nil {
			return broker.Evidence{}, err
		}
		switch c.State {
		case broker.StateUndeliverable:
			return broker.Evidence{}, fmt.Errorf("%w: message %s is no longer delivered", broker.ErrState, id)
		case broker.StateRetrieved, broker.StateAcknowledged, broker.StateRejected:
			return n.head(ctx, c)
		}
		prev, err := n.headStatement(ctx, c)
		if err != nil {
			return broker.Evidence{}, err
		}
		ev, err := n.issueAt(m, c.Recipient, evidence.Retrieval, c.Head, "", laterOf(n.now(), prev.Time))
		if err != nil {
			return broker.Evidence{}, fmt.Errorf("retrieve %s: %w", id, err)
		}
		next := *c
		next.State, next.Head, next.Deadline = broker.StateRetrieved, evidence.Digest(ev.DER), timeZero
		ev, err = n.appendStep(ctx, broker.Step{Evidence: ev, PrevHead: c.Head, Next: next, Push: n.pushTo(m)})
		if errors.Is(err, broker.ErrConflict) && attempt < 3 {
			continue // another fetch of the same copy won; answer with its evidence
		}
		if err != nil {
			return broker.Evidence{}, commitError("retrieve "+id, err)
		}
		n.log.Info("message retrieved", slog.String(broker.LogMsgID, id), slog.String(broker.LogMailbox, caller.Address))
		return ev, nil
	}
}

// Acknowledge stores the caller's signed Acknowledgement of a message it
// has fetched. The statement must be signed by the caller's own valid
// certificate, name the caller as recipient and issuer, match the stored
// message, and follow the copy's Retrieval. Acknowledging the same
// message again with the same evidence returns it; anything else after an
// acknowledgement or a rejection is broker.ErrState.
func (n *Node) Acknowledge(ctx context.Context, caller pki.Peer, der []byte) (broker.Evidence, error) {
	return n.recipientStep(ctx, caller, der, evidence.Acknowledgement)
}

// Reject stores the caller's signed Rejection of a message it has
// retrieved, whether or not it could open it: the same rules as for
// Acknowledge, and a reason in the form evidence.ParseRejectionReason
// reads. A copy is acknowledged or rejected, never both: rejecting an
// acknowledged copy, or acknowledging a rejected one, is broker.ErrState.
func (n *Node) Reject(ctx context.Context, caller pki.Peer, der []byte) (broker.Evidence, error) {
	return n.recipientStep(ctx, caller, der, evidence.Rejection)
}

// recipientWords are how refusals name what the recipient sent, per type.
var recipientWords = map[evidence.Type]struct{ noun, gerund string }{
	evidence.Acknowledgement: {"acknowledgement", "acknowledging"},
	evidence.Rejection:       {"rejection", "rejecting"},
}

// recipientStep verifies the caller's own statement of type typ (an
// Acknowledgement or a Rejection) and appends it to the caller's copy as
// its final step, pushed to the sender's node like the node's own
// evidence. Security: the statement must verify now under a participant
// certificate of the caller itself; the copy must have been handed over
// (its head a Retrieval), so that nobody answers for a copy it never got.
func (n *Node) recipientStep(ctx context.Context, caller pki.Peer, der []byte, typ evidence.Type) (broker.Evidence, error) {
	w := recipientWords[typ]
	if err := requireParticipant(caller); err != nil {
		return broker.Evidence{}, err
	}
	now := n.now()
	ev, err := evidence.Verify(der, cms.Policy{Trust: n.trust, At: now, KeyUsages: participantUsages})
	if ve := (*evidence.VerifyError)(nil); errors.As(err, &ve) && ve.Step == "statement" {
		return broker.Evidence{}, fmt.Errorf("%w: %s: %v", broker.ErrInvalid, w.noun, ve.Reason)
	}
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("%w: %s: %v", broker.ErrSignature, w.noun, err)
	}
	st := ev.Statement
	if st.Type != typ {
		return broker.Evidence{}, fmt.Errorf("%w: expected %s, got %s", broker.ErrInvalid, typ, st.Type)
	}
	if st.Recipient != caller.Address {
		return broker.Evidence{}, fmt.Errorf("%w: the %s is for %s but you are %s", broker.ErrForbidden, w.noun, st.Recipient, caller.Address)
	}
	if d := st.Time.Sub(now); d > n.limits.MaxClockSkew || -d > n.limits.MaxClockSkew {
		return broker.Evidence{}, fmt.Errorf("%w: %s time %s is more than %s from the node's time %s; check your clock", broker.ErrInvalid, w.noun, st.Time.UTC().Format(evidence.TimeFormat), n.limits.MaxClockSkew, now.UTC().Format(evidence.TimeFormat))
	}
	m, c, err := n.ownCopy(ctx, caller, st.MessageID)
	if err != nil {
		return broker.Evidence{}, err
	}
	if st.Sender != m.Header.From || st.EnvelopeSHA256 != m.EnvelopeSHA256 || st.PayloadSHA256 != m.Header.PayloadSHA256 {
		return broker.Evidence{}, fmt.Errorf("%w: the %s names another sender, envelope or payload than message %s", broker.ErrInvalid, w.noun, m.ID())
	}
	switch c.State {
	case broker.StateDelivered:
		return broker.Evidence{}, fmt.Errorf("%w: message %s has not been fetched yet; fetch it before %s it", broker.ErrState, m.ID(), w.gerund)
	case broker.StateAcknowledged, broker.StateRejected:
		if c.Head == ev.Digest() {
			return n.head(ctx, c)
		}
		return broker.Evidence{}, fmt.Errorf("%w: message %s is already %s, and a copy is acknowledged or rejected only once", broker.ErrState, m.ID(), c.State)
	}
	if st.PreviousSHA256 != c.Head {
		return broker.Evidence{}, fmt.Errorf("%w: the %s does not name the newest evidence of your copy (%s); load the evidence again and sign anew", broker.ErrState, w.noun, c.Head)
	}
	prev, err := n.headStatement(ctx, c)
	if err != nil {
		return broker.Evidence{}, err
	}
	if !evidence.Allowed(prev.Type, typ) {
		return broker.Evidence{}, fmt.Errorf("%w: %s cannot follow %s", broker.ErrState, typ, prev.Type)
	}
	if st.Time.Before(prev.Time) {
		return broker.Evidence{}, fmt.Errorf("%w: the %s is dated %s, before the retrieval at %s; check your clock", broker.ErrInvalid, w.noun, st.Time.UTC().Format(evidence.TimeFormat), prev.Time.UTC().Format(evidence.TimeFormat))
	}
	rec := broker.Evidence{MessageID: m.ID(), Sender: m.Header.From, Recipient: c.Recipient, Type: string(typ), DER: der}
	next := *c
	next.State, next.Head, next.Deadline = stateAfter(typ, c.State), ev.Digest(), timeZero
	rec, err = n.appendStep(ctx, broker.Step{Evidence: rec, PrevHead: c.Head, Next: next, Push: n.pushTo(m)})
	if errors.Is(err, broker.ErrConflict) {
		return broker.Evidence{}, fmt.Errorf("%w: the copy changed while %s it; load the evidence again", broker.ErrState, w.gerund)
	}
	if err != nil {
		return broker.Evidence{}, commitError(fmt.Sprintf("store %s of %s", w.noun, m.ID()), err)
	}
	n.log.Info("message "+string(next.State), slog.String(broker.LogMsgID, m.ID()), slog.String(broker.LogMailbox, caller.Address))
	return rec, nil
}

// Evidence returns what the caller may see of a message's evidence, in
// order of issue: everything for its sender, the evidence about its own
// copy for a recipient. Anyone else gets broker.ErrNotFound.
func (n *Node) Evidence(ctx context.Context, caller pki.Peer, id string) ([]broker.Evidence, error) {
	if err := requireParticipant(caller); err != nil {
		return nil, err
	}
	all, err := n.store.Evidence(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("evidence of %s: %w", id, err)
	}
	var out []broker.Evidence
	for _, ev := range all {
		if ev.Sender == caller.Address || ev.Recipient == caller.Address {
			out = append(out, ev)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no evidence of message %s for %s", broker.ErrNotFound, id, caller.Address)
	}
	return out, nil
}

// ownCopy loads message id and the caller's copy of it.
func (n *Node) ownCopy(ctx context.Context, caller pki.Peer, id string) (*broker.Message, *broker.Copy, error) {
	if err := requireParticipant(caller); err != nil {
		return nil, nil, err
	}
	c, err := n.store.Copy(ctx, id, caller.Address)
	if errors.Is(err, broker.ErrNotFound) || err == nil && !c.Local {
		return nil, nil, fmt.Errorf("%w: message %s is not in the mailbox of %s", broker.ErrNotFound, id, caller.Address)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("load copy of %s: %w", id, err)
	}
	// The copy exists, so its message does: a message recalled is the
	// one stored.
	if m, ok := n.messages.get(id); ok {
		return m, c, nil
	}
	m, err := n.store.Message(ctx, id)
	if err != nil {
		return nil, nil, fmt.Errorf("load message %s: %w", id, err)
	}
	n.messages.put(id, m)
	return m, c, nil
}

// head returns the newest evidence of a copy's chain.
func (n *Node) head(ctx context.Context, c *broker.Copy) (broker.Evidence, error) {
	evs, err := n.store.Evidence(ctx, c.MessageID)
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("evidence of %s: %w", c.MessageID, err)
	}
	for _, ev := range evs {
		if ev.Recipient == c.Recipient && evidence.Digest(ev.DER) == c.Head {
			return ev, nil
		}
	}
	return broker.Evidence{}, fmt.Errorf("evidence of %s: newest evidence %s of %s missing from the store", c.MessageID, c.Head, c.Recipient)
}

// headStatement returns the statement of a copy's newest evidence.
func (n *Node) headStatement(ctx context.Context, c *broker.Copy) (*evidence.Statement, error) {
	if st, ok := n.heads.get(c.Head); ok {
		return st, nil
	}
	head, err := n.head(ctx, c)
	if err != nil {
		return nil, err
	}
	ev, err := evidence.Parse(head.DER)
	if err != nil {
		return nil, fmt.Errorf("evidence of %s: stored evidence unreadable: %w", c.MessageID, err)
	}
	n.heads.put(c.Head, ev.Statement)
	return ev.Statement, nil
}

// recall keeps values of records that never change, by key, so that
// the steps of a message's life, which follow each other within
// moments, need not load and decode them again: the statements of
// evidence by digest (a fetch or an acknowledgement must know the type
// and time of the copy's newest evidence), and stored messages by id.
// Nothing held is ever stale, as neither is ever rewritten; when it
// holds max entries it starts afresh. Values are shared, never changed.
type recall[V any] struct {
	mu  sync.Mutex
	m   map[string]V
	max int
}

func (r *recall[V]) get(key string) (V, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.m[key]
	return v, ok
}

func (r *recall[V]) put(key string, v V) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil || len(r.m) >= r.max {
		r.m = make(map[string]V)
	}
	r.m[key] = v
}
