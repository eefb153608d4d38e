package client

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

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
	// Acknowledgement), e.g. "amtsgericht.example/kurier-log".
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

// Acknowledge signs and sends the electronic Empfangsbekenntnis for message
// id: an Acknowledgement statement signed with the participant's own key,
// following the Retrieval evidence of its copy. It returns the stored
// acknowledgement. The message must have been fetched; a message already
// acknowledged by the caller returns the existing acknowledgement.
//
// The statement's time is now, or the Retrieval's time if the local clock
// lags behind the node's, so that the chain never goes back in time.
func (c *Client) Acknowledge(ctx context.Context, id string) (*Evidence, error) {
	all, err := c.Evidence(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("acknowledge: %w", err)
	}
	var own []Evidence
	for _, ev := range all {
		if ev.Statement.Recipient == c.addr {
			own = append(own, ev)
		}
	}
	if len(own) == 0 {
		return nil, fmt.Errorf("acknowledge %s: the message is not in the mailbox of %s", id, c.addr)
	}
	head := own[len(own)-1]
	switch head.Type() {
	case evidence.Retrieval:
	case evidence.Acknowledgement:
		return &head, nil
	case evidence.Delivery:
		return nil, fmt.Errorf("acknowledge %s: fetch the message before acknowledging it", id)
	default:
		return nil, fmt.Errorf("acknowledge %s: the message cannot be acknowledged: its latest evidence is %s", id, head.Type())
	}
	now := c.now().UTC().Truncate(time.Microsecond)
	if now.Before(head.Statement.Time) {
		now = head.Statement.Time
	}
	hs := head.Statement
	st := &evidence.Statement{
		Version:        evidence.StatementVersion,
		Type:           evidence.Acknowledgement,
		MessageID:      id,
		EnvelopeSHA256: hs.EnvelopeSHA256,
		PayloadSHA256:  hs.PayloadSHA256,
		Sender:         hs.Sender,
		Recipient:      c.addr,
		Issuer:         c.addr,
		Time:           now,
		PreviousSHA256: head.Digest(),
	}
	der, err := evidence.Sign(st, c.signer)
	if err != nil {
		return nil, fmt.Errorf("acknowledge %s: %w", id, err)
	}
	resp, err := c.mailbox.Acknowledge(ctx, &kurierv1.AcknowledgeRequest{Evidence: der})
	if err != nil {
		return nil, fmt.Errorf("acknowledge %s: %w", id, err)
	}
	stored, err := c.verifyEvidence(resp.GetEvidence(), id)
	if err != nil {
		return nil, fmt.Errorf("acknowledge %s: stored acknowledgement: %w", id, err)
	}
	if !bytes.Equal(stored.DER, der) {
		return nil, fmt.Errorf("acknowledge %s: the node stored another acknowledgement than the one sent", id)
	}
	return &stored, nil
}
