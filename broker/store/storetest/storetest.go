// Package storetest is the conformance suite of node.Store: what every
// storage backend of a node must do, checked through the interface alone.
// A backend's tests call Run with a function that opens a new, empty store
// of its kind, so that every backend is held to the same behaviour.
//
// The suite checks every method with each outcome its doc comment names,
// and a few the node relies on without the interface saying so; those are
// written here, as the suite's requirements:
//
//   - Nothing a refused write (an error other than a context error) was
//     asked to store becomes visible: no message, copy, evidence, queue
//     entry, deadline or leaf index.
//   - A page is never longer than its limit and ends with the cursor ""
//     (Inbox, Sent) or is shorter than the limit (Outbound, Pushes, Due)
//     when nothing follows.
//   - Inbox lists local copies only, by the copy's Received time, then
//     message id; a step keeps the Received time of the stored copy.
//   - A message's evidence of another node's log (Log set) keeps the leaf
//     index that node gave it and takes no place in this node's log;
//     AddEvidence refuses it with broker.ErrInvalid.
//   - Inconsistent arguments (a copy, evidence or queue entry of another
//     message, two copies for one recipient) are broker.ErrInvalid.
//   - DeleteBlob of a blob that is not there (deleted before) succeeds,
//     and it never deletes the payload of a stored message (badger
//     refuses with broker.ErrState). DeletePush of an entry that is not
//     there succeeds.
//   - WriteBlob stops reading soon after max bytes: a sender streaming
//     without end is cut off, not read to the end. Its error wraps the
//     reader's, so that the node can tell a broken upload from a store
//     failure.
//   - The log hashes leaf i as RFC 6962 does, over the DER of the evidence
//     with leaf index i; LogRoot of size 0 is the hash of nothing.
//     InclusionProof and ConsistencyProof are RFC 6962 proofs; they
//     return errors wrapping broker.ErrInvalid for impossible arguments
//     (index not below size, size1 above size2) and broker.ErrNotFound for
//     a size beyond the log, as LogRoot does.
//   - Under concurrent writers the log stays gap-free: every leaf index is
//     given once, LogSize is the number of evidence of the node's own
//     log. Of writers racing on one copy's head exactly one wins; of
//     one message created several times at once (each with its own
//     upload) exactly one is stored and the others get broker.ErrExists,
//     and so for one copy added several times at once.
//   - MarkLog of a size LogSize returned succeeds, also while writers
//     append (Checkpoint's LogSize, MarkLog, LogRoot).
//   - SetOutbound racing FinishRelay never puts back an entry that
//     FinishRelay removed.
//   - A call whose context has ended either does its work or fails with
//     an error wrapping the context's error, never with another sentinel.
//   - A name (address, message id, domain) that is a prefix or extension
//     of a stored one, or holds a pattern character of a query language,
//     names nothing: no listing strays into another's entries.
//
// What backends may do differently, and the suite allows:
//
//   - Blob ids, cursors and error texts are their own. A cursor is
//     opaque, but it must carry enough structure that the suite's
//     malformed ones ("!!", "AAAA", a phrase) are refused as such.
//   - A limit of 0 or less, or above the backend's maximum page, gives the
//     backend's maximum page (at least 10 entries).
//   - A blob not fit for a message (missing, deleted, of another size or
//     digest, another message's) may be refused with broker.ErrNotFound
//     or broker.ErrInvalid: the interface allows either.
//   - Due orders copies with the same deadline in any order, as long as
//     paging with after gives the same order.
//   - MarkLog with a size beyond the log fails, at once or after a wait
//     (the suite bounds the wait with its context).
//   - Times need only keep microseconds: the suite's times have no finer
//     part, and it compares them with time.Time.Equal.
//
// The suite opens a fresh store for every test and needs a few seconds
// against badger; its concurrency test runs 8 writers with 50 messages
// each.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/envelope"
)

// Open returns a new, empty store that stays open until t ends. Run calls
// it once for each of its tests (some 40), sequentially: a backend whose
// stores share a server opens a fresh database or schema each time.
type Open func(t *testing.T) node.Store

// Addresses the suite's messages use. Agency, Other and Court are local
// mailboxes; Remote is a mailbox of RemoteDomain's node.
const (
	Agency       = "poststelle@stadt.example"
	Other        = "buergeramt@stadt.example"
	Court        = "eingang@amtsgericht.example"
	Remote       = "eingang@landgericht.example"
	RemoteDomain = "landgericht.example"
)

// t0 is the suite's first receipt time, with microseconds but nothing
// finer.
var t0 = time.Date(2026, 11, 23, 10, 15, 2, 123456000, time.UTC)

// Run runs the whole suite against stores that open returns.
func Run(t *testing.T, open Open) {
	tests := []struct {
		name string
		run  func(*testing.T, Open)
	}{
		{"Blob", testBlob},
		{"BlobTooLarge", testBlobTooLarge},
		{"BlobReaderFails", testBlobReaderFails},
		{"BlobNotFound", testBlobNotFound},
		{"DeleteBlob", testDeleteBlob},
		{"CreateMessage", testCreateMessage},
		{"CreateMessageRepeat", testCreateMessageRepeat},
		{"CreateMessageRefused", testCreateMessageRefused},
		{"CreateMessageRace", testCreateMessageRace},
		{"CreateMessageAtLimits", testCreateMessageAtLimits},
		{"AddCopies", testAddCopies},
		{"AddCopiesRace", testAddCopiesRace},
		{"Inbox", testInbox},
		{"InboxMalformedCursor", testInboxMalformedCursor},
		{"Sent", testSent},
		{"SentPaging", testSentPaging},
		{"SentCursorOfAnotherSender", testSentCursorOfAnotherSender},
		{"SentMalformedCursor", testSentMalformedCursor},
		{"AppendEvidence", testAppendEvidence},
		{"AppendEvidenceConflict", testAppendEvidenceConflict},
		{"AppendEvidenceRace", testAppendEvidenceRace},
		{"EvidenceOfAnotherLog", testEvidenceOfAnotherLog},
		{"AddEvidence", testAddEvidence},
		{"EvidenceOrder", testEvidenceOrder},
		{"Outbound", testOutbound},
		{"SetOutbound", testSetOutbound},
		{"FinishRelay", testFinishRelay},
		{"FinishRelayConflict", testFinishRelayConflict},
		{"SetOutboundRace", testSetOutboundRace},
		{"LeaseRelay", testLeaseRelay},
		{"LeaseRelayRace", testLeaseRelayRace},
		{"Pushes", testPushes},
		{"Due", testDue},
		{"DueTies", testDueTies},
		{"LogEmpty", testLogEmpty},
		{"LogProofs", testLogProofs},
		{"LogOutOfRange", testLogOutOfRange},
		{"MarkLog", testMarkLog},
		{"ConcurrentWriters", testConcurrentWriters},
		{"Prefixes", testPrefixes},
		{"ContextEnded", testContextEnded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, open) })
	}
}

// Message is a message stored by Create, with its copies, evidence and
// queue entries as stored.
type Message struct {
	Msg      *broker.Message
	Copies   []broker.Copy
	Evidence []broker.Evidence // with leaf indexes, as CreateMessage returned them
	Outbound []broker.Outbound
}

// Create stores a message from sender to the recipients, received at
// received: a payload of 100 random bytes, a real envelope, one local
// delivered copy per recipient but a relaying copy for Remote (queued for
// RemoteDomain, due at the message's expiry), and stand-in evidence (a
// SubmissionAcceptance and one Delivery per local copy, random bytes for
// DER: the store does not read them). Each copy's head is its newest
// evidence's digest, as the node keeps it.
func Create(t *testing.T, st node.Store, sender string, received time.Time, to ...string) Message {
	t.Helper()
	m := build(t, st, sender, received, to...)
	evs, err := st.CreateMessage(context.Background(), m.Msg, m.Copies, m.Evidence, m.Outbound)
	if err != nil {
		t.Fatalf("CreateMessage: %v", err)
	}
	m.Evidence = evs
	return m
}

// build writes the payload of a message as Create describes it and
// returns the message, not stored yet.
func build(t *testing.T, st node.Store, sender string, received time.Time, to ...string) Message {
	t.Helper()
	payload := random(t, 100)
	blob, err := st.WriteBlob(context.Background(), bytes.NewReader(payload), 1<<20)
	if err != nil {
		t.Fatalf("WriteBlob: %v", err)
	}
	id, err := envelope.NewID()
	if err != nil {
		t.Fatal(err)
	}
	env := &envelope.Envelope{
		Version: envelope.Version, ID: id, From: sender, To: to,
		Subject: "Bescheid " + id[len(id)-6:], Type: "Bescheid", Reference: "Az. 63/2026-0815",
		Created: received.Add(-time.Second), Expires: received.Add(7 * 24 * time.Hour),
		PayloadSHA256: hex.EncodeToString(blob.SHA256[:]), PayloadSize: blob.Size,
		Files: []envelope.File{{Name: "bescheid.pdf", Size: 90, SHA256: digest(payload[:90])}},
	}
	raw, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m := &broker.Message{
		Envelope: raw, Signature: random(t, 100), Header: env, EnvelopeSHA256: envelope.Digest(raw),
		Received: received, Blob: blob.ID, Expires: received.Add(7 * 24 * time.Hour),
	}
	acceptance := random(t, 200)
	out := Message{Msg: m, Evidence: []broker.Evidence{{MessageID: id, Sender: sender, Type: "SubmissionAcceptance", DER: acceptance}}}
	for _, r := range to {
		c := broker.Copy{MessageID: id, Recipient: r, Received: received, State: broker.StateDelivered, Local: true}
		if r == Remote {
			c.State, c.Local, c.Deadline, c.Head = broker.StateRelaying, false, m.Expires, digest(acceptance)
			out.Outbound = append(out.Outbound, broker.Outbound{Domain: RemoteDomain, MessageID: id, NextTry: received})
		} else {
			der := random(t, 200)
			c.Head = digest(der)
			out.Evidence = append(out.Evidence, broker.Evidence{MessageID: id, Sender: sender, Recipient: r, Type: "Delivery", DER: der})
		}
		out.Copies = append(out.Copies, c)
	}
	return out
}

// clone returns a copy of m that shares nothing a test changes.
func (m Message) clone() Message {
	msg, h := *m.Msg, *m.Msg.Header
	msg.Header = &h
	return Message{Msg: &msg, Copies: slices.Clone(m.Copies), Evidence: slices.Clone(m.Evidence), Outbound: slices.Clone(m.Outbound)}
}

// copyOf returns m's copy for rcpt as created.
func (m Message) copyOf(t *testing.T, rcpt string) broker.Copy {
	t.Helper()
	for _, c := range m.Copies {
		if c.Recipient == rcpt {
			return c
		}
	}
	t.Fatalf("message %s has no copy for %s", m.Msg.ID(), rcpt)
	return broker.Copy{}
}

// step returns the step that moves c on by a new evidence of the node's
// own log of the given type, about a message of sender: the copy's head
// becomes the evidence's digest, its state the one given; its deadline
// stays.
func step(t *testing.T, sender string, c broker.Copy, typ string, state broker.State) broker.Step {
	t.Helper()
	der := random(t, 150)
	next := c
	next.Head, next.State = digest(der), state
	return broker.Step{
		Evidence: broker.Evidence{MessageID: c.MessageID, Sender: sender, Recipient: c.Recipient, Type: typ, DER: der},
		PrevHead: c.Head,
		Next:     next,
	}
}

// apply applies s with AppendEvidence and returns the evidence stored.
func apply(t *testing.T, st node.Store, s broker.Step) broker.Evidence {
	t.Helper()
	ev, err := st.AppendEvidence(context.Background(), s)
	if err != nil {
		t.Fatalf("AppendEvidence(%s for %s): %v", s.Evidence.Type, s.Evidence.Recipient, err)
	}
	return ev
}

// withLeaf returns ev with its leaf index set, as the store returns it.
func withLeaf(ev broker.Evidence, index uint64) broker.Evidence {
	ev.LeafIndex = index
	return ev
}

// evidenceOf returns the stored evidence of a message.
func evidenceOf(t *testing.T, st node.Store, id string) []broker.Evidence {
	t.Helper()
	evs, err := st.Evidence(context.Background(), id)
	if err != nil {
		t.Fatalf("Evidence(%s): %v", id, err)
	}
	return evs
}

// logSize returns the size of the store's transparency log.
func logSize(t *testing.T, st node.Store) uint64 {
	t.Helper()
	n, err := st.LogSize(context.Background())
	if err != nil {
		t.Fatalf("LogSize: %v", err)
	}
	return n
}

// storedCopy returns a stored copy.
func storedCopy(t *testing.T, st node.Store, id, rcpt string) broker.Copy {
	t.Helper()
	c, err := st.Copy(context.Background(), id, rcpt)
	if err != nil {
		t.Fatalf("Copy(%s, %s): %v", id, rcpt, err)
	}
	return *c
}

// diff reports want and got differing, named by what. Byte slices
// (envelopes, DER files) are compared whole: cmp's element-wise
// comparison of them would take most of the suite's time.
func diff(t *testing.T, what string, want, got any, opts ...cmp.Option) {
	t.Helper()
	if d := cmp.Diff(want, got, append(opts, cmp.Comparer(bytes.Equal))...); d != "" {
		t.Errorf("%s (-want +got):\n%s", what, d)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
