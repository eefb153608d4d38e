package client_test

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/client"
	"kurier.dev/kurier/evidence/audit"
	"kurier.dev/kurier/evidence/bundle"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
	"kurier.dev/kurier/tlog"
)

func TestClient_Export(t *testing.T) {
	ag, ct := dial(t, agency), dial(t, court)
	older, err := ag.Checkpoint(ctxT(t))
	if err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	id := send(t, ag, client.Document{Name: "a.txt", Data: []byte("Schriftsatz")})
	f, err := ct.Fetch(ctxT(t), id, t.TempDir())
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if _, err := ct.Acknowledge(ctxT(t), f); err != nil {
		t.Fatalf("Acknowledge: %v", err)
	}

	// The sender's export holds the whole chain, verified, and proves the
	// log consistent with the checkpoint taken before sending.
	b, r, err := ag.Export(ctxT(t), id, older)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	if !r.OK() {
		t.Fatalf("report not OK: %+v", r.Failed())
	}
	var types []string
	for _, e := range b.Evidence {
		types = append(types, e.Name)
	}
	want := []string{"01-SubmissionAcceptance.p7m", "02-Delivery.p7m", "03-Retrieval.p7m", "04-Acknowledgement.p7m"}
	if !slices.Equal(types, want) {
		t.Errorf("evidence = %v, want %v", types, want)
	}
	// On one node every evidence is in its own log: a bundle of the
	// current format with no other logs.
	if b.Version != bundle.Version || len(b.Logs) != 0 || r.Log == nil || len(r.OtherLogs) != 0 {
		t.Errorf("bundle version %d with %d other logs; report logs %+v and %+v", b.Version, len(b.Logs), r.Log, r.OtherLogs)
	}
	for _, e := range b.Evidence {
		if r.Log != nil && e.Log != r.Log.Origin {
			t.Errorf("%s is in log %q, want the node's %s", e.Name, e.Log, r.Log.Origin)
		}
	}
	oldSize, _ := tlog.PeekSize(older)
	if len(b.Consistency) != 1 || b.Consistency[0].From != oldSize {
		t.Errorf("consistency proofs = %+v, want one from size %d", b.Consistency, oldSize)
	}
	if !hasCheck(r, audit.CheckConsistency, audit.Pass) {
		t.Error("the report has no passed consistency check")
	}

	// Written and read back, it verifies offline with the CA certificate
	// alone.
	var buf bytes.Buffer
	if err := b.Write(&buf, time.Now()); err != nil {
		t.Fatalf("Write: %v", err)
	}
	r2 := audit.Verify("bundle.zip", buf.Bytes(), audit.Options{Roots: agency.Roots, Since: []audit.File{{Name: "older", Data: older}}})
	if !r2.OK() {
		t.Fatalf("offline report not OK: %+v", r2.Failed())
	}
	if _, err := bundle.Read(bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
		t.Fatalf("Read: %v", err)
	}

	// The recipient's export holds its own chain, signed for it.
	_, r3, err := ct.Export(ctxT(t), id)
	if err != nil {
		t.Fatalf("recipient Export: %v", err)
	}
	if len(r3.Chains) != 1 || r3.Chains[0].State != "Acknowledgement" {
		t.Errorf("recipient's chains = %+v", r3.Chains)
	}

	// Anyone else learns nothing.
	other := dial(t, malloryID(t))
	if _, _, err := other.Export(ctxT(t), id); status.Code(err) != codes.NotFound {
		t.Errorf("Export by another participant: %v, want NotFound", err)
	}
}

func hasCheck(r *audit.Report, name string, s audit.Status) bool {
	for _, c := range r.Checks {
		if c.Name == name && c.Status == s {
			return true
		}
	}
	return false
}

// TestClient_CheckpointsConsistent sends a run of messages, keeping the
// node's signed checkpoint after each, and has the last message's bundle
// prove its log consistent with them: each is then a prefix of the same
// tree, so all of them are consistent with each other.
func TestClient_CheckpointsConsistent(t *testing.T) {
	const messages = 48
	ag := dial(t, agency)
	var kept [][]byte
	var last string
	for i := range messages {
		last = send(t, ag, client.Document{Name: "n.txt", Data: []byte{byte(i)}})
		cp, err := ag.Checkpoint(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, cp)
	}
	// Sizes only grow.
	var prev uint64
	for i, cp := range kept {
		n, err := tlog.PeekSize(cp)
		if err != nil {
			t.Fatal(err)
		}
		if n <= prev {
			t.Fatalf("checkpoint %d has %d leaves, after %d", i, n, prev)
		}
		prev = n
	}
	// A bundle holds at most 16 consistency proofs: take every third.
	var since [][]byte
	for i := 0; i < len(kept) && len(since) < bundle.MaxConsistency; i += 3 {
		since = append(since, kept[i])
	}
	_, r, err := ag.Export(ctxT(t), last, since...)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	var consistent int
	for _, c := range r.Checks {
		if c.Name == audit.CheckConsistency && c.Status == audit.Pass {
			consistent++
		}
	}
	if consistent != len(since) {
		t.Errorf("%d of %d older checkpoints proven consistent: %+v", consistent, len(since), r.Failed())
	}
}

// TestClient_ExportAssemblesLogs: the node's other logs and each
// evidence's log go into the bundle as the node sent them, for Export's
// verification to judge: here a log key that no node vouched for.
func TestClient_ExportAssemblesLogs(t *testing.T) {
	ag := dial(t, agency)
	id := send(t, ag, client.Document{Name: "a.txt", Data: []byte("Schriftsatz")})
	resp, err := ag.ExportResponse(ctxT(t), id)
	if err != nil {
		t.Fatalf("ExportMessage: %v", err)
	}
	own := resp.GetEvidence()[0].GetLog()
	if own != tlog.Origin("stadt.example") {
		t.Fatalf("the node names log %q for its own evidence", own)
	}
	other := tlog.Origin("landgericht.example")
	resp.Logs = []*kurierv1.LogState{{
		Origin: other, Checkpoint: resp.GetCheckpoint(), TreeSize: 1,
		LogKey: other + "+01234567+AQ==", LogKeySignature: resp.GetEnvelope().GetSignature(),
	}}
	resp.Evidence[1].Log = other
	b, err := ag.Assemble(id, resp)
	if err != nil {
		t.Fatalf("Assemble: %v", err)
	}
	want := bundle.Log{Origin: other, Checkpoint: resp.GetCheckpoint(), LogKey: other + "+01234567+AQ==", LogKeySignature: resp.GetEnvelope().GetSignature()}
	if diff := cmp.Diff([]bundle.Log{want}, b.Logs); diff != "" {
		t.Errorf("other logs (-want +got):\n%s", diff)
	}
	if b.Evidence[0].Log != own || b.Evidence[1].Log != other {
		t.Errorf("evidence logs %q, %q; want %q, %q", b.Evidence[0].Log, b.Evidence[1].Log, own, other)
	}
	r := audit.Bundle(id+".zip", b, audit.Options{Roots: agency.Roots})
	if !hasCheck(r, audit.CheckLogKey, audit.Fail) || hasCheck(r, audit.CheckFormat, audit.Fail) {
		t.Errorf("the bundle's checks: %+v", r.Failed())
	}

	resp.Logs = slices.Repeat(resp.Logs, bundle.MaxLogs+1)
	if _, err := ag.Assemble(id, resp); err == nil {
		t.Error("Assemble took more than MaxLogs other logs")
	}
}
