package node

import (
	"context"
	"fmt"
	"time"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
)

// SentMessage is a message as its sender's outbox lists it: the stored
// message and where each recipient's copy stands.
type SentMessage struct {
	Message *broker.Message
	// Recipients are in the order of the envelope's recipients.
	Recipients []RecipientState
}

// RecipientState is where one recipient's copy of a sent message stands,
// by the newest evidence about it that the node holds: its own, or for a
// recipient of another node, what that node sent back.
type RecipientState struct {
	Address string
	State   broker.State
	// Evidence is the type of the newest evidence of the copy's chain,
	// Time the time it states, Reason the reason it gives (a rejection's
	// or a non-delivery's; empty for the others).
	Evidence evidence.Type
	Time     time.Time
	Reason   string
}

// Sent returns one page of the messages the caller sent through this
// node, newest first, and the token of the next page ("" after the last).
//
// Security: the sender is the caller's certificate address, never a
// request field, and a page token only names a position among the
// caller's own messages, so no token leads to another sender's. A caller
// of a domain this node does not serve has sent nothing through it and is
// told to ask its home node (broker.ErrForbidden).
func (n *Node) Sent(ctx context.Context, caller pki.Peer, pageToken string, pageSize int) ([]SentMessage, string, error) {
	if err := requireParticipant(caller); err != nil {
		return nil, "", err
	}
	if d := address.DomainOf(caller.Address); !n.domains[d] {
		return nil, "", fmt.Errorf("%w: this node does not serve %s; list the messages you sent at your home node", broker.ErrForbidden, d)
	}
	entries, next, err := n.store.Sent(ctx, caller.Address, pageToken, pageSize)
	if err != nil {
		return nil, "", fmt.Errorf("list messages sent by %s: %w", caller.Address, err)
	}
	out := make([]SentMessage, 0, len(entries))
	for _, e := range entries {
		if e.Message == nil || e.Message.Header == nil || e.Message.Header.From != caller.Address {
			// The store's index is by sender; a stray entry is not shown.
			continue
		}
		rs, err := n.recipientStates(ctx, e)
		if err != nil {
			return nil, "", err
		}
		out = append(out, SentMessage{Message: e.Message, Recipients: rs})
	}
	return out, next, nil
}

// recipientStates reads where each copy of e stands from the statement of
// its newest evidence: from the statements recalled, or, if one is not,
// from the message's evidence, loaded once for all its copies.
func (n *Node) recipientStates(ctx context.Context, e broker.SentEntry) ([]RecipientState, error) {
	id := e.Message.ID()
	byRcpt := make(map[string]broker.Copy, len(e.Copies))
	heads := make(map[string]bool, len(e.Copies))
	for _, c := range e.Copies {
		byRcpt[c.Recipient], heads[c.Head] = c, true
	}
	var loaded map[string]*evidence.Statement // by digest, once loaded
	statement := func(c broker.Copy) (*evidence.Statement, error) {
		if st, ok := n.heads.get(c.Head); ok {
			return st, nil
		}
		if loaded == nil {
			evs, err := n.store.Evidence(ctx, id)
			if err != nil {
				return nil, fmt.Errorf("evidence of %s: %w", id, err)
			}
			loaded = make(map[string]*evidence.Statement, len(e.Copies))
			for _, ev := range evs {
				if d := evidence.Digest(ev.DER); heads[d] {
					parsed, err := evidence.Parse(ev.DER)
					if err != nil {
						return nil, fmt.Errorf("evidence of %s: stored evidence unreadable: %w", id, err)
					}
					loaded[d] = parsed.Statement
					n.heads.put(d, parsed.Statement)
				}
			}
		}
		st := loaded[c.Head]
		if st == nil {
			return nil, fmt.Errorf("evidence of %s: newest evidence %s of %s missing from the store", id, c.Head, c.Recipient)
		}
		return st, nil
	}
	out := make([]RecipientState, 0, len(e.Copies))
	for _, rcpt := range e.Message.Header.To {
		c, ok := byRcpt[rcpt]
		if !ok {
			continue // no copy for it here (never stored, so never accepted)
		}
		st, err := statement(c)
		if err != nil {
			return nil, err
		}
		out = append(out, RecipientState{Address: rcpt, State: c.State, Evidence: st.Type, Time: st.Time, Reason: st.Reason})
	}
	return out, nil
}
