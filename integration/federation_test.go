package integration

import (
	"archive/zip"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

var fullChain = []string{"SubmissionAcceptance", "RelayAcceptance", "Delivery", "Retrieval", "Acknowledgement"}

// TestFederation_TwoCourts sends one message from the city to the mailboxes
// of two courts on two other nodes; each court fetches and acknowledges it
// at its own node, and the city sees both whole chains at its node.
func TestFederation_TwoCourts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f := newFederation(ctx, t)
	for _, d := range []string{stadt, amtsg, landg} {
		f.start(d)
	}
	doc := writeDoc(t, "klage.pdf", 700<<10)
	var sent struct{ ID string }
	if err := f.as(ctx, poststelle, &sent, "send", "--to", amtsgEin, "--to", landgEin, "--subject", "Klage", "--reference", "4 C 12/26", doc); err != nil {
		t.Fatal(err)
	}
	id := sent.ID
	f.waitEvidence(ctx, poststelle, id, time.Minute, map[string][]string{
		amtsgEin: fullChain[:3], landgEin: fullChain[:3],
	})
	for _, court := range []string{amtsgEin, landgEin} {
		var inbox []struct{ ID, From string }
		if err := f.as(ctx, court, &inbox, "inbox"); err != nil {
			t.Fatal(err)
		}
		if len(inbox) != 1 || inbox[0].ID != id || inbox[0].From != poststelle {
			t.Fatalf("inbox of %s = %+v, want the one message from %s", court, inbox, poststelle)
		}
		out := filepath.Join(t.TempDir(), "eingang")
		if err := f.as(ctx, court, nil, "fetch", id, "-o", out); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(out, "klage.pdf"))
		want, _ := os.ReadFile(doc)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s fetched a document that differs from the one sent (%v)", court, err)
		}
		if err := f.as(ctx, court, nil, "ack", id); err != nil {
			t.Fatal(err)
		}
		own, err := f.evidenceTypes(ctx, court, id)
		if err != nil || !chainsEqual(own, map[string][]string{court: fullChain}) {
			t.Fatalf("evidence at the court's node for %s: %v (%v), want %v", court, own, err, fullChain)
		}
	}
	f.waitEvidence(ctx, poststelle, id, time.Minute, map[string][]string{amtsgEin: fullChain, landgEin: fullChain})
	var listed []struct{ Type, Recipient, Log string }
	if err := f.as(ctx, poststelle, &listed, "evidence", id); err != nil {
		t.Fatal(err)
	}
	for i, e := range listed {
		want := fullChain[i%len(fullChain)]
		if e.Type != want || e.Recipient != listed[i-i%len(fullChain)].Recipient {
			t.Fatalf("kurier evidence lists %+v, want each recipient's chain in one piece", listed)
		}
		if wantLog := domainOf(e.Recipient) + "/kurier-log"; i%len(fullChain) > 0 && e.Log != wantLog {
			t.Errorf("%s of %s is in the log %q, want %q", e.Type, e.Recipient, e.Log, wantLog)
		}
	}

	// The same evidence files, byte for byte, at both ends.
	senderDir, courtDir := filepath.Join(t.TempDir(), "s"), filepath.Join(t.TempDir(), "c")
	if err := f.as(ctx, poststelle, nil, "evidence", id, "-o", senderDir); err != nil {
		t.Fatal(err)
	}
	if err := f.as(ctx, amtsgEin, nil, "evidence", id, "-o", courtDir); err != nil {
		t.Fatal(err)
	}
	courtFiles, _ := os.ReadDir(courtDir)
	senderFiles, _ := os.ReadDir(senderDir)
	if len(courtFiles) != len(fullChain) || len(senderFiles) != 2*len(fullChain) {
		t.Fatalf("evidence files: %d at the court, %d at the sender", len(courtFiles), len(senderFiles))
	}
	for _, e := range courtFiles {
		c, _ := os.ReadFile(filepath.Join(courtDir, e.Name()))
		found := false
		for _, s := range senderFiles {
			b, _ := os.ReadFile(filepath.Join(senderDir, s.Name()))
			found = found || bytes.Equal(b, c)
		}
		if !found {
			t.Errorf("the court's %s is not among the sender's evidence", e.Name())
		}
	}
}

// TestFederation_ReceiverDown kills the court's node (SIGKILL) before the
// submission and restarts it after the city's node has tried several
// times: the message arrives, exactly once.
func TestFederation_ReceiverDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f := newFederation(ctx, t)
	sender, court := f.start(stadt), f.start(amtsg)
	// The city's node has answered for the court once, so an outage only
	// delays the relay.
	if err := f.as(ctx, poststelle, nil, "directory", amtsgEin); err != nil {
		t.Fatal(err)
	}
	court.kill()
	var sent struct{ ID string }
	if err := f.as(ctx, poststelle, &sent, "send", "--to", amtsgEin, "--subject", "Eilantrag", writeDoc(t, "antrag.pdf", 40<<10)); err != nil {
		t.Fatal(err)
	}
	waitLog(t, sender, "relay failed; trying again later", 3, time.Minute)
	f.start(amtsg)
	f.waitEvidence(ctx, poststelle, sent.ID, time.Minute, map[string][]string{amtsgEin: fullChain[:3]})
	var inbox []struct{ ID string }
	if err := f.as(ctx, amtsgEin, &inbox, "inbox"); err != nil {
		t.Fatal(err)
	}
	if len(inbox) != 1 || inbox[0].ID != sent.ID {
		t.Fatalf("inbox after the outage = %+v, want the message once", inbox)
	}
}

// TestFederation_SenderKilledMidRelay kills the city's node while it is
// relaying a large message and restarts it: the court gets the message
// once, and the city's chain holds one RelayAcceptance and one Delivery.
func TestFederation_SenderKilledMidRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f := newFederation(ctx, t)
	sender := f.start(stadt)
	f.start(amtsg)
	var sent struct{ ID string }
	if err := f.as(ctx, poststelle, &sent, "send", "--to", amtsgEin, "--subject", "Akte", writeDoc(t, "akte.pdf", 24<<20)); err != nil {
		t.Fatal(err)
	}
	waitLog(t, sender, "relay: start", 1, time.Minute)
	sender.kill()
	f.start(stadt)
	f.waitEvidence(ctx, poststelle, sent.ID, 2*time.Minute, map[string][]string{amtsgEin: fullChain[:3]})
	var inbox []struct{ ID string }
	if err := f.as(ctx, amtsgEin, &inbox, "inbox"); err != nil {
		t.Fatal(err)
	}
	if len(inbox) != 1 || inbox[0].ID != sent.ID {
		t.Fatalf("inbox after the sender's crash = %+v, want the message once", inbox)
	}
}

// TestFederation_Expiry sends to a court whose node is down until the
// message expires: the city's node gives up with NonDelivery, signed by
// itself, and says why.
func TestFederation_Expiry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f := newFederation(ctx, t)
	f.start(stadt)
	court := f.start(landg)
	if err := f.as(ctx, poststelle, nil, "directory", landgEin); err != nil {
		t.Fatal(err)
	}
	court.stop()
	var sent struct{ ID string }
	if err := f.as(ctx, poststelle, &sent, "send", "--to", landgEin, "--subject", "Frist", "--expires", "3s", writeDoc(t, "frist.pdf", 1000)); err != nil {
		t.Fatal(err)
	}
	f.waitEvidence(ctx, poststelle, sent.ID, time.Minute, map[string][]string{landgEin: {"SubmissionAcceptance", "NonDelivery"}})
	var evs []struct{ Type, Issuer, Reason string }
	if err := f.as(ctx, poststelle, &evs, "evidence", sent.ID); err != nil {
		t.Fatal(err)
	}
	nd := evs[len(evs)-1]
	if nd.Issuer != stadt || !strings.Contains(nd.Reason, "expired") {
		t.Fatalf("NonDelivery = %+v, want one issued by %s saying the message expired", nd, stadt)
	}
}

// waitLog waits until a node's log holds msg at least n times.
func waitLog(t *testing.T, n *nodeProc, msg string, count int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for strings.Count(n.logs.String(), msg) < count {
		if time.Now().After(deadline) {
			t.Fatalf("%q not logged %d times within %s:\n%s", msg, count, limit, n.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFederation_RelayAuthorization calls the relay service of a real
// node as a participant, and as a node relaying for a domain it does not
// serve: both are refused, and nothing is stored.
func TestFederation_RelayAuthorization(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFederation(ctx, t)
	target := f.start(landg)
	agency, err := pki.LoadIdentity(f.ids[poststelle])
	if err != nil {
		t.Fatal(err)
	}
	court, err := pki.LoadIdentity(filepath.Join(f.dir, amtsg, "node"))
	if err != nil {
		t.Fatal(err)
	}
	env, sig := signedEnvelope(t, agency, poststelle, landgEin)
	header := &kurierv1.RelayRequest{Part: &kurierv1.RelayRequest_Header{Header: &kurierv1.RelayHeader{
		Envelope:   &kurierv1.SignedEnvelope{Envelope: env, Signature: sig},
		Recipients: []*kurierv1.RelayRecipient{{Address: landgEin}},
	}}}
	for name, id := range map[string]*pki.Identity{"participant": agency, "node of another domain": court} {
		t.Run(name, func(t *testing.T) {
			relay := kurierv1.NewRelayServiceClient(f.dial(t, id, target.addr, landg))
			stream, err := relay.Relay(ctx)
			if err != nil {
				t.Fatal(err)
			}
			stream.Send(header) // the answer, not the send, tells
			_, err = stream.CloseAndRecv()
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("Relay: %v, want PermissionDenied", err)
			}
			_, err = relay.PushEvidence(ctx, &kurierv1.PushEvidenceRequest{Evidence: &kurierv1.Evidence{Der: sig}})
			if status.Code(err) != codes.PermissionDenied && status.Code(err) != codes.InvalidArgument {
				t.Fatalf("PushEvidence: %v, want a refusal", err)
			}
		})
	}
	if !strings.Contains(target.logs.String(), "does not serve stadt.example") {
		t.Errorf("the node's log does not say why the foreign node was refused:\n%s", target.logs)
	}
	var inbox []struct{ ID string }
	if err := f.as(ctx, landgEin, &inbox, "inbox"); err != nil || len(inbox) != 0 {
		t.Fatalf("inbox after refused relays = %+v (%v), want empty", inbox, err)
	}
}

// dial connects to a node at addr as id, expecting the node of domain.
func (f *federation) dial(t *testing.T, id *pki.Identity, addr, domain string) *grpc.ClientConn {
	t.Helper()
	trust, err := pki.NewTrustStore(id.Roots, filepath.Join(f.dir, "ca", "crl.pem"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(id, trust, domain))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// signedEnvelope returns a valid envelope from `from` to `to`, signed with
// id, and its signature.
func signedEnvelope(t *testing.T, id *pki.Identity, from, to string) ([]byte, []byte) {
	t.Helper()
	mid, err := envelope.NewID()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	env := &envelope.Envelope{
		Version: envelope.Version, ID: mid, From: from, To: []string{to}, Subject: "Test",
		Created: now, Expires: now.Add(time.Hour), PayloadSHA256: strings.Repeat("ab", 32), PayloadSize: 10,
		Files: []envelope.File{{Name: "a.txt", Size: 1, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}},
	}
	b, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := cms.SignDetached(b, cms.Signer{Cert: id.Cert, Key: id.Key, Chain: id.Chain})
	if err != nil {
		t.Fatal(err)
	}
	return b, sig
}

// TestFederation_ExportVerifyTamper exports the bundle of a message relayed to
// a court, at the sender's node and at the court's, and verifies each
// offline with nothing but the CA certificate, every node stopped: each
// evidence is proven in the log of the node that holds it. Then each
// tamper case fails, naming the check.
func TestFederation_ExportVerifyTamper(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f := newFederation(ctx, t)
	f.start(stadt)
	f.start(amtsg)
	var sent struct{ ID string }
	if err := f.as(ctx, poststelle, &sent, "send", "--to", amtsgEin, "--subject", "Klage", writeDoc(t, "klage.pdf", 5000)); err != nil {
		t.Fatal(err)
	}
	id := sent.ID
	f.waitEvidence(ctx, poststelle, id, time.Minute, map[string][]string{amtsgEin: fullChain[:3]})
	if err := f.as(ctx, amtsgEin, nil, "fetch", id, "-o", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if err := f.as(ctx, amtsgEin, nil, "ack", id); err != nil {
		t.Fatal(err)
	}
	f.waitEvidence(ctx, poststelle, id, time.Minute, map[string][]string{amtsgEin: fullChain})

	fresh := t.TempDir()
	for who, file := range map[string]string{poststelle: "sender.zip", amtsgEin: "court.zip"} {
		if err := f.as(ctx, who, nil, "export", id, "-o", filepath.Join(fresh, file)); err != nil {
			t.Fatalf("export at the node of %s: %v", who, err)
		}
	}
	for _, n := range f.nodes {
		n.stop()
	}
	copyFile(t, f.ca, filepath.Join(fresh, "ca.pem"))

	for file, other := range map[string]string{"sender.zip": amtsg, "court.zip": stadt} {
		stdout, stderr, code := offline(ctx, t, fresh, "verify", file, "--ca", "ca.pem")
		if code != 0 {
			t.Fatalf("verify %s exited %d: %s\n%s", file, code, stderr, stdout)
		}
		if !strings.Contains(stdout, "ok   log key logs/"+other) || !strings.Contains(stdout, "ok   inclusion proof") {
			t.Errorf("verify %s does not show the log of %s checked:\n%s", file, other, stdout)
		}
	}

	foreign := "logs/" + amtsg + "/"
	cityKey, err := os.ReadFile(filepath.Join(f.dir, stadt, "node", "log.vkey"))
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		entry  string
		change func([]byte) []byte
		want   string
	}{
		"the court's RelayAcceptance altered": {"evidence/02-RelayAcceptance.p7m", func(b []byte) []byte {
			i := bytes.Index(b, []byte(`"recipient":"`))
			b[i+14] ^= 0x01
			return b
		}, "FAIL evidence signature evidence/02-RelayAcceptance.p7m"},
		"the court's log key replaced by the city's": {foreign + "log.vkey", func([]byte) []byte {
			return bytes.TrimSpace(cityKey)
		}, "FAIL log key"},
		"the court's checkpoint replaced by the city's": {foreign + "checkpoint", func([]byte) []byte {
			return readZipEntry(t, filepath.Join(fresh, "sender.zip"), "checkpoint")
		}, "FAIL checkpoint signature"},
		"the court's log dropped": {foreign + "checkpoint", func([]byte) []byte { return nil }, "FAIL bundle format"},
	} {
		t.Run(name, func(t *testing.T) {
			tampered := filepath.Join(t.TempDir(), "tampered.zip")
			rewriteZip(t, filepath.Join(fresh, "sender.zip"), tampered, tc.entry, tc.change)
			stdout, _, code := offline(ctx, t, fresh, "verify", tampered, "--ca", "ca.pem")
			if code != 1 || !strings.Contains(stdout, tc.want) {
				t.Errorf("verify exited %d, want 1 with %q:\n%s", code, tc.want, stdout)
			}
		})
	}
}

// readZipEntry returns one entry of a zip file.
func readZipEntry(t *testing.T, path, name string) []byte {
	t.Helper()
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		if f.Name == name {
			return readEntry(t, f)
		}
	}
	t.Fatalf("%s has no %s", path, name)
	return nil
}
