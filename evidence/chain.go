package evidence

import (
	"errors"
	"fmt"
)

// ErrChain is returned when evidence does not form a valid chain.
var ErrChain = errors.New("evidence chain broken")

// next lists which types may follow which in one copy's chain; the empty
// type stands for the start. Anything not listed is refused, when a node
// issues evidence and when anyone verifies it. docs/PROTOCOL.md draws the
// same machine.
var next = map[Type][]Type{
	"":                   {SubmissionAcceptance, SubmissionRejection},
	SubmissionAcceptance: {Delivery, RelayAcceptance, RelayRejection, NonDelivery},
	RelayAcceptance:      {Delivery, RelayAcceptance, RelayRejection, NonDelivery},
	Delivery:             {Retrieval, NonDelivery},
	// The recipient either acknowledges what it retrieved or refuses it;
	// never both.
	Retrieval: {Acknowledgement, Rejection},
	// The sender's node answers a relay refusal with NonDelivery, so that
	// the sender learns of it from its own node.
	RelayRejection: {NonDelivery},
	// SubmissionRejection, NonDelivery, Acknowledgement and Rejection end a
	// chain.
}

// Allowed reports whether evidence of type to may follow evidence of type
// from in a chain; from is "" for the first evidence.
func Allowed(from, to Type) bool {
	for _, t := range next[from] {
		if t == to {
			return true
		}
	}
	return false
}

// Link is one evidence in a chain: its statement and the digest of its DER.
type Link struct {
	Statement *Statement
	Digest    string
}

// CheckChain checks that links, in order, form one copy's chain: same
// message, sender, recipient and digests; each naming its predecessor's
// digest; types following the state machine; times not going backwards.
func CheckChain(links []Link) error {
	var prev *Link
	for i := range links {
		l := &links[i]
		s := l.Statement
		var from Type
		wantPrev := ""
		if prev != nil {
			p := prev.Statement
			from, wantPrev = p.Type, prev.Digest
			switch {
			case s.MessageID != p.MessageID:
				return fmt.Errorf("%w: evidence %d is about message %s, not %s", ErrChain, i+1, s.MessageID, p.MessageID)
			case s.Recipient != p.Recipient:
				return fmt.Errorf("%w: evidence %d is about recipient %s, not %s", ErrChain, i+1, s.Recipient, p.Recipient)
			case s.Sender != p.Sender, s.EnvelopeSHA256 != p.EnvelopeSHA256, s.PayloadSHA256 != p.PayloadSHA256:
				return fmt.Errorf("%w: evidence %d names another sender, envelope or payload than evidence %d", ErrChain, i+1, i)
			case s.Time.Before(p.Time):
				return fmt.Errorf("%w: evidence %d (%s) is dated before evidence %d", ErrChain, i+1, s.Type, i)
			}
		}
		if s.PreviousSHA256 != wantPrev {
			if wantPrev == "" {
				return fmt.Errorf("%w: evidence %d (%s) names a predecessor but starts the chain", ErrChain, i+1, s.Type)
			}
			return fmt.Errorf("%w: evidence %d (%s) does not name the SHA-256 of evidence %d", ErrChain, i+1, s.Type, i)
		}
		if !Allowed(from, s.Type) {
			if from == "" {
				return fmt.Errorf("%w: a chain cannot start with %s", ErrChain, s.Type)
			}
			return fmt.Errorf("%w: %s cannot follow %s", ErrChain, s.Type, from)
		}
		prev = l
	}
	return nil
}
