package node

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

// Receipt is the node's answer to an accepted submission.
type Receipt struct {
	MessageID string
	// Evidence holds the SubmissionAcceptance and Delivery evidence of every
	// recipient, in order of issue.
	Evidence []broker.Evidence
}

// Rejection is the error of a refused submission whose envelope was
// authentic: it carries the SubmissionRejection the node issued. It wraps
// the reason, so errors.Is works on it as on the reason.
type Rejection struct {
	Err      error
	Evidence broker.Evidence
}

func (r *Rejection) Error() string { return r.Err.Error() }

// Unwrap returns the reason for the rejection.
func (r *Rejection) Unwrap() error { return r.Err }

// Submit accepts one message from caller: the signed envelope, then the
// sealed payload from payload. It returns only once the message, its copies
// and its evidence are durably stored. Submitting the same message again
// returns the first receipt; the same id with another envelope is refused
// with broker.ErrDuplicate.
//
// Security: the envelope's sender must be the caller, and the envelope must
// be signed by a valid, unrevoked participant certificate of that sender.
// Failures before that point return a plain error; later ones a *Rejection.
func (n *Node) Submit(ctx context.Context, caller pki.Peer, envBytes, sig []byte, payload io.Reader) (*Receipt, error) {
	if err := requireParticipant(caller); err != nil {
		return nil, err
	}
	env, err := envelope.Parse(envBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", broker.ErrInvalid, err)
	}
	if env.From != caller.Address {
		return nil, fmt.Errorf("%w: the envelope names sender %s but you are %s; a participant sends only as itself", broker.ErrForbidden, env.From, caller.Address)
	}
	now := n.now()
	if ahead := env.Created.Sub(now); ahead > n.limits.MaxClockSkew {
		return nil, fmt.Errorf("%w: the envelope was created %s, %s ahead of the node's clock; check your clock", broker.ErrInvalid, env.Created.UTC().Format(time.RFC3339), ahead.Round(time.Second))
	}
	signed, err := cms.VerifyDetached(sig, envBytes, cms.Policy{Trust: n.trust, At: now, KeyUsages: participantUsages})
	if err != nil {
		return nil, fmt.Errorf("%w: envelope signature: %v", broker.ErrSignature, err)
	}
	if signer, err := pki.PeerOf(signed.Signer); err != nil || signer.Address != env.From {
		return nil, fmt.Errorf("%w: envelope is not signed by a certificate of %s", broker.ErrSignature, env.From)
	}
	m := &broker.Message{
		Envelope:       envBytes,
		Signature:      sig,
		Header:         env,
		EnvelopeSHA256: envelope.Digest(envBytes),
		Received:       now.UTC(),
	}
	log := n.log.With(slog.String(broker.LogMsgID, env.ID), slog.String(broker.LogMailbox, env.From))

	// An earlier submission of this id answers before any payload is read.
	if prev, err := n.store.Message(ctx, env.ID); err == nil {
		if prev.EnvelopeSHA256 == m.EnvelopeSHA256 {
			return n.storedReceipt(ctx, env.ID)
		}
		return nil, n.rejectDuplicate(m)
	} else if !errors.Is(err, broker.ErrNotFound) {
		return nil, fmt.Errorf("submit %s: %w", env.ID, err)
	}
	if err := n.checkRoute(env); err != nil {
		return nil, n.reject(ctx, m, err)
	}
	if env.PayloadSize > n.limits.MaxPayload {
		return nil, n.reject(ctx, m, fmt.Errorf("%w: payload of %d bytes is over this node's maximum of %d bytes", broker.ErrTooLarge, env.PayloadSize, n.limits.MaxPayload))
	}

	release, err := n.uploadSlot(ctx)
	if err != nil {
		return nil, fmt.Errorf("submit %s: wait for an upload slot: %w", env.ID, err)
	}
	blob, err := n.store.WriteBlob(ctx, payload, env.PayloadSize)
	release()
	if errors.Is(err, broker.ErrTooLarge) {
		return nil, n.reject(ctx, m, fmt.Errorf("%w: payload is longer than the %d bytes the envelope declares", broker.ErrInvalid, env.PayloadSize))
	}
	if err != nil {
		return nil, fmt.Errorf("submit %s: store payload: %w", env.ID, err)
	}
	m.Blob = blob.ID
	if blob.Size != env.PayloadSize || hex.EncodeToString(blob.SHA256[:]) != env.PayloadSHA256 {
		n.dropBlob(ctx, blob.ID, log)
		return nil, n.reject(ctx, m, fmt.Errorf("%w: payload (%d bytes, SHA-256 %x) does not match the envelope (%d bytes, SHA-256 %s)", broker.ErrInvalid, blob.Size, blob.SHA256, env.PayloadSize, env.PayloadSHA256))
	}

	copies, evs, err := n.acceptance(m)
	if err != nil {
		n.dropBlob(ctx, blob.ID, log)
		return nil, fmt.Errorf("submit %s: %w", env.ID, err)
	}
	stored, err := n.store.CreateMessage(ctx, m, copies, evs)
	switch {
	case errors.Is(err, broker.ErrExists):
		// A concurrent submission of the same message won.
		n.dropBlob(ctx, blob.ID, log)
		return n.storedReceipt(ctx, env.ID)
	case errors.Is(err, broker.ErrDuplicate):
		n.dropBlob(ctx, blob.ID, log)
		return nil, n.rejectDuplicate(m)
	case err != nil:
		n.dropBlob(ctx, blob.ID, log)
		return nil, fmt.Errorf("submit %s: %w", env.ID, err)
	}
	for _, c := range copies {
		n.hub.publish(broker.InboxEntry{Copy: c, Message: m})
	}
	log.Info("message accepted", slog.Int("recipients", len(env.To)), slog.Int64("bytes", env.PayloadSize))
	return &Receipt{MessageID: env.ID, Evidence: stored}, nil
}

var participantUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}

// checkRoute checks that every recipient can be reached from here.
func (n *Node) checkRoute(env *envelope.Envelope) error {
	if len(env.To) > n.limits.MaxRecipients {
		return fmt.Errorf("%w: %d recipients, this node allows at most %d per message", broker.ErrTooLarge, len(env.To), n.limits.MaxRecipients)
	}
	for _, to := range env.To {
		if _, ok := n.dir[to]; ok {
			continue
		}
		if !n.domains[address.DomainOf(to)] {
			return fmt.Errorf("%w: %s: this node does not serve domain %s and relays to other nodes are not configured", broker.ErrUnknownRecipient, to, address.DomainOf(to))
		}
		return fmt.Errorf("%w: no mailbox %s", broker.ErrUnknownRecipient, to)
	}
	return nil
}

// acceptance builds each recipient's copy and signs its first evidence:
// SubmissionAcceptance, then Delivery into the local mailbox.
func (n *Node) acceptance(m *broker.Message) ([]broker.Copy, []broker.Evidence, error) {
	var copies []broker.Copy
	var evs []broker.Evidence
	for _, to := range m.Header.To {
		head := ""
		for _, typ := range []evidence.Type{evidence.SubmissionAcceptance, evidence.Delivery} {
			ev, err := n.issue(m, to, typ, head, "")
			if err != nil {
				return nil, nil, err
			}
			evs = append(evs, ev)
			head = evidence.Digest(ev.DER)
		}
		copies = append(copies, broker.Copy{
			MessageID: m.ID(), Recipient: to, Received: m.Received,
			State: broker.StateDelivered, Head: head,
		})
	}
	return copies, evs, nil
}

// issue signs one node evidence about m, dated now. Its reason is cut to
// the statement's limit.
func (n *Node) issue(m *broker.Message, recipient string, typ evidence.Type, prev, reason string) (broker.Evidence, error) {
	return n.issueAt(m, recipient, typ, prev, reason, n.now())
}

// issueAt signs one node evidence about m dated at.
func (n *Node) issueAt(m *broker.Message, recipient string, typ evidence.Type, prev, reason string, at time.Time) (broker.Evidence, error) {
	st := &evidence.Statement{
		Version:        evidence.StatementVersion,
		Type:           typ,
		MessageID:      m.ID(),
		EnvelopeSHA256: m.EnvelopeSHA256,
		PayloadSHA256:  m.Header.PayloadSHA256,
		Sender:         m.Header.From,
		Recipient:      recipient,
		Issuer:         n.issuerFor(typ, m.Header.From, recipient),
		Time:           at,
		PreviousSHA256: prev,
		Reason:         truncate(reason, evidence.MaxReasonLen),
	}
	der, err := evidence.Sign(st, n.signer)
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("issue %s: %w", typ, err)
	}
	return broker.Evidence{MessageID: m.ID(), Sender: m.Header.From, Recipient: recipient, Type: string(typ), DER: der}, nil
}

// issuerFor names the domain a node evidence is issued under: the
// recipient's domain for what happens at the recipient's mailbox, the
// sender's for what happens at submission, so that a court's Delivery
// names the court's domain. Both are served by this node's certificate.
func (n *Node) issuerFor(typ evidence.Type, sender, recipient string) string {
	addr := sender
	if typ == evidence.Delivery || typ == evidence.Retrieval || typ == evidence.NonDelivery {
		addr = recipient
	}
	if d := address.DomainOf(addr); n.domains[d] {
		return d
	}
	return n.domain
}

// reject issues and stores a SubmissionRejection for an authentic envelope
// and returns it as a *Rejection wrapping reason. If the evidence cannot be
// issued, the reason is still returned.
func (n *Node) reject(ctx context.Context, m *broker.Message, reason error) error {
	log := n.log.With(slog.String(broker.LogMsgID, m.ID()), slog.String(broker.LogMailbox, m.Header.From))
	ev, err := n.issue(m, "", evidence.SubmissionRejection, "", reason.Error())
	if err == nil {
		ev, err = n.store.AddEvidence(ctx, ev)
	}
	if err != nil {
		log.Error("cannot issue SubmissionRejection", slog.Any(broker.LogErr, err))
		return reason
	}
	log.Info("message rejected", slog.String("reason", reason.Error()))
	return &Rejection{Err: reason, Evidence: ev}
}

// rejectDuplicate refuses an envelope whose id another message holds. Its
// SubmissionRejection travels in the error only: stored under the id, it
// would sit in the other message's evidence, and anyone who knows an id
// could grow that without bound.
func (n *Node) rejectDuplicate(m *broker.Message) error {
	reason := fmt.Errorf("%w: message id %s was already used for another message; choose a new id", broker.ErrDuplicate, m.ID())
	ev, err := n.issue(m, "", evidence.SubmissionRejection, "", reason.Error())
	if err != nil {
		n.log.Error("cannot issue SubmissionRejection", slog.String(broker.LogMsgID, m.ID()), slog.Any(broker.LogErr, err))
		return reason
	}
	return &Rejection{Err: reason, Evidence: ev}
}

// uploadSlot waits for room to store one more payload and returns the
// function that frees it.
func (n *Node) uploadSlot(ctx context.Context) (func(), error) {
	select {
	case n.uploads <- struct{}{}:
		return func() { <-n.uploads }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// storedReceipt answers a repeated submission with the first one's evidence.
func (n *Node) storedReceipt(ctx context.Context, id string) (*Receipt, error) {
	evs, err := n.store.Evidence(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("submit %s: load evidence: %w", id, err)
	}
	r := &Receipt{MessageID: id}
	for _, ev := range evs {
		if ev.Type == string(evidence.SubmissionAcceptance) || ev.Type == string(evidence.Delivery) {
			r.Evidence = append(r.Evidence, ev)
		}
	}
	return r, nil
}

func (n *Node) dropBlob(ctx context.Context, id string, log *slog.Logger) {
	if err := n.store.DeleteBlob(context.WithoutCancel(ctx), id); err != nil {
		log.Warn("cannot delete unused payload; the sweep removes it later", slog.Any(broker.LogErr, err))
	}
}

// truncate shortens s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
