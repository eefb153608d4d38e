package client_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/evidence/audit"
)

// sealedRandom returns a message to the court with a valid envelope,
// signed by the agency, whose payload is random bytes rather than CMS:
// what a broken or hostile sender's software may submit, and what no node
// can tell apart, payloads being opaque to it.
func sealedRandom(t *testing.T) *client.Sealed {
	t.Helper()
	envBytes, sig, payload := forge(t, forgery{entries: []tarEntry{{name: "klage.pdf", data: "%PDF"}}, payload: randomBytes(t, 4096)})
	env, err := envelope.Parse(envBytes)
	if err != nil {
		t.Fatal(err)
	}
	return &client.Sealed{ID: env.ID, Envelope: envBytes, Signature: sig, Payload: payload}
}

// TestHostile_RandomPayload: a message whose payload is random bytes is
// stored by the node and handed over, but the recipient's client cannot
// open it, so no Acknowledgement can be signed for it. The recipient
// refuses it with cannot-open; the sender sees the recipient-signed
// Rejection in its chain, and the bundle verifies offline with it.
func TestHostile_RandomPayload(t *testing.T) {
	ctx := ctxT(t)
	ag, ct := dial(t, agency), dial(t, court)
	s := sealedRandom(t)
	if _, err := ag.Submit(ctx, s, nil); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	id := s.ID

	dir := t.TempDir()
	f, err := ct.Fetch(ctx, id, dir)
	var oe *client.OpenError
	if !errors.As(err, &oe) || f != nil {
		t.Fatalf("Fetch of a random payload: %v, want an *OpenError", err)
	}
	if !strings.Contains(err.Error(), "cannot be opened") || !strings.Contains(err.Error(), "decrypt") {
		t.Errorf("Fetch error %q does not say that the content does not decrypt", err)
	}
	if oe.Retrieval == nil || oe.Retrieval.Type() != evidence.Retrieval || oe.MessageID != id {
		t.Fatalf("OpenError carries %+v", oe)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("a failed fetch wrote %q", names)
	}
	if _, err := ct.Check(ctx, id); !errors.As(err, &oe) {
		t.Errorf("Check of a random payload: %v, want an *OpenError", err)
	}

	// Nothing that Fetch did not hand out passes for an opened message.
	for name, f := range map[string]*client.Fetched{
		"no proof":           nil,
		"the open error's":   {MessageID: id, Retrieval: oe.Retrieval},
		"a made-up envelope": {MessageID: id, Envelope: &envelope.Envelope{ID: id}, Retrieval: oe.Retrieval},
	} {
		if _, err := ct.Acknowledge(ctx, f); err == nil || !strings.Contains(err.Error(), "only a message fetched, opened and verified") {
			t.Errorf("Acknowledge with %s: %v", name, err)
		}
	}

	rej, err := ct.Reject(ctx, id, evidence.CannotOpen, "the payload does not decrypt with our key")
	if err != nil {
		t.Fatalf("Reject: %v", err)
	}
	st := rej.Statement
	if rej.Type() != evidence.Rejection || st.Issuer != daemon.DevCourt || rej.Signer.EmailAddresses[0] != daemon.DevCourt ||
		st.PreviousSHA256 != oe.Retrieval.Digest() || st.Reason != "cannot-open: the payload does not decrypt with our key" {
		t.Errorf("rejection: %s by %s (signer %v), previous %s, reason %q", rej.Type(), st.Issuer, rej.Signer.EmailAddresses, st.PreviousSHA256, st.Reason)
	}
	again, err := ct.Reject(ctx, id, evidence.CannotOpen, "the payload does not decrypt with our key")
	if err != nil || !bytes.Equal(again.DER, rej.DER) {
		t.Errorf("Reject again with the same reason: %v, or another rejection", err)
	}
	if _, err := ct.Reject(ctx, id, evidence.NotCompetent, ""); err == nil || !strings.Contains(err.Error(), "rejected before") {
		t.Errorf("Reject again with another reason: %v", err)
	}

	evs, err := ag.Evidence(ctx, id)
	if err != nil {
		t.Fatalf("sender's Evidence: %v", err)
	}
	want := []evidence.Type{evidence.SubmissionAcceptance, evidence.Delivery, evidence.Retrieval, evidence.Rejection}
	if diff := cmp.Diff(want, types(evs)); diff != "" {
		t.Fatalf("sender's chain (-want +got):\n%s", diff)
	}
	if !bytes.Equal(evs[3].DER, rej.DER) {
		t.Error("the sender sees another rejection than the recipient signed")
	}

	b, r, err := ag.Export(ctx, id)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	if !r.OK() {
		t.Fatalf("report not OK: %+v", r.Failed())
	}
	var buf bytes.Buffer
	if err := b.Write(&buf, time.Now()); err != nil {
		t.Fatal(err)
	}
	offline := audit.Verify("bundle.zip", buf.Bytes(), audit.Options{Roots: agency.Roots})
	if !offline.OK() {
		t.Fatalf("offline report not OK: %+v", offline.Failed())
	}
	wantChain := audit.Chain{Recipient: daemon.DevCourt, Types: []string{"SubmissionAcceptance", "Delivery", "Retrieval", "Rejection"}, State: "Rejection", Reason: st.Reason}
	if diff := cmp.Diff([]audit.Chain{wantChain}, offline.Chains); diff != "" {
		t.Errorf("offline report's chains (-want +got):\n%s", diff)
	}
	if !hasCheckDetail(offline, audit.CheckSignerRole, "04-Rejection.p7m", "issued by the recipient "+daemon.DevCourt) {
		t.Errorf("no signer role check of the rejection as the recipient's own: %+v", offline.Checks)
	}
	// The rejection alone, as a .p7m file, verifies too.
	if single := audit.Verify("04-Rejection.p7m", rej.DER, audit.Options{Roots: agency.Roots}); !hasCheckDetail(single, audit.CheckSignerRole, "04-Rejection.p7m", "issued by the recipient") {
		t.Errorf("the rejection file alone: %+v", single.Checks)
	}
}

// hasCheckDetail reports whether r holds a passed check named check about
// subject whose detail contains detail.
func hasCheckDetail(r *audit.Report, check, subject, detail string) bool {
	for _, c := range r.Checks {
		if c.Name == check && strings.HasSuffix(c.Subject, subject) && c.Status == audit.Pass && strings.Contains(c.Detail, detail) {
			return true
		}
	}
	return false
}

// TestHostile_AcknowledgeOrReject: a copy is acknowledged or rejected,
// once; the client refuses the other before signing, and the node refuses
// it too (FailedPrecondition) when the client's view is stale.
func TestHostile_AcknowledgeOrReject(t *testing.T) {
	ctx := ctxT(t)
	ag, ct := dial(t, agency), dial(t, court)

	t.Run("reject before fetch", func(t *testing.T) {
		id := send(t, ag, client.Document{Name: "a.txt", Data: []byte("a")})
		if _, err := ct.Reject(ctx, id, evidence.NotCompetent, ""); err == nil || !strings.Contains(err.Error(), "fetch the message before rejecting it") {
			t.Errorf("Reject before Fetch: %v", err)
		}
	})

	t.Run("acknowledged, then rejected", func(t *testing.T) {
		id := send(t, ag, client.Document{Name: "a.txt", Data: []byte("a")})
		f, err := ct.Fetch(ctx, id, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ct.Acknowledge(ctx, f); err != nil {
			t.Fatal(err)
		}
		if _, err := ct.Reject(ctx, id, evidence.NotCompetent, ""); err == nil || !strings.Contains(err.Error(), "an acknowledged message cannot be rejected") {
			t.Errorf("Reject after Acknowledge: %v", err)
		}
	})

	t.Run("rejected, then acknowledged", func(t *testing.T) {
		id := send(t, ag, client.Document{Name: "a.txt", Data: []byte("a")})
		f, err := ct.Fetch(ctx, id, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ct.Reject(ctx, id, evidence.NotCompetent, "Zuständig ist das Landgericht"); err != nil {
			t.Fatal(err)
		}
		// f was fetched before the rejection: the node refuses.
		_, err = ct.Acknowledge(ctx, f)
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "already rejected") {
			t.Errorf("Acknowledge after Reject: %v, want FailedPrecondition, already rejected", err)
		}
		// Fetched again, the copy ends with the rejection: the client refuses.
		f, err = ct.Check(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if f.Retrieval.Type() != evidence.Rejection {
			t.Errorf("evidence of a fetch after the rejection: %s", f.Retrieval.Type())
		}
		if _, err := ct.Acknowledge(ctx, f); err == nil || !strings.Contains(err.Error(), "a rejected message cannot be acknowledged") {
			t.Errorf("Acknowledge of a fetched, rejected message: %v", err)
		}
	})

	t.Run("hostile reason", func(t *testing.T) {
		id := send(t, ag, client.Document{Name: "a.txt", Data: []byte("a")})
		if _, err := ct.Check(ctx, id); err != nil {
			t.Fatal(err)
		}
		for name, text := range map[string]string{"bidi override": "nicht \u202eneztiseb\u202c zuständig", "escape sequence": "\x1b]8;;http://x\x07link"} {
			if _, err := ct.Reject(ctx, id, evidence.OtherRejection, text); !errors.Is(err, evidence.ErrInvalid) {
				t.Errorf("%s: Reject = %v, want ErrInvalid", name, err)
			}
		}
		evs, err := ag.Evidence(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if last := evs[len(evs)-1].Type(); last != evidence.Retrieval {
			t.Errorf("after refused rejections the chain ends with %s", last)
		}
	})
}
