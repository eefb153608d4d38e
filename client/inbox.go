package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"kurier.dev/kurier/envelope"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// maxInboxPages bounds how many pages Inbox follows, so that a node that
// keeps handing out page tokens cannot keep the client busy forever.
const maxInboxPages = 100_000

// InboxEntry is one message in the mailbox as a listing shows it.
//
// ID, From, Subject, Type, Reference and Size are read from the envelope
// the sender signed (as the node passes it on); its signature is checked
// only by Fetch. Received and State are the node's.
type InboxEntry struct {
	ID, From, Subject, Type, Reference string
	// State is "delivered", "retrieved", "acknowledged" or "rejected"
	// ("undeliverable" once NonDelivery ended it).
	State    string
	Received time.Time
	// Size is the size of the sealed payload in bytes.
	Size int64
}

// Inbox lists the whole mailbox, oldest first.
func (c *Client) Inbox(ctx context.Context) ([]InboxEntry, error) {
	var out []InboxEntry
	token := ""
	for range maxInboxPages {
		resp, err := c.mailbox.ListInbox(ctx, &kurierv1.ListInboxRequest{PageToken: token})
		if err != nil {
			return nil, fmt.Errorf("list inbox: %w", err)
		}
		for _, m := range resp.GetMessages() {
			e, err := inboxEntry(m)
			if err != nil {
				return nil, fmt.Errorf("list inbox: %w", err)
			}
			out = append(out, e)
		}
		token = resp.GetNextPageToken()
		if token == "" {
			return out, nil
		}
	}
	return nil, fmt.Errorf("list inbox: more than %d pages", maxInboxPages)
}

// SubscribeOption tunes Subscribe.
type SubscribeOption func(*subscribeOptions)

type subscribeOptions struct{ ready func() error }

// OnReady makes Subscribe call ready once the node has registered the
// subscription: every message stored from then on is announced. List the
// inbox, or let others send, in ready, and nothing falls between the
// listing and the notices. An error from ready ends Subscribe with it.
func OnReady(ready func() error) SubscribeOption {
	return func(o *subscribeOptions) { o.ready = ready }
}

// Subscribe calls fn for every message that arrives in the mailbox from now
// on, until ctx ends (it returns ctx's error), the stream fails, or fn
// returns an error (it returns that error). A subscriber that falls far
// behind may miss notices; Inbox stays complete, so list the mailbox once
// the subscription is ready (OnReady) and after any error.
//
// The stream runs through one node process. When that process stops, the
// stream ends with Unavailable ("the node is shutting down", or the
// connection lost); Subscribe does not resume it itself, as notices may
// have been missed meanwhile. Subscribe again and list the inbox: with
// several node addresses (Dial) the new stream goes to a process that
// answers.
func (c *Client) Subscribe(ctx context.Context, fn func(InboxEntry) error, opts ...SubscribeOption) error {
	var o subscribeOptions
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.mailbox.Subscribe(ctx, &kurierv1.SubscribeRequest{})
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	// The node sends its header once the subscription is registered.
	if _, err := stream.Header(); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if o.ready != nil {
		if err := o.ready(); err != nil {
			return err
		}
	}
	for {
		resp, err := stream.Recv()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, io.EOF):
			return errors.New("subscribe: the node ended the subscription")
		case err != nil:
			return fmt.Errorf("subscribe: %w", err)
		}
		e, err := inboxEntry(resp.GetMessage())
		if err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// inboxEntry converts a node's summary. Listings are the node's word, not
// signed data: Fetch checks the sender's signed envelope.
func inboxEntry(m *kurierv1.MessageSummary) (InboxEntry, error) {
	if m == nil {
		return InboxEntry{}, errors.New("empty message summary")
	}
	if err := envelope.CheckID(m.GetMessageId()); err != nil {
		return InboxEntry{}, fmt.Errorf("listing: %w", err)
	}
	return InboxEntry{
		ID: m.GetMessageId(), From: m.GetFrom(), Subject: m.GetSubject(),
		Type: m.GetType(), Reference: m.GetReference(), State: m.GetState(),
		Received: m.GetReceived().AsTime(), Size: m.GetPayloadSize(),
	}, nil
}
