package client_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

// The node of the tests serves both stadt.example and amtsgericht.example,
// so its certificate may sign evidence in the name of either: only the
// client's issuer check tells which domain may issue which type.
func TestClient_VerifyEvidenceIssuer(t *testing.T) {
	node, err := pki.LoadIdentity(filepath.Join(devDir, "node"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := envelope.NewID()
	if err != nil {
		t.Fatal(err)
	}
	const (
		agencyDomain = "stadt.example"
		courtDomain  = "amtsgericht.example"
	)
	tests := map[string]struct {
		typ       evidence.Type
		recipient string
		issuer    string
		want      string // "" for success
	}{
		"acceptance by the sender's domain":    {typ: evidence.SubmissionAcceptance, recipient: daemon.DevCourt, issuer: agencyDomain},
		"acceptance by the recipient's domain": {typ: evidence.SubmissionAcceptance, recipient: daemon.DevCourt, issuer: courtDomain, want: "issued by amtsgericht.example, but only stadt.example"},
		"rejection by the sender's domain":     {typ: evidence.SubmissionRejection, issuer: agencyDomain},
		"rejection by another domain":          {typ: evidence.SubmissionRejection, issuer: courtDomain, want: "issued by amtsgericht.example, but only stadt.example"},
		"delivery by the recipient's domain":   {typ: evidence.Delivery, recipient: daemon.DevCourt, issuer: courtDomain},
		"delivery by the sender's domain":      {typ: evidence.Delivery, recipient: daemon.DevCourt, issuer: agencyDomain, want: "issued by stadt.example, but only amtsgericht.example"},
		"retrieval by the recipient's domain":  {typ: evidence.Retrieval, recipient: daemon.DevCourt, issuer: courtDomain},
		"retrieval by the sender's domain":     {typ: evidence.Retrieval, recipient: daemon.DevCourt, issuer: agencyDomain, want: "issued by stadt.example, but only amtsgericht.example"},
		"non-delivery by the sender's domain":  {typ: evidence.NonDelivery, recipient: daemon.DevCourt, issuer: agencyDomain},
		"non-delivery by the recipient's":      {typ: evidence.NonDelivery, recipient: daemon.DevCourt, issuer: courtDomain},
	}
	ct := dial(t, court)
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			st := &evidence.Statement{
				Version: evidence.StatementVersion, Type: tt.typ, MessageID: id,
				EnvelopeSHA256: strings.Repeat("a", 64), PayloadSHA256: strings.Repeat("b", 64),
				Sender: daemon.DevAgency, Recipient: tt.recipient, Issuer: tt.issuer,
				Time: time.Now().UTC().Truncate(time.Microsecond),
			}
			if tt.typ == evidence.SubmissionRejection || tt.typ == evidence.NonDelivery {
				st.Reason = "test"
			}
			// Signed without evidence.Sign, which refuses a wrong issuer.
			b, err := st.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			der, err := cms.Sign(b, signer(node))
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			_, err = ct.VerifyEvidence(der, id)
			if tt.want == "" {
				if err != nil {
					t.Errorf("VerifyEvidence: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("VerifyEvidence: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
