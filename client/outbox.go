package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"kurier.dev/kurier/envelope"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// outboxPageSize is the most messages the node returns in one ListSent
// page.
const outboxPageSize = 100

// SentMessage is one message in the outbox: a message this participant
// sent through its node, and where each recipient's copy stands.
//
// ID, Subject, Type, Reference, Created and Size are read from the
// envelope the sender signed, as the node kept it; Received and the
// recipients' states are the node's word. Evidence returns the signed
// evidence they are taken from.
type SentMessage struct {
	ID, Subject, Type, Reference string
	// Created is when the sender's client sealed it, Received when the
	// node accepted it.
	Created, Received time.Time
	// Size is the size of the sealed payload in bytes.
	Size int64
	// Recipients are in the order the message named them.
	Recipients []RecipientState
}

// RecipientState is where one recipient's copy of a sent message stands,
// by the newest evidence about it that the sender's node holds (for a
// recipient of another node, what that node has sent back so far).
type RecipientState struct {
	Address string
	// State is "relaying", "delivered", "retrieved", "acknowledged",
	// "rejected" or "undeliverable".
	State string
	// Evidence is the type of the newest evidence (SubmissionAcceptance,
	// RelayAcceptance, Delivery, Retrieval, Acknowledgement, Rejection,
	// RelayRejection or NonDelivery) and Time the time it states.
	Evidence string
	Time     time.Time
	// Reason is why the recipient rejected the message ("CODE" or
	// "CODE: TEXT", see evidence.ParseRejectionReason) or why it could not
	// be delivered; empty otherwise.
	Reason string
}

// Outbox lists the messages sent through the node, newest first: the
// newest limit of them, or all of them for limit 0 or less.
func (c *Client) Outbox(ctx context.Context, limit int) ([]SentMessage, error) {
	var out []SentMessage
	token := ""
	for range maxInboxPages {
		size := outboxPageSize
		if limit > 0 {
			size = min(size, limit-len(out))
		}
		page, next, err := c.OutboxPage(ctx, token, size)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if next == "" || limit > 0 && len(out) >= limit {
			return out, nil
		}
		token = next
	}
	return nil, fmt.Errorf("list outbox: more than %d pages", maxInboxPages)
}

// OutboxPage lists one page of at most size sent messages (1 to 100; 0
// means 100), newest first, from the page token of the previous page (""
// for the first), and returns the token of the next page, "" after the
// last. For callers that show a long outbox page by page.
func (c *Client) OutboxPage(ctx context.Context, token string, size int) ([]SentMessage, string, error) {
	if size < 0 || size > outboxPageSize {
		return nil, "", fmt.Errorf("list outbox: page size %d out of range 0..%d", size, outboxPageSize)
	}
	resp, err := c.mailbox.ListSent(ctx, &kurierv1.ListSentRequest{PageToken: token, PageSize: int32(size)})
	if err != nil {
		return nil, "", fmt.Errorf("list outbox: %w", err)
	}
	if size > 0 && len(resp.GetMessages()) > size {
		return nil, "", fmt.Errorf("list outbox: the node returned %d messages for a page of %d", len(resp.GetMessages()), size)
	}
	out := make([]SentMessage, 0, len(resp.GetMessages()))
	for _, m := range resp.GetMessages() {
		s, err := sentMessage(m)
		if err != nil {
			return nil, "", fmt.Errorf("list outbox: %w", err)
		}
		out = append(out, s)
	}
	return out, resp.GetNextPageToken(), nil
}

// sentMessage converts one entry of the node's listing, the node's word.
func sentMessage(m *kurierv1.SentMessage) (SentMessage, error) {
	if m == nil {
		return SentMessage{}, errors.New("empty sent message")
	}
	if err := envelope.CheckID(m.GetMessageId()); err != nil {
		return SentMessage{}, fmt.Errorf("listing: %w", err)
	}
	s := SentMessage{
		ID: m.GetMessageId(), Subject: m.GetSubject(), Type: m.GetType(), Reference: m.GetReference(),
		Created: m.GetCreated().AsTime(), Received: m.GetReceived().AsTime(), Size: m.GetPayloadSize(),
		Recipients: make([]RecipientState, 0, len(m.GetRecipients())),
	}
	for _, r := range m.GetRecipients() {
		s.Recipients = append(s.Recipients, RecipientState{
			Address: r.GetAddress(), State: r.GetState(), Evidence: r.GetEvidenceType(),
			Time: r.GetTime().AsTime(), Reason: r.GetReason(),
		})
	}
	return s, nil
}
