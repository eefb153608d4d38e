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
	"sync"
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
	// Evidence holds every recipient's chain: its SubmissionAcceptance,
	// followed by Delivery for a local recipient. A repeated submission
	// gets each chain as it stands by then.
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
// sealed payload from payload. It returns only once the message, its copies,
// its evidence and its place in the outbound queues are durably stored.
// Recipients of this node's domains get a copy in their mailbox at once
// (Delivery); those of other domains are relayed to their nodes later.
// Submitting the same message again returns the first receipt; the same id
// with another envelope is refused with broker.ErrDuplicate.
//
// Security: the envelope's sender must be the caller, and the envelope must
// be signed by a valid, unrevoked participant certificate of that sender.
// Failures before that point return a plain error; later ones a *Rejection,
// except that a recipient whose node cannot be reached and has never
// answered for it is broker.ErrUnavailable, to try again later: nothing is
// accepted then, and nothing refused.
func (n *Node) Submit(ctx context.Context, caller pki.Peer, envBytes, sig []byte, payload io.Reader) (*Receipt, error) {
	var repeated bool
	r, err := n.submit(ctx, caller, envBytes, sig, payload, &repeated)
	n.obs.Submission(submissionOutcome(err, repeated))
	return r, err
}

// submit is Submit; it sets *repeated when it answers a repeat of a
// stored message.
func (n *Node) submit(ctx context.Context, caller pki.Peer, envBytes, sig []byte, payload io.Reader, repeated *bool) (*Receipt, error) {
	if err := requireParticipant(caller); err != nil {
		return nil, err
	}
	env, err := parseEnvelope(envBytes)
	if err != nil {
		return nil, err
	}
	if env.From != caller.Address {
		return nil, fmt.Errorf("%w: the envelope names sender %s but you are %s; a participant sends only as itself", broker.ErrForbidden, env.From, caller.Address)
	}
	if d := address.DomainOf(env.From); !n.domains[d] {
		return nil, fmt.Errorf("%w: this node does not serve %s; send through the node of your own domain", broker.ErrForbidden, d)
	}
	// The rate limit comes before the signature check, so that a flood
	// costs the node as little as possible.
	if err := n.admit.takeMessage(caller, n.now()); err != nil {
		return nil, fmt.Errorf("submit %s: %w", env.ID, err)
	}
	m, err := n.verifyEnvelope(env, envBytes, sig)
	if err != nil {
		return nil, err
	}
	// A repeat is answered even when the disk is full or the quota used:
	// it is how a sender learns the outcome of a try it lost.
	if r, err, again := n.repeated(ctx, m); again {
		*repeated = true
		return r, err
	}
	if !m.Expires.After(m.Received) {
		return nil, n.reject(ctx, m, fmt.Errorf("%w: the message expired at %s, before it arrived; send it again with a later expiry", broker.ErrInvalid, m.Expires.Format(time.RFC3339)))
	}
	rt, err := n.route(ctx, env)
	if errors.Is(err, broker.ErrUnavailable) {
		return nil, fmt.Errorf("submit %s: %w", env.ID, err)
	}
	if err != nil {
		return nil, n.reject(ctx, m, err)
	}
	end, err := n.admitPayload(caller, m)
	if err != nil {
		return nil, fmt.Errorf("submit %s: %w", env.ID, err)
	}
	r, err := n.submitPayload(ctx, m, rt, payload, repeated)
	end(err == nil || errors.Is(err, broker.ErrUnknownOutcome))
	return r, err
}

// submitPayload stores the payload of an admitted submission, then the
// message with its copies, evidence and queue entries.
func (n *Node) submitPayload(ctx context.Context, m *broker.Message, rt *route, payload io.Reader, repeated *bool) (*Receipt, error) {
	if err := n.storePayload(ctx, m, payload, func(reason error) error { return n.reject(ctx, m, reason) }); err != nil {
		return nil, err
	}
	copies, evs, out, err := n.acceptance(m, rt)
	if err != nil {
		n.dropBlob(ctx, m.Blob)
		return nil, fmt.Errorf("submit %s: %w", m.ID(), err)
	}
	return n.accept(ctx, m, copies, evs, out, repeated)
}

var participantUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}

// parseEnvelope decodes envelope bytes as they arrive.
func parseEnvelope(envBytes []byte) (*envelope.Envelope, error) {
	env, err := envelope.Parse(envBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", broker.ErrInvalid, err)
	}
	return env, nil
}

// verifyEnvelope checks the sender's signature over envBytes, valid now,
// and returns the message as the node will store it, received now, with
// its expiry: the envelope's, or the node's default for an envelope that
// names none, in either case at most MaxExpiry after now.
func (n *Node) verifyEnvelope(env *envelope.Envelope, envBytes, sig []byte) (*broker.Message, error) {
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
	received := now.UTC()
	expires := env.Expires
	if expires.IsZero() {
		expires = received.Add(n.limits.DefaultExpiry)
	}
	if limit := received.Add(n.limits.MaxExpiry); expires.After(limit) {
		expires = limit
	}
	return &broker.Message{
		Envelope:       envBytes,
		Signature:      sig,
		Header:         env,
		EnvelopeSHA256: envelope.Digest(envBytes),
		Received:       received,
		Expires:        expires.UTC(),
	}, nil
}

// repeated answers a submission of an id the node has stored already: with
// the first receipt for the same envelope, with a rejection for another.
func (n *Node) repeated(ctx context.Context, m *broker.Message) (*Receipt, error, bool) {
	prev, err := n.store.Message(ctx, m.ID())
	switch {
	case errors.Is(err, broker.ErrNotFound):
		return nil, nil, false
	case err != nil:
		return nil, fmt.Errorf("submit %s: %w", m.ID(), err), true
	case prev.EnvelopeSHA256 == m.EnvelopeSHA256:
		r, err := n.storedReceipt(ctx, m.ID())
		return r, err, true
	}
	return nil, n.rejectDuplicate(m), true
}

// route is where a message's recipients are: in this node's mailboxes, or
// at other domains' nodes.
type route struct {
	remote  map[string][]string // domain → its recipients, in envelope order
	domains []string            // the keys of remote, in envelope order
}

func (r *route) isRemote(addr string) bool { return len(r.remote[address.DomainOf(addr)]) > 0 }

// route finds every recipient: a local mailbox, or a mailbox that its
// domain's node confirms, each with an encryption certificate valid now
// (Lookup). An unknown recipient is broker.ErrUnknownRecipient, one whose
// certificate is revoked or expired broker.ErrState; a node that cannot be
// asked, or a CRL out of date, is broker.ErrUnavailable.
func (n *Node) route(ctx context.Context, env *envelope.Envelope) (*route, error) {
	if len(env.To) > n.limits.MaxRecipients {
		return nil, fmt.Errorf("%w: %d recipients, this node allows at most %d per message", broker.ErrTooLarge, len(env.To), n.limits.MaxRecipients)
	}
	rt := &route{remote: map[string][]string{}}
	for _, to := range env.To {
		d := address.DomainOf(to)
		_, err := n.Lookup(ctx, to)
		if n.domains[d] {
			if errors.Is(err, broker.ErrNotFound) {
				return nil, fmt.Errorf("%w: no mailbox %s", broker.ErrUnknownRecipient, to)
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		switch {
		case errors.Is(err, broker.ErrNotFound):
			return nil, fmt.Errorf("%w: %v", broker.ErrUnknownRecipient, err)
		case err != nil:
			return nil, err
		}
		if len(rt.remote[d]) == 0 {
			rt.domains = append(rt.domains, d)
		}
		rt.remote[d] = append(rt.remote[d], to)
	}
	return rt, nil
}

// storePayload streams the payload into the store and checks it against
// the envelope; on success m.Blob names it. Every refusal of the payload
// is returned through refuse, which turns the reason into the error.
func (n *Node) storePayload(ctx context.Context, m *broker.Message, payload io.Reader, refuse func(reason error) error) error {
	env := m.Header
	if env.PayloadSize > n.limits.MaxPayload {
		return refuse(fmt.Errorf("%w: payload of %d bytes is over this node's maximum of %d bytes", broker.ErrTooLarge, env.PayloadSize, n.limits.MaxPayload))
	}
	release, err := n.uploadSlot(ctx, m.Header.From)
	if err != nil {
		return fmt.Errorf("store payload of %s: wait for an upload slot: %w", env.ID, err)
	}
	blob, err := n.store.WriteBlob(ctx, payload, env.PayloadSize)
	release()
	if errors.Is(err, broker.ErrTooLarge) {
		return refuse(fmt.Errorf("%w: payload is longer than the %d bytes the envelope declares", broker.ErrInvalid, env.PayloadSize))
	}
	if err != nil {
		return fmt.Errorf("store payload of %s: %w", env.ID, err)
	}
	if blob.Size != env.PayloadSize || hex.EncodeToString(blob.SHA256[:]) != env.PayloadSHA256 {
		n.dropBlob(ctx, blob.ID)
		return refuse(fmt.Errorf("%w: payload (%d bytes, SHA-256 %x) does not match the envelope (%d bytes, SHA-256 %s)", broker.ErrInvalid, blob.Size, blob.SHA256, env.PayloadSize, env.PayloadSHA256))
	}
	m.Blob = blob.ID
	return nil
}

// accept stores an accepted submission and announces its local copies;
// it sets *repeated if a concurrent submission of the same message was
// stored first.
func (n *Node) accept(ctx context.Context, m *broker.Message, copies []broker.Copy, evs []broker.Evidence, out []broker.Outbound, repeated *bool) (*Receipt, error) {
	stored, err := n.store.CreateMessage(ctx, m, copies, evs, out)
	switch {
	case errors.Is(err, broker.ErrExists):
		// A concurrent submission of the same message won.
		n.dropBlob(ctx, m.Blob)
		*repeated = true
		return n.storedReceipt(ctx, m.ID())
	case errors.Is(err, broker.ErrDuplicate):
		n.dropBlob(ctx, m.Blob)
		return nil, n.rejectDuplicate(m)
	case err != nil:
		err = commitError("submit "+m.ID(), err)
		if !errors.Is(err, broker.ErrUnknownOutcome) {
			// If the message was stored, the blob is its payload; if
			// not, the sweep removes it.
			n.dropBlob(ctx, m.Blob)
		}
		return nil, err
	}
	n.announce(ctx, m, copies)
	for _, o := range out {
		n.queued(o.Domain)
	}
	n.log.Info("message accepted", slog.String(broker.LogMsgID, m.ID()), slog.String(broker.LogMailbox, m.Header.From),
		slog.Int("recipients", len(m.Header.To)), slog.Int64("bytes", m.Header.PayloadSize))
	return &Receipt{MessageID: m.ID(), Evidence: stored}, nil
}

// publishTimeout bounds how long a stored message's notices may hold up
// the answer to its sender.
const publishTimeout = 5 * time.Second

// announce tells this process's subscribers at once of the local copies
// waiting to be fetched, and, through the node's Notices if it has them,
// every other process's subscribers.
func (n *Node) announce(ctx context.Context, m *broker.Message, copies []broker.Copy) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	for _, c := range copies {
		if !c.Local || c.State != broker.StateDelivered {
			continue // nothing to fetch: a notice would wake subscribers for nothing
		}
		n.hub.publish(broker.InboxEntry{Copy: c, Message: m})
		if n.notices == nil {
			continue
		}
		if err := n.notices.Publish(ctx, c.Recipient, m.ID()); err != nil {
			n.log.Warn("publish a notice to the node's other processes; only this one's subscribers hear of it",
				slog.String(broker.LogMsgID, m.ID()), slog.String(broker.LogMailbox, c.Recipient), slog.Any(broker.LogErr, err))
		}
	}
}

// Announce tells this process's subscribers to recipient's mailbox of
// its copy of message id, which another process of the node has stored:
// it takes the notices that Config.Notices carries. Without subscribers
// to that mailbox it reads nothing; a copy that is not in the store, or
// not in a local mailbox, is announced to no one (ErrNotFound), so a
// notice that did not come from a node's process tells no one anything;
// nor is a copy that is no longer waiting to be fetched (ErrState: it
// was retrieved or expired meanwhile). A message announced to the
// mailbox lately is not announced again.
func (n *Node) Announce(ctx context.Context, recipient, messageID string) error {
	if !n.hub.has(recipient) {
		return nil
	}
	m, err := n.store.Message(ctx, messageID)
	if err != nil {
		return fmt.Errorf("announce %s: %w", messageID, err)
	}
	c, err := n.store.Copy(ctx, messageID, recipient)
	if err != nil {
		return fmt.Errorf("announce %s to %s: %w", messageID, recipient, err)
	}
	if !c.Local {
		return fmt.Errorf("announce %s: %w: %s is not a local mailbox", messageID, broker.ErrNotFound, recipient)
	}
	if c.State != broker.StateDelivered {
		return fmt.Errorf("announce %s to %s: %w: the copy is %s, not waiting to be fetched", messageID, recipient, broker.ErrState, c.State)
	}
	n.hub.publish(broker.InboxEntry{Copy: *c, Message: m})
	return nil
}

// Resync tells this process's subscribers of the copies in their
// mailboxes that arrived at or after since and wait to be fetched,
// except those announced to them lately. The listener of the node's
// notices (kurierd runs pgnotify's) calls it once it hears the other
// processes' notices again after a gap, in which a message another
// process stored was announced to no one here. It reads each subscribed
// mailbox from since on (Store.InboxCursor), and returns the errors of
// those it could not read.
func (n *Node) Resync(ctx context.Context, since time.Time) error {
	var errs []error
	for _, addr := range n.hub.mailboxes() {
		if err := n.resyncMailbox(ctx, addr, since); err != nil {
			errs = append(errs, fmt.Errorf("resync notices of %s: %w", addr, err))
		}
	}
	return errors.Join(errs...)
}

// resyncMailbox is Resync of one mailbox.
func (n *Node) resyncMailbox(ctx context.Context, addr string, since time.Time) error {
	for token := n.store.InboxCursor(since); ; {
		entries, next, err := n.store.Inbox(ctx, addr, token, 0)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Copy.State == broker.StateDelivered {
				n.hub.publish(e)
			}
		}
		if next == "" {
			return nil
		}
		token = next
	}
}

// acceptance builds each recipient's copy and signs its first evidence:
// SubmissionAcceptance, then, for a local recipient, Delivery into its
// mailbox; a remote recipient's copy waits in its domain's outbound queue.
func (n *Node) acceptance(m *broker.Message, rt *route) ([]broker.Copy, []broker.Evidence, []broker.Outbound, error) {
	var copies []broker.Copy
	var evs []broker.Evidence
	for _, to := range m.Header.To {
		sa, err := n.issue(m, to, evidence.SubmissionAcceptance, "", "")
		if err != nil {
			return nil, nil, nil, err
		}
		evs = append(evs, sa)
		c := broker.Copy{MessageID: m.ID(), Recipient: to, Received: m.Received, Head: evidence.Digest(sa.DER)}
		if rt.isRemote(to) {
			c.State, c.Deadline = broker.StateRelaying, m.Expires
		} else {
			d, err := n.issue(m, to, evidence.Delivery, c.Head, "")
			if err != nil {
				return nil, nil, nil, err
			}
			evs = append(evs, d)
			c.Local, c.State, c.Head, c.Deadline = true, broker.StateDelivered, evidence.Digest(d.DER), m.Received.Add(n.limits.Retention)
		}
		copies = append(copies, c)
	}
	var out []broker.Outbound
	for _, d := range rt.domains {
		out = append(out, broker.Outbound{Domain: d, MessageID: m.ID(), NextTry: m.Received})
	}
	return copies, evs, out, nil
}

// issue signs one node evidence about m, dated now. Its reason, often an
// error's text quoting others, is made one a statement may carry
// (evidence.ReasonText): cut to the limit, control characters spaces.
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
		// As it is signed (TimeFormat keeps microseconds), so that st is
		// the statement a reader of the evidence gets.
		Time:           at.UTC().Truncate(time.Microsecond),
		PreviousSHA256: prev,
		Reason:         evidence.ReasonText(reason),
	}
	der, err := evidence.Sign(st, n.signer)
	if err != nil {
		return broker.Evidence{}, fmt.Errorf("issue %s: %w", typ, err)
	}
	// Kept for the copy's next step (headStatement), which then need not
	// load and parse the evidence.
	n.heads.put(evidence.Digest(der), st)
	return broker.Evidence{MessageID: m.ID(), Sender: m.Header.From, Recipient: recipient, Type: string(typ), DER: der}, nil
}

// issuerFor names the domain a node evidence is issued under: the
// recipient's domain for what happens at the recipient's node (relay
// intake, the mailbox), the sender's for what happens at submission, so
// that a court's Delivery names the court's domain; where the node serves
// neither (a NonDelivery for a remote recipient), the sender's, else its
// own. Each is served by this node's certificate.
func (n *Node) issuerFor(typ evidence.Type, sender, recipient string) string {
	switch typ {
	case evidence.RelayAcceptance, evidence.RelayRejection, evidence.Delivery, evidence.Retrieval, evidence.NonDelivery:
		if d := address.DomainOf(recipient); n.domains[d] {
			return d
		}
	}
	if d := address.DomainOf(sender); n.domains[d] {
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

// uploadRetry is when a sender refused a further upload is asked to try
// again: by then one of its uploads under way may well have finished.
const uploadRetry = time.Second

// uploadSlot waits for room to store one more payload for sender (a
// participant's address, or a relaying node's name) and returns the
// function that frees it. A sender that holds MaxUploadsPerSender slots
// already is refused at once rather than made to wait, so that one sender
// stalling its uploads cannot keep everyone else waiting; the refusal is
// for now (a *LimitError), so that a client sending in parallel tries
// again.
func (n *Node) uploadSlot(ctx context.Context, sender string) (func(), error) {
	if !n.senders.take(sender, n.limits.MaxUploadsPerSender) {
		return nil, &LimitError{RetryAfter: uploadRetry, Err: fmt.Errorf("%w: %s has %d uploads under way, the most one sender may have at once; try again in %s, when one may have finished",
			broker.ErrRateLimited, sender, n.limits.MaxUploadsPerSender, uploadRetry)}
	}
	select {
	case n.uploads <- struct{}{}:
		return func() { <-n.uploads; n.senders.give(sender) }, nil
	case <-ctx.Done():
		n.senders.give(sender)
		return nil, ctx.Err()
	}
}

// uploadCounts counts the upload slots each sender holds.
type uploadCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (u *uploadCounts) take(sender string, max int) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]int{}
	}
	if u.m[sender] >= max {
		return false
	}
	u.m[sender]++
	return true
}

func (u *uploadCounts) give(sender string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m[sender]--; u.m[sender] <= 0 {
		delete(u.m, sender)
	}
}

// storedReceipt answers a repeated submission: every recipient's chain as
// it stands now, which starts with the first submission's acceptance.
func (n *Node) storedReceipt(ctx context.Context, id string) (*Receipt, error) {
	evs, err := n.store.Evidence(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("submit %s: load evidence: %w", id, err)
	}
	r := &Receipt{MessageID: id}
	for _, ev := range evs {
		if ev.Type != string(evidence.SubmissionRejection) {
			r.Evidence = append(r.Evidence, ev)
		}
	}
	return r, nil
}

func (n *Node) dropBlob(ctx context.Context, id string) {
	if id == "" {
		return
	}
	if err := n.store.DeleteBlob(context.WithoutCancel(ctx), id); err != nil {
		n.log.Warn("cannot delete unused payload; the sweep removes it later", slog.String("blob", id), slog.Any(broker.LogErr, err))
	}
}

// truncate shortens s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
