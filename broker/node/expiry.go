package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/evidence"
)

// timeZero clears a copy's deadline.
var timeZero time.Time

// expireBatch is how many due copies one round of Expire handles.
const expireBatch = 256

// Expire gives up on every copy whose deadline has passed: a copy that
// could not be relayed before the message expired, and a delivered copy
// not retrieved within the retention time, each get NonDelivery evidence
// with the reason (sent back to the sender's node where that is another
// one). It returns how many copies it ended. A copy that moved on
// meanwhile (relayed, retrieved) is left as it is.
func (n *Node) Expire(ctx context.Context) (int, error) {
	ended := 0
	now := n.now()
	var after broker.Copy
	for {
		// Copies left alone (a relay under way, a final try awaited) stay
		// due; paging past them keeps them from holding up the rest.
		due, err := n.store.Due(ctx, now, after, expireBatch)
		if err != nil {
			return ended, fmt.Errorf("expire: %w", err)
		}
		for _, c := range due {
			ok, err := n.expireCopy(ctx, c)
			if err != nil {
				return ended, err
			}
			if ok {
				ended++
			}
		}
		if len(due) < expireBatch {
			return ended, nil
		}
		after = due[len(due)-1]
	}
}

// awaitsFinalTry reports whether a relaying copy of m waits for the final
// try of a relay whose outcome is unknown (see FinalTry).
func (n *Node) awaitsFinalTry(ctx context.Context, m *broker.Message, c broker.Copy) bool {
	o, err := n.store.OutboundEntry(ctx, address.DomainOf(c.Recipient), c.MessageID)
	return err == nil && n.stillRelayed(m, o, n.now())
}

// holdExpiring takes the relay of the relaying copy c of m for Expire to
// end it, and reports whether it may: not while a relay is under way in
// any process, nor while the final try of one is awaited. The final try
// is looked for first without a lease, so that Expire writes nothing for
// the copies it leaves alone each round (and keeps no other process off
// their final try), and again under the lease.
func (n *Node) holdExpiring(ctx context.Context, m *broker.Message, c broker.Copy) (release func(), ok bool, err error) {
	if n.awaitsFinalTry(ctx, m, c) {
		return nil, false, nil
	}
	release, ok, err = n.hold(ctx, address.DomainOf(c.Recipient), c.MessageID, expireLease)
	switch {
	case errors.Is(err, broker.ErrNotFound):
		// Not queued: no relay can start, and none is under way.
		return func() {}, true, nil
	case err != nil:
		return nil, false, fmt.Errorf("expire %s: %w", c.MessageID, err)
	case !ok:
		return nil, false, nil // a relay is under way; its answer decides
	}
	if n.awaitsFinalTry(ctx, m, c) {
		release()
		return nil, false, nil
	}
	return release, true, nil
}

func (n *Node) expireCopy(ctx context.Context, c broker.Copy) (bool, error) {
	m, err := n.store.Message(ctx, c.MessageID)
	if err != nil {
		return false, fmt.Errorf("expire %s: %w", c.MessageID, err)
	}
	var reason, push string
	switch {
	case c.State == broker.StateRelaying && !c.Local:
		release, ok, err := n.holdExpiring(ctx, m, c)
		if err != nil || !ok {
			return false, err
		}
		defer release()
		reason = fmt.Sprintf("not relayed to the node of %s before the message expired at %s", address.DomainOf(c.Recipient), m.Expires.Format(time.RFC3339))
	case c.State == broker.StateDelivered && c.Local:
		reason = fmt.Sprintf("not retrieved within %s of its delivery", n.limits.Retention)
		push = n.pushTo(m)
	default:
		return false, nil
	}
	prev, err := n.headStatement(ctx, &c)
	if err != nil {
		return false, err
	}
	ev, err := n.issueAt(m, c.Recipient, evidence.NonDelivery, c.Head, reason, laterOf(n.now(), prev.Time))
	if err != nil {
		return false, fmt.Errorf("expire %s: %w", c.MessageID, err)
	}
	next := c
	next.State, next.Head, next.Deadline = broker.StateUndeliverable, evidence.Digest(ev.DER), timeZero
	_, err = n.appendStep(ctx, broker.Step{Evidence: ev, PrevHead: c.Head, Next: next, Push: push})
	if errors.Is(err, broker.ErrConflict) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("expire %s: %w", c.MessageID, err)
	}
	n.log.Info("message not delivered", slog.String(broker.LogMsgID, c.MessageID), slog.String(broker.LogMailbox, c.Recipient), slog.String("reason", reason))
	return true, nil
}
