package node

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki/ca"
	"kurier.dev/kurier/pki/cms"
)

// TestIssue_RemembersWhatItSigned: the statement the node keeps for a
// copy's next step is the one a reader of the signed evidence gets, to
// the microsecond and in UTC, however the issuing time was given. The
// next step's time is held against it.
func TestIssue_RemembersWhatItSigned(t *testing.T) {
	dir := t.TempDir()
	authority, err := ca.Init(filepath.Join(dir, "ca"), "Kurier Test CA")
	if err != nil {
		t.Fatal(err)
	}
	id, err := authority.IssueNode(filepath.Join(dir, "node"), []string{"stadt.example"})
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{signer: cms.Signer{Cert: id.Cert, Key: id.Key, Chain: id.Chain}, domains: map[string]bool{"stadt.example": true}}
	msgID, _ := envelope.NewID()
	m := &broker.Message{
		Header:         &envelope.Envelope{ID: msgID, From: "poststelle@stadt.example", PayloadSHA256: evidence.Digest([]byte("payload"))},
		EnvelopeSHA256: evidence.Digest([]byte("envelope")),
	}
	at := time.Date(2026, 12, 2, 4, 5, 6, 123456789, time.FixedZone("CET", 3600))
	ev, err := n.issueAt(m, "eingang@amtsgericht.example", evidence.SubmissionAcceptance, "", "", at)
	if err != nil {
		t.Fatal(err)
	}
	kept, ok := n.heads.get(evidence.Digest(ev.DER))
	if !ok {
		t.Fatal("the node kept no statement for the evidence it issued")
	}
	read, err := evidence.Parse(ev.DER)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(kept, read.Statement) {
		t.Fatalf("kept statement\n%+v\ndiffers from the signed one\n%+v", kept, read.Statement)
	}
	if want := at.UTC().Truncate(time.Microsecond); kept.Time != want {
		t.Fatalf("kept time %v, want %v", kept.Time, want)
	}
}

// TestHostile_IssuedReasonIsPlainText: the reasons a node gives are
// often error texts that quote others — a remote node's refusal, a
// relay's error — which may hold newlines, bidi overrides or broken
// UTF-8. The node still issues its NonDelivery, with each such character
// a space, cut to the statement's limit: a statement refuses them, and a
// node that could not issue the evidence would leave the copy without
// its end.
func TestHostile_IssuedReasonIsPlainText(t *testing.T) {
	dir := t.TempDir()
	authority, err := ca.Init(filepath.Join(dir, "ca"), "Kurier Test CA")
	if err != nil {
		t.Fatal(err)
	}
	id, err := authority.IssueNode(filepath.Join(dir, "node"), []string{"stadt.example"})
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{signer: cms.Signer{Cert: id.Cert, Key: id.Key, Chain: id.Chain}, domains: map[string]bool{"stadt.example": true}}
	msgID, _ := envelope.NewID()
	m := &broker.Message{
		Header:         &envelope.Envelope{ID: msgID, From: "poststelle@stadt.example", PayloadSHA256: evidence.Digest([]byte("payload"))},
		EnvelopeSHA256: evidence.Digest([]byte("envelope")),
	}
	for reason, want := range map[string]string{
		"the node of kreis.example refused the message: line\nbreak": "the node of kreis.example refused the message: line break",
		"rechnung\u202Efdp.exe\x00\xff":                              "rechnung fdp.exe \uFFFD",
		strings.Repeat("ä", evidence.MaxReasonLen):                   strings.Repeat("ä", evidence.MaxReasonLen/2),
	} {
		ev, err := n.issueAt(m, "eingang@kreis.example", evidence.NonDelivery, evidence.Digest([]byte("prev")), reason, time.Now())
		if err != nil {
			t.Fatalf("issue a NonDelivery with reason %.40q: %v", reason, err)
		}
		read, err := evidence.Parse(ev.DER)
		if err != nil {
			t.Fatal(err)
		}
		if read.Statement.Reason != want {
			t.Errorf("reason %.40q issued as %.40q, want %.40q", reason, read.Statement.Reason, want)
		}
	}
}
