package node_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki/cms"
)

// answerOf signs, as the court, its statement of type typ about m's copy
// following prev. A reason is put into the JSON as given, past the
// statement's own checks, as a recipient's own software could.
func answerOf(t *testing.T, m *message, typ evidence.Type, prev, reason string) []byte {
	t.Helper()
	st := &evidence.Statement{
		Version: evidence.StatementVersion, Type: typ, MessageID: m.env.ID,
		EnvelopeSHA256: envelope.Digest(m.bytes), PayloadSHA256: m.env.PayloadSHA256,
		Sender: agency, Recipient: court, Issuer: court, Time: time.Now(), PreviousSHA256: prev,
	}
	if typ == evidence.Rejection {
		st.Reason = "other: placeholder"
	}
	b, err := st.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if reason != "" {
		b = bytes.Replace(b, []byte(`"other: placeholder"`), []byte(`"`+reason+`"`), 1)
	}
	der, err := cms.Sign(b, signer(fx.IDs[court]))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// retrieve fetches the court's copy of m whole and returns the head of
// its chain.
func (h *harness) retrieve(m *message) string {
	h.t.Helper()
	ctx := context.Background()
	_, _, r, err := h.node.Fetch(ctx, participant(court), m.env.ID)
	if err != nil {
		h.t.Fatal(err)
	}
	io.Copy(io.Discard, r)
	r.Close()
	ev, err := h.node.Retrieved(ctx, participant(court), m.env.ID)
	if err != nil {
		h.t.Fatal(err)
	}
	return evidence.Digest(ev.DER)
}

// TestHostile_RejectOrAcknowledge has a recipient's own software, past
// the client's checks, try to answer a copy it was not handed, to answer
// it twice in contradicting ways, and to smuggle characters into the
// reason that would show the sender something else than it says: the
// node refuses each, and stores only the first answer after the
// Retrieval.
func TestHostile_RejectOrAcknowledge(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, node.Limits{})
	submitted := func() *message {
		m := newMessage(t, fx.IDs[agency], agency, court)
		if _, err := h.submit(agency, m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	head := func(m *message) (string, broker.State) {
		c, err := h.db.Copy(ctx, m.env.ID, court)
		if err != nil {
			t.Fatal(err)
		}
		return c.Head, c.State
	}

	t.Run("reject before retrieval", func(t *testing.T) {
		m := submitted()
		prev, _ := head(m)
		_, err := h.node.Reject(ctx, participant(court), answerOf(t, m, evidence.Rejection, prev, ""))
		if !errors.Is(err, broker.ErrState) || !strings.Contains(err.Error(), "fetch it before rejecting it") {
			t.Fatalf("Reject of a copy not handed over: %v, want ErrState", err)
		}
	})

	t.Run("hostile reason", func(t *testing.T) {
		m := submitted()
		prev := h.retrieve(m)
		for name, reason := range map[string]string{
			"bidi override":   "other: nicht \u202eneztiseb\u202c zust\u00e4ndig",
			"escaped control": `other: erste Zeile\u001b[2J`,
			"unknown code":    "abgelehnt",
			"code, no text":   "other",
		} {
			_, err := h.node.Reject(ctx, participant(court), answerOf(t, m, evidence.Rejection, prev, reason))
			if !errors.Is(err, broker.ErrInvalid) {
				t.Errorf("%s: Reject = %v, want ErrInvalid", name, err)
			}
		}
		if got, state := head(m); got != prev || state != broker.StateRetrieved {
			t.Errorf("after refused rejections the copy is %s at %s", state, got)
		}
	})

	t.Run("rejected, then acknowledged", func(t *testing.T) {
		m := submitted()
		prev := h.retrieve(m)
		if _, err := h.node.Reject(ctx, participant(court), answerOf(t, m, evidence.Acknowledgement, prev, "")); !errors.Is(err, broker.ErrInvalid) {
			t.Errorf("an Acknowledgement sent as a rejection: %v, want ErrInvalid", err)
		}
		rej := answerOf(t, m, evidence.Rejection, prev, "cannot-open: the payload is not CMS")
		stored, err := h.node.Reject(ctx, participant(court), rej)
		if err != nil {
			t.Fatalf("Reject: %v", err)
		}
		if again, err := h.node.Reject(ctx, participant(court), rej); err != nil || again.LeafIndex != stored.LeafIndex {
			t.Errorf("repeated rejection: %v, %v", again, err)
		}
		if _, state := head(m); state != broker.StateRejected {
			t.Errorf("state %s, want rejected", state)
		}
		for name, der := range map[string][]byte{
			"acknowledging the Retrieval": answerOf(t, m, evidence.Acknowledgement, prev, ""),
			"acknowledging the Rejection": answerOf(t, m, evidence.Acknowledgement, evidence.Digest(rej), ""),
		} {
			_, err := h.node.Acknowledge(ctx, participant(court), der)
			if !errors.Is(err, broker.ErrState) || !strings.Contains(err.Error(), "already rejected") {
				t.Errorf("%s: Acknowledge = %v, want ErrState, already rejected", name, err)
			}
		}
		// Fetched again, the copy answers with its Rejection, no second
		// Retrieval.
		if ev, err := h.node.Retrieved(ctx, participant(court), m.env.ID); err != nil || !bytes.Equal(ev.DER, rej) {
			t.Errorf("Retrieved after the rejection: %s, %v", ev.Type, err)
		}
		evs, err := h.node.Evidence(ctx, participant(agency), m.env.ID)
		want := []string{"SubmissionAcceptance", "Delivery", "Retrieval", "Rejection"}
		if err != nil || !equal(types(evs), want) {
			t.Errorf("the sender sees %v (%v), want %v", types(evs), err, want)
		}
	})

	t.Run("acknowledged, then rejected", func(t *testing.T) {
		m := submitted()
		prev := h.retrieve(m)
		ack := answerOf(t, m, evidence.Acknowledgement, prev, "")
		if _, err := h.node.Acknowledge(ctx, participant(court), ack); err != nil {
			t.Fatal(err)
		}
		for name, der := range map[string][]byte{
			"rejecting the Retrieval":       answerOf(t, m, evidence.Rejection, prev, "not-competent"),
			"rejecting the Acknowledgement": answerOf(t, m, evidence.Rejection, evidence.Digest(ack), "not-competent"),
		} {
			_, err := h.node.Reject(ctx, participant(court), der)
			if !errors.Is(err, broker.ErrState) || !strings.Contains(err.Error(), "already acknowledged") {
				t.Errorf("%s: Reject = %v, want ErrState, already acknowledged", name, err)
			}
		}
	})
}
