// Package storetest is the conformance suite of node.Store: what every
// storage backend of a node must do, checked through the interface alone.
// A backend's tests call Run with a function that opens a new, empty store
// of its kind, so that every backend is held to the same behaviour.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/envelope"
)

// Open returns a new, empty store that stays open until t ends.
type Open func(t *testing.T) node.Store

// Addresses the suite's messages use.
const (
	Agency = "poststelle@stadt.example"
	Other  = "buergeramt@stadt.example"
	Court  = "eingang@amtsgericht.example"
	Remote = "eingang@landgericht.example"
)

// t0 is the suite's first receipt time.
var t0 = time.Date(2026, 11, 23, 10, 15, 2, 123456000, time.UTC)

// Run runs the whole suite against stores that open returns.
func Run(t *testing.T, open Open) {
	t.Run("Sent", func(t *testing.T) { testSent(t, open) })
	t.Run("SentPaging", func(t *testing.T) { testSentPaging(t, open) })
	t.Run("SentCursorOfAnotherSender", func(t *testing.T) { testSentCursorOfAnotherSender(t, open) })
	t.Run("SentMalformedCursor", func(t *testing.T) { testSentMalformedCursor(t, open) })
}

// Message is a message stored by Create, with its copies as stored.
type Message struct {
	Msg    *broker.Message
	Copies []broker.Copy
}

// Create stores a message from sender to the recipients, received at
// received: a payload of 100 random bytes, a real envelope, one local
// delivered copy per recipient but a relaying copy for Remote (queued for
// its domain), and stand-in evidence (a SubmissionAcceptance and one
// Delivery or none per copy). Each copy's head is its newest evidence's
// digest, as the node keeps it.
func Create(t *testing.T, st node.Store, sender string, received time.Time, to ...string) Message {
	t.Helper()
	ctx := context.Background()
	payload := random(t, 100)
	blob, err := st.WriteBlob(ctx, bytes.NewReader(payload), 1<<20)
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
		Files: []envelope.File{{Name: "bescheid.pdf", Size: 90, SHA256: strings.Repeat("ab", 32)}},
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
	evs := []broker.Evidence{{MessageID: id, Sender: sender, Type: "SubmissionAcceptance", DER: acceptance}}
	var copies []broker.Copy
	var out []broker.Outbound
	for _, r := range to {
		c := broker.Copy{MessageID: id, Recipient: r, Received: received, State: broker.StateDelivered, Local: true}
		if r == Remote {
			c.State, c.Local, c.Deadline, c.Head = broker.StateRelaying, false, m.Expires, digest(acceptance)
			out = append(out, broker.Outbound{Domain: "landgericht.example", MessageID: id, NextTry: received})
		} else {
			der := random(t, 200)
			c.Head = digest(der)
			evs = append(evs, broker.Evidence{MessageID: id, Sender: sender, Recipient: r, Type: "Delivery", DER: der})
		}
		copies = append(copies, c)
	}
	if _, err := st.CreateMessage(ctx, m, copies, evs, out); err != nil {
		t.Fatalf("CreateMessage: %v", err)
	}
	return Message{Msg: m, Copies: copies}
}

func testSent(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	first := Create(t, st, Agency, t0, Court, Remote)
	Create(t, st, Other, t0.Add(time.Second), Court)
	second := Create(t, st, Agency, t0.Add(2*time.Second), Court)

	// The court answers the first message; the listing follows the step.
	c := first.Copies[0]
	der := random(t, 200)
	next := c
	next.State, next.Head = broker.StateRejected, digest(der)
	if _, err := st.AppendEvidence(ctx, broker.Step{
		Evidence: broker.Evidence{MessageID: c.MessageID, Sender: Agency, Recipient: Court, Type: "Rejection", DER: der},
		PrevHead: c.Head, Next: next,
	}); err != nil {
		t.Fatalf("AppendEvidence: %v", err)
	}

	got, cursor, err := st.Sent(ctx, Agency, "", 10)
	if err != nil {
		t.Fatalf("Sent: %v", err)
	}
	if cursor != "" {
		t.Errorf("Sent of all: next cursor %q, want none", cursor)
	}
	if ids := idsOf(got); !slices.Equal(ids, []string{second.Msg.ID(), first.Msg.ID()}) {
		t.Fatalf("Sent = %q, want the agency's two messages, newest first", ids)
	}
	e := got[1]
	if e.Message.Header.Subject != first.Msg.Header.Subject || !e.Message.Received.Equal(t0) || e.Message.EnvelopeSHA256 != first.Msg.EnvelopeSHA256 {
		t.Errorf("Sent's message %+v is not the one stored", e.Message.Header)
	}
	states := map[string]broker.Copy{}
	for _, c := range e.Copies {
		states[c.Recipient] = c
	}
	if len(e.Copies) != 2 || states[Court].State != broker.StateRejected || states[Court].Head != next.Head ||
		states[Remote].State != broker.StateRelaying || states[Remote].Local {
		t.Errorf("Sent's copies %+v, want the court's rejected and the remote one relaying", e.Copies)
	}

	for sender, want := range map[string]int{Other: 1, Court: 0, "nobody@stadt.example": 0, "": 0} {
		got, cursor, err := st.Sent(ctx, sender, "", 10)
		if err != nil || len(got) != want || cursor != "" {
			t.Errorf("Sent(%q) = %d entries, cursor %q, %v; want %d", sender, len(got), cursor, err, want)
		}
		for _, e := range got {
			if e.Message.Header.From != sender {
				t.Errorf("Sent(%q) lists a message from %s", sender, e.Message.Header.From)
			}
		}
	}
}

func testSentPaging(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	var want []string
	// Received out of order, and two at the same time (then by id).
	for _, d := range []time.Duration{3, 1, 4, 1, 5, 9, 2} {
		m := Create(t, st, Agency, t0.Add(d*time.Second), Court)
		Create(t, st, Other, t0.Add(d*time.Second), Court)
		want = append(want, m.Msg.ID())
	}
	byTime := map[string]time.Time{}
	var all []string
	for cursor, pages := "", 0; ; pages++ {
		if pages > len(want) {
			t.Fatal("Sent keeps handing out cursors")
		}
		page, next, err := st.Sent(ctx, Agency, cursor, 2)
		if err != nil {
			t.Fatalf("Sent page %d: %v", pages, err)
		}
		if len(page) > 2 || len(page) == 0 {
			t.Fatalf("Sent page %d has %d entries, want 1 or 2", pages, len(page))
		}
		for _, e := range page {
			all = append(all, e.Message.ID())
			byTime[e.Message.ID()] = e.Message.Received
		}
		if next == "" {
			break
		}
		cursor = next
	}
	slices.SortFunc(want, func(a, b string) int {
		if c := byTime[b].Compare(byTime[a]); c != 0 {
			return c
		}
		return -cmpString(a, b)
	})
	if !slices.Equal(all, want) {
		t.Errorf("paged Sent = %q, want %q (newest first, then by id descending)", all, want)
	}
}

func testSentCursorOfAnotherSender(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	for i := range 3 {
		Create(t, st, Agency, t0.Add(time.Duration(i)*time.Second), Court)
	}
	other := Create(t, st, Other, t0.Add(-time.Hour), Court)
	_, cursor, err := st.Sent(ctx, Agency, "", 1)
	if err != nil || cursor == "" {
		t.Fatalf("Sent: cursor %q, %v", cursor, err)
	}
	// The agency's cursor names a position; in another sender's listing it
	// leads to that sender's messages only.
	got, _, err := st.Sent(ctx, Other, cursor, 10)
	if err != nil {
		t.Fatalf("Sent with another sender's cursor: %v", err)
	}
	for _, e := range got {
		if e.Message.Header.From != Other {
			t.Errorf("another sender's cursor led to a message from %s", e.Message.Header.From)
		}
	}
	if ids := idsOf(got); len(ids) != 1 || ids[0] != other.Msg.ID() {
		t.Errorf("Sent(other, agency's cursor) = %q, want only the other's message", ids)
	}
}

func testSentMalformedCursor(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	Create(t, st, Agency, t0, Court)
	for _, c := range []string{"!!", "AAAA", "not a cursor at all"} {
		if _, _, err := st.Sent(ctx, Agency, c, 10); !errors.Is(err, broker.ErrInvalid) {
			t.Errorf("Sent with cursor %q: %v, want ErrInvalid", c, err)
		}
	}
}

func idsOf(es []broker.SentEntry) []string {
	var ids []string
	for _, e := range es {
		ids = append(ids, e.Message.ID())
	}
	return ids
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
