package relay_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/pkitest"
	"kurier.dev/kurier/tlog"
)

// TestHostile_RejectionFlowsBack relays a message whose payload is random
// bytes, which no recipient can open, to the court's node; the judge
// retrieves it and refuses it with cannot-open. The court's node pushes
// the Rejection back like an Acknowledgement, the city's node stores it as
// the end of the judge's chain, and an Acknowledgement pushed after it is
// dropped: the copy stays rejected.
func TestHostile_RejectionFlowsBack(t *testing.T) {
	ctx := context.Background()
	f := newFederation(t)
	id := f.send(t, time.Hour, judge)
	f.worker(f.city, landgericht).Round(ctx)

	judgeP := pki.Peer{Kind: pki.KindParticipant, Address: judge}
	_, _, r, err := f.court.node.Fetch(ctx, judgeP, id)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, r)
	r.Close()
	ret, err := f.court.node.Retrieved(ctx, judgeP, id)
	if err != nil {
		t.Fatal(err)
	}
	_, judgeID, _ := courtIdentities(t)
	answer := func(typ evidence.Type, reason string) []byte {
		t.Helper()
		st := mustParse(t, ret.DER)
		der, err := evidence.Sign(&evidence.Statement{Version: evidence.StatementVersion, Type: typ, MessageID: id,
			EnvelopeSHA256: st.EnvelopeSHA256, PayloadSHA256: st.PayloadSHA256, Sender: pkitest.Agency,
			Recipient: judge, Issuer: judge, Time: f.clock.Now(), PreviousSHA256: evidence.Digest(ret.DER), Reason: reason}, pkitest.Signer(judgeID))
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	if _, err := f.court.node.Reject(ctx, judgeP, answer(evidence.Rejection, "cannot-open: the payload is not CMS")); err != nil {
		t.Fatalf("Reject: %v", err)
	}
	pushes, err := f.court.node.Pushes(ctx, "stadt.example", 0, 0)
	if err != nil || len(pushes) != 2 || pushes[1].Type != string(evidence.Rejection) {
		t.Fatalf("court's push queue: %v (%v), want the Retrieval and the Rejection", pushes, err)
	}

	f.worker(f.court, "stadt.example").Round(ctx)
	types, logs := chain(t, f.city, id, judge)
	if strings.Join(types, ",") != "SubmissionAcceptance,RelayAcceptance,Delivery,Retrieval,Rejection" {
		t.Fatalf("chain at the city's node: %v", types)
	}
	if logs[4] != tlog.Origin(landgericht) {
		t.Errorf("the Rejection is in log %q at the city's node, want the court's, which first received it", logs[4])
	}
	if c, err := f.city.db.Copy(ctx, id, judge); err != nil || c.State != broker.StateRejected {
		t.Errorf("the city's copy: %+v (%v), want rejected", c, err)
	}
	if left, err := f.court.node.Pushes(ctx, "stadt.example", 0, 0); err != nil || len(left) != 0 {
		t.Errorf("push queue after the push: %v (%v)", left, err)
	}

	// An Acknowledgement of the same Retrieval, pushed by the court's node
	// afterwards, does not follow the ended chain and is dropped.
	courtNode := pki.Peer{Kind: pki.KindNode, Domains: []string{landgericht}}
	ack := broker.Evidence{DER: answer(evidence.Acknowledgement, ""), Log: tlog.Origin(landgericht), LeafIndex: 99}
	if err := f.city.node.ReceiveEvidence(ctx, courtNode, ack); err != nil {
		t.Fatalf("an Acknowledgement after the Rejection: %v, want it dropped", err)
	}
	if types, _ := chain(t, f.city, id, judge); types[len(types)-1] != string(evidence.Rejection) {
		t.Errorf("chain after the late Acknowledgement: %v", types)
	}
}
