package client

import (
	"context"
	"fmt"

	"kurier.dev/kurier/evidence"
)

// Reject signs and sends the caller's refusal of message id (the
// Zurückweisung): a Rejection statement signed with the participant's own
// key, with code and text as its reason (evidence.RejectionReason), naming
// the Retrieval of the caller's copy as previous. It returns the stored
// rejection, which the sender sees in its chain as it would an
// Acknowledgement.
//
// Unlike Acknowledge, Reject does not need the content opened: refusing a
// message that cannot be opened (an *OpenError from Fetch or Check, code
// evidence.CannotOpen) is what it is for. What it builds on is the node's
// Retrieval of the caller's copy, verified here with the rest of the
// copy's chain, which exists only once a Fetch or Check has received the
// copy whole, whether or not it could be opened; before that Reject is
// refused, telling the caller to fetch first. A copy is acknowledged or
// rejected, once: an acknowledged message cannot be rejected, and a
// message rejected before returns that rejection if it gave the same
// reason and is refused otherwise.
//
// The code and text are checked before anything is signed or sent: a
// known code, at most evidence.MaxRejectionText bytes of UTF-8 without
// control or bidirectional characters, and a text for the code "other".
func (c *Client) Reject(ctx context.Context, id string, code evidence.RejectionCode, text string) (*Evidence, error) {
	reason, err := evidence.RejectionReason(code, text)
	if err != nil {
		return nil, fmt.Errorf("reject %s: %w", id, err)
	}
	head, err := c.ownHead(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("reject %s: %w", id, err)
	}
	switch head.Type() {
	case evidence.Retrieval:
	case evidence.Rejection:
		if head.Statement.Reason == reason {
			return &head, nil
		}
		return nil, fmt.Errorf("reject %s: the message was rejected before, with reason %q", id, head.Statement.Reason)
	case evidence.Acknowledgement:
		return nil, fmt.Errorf("reject %s: the message is acknowledged; an acknowledged message cannot be rejected", id)
	case evidence.Delivery:
		return nil, fmt.Errorf("reject %s: fetch the message before rejecting it (a fetch that fails to open it is enough)", id)
	default:
		return nil, fmt.Errorf("reject %s: the message cannot be rejected: its latest evidence is %s", id, head.Type())
	}
	return c.answer(ctx, evidence.Rejection, head, reason)
}
