package relay_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
)

// TestHostile_RevokedRemoteRecipient revokes the encryption certificate of
// a mailbox at the court's node after the city's node has its directory
// entry cached, and the court's node is down: the city hands the cached
// certificate out no more, and refuses a submission to that mailbox with
// a SubmissionRejection instead of queueing it.
func TestHostile_RevokedRemoteRecipient(t *testing.T) {
	ctx := context.Background()
	const richter = "richter@landgericht.example"
	id, err := fx.CA.IssueParticipant(filepath.Join(t.TempDir(), "richter"), richter)
	if err != nil {
		t.Fatal(err)
	}
	f := newFederationOf(t, node.Limits{}, node.Participant{Address: richter, EncryptionCert: id.EncCert})
	if p, err := f.city.node.Lookup(ctx, richter); err != nil || !p.EncryptionCert.Equal(id.EncCert) {
		t.Fatalf("Lookup before revocation: %v, %v", p, err)
	}
	f.court.srv.Stop() // only the city's cache can answer now

	if err := fx.CA.Revoke(id.EncCert.SerialNumber, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.CA.WriteCRL(24 * time.Hour); err != nil {
		t.Fatal(err)
	}
	// The trust store looks at its CRL file at most once a second.
	f.city.trust.SetClock(func() time.Time { return time.Now().Add(2 * time.Second) })

	if p, err := f.city.node.Lookup(ctx, richter); !errors.Is(err, broker.ErrState) || !strings.Contains(err.Error(), "encryption certificate is revoked") {
		t.Fatalf("Lookup of a cached, revoked certificate: %v, %v; want ErrState saying it is revoked", p.EncryptionCert != nil, err)
	}
	_, err = f.submit(t, time.Hour, richter)
	var rej *node.Rejection
	if !errors.As(err, &rej) || !errors.Is(err, broker.ErrState) || rej.Evidence.Type != "SubmissionRejection" {
		t.Fatalf("submit to a revoked remote recipient: %v, want a SubmissionRejection (ErrState)", err)
	}
	if q, _ := f.city.db.Outbound(ctx, landgericht, "", 0); len(q) != 0 {
		t.Fatalf("the refused message is queued for the court: %v", q)
	}
}
