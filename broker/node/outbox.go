package node

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
)

// Relay is a message waiting for another domain's node, with what that
// node needs of it: the recipients of its domain still waiting, and each
// one's chain so far (each evidence with the log that holds it).
type Relay struct {
	Outbound   broker.Outbound
	Message    *broker.Message
	Recipients []string
	Chains     [][]broker.Evidence
	// More is set when the recipients waiting are more than one relay
	// carries (see maxRelayBatch): the rest go in the next.
	More bool
}

// Bounds of one relay's recipients, so that its header, with every
// recipient's chain, fits one gRPC message with room to spare.
const (
	maxRelayBatch      = 100
	maxRelayBatchBytes = 512 << 10
)

// Relays returns the messages queued for the node of domain whose next try
// is due by now (the relay worker's clock, which keeps the schedule) and
// that have not expired, from a page of up to limit queue entries after
// the message id after; next is where the following page starts, "" after
// the last. Each comes with its queue entry and message only: Claim, which
// the relay needs anyway, reads its recipients and chains. Entries of
// expired messages with no recipient left waiting (all given up
// meanwhile) are removed.
func (n *Node) Relays(ctx context.Context, domain string, now time.Time, after string, limit int) (relays []Relay, next string, err error) {
	queued, err := n.store.Outbound(ctx, domain, after, limit)
	if err != nil {
		return nil, "", err
	}
	if len(queued) > 0 && len(queued) == limit {
		next = queued[len(queued)-1].MessageID
	}
	out := make([]Relay, 0, len(queued))
	for _, o := range queued {
		if o.NextTry.After(now) {
			continue
		}
		m, err := n.store.Message(ctx, o.MessageID)
		if err != nil {
			return nil, "", fmt.Errorf("queued message %s: %w", o.MessageID, err)
		}
		if n.stillRelayed(m, o, n.now()) {
			out = append(out, Relay{Outbound: o, Message: m})
			continue
		}
		// Expire gives up on it; once it has, the entry can go.
		if err := n.dropFinished(ctx, o); err != nil {
			return nil, "", err
		}
	}
	return out, next, nil
}

// dropFinished removes the queue entry o if none of its recipients waits
// any more.
func (n *Node) dropFinished(ctx context.Context, o broker.Outbound) error {
	r, err := n.relayOf(ctx, o)
	if err != nil || len(r.Recipients) > 0 {
		return err
	}
	_, err = n.store.FinishRelay(ctx, o.Domain, o.MessageID, nil, true)
	return err
}

// FinalTry is how long after its expiry a message is still relayed if an
// earlier try may have reached the other node: one more answer tells
// whether it arrived there in time (the chain as it stands) or not (a
// RelayRejection), so that the sender's node never records NonDelivery for
// a message the recipient's node delivered.
const FinalTry = time.Hour

// stillRelayed reports whether m, queued as o, is to be relayed at now:
// before its expiry, or within FinalTry of it when the last try's outcome
// is unknown.
func (n *Node) stillRelayed(m *broker.Message, o broker.Outbound, now time.Time) bool {
	return now.Before(m.Expires) || o.Uncertain && now.Before(m.Expires.Add(FinalTry))
}

// Claim takes r for relaying until release is called, and returns it as
// it stands now, with its recipients and their chains. ok is false if
// there is nothing to relay now: its copies moved on, it expired, it was
// tried since r was listed, or Expire or another process sharing the
// store holds it (see RelayLease); then nothing is held, and an entry
// with no recipient left waiting is removed. While r is claimed, Expire
// in any process leaves its copies alone, so that a relay the other node
// accepted in time is not contradicted by a NonDelivery issued while the
// answer was on its way; and since Claim reads r again once it holds it,
// a relay never carries a copy that Expire has ended meanwhile.
func (n *Node) Claim(ctx context.Context, r Relay) (fresh Relay, release func(), ok bool, err error) {
	release, ok, err = n.hold(ctx, r.Outbound.Domain, r.Message.ID(), RelayLease)
	if errors.Is(err, broker.ErrNotFound) || err == nil && !ok {
		return Relay{}, nil, false, nil
	}
	if err != nil {
		return Relay{}, nil, false, err
	}
	o, err := n.store.OutboundEntry(ctx, r.Outbound.Domain, r.Message.ID())
	if err == nil {
		fresh, err = n.relayOf(ctx, o)
	}
	switch {
	case errors.Is(err, broker.ErrNotFound):
		release()
		return Relay{}, nil, false, nil
	case err != nil:
		release()
		return Relay{}, nil, false, err
	case len(fresh.Recipients) == 0:
		_, err := n.store.FinishRelay(ctx, o.Domain, o.MessageID, nil, true)
		release()
		return Relay{}, nil, false, err
	case o.Attempts != r.Outbound.Attempts || !o.NextTry.Equal(r.Outbound.NextTry):
		// Tried meanwhile, by another process sharing the store: its
		// schedule says when next, not the listing r came from.
		release()
		return Relay{}, nil, false, nil
	case !n.stillRelayed(fresh.Message, o, n.now()):
		release()
		return Relay{}, nil, false, nil
	}
	return fresh, release, true, nil
}

// RelayLease is how long a claim on a relay keeps the other processes
// sharing the store off it: longer than any one relay with its outcome
// recorded, so that a lease runs out only when its process died. A
// relay that a dead process held is tried again by another process once
// the lease has run out.
const RelayLease = 15 * time.Minute

// expireLease is how long Expire keeps a relay it decides about.
const expireLease = time.Minute

// hold takes the relay of message id to domain in this process (held) and
// in the store (a lease of this node's holder, for the processes sharing
// the store) for lease; ok is false if another holds it, and the error
// wraps broker.ErrNotFound if the message is not queued for domain.
// release gives both up again.
func (n *Node) hold(ctx context.Context, domain, id string, lease time.Duration) (release func(), ok bool, err error) {
	unhold, ok := n.held.try(holdKey(id, domain))
	if !ok {
		return nil, false, nil
	}
	now := n.now()
	ok, err = n.store.LeaseRelay(ctx, domain, id, n.holder, now, now.Add(lease))
	if err != nil || !ok {
		unhold()
		return nil, false, err
	}
	return func() {
		defer unhold()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		if err := n.store.ReleaseRelay(ctx, domain, id, n.holder); err != nil {
			n.log.Warn("relay lease not released; it runs out by itself", slog.String(broker.LogMsgID, id), slog.String(broker.LogPeer, domain), slog.Any(broker.LogErr, err))
		}
	}, true, nil
}

// newHolder names the leases of a node without a Config.Holder. One
// node's relay worker and Expire, which keep apart in held, take the
// store's leases as one holder.
func newHolder() string { return rand.Text() }

// maxHolder bounds Config.Holder, which the store keeps with each lease.
const maxHolder = 512

// releaseTimeout bounds giving up a lease, which runs out anyway.
const releaseTimeout = 10 * time.Second

// holdKey names the relay of message id to domain, which Claim and Expire
// take in turn.
func holdKey(id, domain string) string { return domain + " " + id }

// holds are the relays claimed, and the copies Expire is deciding about.
type holds struct {
	mu sync.Mutex
	m  map[string]bool
}

// try takes key if nobody holds it.
func (h *holds) try(key string) (release func(), ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m[key] {
		return nil, false
	}
	if h.m == nil {
		h.m = map[string]bool{}
	}
	h.m[key] = true
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.m, key)
	}, true
}

func (n *Node) relayOf(ctx context.Context, o broker.Outbound) (Relay, error) {
	m, err := n.store.Message(ctx, o.MessageID)
	if err != nil {
		return Relay{}, fmt.Errorf("queued message %s: %w", o.MessageID, err)
	}
	all, err := n.store.Evidence(ctx, o.MessageID)
	if err != nil {
		return Relay{}, fmt.Errorf("queued message %s: %w", o.MessageID, err)
	}
	r := Relay{Outbound: o, Message: m}
	size := len(m.Envelope) + len(m.Signature)
	for _, to := range m.Header.To {
		if address.DomainOf(to) != o.Domain {
			continue
		}
		c, err := n.store.Copy(ctx, m.ID(), to)
		if err != nil {
			return Relay{}, fmt.Errorf("queued message %s: %w", o.MessageID, err)
		}
		if c.State != broker.StateRelaying || c.Local {
			continue
		}
		var chain []broker.Evidence
		chainBytes := 0
		for _, ev := range all {
			if ev.Recipient == to {
				chain = append(chain, n.withLog(ev))
				chainBytes += len(ev.DER) + len(to) + 64
			}
		}
		if len(r.Recipients) == maxRelayBatch || len(r.Recipients) > 0 && size+chainBytes > maxRelayBatchBytes {
			r.More = true
			break
		}
		size += chainBytes
		r.Recipients = append(r.Recipients, to)
		r.Chains = append(r.Chains, chain)
	}
	return r, nil
}

// withLog names the node's own log in ev where it is implied.
func (n *Node) withLog(ev broker.Evidence) broker.Evidence {
	if ev.Log == "" {
		ev.Log = n.LogOrigin()
	}
	return ev
}

// OpenPayload opens the sealed payload of a message to relay it.
func (n *Node) OpenPayload(ctx context.Context, m *broker.Message) (io.ReadCloser, error) {
	r, err := n.store.OpenBlob(ctx, m.Blob)
	if err != nil {
		return nil, fmt.Errorf("open payload of %s: %w", m.ID(), err)
	}
	return r, nil
}

// Relayed records the answer of peer, the node r was relayed to:
// answer[i] is the evidence it added to the chain of r.Recipients[i]
// (RelayAcceptance and Delivery, or RelayRejection), each with its log. It
// verifies all of it first; a RelayRejection is followed by this node's
// NonDelivery. Everything is stored, and the message leaves the queue, in
// one transaction.
func (n *Node) Relayed(ctx context.Context, r Relay, peer pki.Peer, answer [][]broker.Evidence) error {
	if len(answer) != len(r.Recipients) {
		return fmt.Errorf("%w: the node of %s answered for %d recipients, not %d", broker.ErrInvalid, r.Outbound.Domain, len(answer), len(r.Recipients))
	}
	var steps []broker.Step
	for i, to := range r.Recipients {
		s, err := n.relaySteps(peer, r, i, answer[i])
		if err != nil {
			return fmt.Errorf("answer for %s: %w", to, err)
		}
		steps = append(steps, s...)
	}
	if _, err := n.store.FinishRelay(ctx, r.Outbound.Domain, r.Message.ID(), steps, !r.More); err != nil {
		return err
	}
	if r.More {
		// The rest, at once, with a fresh record: none of them was sent.
		o := broker.Outbound{Domain: r.Outbound.Domain, MessageID: r.Message.ID(), NextTry: n.now().UTC()}
		if err := n.store.SetOutbound(ctx, o); err != nil {
			return err
		}
		n.queued(r.Outbound.Domain)
	}
	for _, s := range steps {
		n.log.Info("relay: "+s.Evidence.Type, slog.String(broker.LogMsgID, r.Message.ID()), slog.String(broker.LogMailbox, s.Evidence.Recipient), slog.String(broker.LogPeer, r.Outbound.Domain))
	}
	return nil
}

// relaySteps checks the answer for recipient i of r and turns it into
// steps of its copy.
func (n *Node) relaySteps(peer pki.Peer, r Relay, i int, answer []broker.Evidence) ([]broker.Step, error) {
	m, to, chain := r.Message, r.Recipients[i], r.Chains[i]
	if !peer.Serves(address.DomainOf(to)) {
		return nil, fmt.Errorf("%w: %s does not serve the domain of %s", broker.ErrForbidden, peer, to)
	}
	if len(answer) == 0 || len(answer) > MaxChain {
		return nil, fmt.Errorf("%w: 1 to %d evidence, not %d", broker.ErrInvalid, MaxChain, len(answer))
	}
	links, err := n.extend(peer, m, to, chain, answer)
	if err != nil {
		return nil, err
	}
	if first := links[len(chain)].Statement.Type; first != evidence.RelayAcceptance && first != evidence.RelayRejection {
		return nil, fmt.Errorf("%w: the answer starts with %s, not RelayAcceptance or RelayRejection", broker.ErrInvalid, first)
	}
	head := links[len(chain)-1].Digest
	c := broker.Copy{MessageID: m.ID(), Recipient: to, State: broker.StateRelaying}
	var steps []broker.Step
	for j, ev := range answer {
		st := links[len(chain)+j].Statement
		ev.MessageID, ev.Sender, ev.Recipient, ev.Type = m.ID(), m.Header.From, to, string(st.Type)
		c.State, c.Head = stateAfter(st.Type, c.State), links[len(chain)+j].Digest
		steps = append(steps, broker.Step{Evidence: ev, PrevHead: head, Next: c})
		head = c.Head
	}
	last := links[len(links)-1].Statement
	if last.Type != evidence.RelayRejection {
		return steps, nil
	}
	nd, err := n.issueAt(m, to, evidence.NonDelivery, head, fmt.Sprintf("the node of %s refused the message: %s", r.Outbound.Domain, last.Reason), laterOf(n.now(), last.Time))
	if err != nil {
		return nil, err
	}
	c.State, c.Head = broker.StateUndeliverable, evidence.Digest(nd.DER)
	return append(steps, broker.Step{Evidence: nd, PrevHead: head, Next: c}), nil
}

// extend verifies evidence that peer adds to the chain of m's copy for to
// (each valid now, about m and to, in peer's log) and returns the links of
// the whole chain, checked as one.
func (n *Node) extend(peer pki.Peer, m *broker.Message, to string, chain, more []broker.Evidence) ([]evidence.Link, error) {
	links := make([]evidence.Link, 0, len(chain)+len(more))
	for _, ev := range chain {
		e, err := evidence.Parse(ev.DER)
		if err != nil {
			return nil, fmt.Errorf("stored evidence of %s: %w", m.ID(), err)
		}
		links = append(links, e.Link())
	}
	for _, ev := range more {
		e, err := n.verifyAbout(m, to, ev.DER)
		if err != nil {
			return nil, err
		}
		if err := checkLog(peer, ev.Log); err != nil {
			return nil, err
		}
		links = append(links, e.Link())
	}
	if err := evidence.CheckChain(links); err != nil {
		return nil, fmt.Errorf("%w: the evidence does not continue the chain: %v", broker.ErrState, err)
	}
	return links, nil
}

// GiveUp ends the relay of r for good: each of its recipients gets this
// node's NonDelivery with the reason, and the message leaves the queue when
// no recipient is left. For a refusal that no later try can change (the
// other node holds another message under the same id).
func (n *Node) GiveUp(ctx context.Context, r Relay, reason string) error {
	var steps []broker.Step
	for i, to := range r.Recipients {
		last, err := evidence.Parse(r.Chains[i][len(r.Chains[i])-1].DER)
		if err != nil {
			return fmt.Errorf("give up %s: %w", r.Message.ID(), err)
		}
		nd, err := n.issueAt(r.Message, to, evidence.NonDelivery, last.Digest(), reason, laterOf(n.now(), last.Statement.Time))
		if err != nil {
			return fmt.Errorf("give up %s: %w", r.Message.ID(), err)
		}
		next := broker.Copy{MessageID: r.Message.ID(), Recipient: to, State: broker.StateUndeliverable, Head: evidence.Digest(nd.DER)}
		steps = append(steps, broker.Step{Evidence: nd, PrevHead: last.Digest(), Next: next})
	}
	if _, err := n.store.FinishRelay(ctx, r.Outbound.Domain, r.Message.ID(), steps, !r.More); err != nil {
		return fmt.Errorf("give up %s: %w", r.Message.ID(), err)
	}
	n.log.Warn("relay given up", slog.String(broker.LogMsgID, r.Message.ID()), slog.String(broker.LogPeer, r.Outbound.Domain), slog.String("reason", reason))
	return nil
}

// Sending records, durably, that r is about to reach the other node, so
// that its outcome counts as unknown (broker.Outbound.Uncertain) until an
// answer is recorded, even if this process dies before it can say so.
func (n *Node) Sending(ctx context.Context, r Relay) error {
	if r.Outbound.Uncertain {
		return nil
	}
	o := r.Outbound
	o.Uncertain = true
	if err := n.store.SetOutbound(ctx, o); err != nil {
		return fmt.Errorf("relay %s: %w", r.Message.ID(), err)
	}
	return nil
}

// RelayFailed records a failed attempt to relay r and when to try next;
// uncertain says that the attempt may have reached the other node. A
// message that left the queue meanwhile is not an error.
func (n *Node) RelayFailed(ctx context.Context, r Relay, cause error, next time.Time, uncertain bool) error {
	o := r.Outbound
	o.Attempts++
	o.NextTry = next.UTC()
	o.LastError = truncate(cause.Error(), 512)
	o.Uncertain = o.Uncertain || uncertain
	if err := n.store.SetOutbound(ctx, o); err != nil && !errors.Is(err, broker.ErrNotFound) {
		return err
	}
	return nil
}

// Pushes returns up to limit evidence waiting to be sent to the node of
// domain, in order of issue from leaf index from on, each naming this
// node's log.
func (n *Node) Pushes(ctx context.Context, domain string, from uint64, limit int) ([]broker.Evidence, error) {
	evs, err := n.store.Pushes(ctx, domain, from, limit)
	if err != nil {
		return nil, err
	}
	for i := range evs {
		evs[i] = n.withLog(evs[i])
	}
	return evs, nil
}

// appendStep applies one step to a copy and tells the relay worker of the
// evidence it queued, if any.
func (n *Node) appendStep(ctx context.Context, s broker.Step) (broker.Evidence, error) {
	ev, err := n.store.AppendEvidence(ctx, s)
	if err == nil && s.Push != "" {
		n.queued(s.Push)
	}
	return ev, err
}

// Pushed records that the node of domain has, or will never take, ev.
func (n *Node) Pushed(ctx context.Context, domain string, ev broker.Evidence) error {
	return n.store.DeletePush(ctx, domain, ev.LeafIndex)
}
