package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/tlog"
)

// Bounds of what one relay carries: recipients (a message has at most
// envelope.MaxRecipients), and the evidence of one recipient's chain (a
// SubmissionAcceptance, and relay evidence of intermediaries).
const (
	MaxRelayRecipients = envelope.MaxRecipients
	MaxChain           = 8
)

// Incoming is a message that another node relays to this one.
type Incoming struct {
	Envelope, Signature []byte
	// Recipients are those the relay is for, recipients of the message in
	// this node's domains.
	Recipients []string
	// Chains holds each recipient's chain at the relaying node so far
	// (its SubmissionAcceptance first), each evidence with the log it is in.
	Chains [][]broker.Evidence
	// Expires is the message's expiry at the relaying node; zero if it
	// names none.
	Expires time.Time
}

// Receive accepts a message relayed by caller, another node: it checks the
// message as a submission is checked, stores it with a copy in each
// recipient's mailbox, and returns for each recipient, in the order of
// in.Recipients, the evidence this node adds to its chain: RelayAcceptance
// and Delivery, or RelayRejection with the reason (an unknown mailbox, a
// payload over this node's limit, an expired message). The same message
// relayed again is stored once, and refused once; the answer is then each
// chain as it stands.
//
// Security: only a node that serves the sender's domain may relay its
// messages; the envelope must be signed by the sender's valid certificate
// and each chain by the nodes that issued it. A message stored before is
// recognised by its envelope's digest alone, so that the relaying node
// learns what became of it even after the sender's certificate has
// expired or been revoked. A refusal of the relay itself (anything but a
// RelayRejection) is an error, and the relaying node tries again later.
func (n *Node) Receive(ctx context.Context, caller pki.Peer, in Incoming, payload io.Reader) ([][]broker.Evidence, error) {
	if caller.Kind != pki.KindNode {
		return nil, fmt.Errorf("%w: only node certificates may relay messages, not %s", broker.ErrForbidden, caller)
	}
	env, err := parseEnvelope(in.Envelope)
	if err != nil {
		return nil, err
	}
	if !caller.Serves(address.DomainOf(env.From)) {
		return nil, fmt.Errorf("%w: %s does not serve %s, the domain of the sender %s; a node relays only for its own domains", broker.ErrForbidden, caller, address.DomainOf(env.From), env.From)
	}
	if err := n.checkRecipients(env, in); err != nil {
		return nil, err
	}
	// Relays are limited per relaying node, not per sender: the node
	// answers for its domains' traffic.
	if err := n.admit.takeMessage(caller, n.now()); err != nil {
		return nil, fmt.Errorf("receive %s: %w", env.ID, err)
	}
	prev, err := n.store.Message(ctx, env.ID)
	switch {
	case err == nil && prev.EnvelopeSHA256 != envelope.Digest(in.Envelope):
		return nil, fmt.Errorf("%w: message id %s was already used here for another message", broker.ErrDuplicate, env.ID)
	case err == nil:
		return n.receiveAgain(ctx, caller, prev, in)
	case !errors.Is(err, broker.ErrNotFound):
		return nil, fmt.Errorf("receive %s: %w", env.ID, err)
	}
	m, err := n.verifyEnvelope(env, in.Envelope, in.Signature)
	if err != nil {
		return nil, err
	}
	for i, to := range in.Recipients {
		if err := n.checkChain(caller, m, to, in.Chains[i], evidence.RelayAcceptance); err != nil {
			return nil, fmt.Errorf("chain of %s: %w", to, err)
		}
	}
	if d := address.DomainOf(env.From); n.peers == nil || !n.peers.Knows(d) {
		n.log.Warn("relayed message from a domain without a configured peer: evidence about it cannot be sent back", slog.String(broker.LogMsgID, env.ID), slog.String(broker.LogPeer, caller.String()))
	}
	return n.receiveNew(ctx, caller, m, in, payload)
}

// checkRecipients checks a relay's recipients: of the message, of this
// node's domains, none twice, each with a chain.
func (n *Node) checkRecipients(env *envelope.Envelope, in Incoming) error {
	// The sender's node applied its own recipient limit; the format's
	// bounds this one, so that nodes with different limits still relay.
	if len(in.Recipients) == 0 || len(in.Recipients) > MaxRelayRecipients {
		return fmt.Errorf("%w: a relay names 1 to %d recipients, not %d", broker.ErrInvalid, MaxRelayRecipients, len(in.Recipients))
	}
	if len(in.Chains) != len(in.Recipients) {
		return fmt.Errorf("%w: %d chains for %d recipients", broker.ErrInvalid, len(in.Chains), len(in.Recipients))
	}
	seen := make(map[string]bool, len(in.Recipients))
	for i, to := range in.Recipients {
		switch {
		case !slices.Contains(env.To, to):
			return fmt.Errorf("%w: %s is not a recipient of message %s", broker.ErrInvalid, envelope.Quote(to), env.ID)
		case !n.domains[address.DomainOf(to)]:
			return fmt.Errorf("%w: %s is not in a domain of this node", broker.ErrInvalid, to)
		case seen[to]:
			return fmt.Errorf("%w: recipient %s named twice", broker.ErrInvalid, to)
		case len(in.Chains[i]) == 0 || len(in.Chains[i]) > MaxChain:
			return fmt.Errorf("%w: the chain of %s has %d evidence, a relay carries 1 to %d", broker.ErrInvalid, to, len(in.Chains[i]), MaxChain)
		}
		seen[to] = true
	}
	return nil
}

// checkChain verifies evidence of message m for recipient to that another
// node (from) hands over: each signed by whom its type requires, valid
// now, about m and to, in a log that from speaks for, together one chain
// that next may continue.
func (n *Node) checkChain(from pki.Peer, m *broker.Message, to string, chain []broker.Evidence, next evidence.Type) error {
	if len(chain) == 0 || len(chain) > MaxChain {
		return fmt.Errorf("%w: 1 to %d evidence, not %d", broker.ErrInvalid, MaxChain, len(chain))
	}
	links := make([]evidence.Link, len(chain))
	for i, e := range chain {
		ev, err := n.verifyAbout(m, to, e.DER)
		if err != nil {
			return err
		}
		if err := checkLog(from, e.Log); err != nil {
			return err
		}
		links[i] = ev.Link()
	}
	if err := evidence.CheckChain(links); err != nil {
		return fmt.Errorf("%w: %v", broker.ErrInvalid, err)
	}
	if last := links[len(links)-1].Statement.Type; !evidence.Allowed(last, next) {
		return fmt.Errorf("%w: %s cannot follow %s", broker.ErrState, next, last)
	}
	return nil
}

// verifyAbout verifies one evidence file, valid now, about m and recipient
// to.
func (n *Node) verifyAbout(m *broker.Message, to string, der []byte) (*evidence.Evidence, error) {
	ev, err := evidence.Verify(der, cms.Policy{Trust: n.trust, At: n.now()})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", broker.ErrSignature, err)
	}
	st := ev.Statement
	if st.MessageID != m.ID() || st.Recipient != to || st.Sender != m.Header.From ||
		st.EnvelopeSHA256 != m.EnvelopeSHA256 || st.PayloadSHA256 != m.Header.PayloadSHA256 {
		return nil, fmt.Errorf("%w: %s evidence is not about message %s for %s", broker.ErrInvalid, st.Type, m.ID(), to)
	}
	return ev, nil
}

// checkLog checks that the log origin another node names for its evidence
// is one of that node's domains' logs.
func checkLog(from pki.Peer, origin string) error {
	d, err := tlog.OriginDomain(origin)
	if err != nil {
		return fmt.Errorf("%w: evidence log %s is not the log of a Kurier node's domain", broker.ErrInvalid, envelope.Quote(origin))
	}
	if !from.Serves(d) {
		return fmt.Errorf("%w: %s names the log %s, which is not its own", broker.ErrForbidden, from, envelope.Quote(origin))
	}
	return nil
}

// receiveNew stores a message relayed here for the first time.
func (n *Node) receiveNew(ctx context.Context, caller pki.Peer, m *broker.Message, in Incoming, payload io.Reader) ([][]broker.Evidence, error) {
	refused := n.refusal(m, in)
	prior, err := n.priorRejections(ctx, m.ID(), in)
	if err != nil {
		return nil, err
	}
	accepted := 0
	for _, to := range in.Recipients {
		if _, ok := n.dir[to]; ok && refused == nil && prior[to] == nil {
			accepted++
		}
	}
	if accepted == 0 {
		_, evs, answer, err := n.relayAcceptance(m, in, refused, prior)
		if err != nil {
			return nil, fmt.Errorf("receive %s: %w", m.ID(), err)
		}
		return n.storeRejections(ctx, m, evs, answer)
	}
	end, err := n.admitPayload(caller, m)
	if err != nil {
		return nil, fmt.Errorf("receive %s: %w", m.ID(), err)
	}
	out, err := n.receivePayload(ctx, m, in, refused, prior, payload)
	end(err == nil || errors.Is(err, broker.ErrUnknownOutcome))
	return out, err
}

// receivePayload stores the payload of an admitted relay, then the
// message with its copies and evidence.
func (n *Node) receivePayload(ctx context.Context, m *broker.Message, in Incoming, refused error, prior map[string]*broker.Evidence, payload io.Reader) ([][]broker.Evidence, error) {
	if err := n.storePayload(ctx, m, payload, func(err error) error { return err }); err != nil {
		return nil, err
	}
	copies, evs, answer, err := n.relayAcceptance(m, in, refused, prior)
	if err != nil {
		n.dropBlob(ctx, m.Blob)
		return nil, fmt.Errorf("receive %s: %w", m.ID(), err)
	}
	stored, err := n.store.CreateMessage(ctx, m, copies, evs, nil)
	if errors.Is(err, broker.ErrExists) {
		// A concurrent relay of the same message won.
		n.dropBlob(ctx, m.Blob)
		return n.receiveAgain(ctx, pki.Peer{}, m, in)
	}
	if err != nil {
		err = commitError("receive "+m.ID(), err)
		if !errors.Is(err, broker.ErrUnknownOutcome) {
			n.dropBlob(ctx, m.Blob)
		}
		return nil, err
	}
	n.announce(ctx, m, copies)
	n.log.Info("relayed message accepted", slog.String(broker.LogMsgID, m.ID()), slog.String(broker.LogMailbox, m.Header.From), slog.Int("recipients", len(copies)))
	return ownAnswer(stored, answer), nil
}

// refusal returns why every recipient of a relay is refused, or nil: the
// message expired (by the envelope or by the relaying node's expiry), or
// its payload is over this node's limit.
func (n *Node) refusal(m *broker.Message, in Incoming) error {
	now := n.now()
	for _, exp := range []time.Time{m.Header.Expires, in.Expires} {
		if !exp.IsZero() && !exp.After(now) {
			return fmt.Errorf("the message expired at %s, before it reached this node", exp.UTC().Format(time.RFC3339))
		}
	}
	if m.Header.PayloadSize > n.limits.MaxPayload {
		return fmt.Errorf("payload of %d bytes is over this node's maximum of %d bytes", m.Header.PayloadSize, n.limits.MaxPayload)
	}
	return nil
}

// priorRejections returns the RelayRejections this node issued before for
// this envelope's recipients in in, by recipient: a relay refused again
// gets the same answer, and the log the same leaf. A recipient refused
// before after another chain is an error: the relaying node's chain for a
// message does not change, so a new one is either a mistake or an attempt
// to have this node sign rejection after rejection.
func (n *Node) priorRejections(ctx context.Context, id string, in Incoming) (map[string]*broker.Evidence, error) {
	all, err := n.store.Evidence(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("receive %s: %w", id, err)
	}
	envSHA := envelope.Digest(in.Envelope)
	prior := map[string]*broker.Evidence{}
	for i, to := range in.Recipients {
		head := evidence.Digest(in.Chains[i][len(in.Chains[i])-1].DER)
		for j := range all {
			ev := &all[j]
			if ev.Recipient != to || ev.Type != string(evidence.RelayRejection) {
				continue
			}
			st, err := evidence.Parse(ev.DER)
			if err != nil || st.Statement.EnvelopeSHA256 != envSHA {
				continue
			}
			if st.Statement.PreviousSHA256 != head {
				return nil, fmt.Errorf("%w: %s was refused this message before, after another SubmissionAcceptance; relay it with the chain it had then", broker.ErrInvalid, to)
			}
			prior[to] = ev
		}
	}
	return prior, nil
}

// storeRejections stores the new RelayRejections (evs) of a message that
// no recipient here accepts; the message itself is not kept. They are
// handed to the store together, so that they share a commit.
func (n *Node) storeRejections(ctx context.Context, m *broker.Message, evs []broker.Evidence, answer [][]broker.Evidence) ([][]broker.Evidence, error) {
	stored := make([]broker.Evidence, len(evs))
	errs := make([]error, len(evs))
	var wg sync.WaitGroup
	for i := range evs {
		wg.Go(func() { stored[i], errs[i] = n.store.AddEvidence(ctx, evs[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, commitError("receive "+m.ID(), err)
	}
	n.log.Info("relayed message refused", slog.String(broker.LogMsgID, m.ID()), slog.String(broker.LogMailbox, m.Header.From), slog.Int("recipients", len(answer)))
	return ownAnswer(stored, answer), nil
}

// relayAcceptance builds the copies and evidence of a relayed message:
// each recipient's chain as handed over, then RelayAcceptance and
// Delivery, or RelayRejection for a recipient without a mailbox here (or
// for all of them, if refused is not nil: it is the reason); a recipient
// refused before (prior) gets that rejection again. answer[i] holds the
// new evidence of recipient i; evs holds what is to be stored.
func (n *Node) relayAcceptance(m *broker.Message, in Incoming, refused error, prior map[string]*broker.Evidence) ([]broker.Copy, []broker.Evidence, [][]broker.Evidence, error) {
	var copies []broker.Copy
	var evs []broker.Evidence
	answer := make([][]broker.Evidence, len(in.Recipients))
	for i, to := range in.Recipients {
		if p := prior[to]; p != nil {
			answer[i] = []broker.Evidence{*p}
			continue
		}
		last := in.Chains[i][len(in.Chains[i])-1]
		head := evidence.Digest(last.DER)
		prev, err := evidence.Parse(last.DER) // verified by checkChain
		if err != nil {
			return nil, nil, nil, err
		}
		// The chain's times never go backwards, even if this node's clock
		// is behind the relaying node's.
		at := laterOf(n.now(), prev.Statement.Time)
		reason := refused
		if _, ok := n.dir[to]; !ok && reason == nil {
			reason = fmt.Errorf("no mailbox %s", to)
		}
		if reason != nil {
			rej, err := n.issueAt(m, to, evidence.RelayRejection, head, reason.Error(), at)
			if err != nil {
				return nil, nil, nil, err
			}
			answer[i] = []broker.Evidence{rej}
			evs = append(evs, rej)
			continue
		}
		for _, e := range in.Chains[i] {
			parsed, err := evidence.Parse(e.DER) // verified by checkChain
			if err != nil {
				return nil, nil, nil, err
			}
			evs = append(evs, broker.Evidence{Log: e.Log, LeafIndex: e.LeafIndex, MessageID: m.ID(), Sender: m.Header.From, Recipient: to, Type: string(parsed.Statement.Type), DER: e.DER})
		}
		for _, typ := range []evidence.Type{evidence.RelayAcceptance, evidence.Delivery} {
			ev, err := n.issueAt(m, to, typ, head, "", at)
			if err != nil {
				return nil, nil, nil, err
			}
			answer[i] = append(answer[i], ev)
			evs = append(evs, ev)
			head = evidence.Digest(ev.DER)
		}
		copies = append(copies, broker.Copy{
			MessageID: m.ID(), Recipient: to, Received: m.Received, State: broker.StateDelivered,
			Head: head, Local: true, Deadline: m.Received.Add(n.limits.Retention),
		})
	}
	return copies, evs, answer, nil
}

// ownAnswer replaces the evidence in answer by the stored versions, which
// carry their leaf indexes.
func ownAnswer(stored []broker.Evidence, answer [][]broker.Evidence) [][]broker.Evidence {
	byDER := make(map[string]broker.Evidence, len(stored))
	for _, ev := range stored {
		byDER[string(ev.DER)] = ev
	}
	for _, evs := range answer {
		for j, ev := range evs {
			if s, ok := byDER[string(ev.DER)]; ok {
				evs[j] = s
			}
		}
	}
	return answer
}

// receiveAgain answers a relay of a message stored before: each
// recipient's chain after what the relaying node holds (or the rejection
// issued before), and new copies for recipients that have none yet (their
// chains verified and their evidence issued now, the payload being stored
// already). caller is the relaying node; its zero value means the chains
// were verified already.
func (n *Node) receiveAgain(ctx context.Context, caller pki.Peer, m *broker.Message, in Incoming) ([][]broker.Evidence, error) {
	all, err := n.store.Evidence(ctx, m.ID())
	if err != nil {
		return nil, fmt.Errorf("receive %s: %w", m.ID(), err)
	}
	prior, err := n.priorRejections(ctx, m.ID(), in)
	if err != nil {
		return nil, err
	}
	answer := make([][]broker.Evidence, len(in.Recipients))
	var missing Incoming
	var where []int
	for i, to := range in.Recipients {
		after := evidence.Digest(in.Chains[i][len(in.Chains[i])-1].DER)
		if rest, ok := chainAfter(all, to, after); ok {
			answer[i] = rest
			continue
		}
		if p := prior[to]; p != nil {
			answer[i] = []broker.Evidence{*p}
			continue
		}
		if caller.Kind != 0 {
			if err := n.checkChain(caller, m, to, in.Chains[i], evidence.RelayAcceptance); err != nil {
				return nil, fmt.Errorf("chain of %s: %w", to, err)
			}
		}
		missing.Recipients = append(missing.Recipients, to)
		missing.Chains = append(missing.Chains, in.Chains[i])
		where = append(where, i)
	}
	if len(where) == 0 {
		return answer, nil
	}
	missing.Expires = in.Expires
	copies, evs, more, err := n.relayAcceptance(m, missing, n.refusal(m, missing), nil)
	if err != nil {
		return nil, fmt.Errorf("receive %s: %w", m.ID(), err)
	}
	stored, err := n.store.AddCopies(ctx, m.ID(), m.EnvelopeSHA256, copies, evs)
	if err != nil {
		return nil, commitError("receive "+m.ID(), err)
	}
	n.announce(ctx, m, copies)
	more = ownAnswer(stored, more)
	for j, i := range where {
		answer[i] = more[j]
	}
	return answer, nil
}

// chainAfter returns the evidence of rcpt that follows the evidence with
// digest after, and whether that evidence is stored at all.
func chainAfter(all []broker.Evidence, rcpt, after string) ([]broker.Evidence, bool) {
	for i, ev := range all {
		if ev.Recipient != rcpt || evidence.Digest(ev.DER) != after {
			continue
		}
		var rest []broker.Evidence
		for _, e := range all[i+1:] {
			if e.Recipient == rcpt {
				rest = append(rest, e)
			}
		}
		return rest, len(rest) > 0
	}
	return nil, false
}

// pushTo names the domain whose node must be sent evidence about m: the
// sender's, if that is not this node's own and a node is configured for
// it (with none, nothing would ever take the evidence from the queue);
// "" otherwise.
func (n *Node) pushTo(m *broker.Message) string {
	if d := address.DomainOf(m.Header.From); !n.domains[d] && n.peers != nil && n.peers.Knows(d) {
		return d
	}
	return ""
}

// stateAfter is the state a copy is in after evidence of type t.
func stateAfter(t evidence.Type, cur broker.State) broker.State {
	switch t {
	case evidence.Delivery:
		return broker.StateDelivered
	case evidence.Retrieval:
		return broker.StateRetrieved
	case evidence.Acknowledgement:
		return broker.StateAcknowledged
	case evidence.Rejection:
		return broker.StateRejected
	case evidence.RelayRejection, evidence.NonDelivery, evidence.SubmissionRejection:
		return broker.StateUndeliverable
	}
	return cur
}

// laterOf returns t, or not before if t is earlier: evidence times never go
// backwards in a chain, even if the node's clock is set back.
func laterOf(t, notBefore time.Time) time.Time {
	if t.Before(notBefore) {
		return notBefore
	}
	return t
}
