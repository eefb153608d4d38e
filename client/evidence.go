package client

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki/cms"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// Evidence is one verified evidence file: the DER as the issuer signed it
// (the part that counts, to be archived as it is) and its statement.
type Evidence struct {
	DER []byte
	// Log is the origin of the transparency log that holds the evidence:
	// that of the node that issued it (or first received it, for an
	// Acknowledgement or a Rejection), e.g. "amtsgericht.example/kurier-log".
	Log string
	// LeafIndex is the evidence's place in that log.
	LeafIndex uint64
	Statement *evidence.Statement
	// Signer is the verified certificate that signed DER.
	Signer *x509.Certificate
}

// Type returns the evidence type.
func (e *Evidence) Type() evidence.Type { return e.Statement.Type }

// Digest returns the lowercase hex SHA-256 of the DER file, the name by
// which the next evidence in a chain refers to it.
func (e *Evidence) Digest() string { return evidence.Digest(e.DER) }

func (e *Evidence) link() evidence.Link {
	return evidence.Link{Statement: e.Statement, Digest: e.Digest()}
}

// verifyEvidence checks one evidence file at the current time: signature,
// the signer's chain and revocation, the statement, that it is issued by
// whom its type requires and that the signer speaks for that issuer
// (evidence.Verify); and that it is about message id. Every evidence the
// client accepts passes through here.
func (c *Client) verifyEvidence(pb *kurierv1.Evidence, id string) (Evidence, error) {
	if pb == nil {
		return Evidence{}, errors.New("missing evidence")
	}
	ev, err := evidence.Verify(pb.GetDer(), cms.Policy{Trust: c.trustStore(), At: c.now()})
	if err != nil {
		return Evidence{}, err
	}
	st := ev.Statement
	if st.MessageID != id {
		return Evidence{}, fmt.Errorf("%s evidence is about message %s", st.Type, st.MessageID)
	}
	return Evidence{DER: ev.DER, Log: pb.GetLog(), LeafIndex: pb.GetLeafIndex(), Statement: ev.Statement, Signer: ev.Signer}, nil
}

// Evidence returns every evidence the caller may see for message id, in
// order of issue, each verified: all of it when the caller sent the
// message, that about its own copy when it received it. Each recipient's
// chain is checked as a whole (evidence.CheckChain).
func (c *Client) Evidence(ctx context.Context, id string) ([]Evidence, error) {
	if err := envelope.CheckID(id); err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	if err := c.refreshCRL(ctx); err != nil {
		return nil, fmt.Errorf("evidence of %s: %w", id, err)
	}
	resp, err := c.mailbox.GetEvidence(ctx, &kurierv1.GetEvidenceRequest{MessageId: id})
	if err != nil {
		return nil, fmt.Errorf("evidence of %s: %w", id, err)
	}
	out := make([]Evidence, 0, len(resp.GetEvidence()))
	chains := map[string][]evidence.Link{}
	var order []string
	for i, pb := range resp.GetEvidence() {
		ev, err := c.verifyEvidence(pb, id)
		if err != nil {
			return nil, fmt.Errorf("evidence of %s: evidence %d: %w", id, i+1, err)
		}
		st := ev.Statement
		if st.Sender != c.addr && st.Recipient != c.addr {
			return nil, fmt.Errorf("evidence of %s: evidence %d (%s) concerns neither sender nor recipient %s", id, i+1, st.Type, c.addr)
		}
		out = append(out, ev)
		if st.Recipient == "" {
			// A SubmissionRejection stands alone.
			if err := evidence.CheckChain([]evidence.Link{ev.link()}); err != nil {
				return nil, fmt.Errorf("evidence of %s: %w", id, err)
			}
			continue
		}
		if _, ok := chains[st.Recipient]; !ok {
			order = append(order, st.Recipient)
		}
		chains[st.Recipient] = append(chains[st.Recipient], ev.link())
	}
	for _, r := range order {
		if err := evidence.CheckChain(chains[r]); err != nil {
			return nil, fmt.Errorf("evidence of %s for %s: %w", id, r, err)
		}
	}
	return out, nil
}

// Acknowledge signs and sends the electronic Empfangsbekenntnis for the
// message f: an Acknowledgement statement signed with the participant's
// own key, naming the Retrieval that ended the fetch as previous and the
// digests of the envelope and payload this client verified. It returns the
// stored acknowledgement.
//
// Security: an Acknowledgement says that the recipient received the
// documents, so it is signed only for what this participant's client has
// fetched, opened and verified: f must come from Fetch or Check of this
// participant (a Fetched built any other way is refused). A message that
// could not be opened (an *OpenError) cannot be acknowledged; Reject it
// instead. A message already acknowledged by the caller returns the
// existing acknowledgement; a rejected one is refused.
//
// The statement's time is now, or the Retrieval's time if the local clock
// lags behind the node's, so that the chain never goes back in time.
func (c *Client) Acknowledge(ctx context.Context, f *Fetched) (*Evidence, error) {
	if f == nil || f.recipient == "" {
		return nil, errors.New("acknowledge: only a message fetched, opened and verified by this client can be acknowledged; fetch it first (Fetch, or Check to write nothing)")
	}
	id, head := f.MessageID, f.head
	if f.recipient != c.addr {
		return nil, fmt.Errorf("acknowledge %s: the message was opened for %s, not for %s", id, f.recipient, c.addr)
	}
	switch head.Type() {
	case evidence.Retrieval:
	case evidence.Acknowledgement:
		return &head, nil
	case evidence.Rejection:
		return nil, fmt.Errorf("acknowledge %s: the message was rejected (%s); a rejected message cannot be acknowledged", id, head.Statement.Reason)
	default:
		return nil, fmt.Errorf("acknowledge %s: the message cannot be acknowledged: its latest evidence is %s", id, head.Type())
	}
	return c.answer(ctx, evidence.Acknowledgement, head, "")
}

// ownHead returns the newest evidence of the caller's copy of message id,
// from its verified chain.
func (c *Client) ownHead(ctx context.Context, id string) (Evidence, error) {
	all, err := c.Evidence(ctx, id)
	if err != nil {
		return Evidence{}, err
	}
	var head *Evidence
	for i := range all {
		if all[i].Statement.Recipient == c.addr {
			head = &all[i]
		}
	}
	if head == nil {
		return Evidence{}, fmt.Errorf("the message is not in the mailbox of %s", c.addr)
	}
	return *head, nil
}

// answer signs the caller's own statement of type typ (Acknowledgement or
// Rejection, with reason) following prev, the verified Retrieval of its
// copy, sends it to the node and returns it as stored. If the node says
// the copy has been answered already by exactly such a statement after
// prev (a repeat after a lost answer), it returns that one.
func (c *Client) answer(ctx context.Context, typ evidence.Type, prev Evidence, reason string) (*Evidence, error) {
	ps := prev.Statement
	id, verb := ps.MessageID, strings.ToLower(string(typ[:1]))+string(typ[1:])
	now := c.now().UTC().Truncate(time.Microsecond)
	if now.Before(ps.Time) {
		now = ps.Time
	}
	st := &evidence.Statement{
		Version:        evidence.StatementVersion,
		Type:           typ,
		MessageID:      id,
		EnvelopeSHA256: ps.EnvelopeSHA256,
		PayloadSHA256:  ps.PayloadSHA256,
		Sender:         ps.Sender,
		Recipient:      c.addr,
		Issuer:         c.addr,
		Time:           now,
		PreviousSHA256: prev.Digest(),
		Reason:         reason,
	}
	der, err := evidence.Sign(st, c.signer)
	if err != nil {
		return nil, fmt.Errorf("%s of %s: %w", verb, id, err)
	}
	var pb *kurierv1.Evidence
	if typ == evidence.Acknowledgement {
		var resp *kurierv1.AcknowledgeResponse
		resp, err = c.mailbox.Acknowledge(ctx, &kurierv1.AcknowledgeRequest{Evidence: der})
		pb = resp.GetEvidence()
	} else {
		var resp *kurierv1.RejectResponse
		resp, err = c.mailbox.Reject(ctx, &kurierv1.RejectRequest{Evidence: der})
		pb = resp.GetEvidence()
	}
	if status.Code(err) == codes.FailedPrecondition {
		if head, herr := c.ownHead(ctx, id); herr == nil && head.Type() == typ && head.Statement.PreviousSHA256 == prev.Digest() && head.Statement.Reason == reason {
			return &head, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s of %s: %w", verb, id, err)
	}
	stored, err := c.verifyEvidence(pb, id)
	if err != nil {
		return nil, fmt.Errorf("%s of %s: stored %s: %w", verb, id, verb, err)
	}
	if !bytes.Equal(stored.DER, der) {
		return nil, fmt.Errorf("%s of %s: the node stored another %s than the one sent", verb, id, verb)
	}
	return &stored, nil
}
