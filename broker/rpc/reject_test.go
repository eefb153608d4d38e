package rpc_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// TestAuthz_Reject sends Rejections over the wire, each signed with the
// court's key but past the client's checks: for a copy not handed over,
// by a caller who is not the recipient, with characters in the reason
// that would make it lie, and a second answer after the first. Each gets
// the status a person can act on; only the first valid one is stored.
func TestAuthz_Reject(t *testing.T) {
	addr, trust := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	agency, court := fx.IDs[pkitest.Agency], fx.IDs[pkitest.Court]
	asAgency := kurierv1.NewMailboxServiceClient(dial(t, addr, agency, trust))
	asCourt := kurierv1.NewMailboxServiceClient(dial(t, addr, court, trust))

	first, payload := signedSubmit(t, pkitest.Agency, agency, pkitest.Court, 2000)
	stream, err := asAgency.Submit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(first)
	stream.Send(&kurierv1.SubmitRequest{Part: &kurierv1.SubmitRequest_Chunk{Chunk: payload}})
	receipt, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	envBytes := first.GetEnvelope().GetEnvelope()
	env, err := envelope.Parse(envBytes)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(typ evidence.Type, prev []byte, reason string) []byte {
		t.Helper()
		st := &evidence.Statement{
			Version: evidence.StatementVersion, Type: typ, MessageID: env.ID,
			EnvelopeSHA256: envelope.Digest(envBytes), PayloadSHA256: env.PayloadSHA256,
			Sender: pkitest.Agency, Recipient: pkitest.Court, Issuer: pkitest.Court, Time: time.Now(),
			PreviousSHA256: evidence.Digest(prev), Reason: "other: placeholder",
		}
		if typ != evidence.Rejection {
			st.Reason = ""
		}
		b, err := st.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.Replace(b, []byte(`"other: placeholder"`), []byte(`"`+reason+`"`), 1)
		der, err := cms.Sign(b, pkitest.Signer(court))
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	reject := func(c kurierv1.MailboxServiceClient, der []byte) error {
		_, err := c.Reject(ctx, &kurierv1.RejectRequest{Evidence: der})
		return err
	}

	delivery := receipt.Evidence[1].Der
	if err := reject(asCourt, sign(evidence.Rejection, delivery, "cannot-open")); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "fetch it before rejecting it") {
		t.Errorf("Reject before Fetch: %v, want FailedPrecondition", err)
	}

	fetch, err := asCourt.Fetch(ctx, &kurierv1.FetchRequest{MessageId: env.ID})
	if err != nil {
		t.Fatal(err)
	}
	var retrieval []byte
	for {
		resp, err := fetch.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev := resp.GetEvidence(); ev != nil {
			retrieval = ev.Der
		}
	}

	for name, tc := range map[string]struct {
		caller kurierv1.MailboxServiceClient
		der    []byte
		code   codes.Code
		want   string
	}{
		"by the sender":   {asAgency, sign(evidence.Rejection, retrieval, "cannot-open"), codes.PermissionDenied, "the rejection is for " + pkitest.Court},
		"bidi override":   {asCourt, sign(evidence.Rejection, retrieval, "other: ok\u202e"), codes.InvalidArgument, "U+202E"},
		"no reason code":  {asCourt, sign(evidence.Rejection, retrieval, "weil"), codes.InvalidArgument, "is not one of cannot-open, not-competent, other"},
		"acknowledgement": {asCourt, sign(evidence.Acknowledgement, retrieval, ""), codes.InvalidArgument, "expected Rejection, got Acknowledgement"},
	} {
		if err := reject(tc.caller, tc.der); status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Reject = %v, want %s containing %q", name, err, tc.code, tc.want)
		}
	}

	der := sign(evidence.Rejection, retrieval, "cannot-open: kein CMS")
	resp, err := asCourt.Reject(ctx, &kurierv1.RejectRequest{Evidence: der})
	if err != nil || !bytes.Equal(resp.GetEvidence().GetDer(), der) || resp.GetEvidence().GetType() != "Rejection" {
		t.Fatalf("Reject: %v, %v", resp, err)
	}
	if err := reject(asCourt, sign(evidence.Rejection, retrieval, "not-competent")); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "already rejected") {
		t.Errorf("a second rejection: %v, want FailedPrecondition", err)
	}
	_, err = asCourt.Acknowledge(ctx, &kurierv1.AcknowledgeRequest{Evidence: sign(evidence.Acknowledgement, retrieval, "")})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "already rejected") {
		t.Errorf("Acknowledge after the rejection: %v, want FailedPrecondition", err)
	}
	got, err := asAgency.GetEvidence(ctx, &kurierv1.GetEvidenceRequest{MessageId: env.ID})
	if err != nil || len(got.Evidence) != 4 || !bytes.Equal(got.Evidence[3].Der, der) {
		t.Errorf("the sender's evidence: %v (%v)", got, err)
	}
}
