package relay_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/pkitest"
)

// sentStates returns, by recipient, where the agency's outbox at the
// city's node says the copies of message id stand.
func sentStates(t *testing.T, f *federation, id string) map[string]node.RecipientState {
	t.Helper()
	sent, _, err := f.city.node.Sent(context.Background(), pki.Peer{Kind: pki.KindParticipant, Address: pkitest.Agency}, "", 0)
	if err != nil {
		t.Fatalf("Sent: %v", err)
	}
	for _, m := range sent {
		if m.Message.ID() == id {
			out := map[string]node.RecipientState{}
			for _, r := range m.Recipients {
				out[r.Address] = r
			}
			return out
		}
	}
	t.Fatalf("message %s is not in the agency's outbox", id)
	return nil
}

// The sender's outbox follows a recipient of another node by what that
// node answers and pushes back: relaying until the relay, delivered with
// the court's Delivery, retrieved once the court's Retrieval came back.
func TestNode_SentFollowsEvidenceBack(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	id := f.send(t, time.Hour, judge, pkitest.Court)

	check := func(when string, want map[string]struct {
		state broker.State
		typ   evidence.Type
	}) {
		t.Helper()
		got := sentStates(t, f, id)
		for rcpt, w := range want {
			if g := got[rcpt]; g.State != w.state || g.Evidence != w.typ || g.Time.IsZero() {
				t.Errorf("%s: %s is %s by %s at %s, want %s by %s", when, rcpt, g.State, g.Evidence, g.Time, w.state, w.typ)
			}
		}
	}
	type st = struct {
		state broker.State
		typ   evidence.Type
	}
	check("before the relay", map[string]st{
		judge: {broker.StateRelaying, evidence.SubmissionAcceptance}, pkitest.Court: {broker.StateDelivered, evidence.Delivery},
	})

	f.worker(f.city, landgericht).Round(ctx)
	check("after the relay", map[string]st{judge: {broker.StateDelivered, evidence.Delivery}})

	judgeP := pki.Peer{Kind: pki.KindParticipant, Address: judge}
	_, _, r, err := f.court.node.Fetch(ctx, judgeP, id)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, r)
	r.Close()
	if _, err := f.court.node.Retrieved(ctx, judgeP, id); err != nil {
		t.Fatal(err)
	}
	check("before the push", map[string]st{judge: {broker.StateDelivered, evidence.Delivery}})
	f.worker(f.court, "stadt.example").Round(ctx)
	check("after the push", map[string]st{
		judge: {broker.StateRetrieved, evidence.Retrieval}, pkitest.Court: {broker.StateDelivered, evidence.Delivery},
	})

	// The court's node lists nothing for the agency: it serves another
	// domain, and the agency's messages are listed at the agency's node.
	if _, _, err := f.court.node.Sent(ctx, pki.Peer{Kind: pki.KindParticipant, Address: pkitest.Agency}, "", 0); !errors.Is(err, broker.ErrForbidden) || !strings.Contains(err.Error(), "home node") {
		t.Errorf("the court's node listing the agency's sent messages: %v, want ErrForbidden naming the home node", err)
	}
}

// A message the court's node refuses is undeliverable in the outbox, with
// the city's NonDelivery and its reason.
func TestNode_SentShowsRefusal(t *testing.T) {
	ctx := context.Background()
	f := newFederationWith(t, node.Limits{MaxPayload: 100 << 10})
	id := f.send(t, time.Hour, judge)
	f.worker(f.city, landgericht).Round(ctx)
	got := sentStates(t, f, id)[judge]
	if got.State != broker.StateUndeliverable || got.Evidence != evidence.NonDelivery || got.Reason == "" {
		t.Errorf("refused copy in the outbox: %+v, want undeliverable by NonDelivery with a reason", got)
	}
}
