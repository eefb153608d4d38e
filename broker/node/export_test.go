package node_test

import (
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/evidence/audit"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/tlog"
)

func TestNode_Export(t *testing.T) {
	h := newHarness(t, node.Limits{})
	ctx := context.Background()
	m := newMessage(t, fx.IDs[agency], agency, court, other)
	if _, err := h.submit(agency, m); err != nil {
		t.Fatal(err)
	}
	id := m.env.ID
	if _, err := h.node.Retrieved(ctx, participant(court), id); err != nil {
		t.Fatal(err)
	}

	x, err := h.node.Export(ctx, participant(agency), id, []uint64{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	// Each recipient's chain in one piece, in the envelope's order, though
	// the court's Retrieval was issued last.
	var got []string
	for _, ev := range x.Evidence {
		got = append(got, ev.Recipient+" "+ev.Type)
	}
	want := []string{
		court + " SubmissionAcceptance", court + " Delivery", court + " Retrieval",
		other + " SubmissionAcceptance", other + " Delivery",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("evidence = %q, want %q", got, want)
	}

	cp, err := tlog.Open(x.Checkpoint, fx.LogVKey)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != x.TreeSize {
		t.Errorf("checkpoint size %d, export says %d", cp.Size, x.TreeSize)
	}
	for i, ev := range x.Evidence {
		if err := tlog.VerifyInclusion(ev.DER, ev.LeafIndex, x.Proofs[i], cp); err != nil {
			t.Errorf("evidence %d: %v", i+1, err)
		}
	}
	if len(x.Consistency) != 2 || x.Consistency[0].From != 0 || x.Consistency[1].From != 1 {
		t.Fatalf("consistency = %+v, want from 0 and 1", x.Consistency)
	}
	root1, err := h.db.LogRoot(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.VerifyConsistency(tlog.Checkpoint{Origin: cp.Origin, Size: 1, Root: root1}, cp, x.Consistency[1].Proof); err != nil {
		t.Errorf("consistency from 1: %v", err)
	}

	// The index: signed by the node, naming the log key and every evidence.
	v, err := cms.Verify(x.Index, cms.Policy{Trust: h.trust, At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Signer.Equal(fx.Node.Cert) {
		t.Errorf("index signed by %s", v.Signer.Subject)
	}
	ix, err := bundle.ParseIndex(v.Content)
	if err != nil {
		t.Fatal(err)
	}
	var digests []string
	for _, ev := range x.Evidence {
		digests = append(digests, evidence.Digest(ev.DER))
	}
	if ix.MessageID != id || ix.RequestedBy != agency || ix.LogKey != fx.LogVKey || ix.Origin != cp.Origin ||
		ix.TreeSize != cp.Size || !slices.Equal(ix.Evidence, digests) {
		t.Errorf("index = %+v", ix)
	}
	if len(x.CRL) == 0 || x.Message.ID() != id {
		t.Error("export lacks the CRL or the message")
	}

	// A recipient gets its own chain only; anyone else nothing.
	xc, err := h.node.Export(ctx, participant(court), id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := types(xc.Evidence); !slices.Equal(got, []string{"SubmissionAcceptance", "Delivery", "Retrieval"}) {
		t.Errorf("court's export = %v", got)
	}
	if _, err := h.node.Export(ctx, participant("niemand@stadt.example"), id, nil); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("export by a stranger: %v, want ErrNotFound", err)
	}

	// Tree sizes the log has not reached, and too many of them.
	if _, err := h.node.Export(ctx, participant(agency), id, []uint64{cp.Size + 1}); !errors.Is(err, broker.ErrInvalid) {
		t.Errorf("since beyond the log: %v, want ErrInvalid", err)
	}
	if _, err := h.node.Export(ctx, participant(agency), id, make([]uint64, bundle.MaxConsistency+1)); !errors.Is(err, broker.ErrInvalid) {
		t.Errorf("too many since: %v, want ErrInvalid", err)
	}
}

// TestNode_ExportAfterRejections: an id refused twice for a payload that
// did not match, then accepted, exports into a bundle that verifies, each
// rejection standing alone.
func TestNode_ExportAfterRejections(t *testing.T) {
	h := newHarness(t, node.Limits{})
	ctx := context.Background()
	m := newMessage(t, fx.IDs[agency], agency, court)
	good := m.payload
	for range 2 {
		m.payload = append(slices.Clone(good[:len(good)-1]), good[len(good)-1]^1)
		if _, err := h.submit(agency, m); err == nil {
			t.Fatal("a payload that does not match its digest was accepted")
		}
	}
	m.payload = good
	if _, err := h.submit(agency, m); err != nil {
		t.Fatal(err)
	}
	x, err := h.node.Export(ctx, participant(agency), m.env.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle.Bundle{
		MessageID: m.env.ID, Envelope: x.Message.Envelope, Signature: x.Message.Signature,
		Checkpoint: x.Checkpoint, Index: x.Index, CRL: x.CRL,
		Certificates: append([]*x509.Certificate{fx.Node.Cert, fx.IDs[agency].Cert}, fx.Node.Roots...),
	}
	for i, ev := range x.Evidence {
		st, err := evidence.Parse(ev.DER)
		if err != nil {
			t.Fatal(err)
		}
		b.Evidence = append(b.Evidence, bundle.Evidence{Name: bundle.EvidenceName(i, st.Statement.Type), DER: ev.DER, LeafIndex: ev.LeafIndex, Proof: x.Proofs[i]})
	}
	if got := types(x.Evidence); !slices.Equal(got, []string{"SubmissionAcceptance", "Delivery", "SubmissionRejection", "SubmissionRejection"}) {
		t.Errorf("evidence = %v", got)
	}
	if r := audit.Bundle("bundle.zip", b, audit.Options{Roots: fx.Node.Roots}); !r.OK() {
		t.Errorf("bundle does not verify: %+v", r.Failed())
	}
}

func TestNode_ExportRefusedMessage(t *testing.T) {
	h := newHarness(t, node.Limits{})
	m := newMessage(t, fx.IDs[agency], agency, court)
	m.payload[0] ^= 1
	if _, err := h.submit(agency, m); err == nil {
		t.Fatal("a payload that does not match its digest was accepted")
	}
	_, err := h.node.Export(context.Background(), participant(agency), m.env.ID, nil)
	if !errors.Is(err, broker.ErrNotFound) || !strings.Contains(err.Error(), "was refused") {
		t.Errorf("Export of a refused message: %v, want ErrNotFound saying it was refused", err)
	}
}
