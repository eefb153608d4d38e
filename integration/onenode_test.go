package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

const (
	agencyAddr = "poststelle@stadt.example"
	courtAddr  = "eingang@amtsgericht.example"
)

// TestOneNode_EndToEnd sends a document from the agency to the court
// through one real node, fetches and acknowledges it, checks the evidence
// chain (with OpenSSL too, where it is installed), that the agency cannot
// fetch the court's copy, and that message and evidence survive SIGKILL.
func TestOneNode_EndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	n := startDevNode(t, filepath.Join(dir, "dev"))
	agency, court := n.identity("agency"), n.identity("court")

	doc := make([]byte, 300<<10)
	rand.Read(doc)
	docPath := filepath.Join(dir, "Klageschrift 4 C 12-26.pdf")
	if err := os.WriteFile(docPath, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	note := filepath.Join(dir, "anlage.txt")
	os.WriteFile(note, []byte("Anlage K1\n"), 0o600)

	var sent struct{ ID string }
	if err := n.runJSON(ctx, agency, &sent, "send", "--to", courtAddr, "--subject", "Klage", "--reference", "4 C 12/26", docPath, note); err != nil {
		t.Fatal(err)
	}
	if sent.ID == "" {
		t.Fatal("send printed no id")
	}
	id := sent.ID

	var inbox []struct{ ID, From, Subject, Received string }
	if err := n.runJSON(ctx, court, &inbox, "inbox"); err != nil {
		t.Fatal(err)
	}
	if len(inbox) != 1 || inbox[0].ID != id || inbox[0].From != agencyAddr || inbox[0].Subject != "Klage" || inbox[0].Received == "" {
		t.Fatalf("court inbox = %+v, want the message from %s", inbox, agencyAddr)
	}
	var agencyInbox []map[string]any
	if err := n.runJSON(ctx, agency, &agencyInbox, "inbox"); err != nil || len(agencyInbox) != 0 {
		t.Fatalf("agency inbox = %v (%v), want empty", agencyInbox, err)
	}

	if _, err := n.run(ctx, agency, "fetch", id, "-o", filepath.Join(dir, "stolen")); err == nil {
		t.Fatal("the agency fetched the court's message")
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "stolen")); len(entries) != 0 {
		t.Fatalf("a refused fetch wrote %d files", len(entries))
	}

	out := filepath.Join(dir, "eingang")
	if _, err := n.run(ctx, court, "fetch", id, "-o", out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(out, filepath.Base(docPath)))
	if err != nil || !bytes.Equal(got, doc) {
		t.Fatalf("fetched document differs from the sent one (%v)", err)
	}
	if got, _ := os.ReadFile(filepath.Join(out, "anlage.txt")); string(got) != "Anlage K1\n" {
		t.Fatalf("fetched anlage.txt = %q", got)
	}

	if _, err := n.run(ctx, court, "ack", id); err != nil {
		t.Fatal(err)
	}

	wantTypes := []string{"SubmissionAcceptance", "Delivery", "Retrieval", "Acknowledgement"}
	courtEv := checkEvidence(ctx, t, n, court, id, filepath.Join(dir, "ev-court"), wantTypes)
	agencyEv := checkEvidence(ctx, t, n, agency, id, filepath.Join(dir, "ev-agency"), wantTypes)
	for i := range courtEv {
		if !bytes.Equal(courtEv[i], agencyEv[i]) {
			t.Errorf("evidence %d differs between sender and recipient", i+1)
		}
	}

	// A crash: SIGKILL, then a restart on the same directory.
	n.kill()
	n2 := startDevNode(t, n.dir)
	inbox = nil
	if err := n2.runJSON(ctx, court, &inbox, "inbox"); err != nil {
		t.Fatal(err)
	}
	if len(inbox) != 1 || inbox[0].ID != id {
		t.Fatalf("after SIGKILL and restart the court's inbox = %+v, want the message", inbox)
	}
	after := checkEvidence(ctx, t, n2, agency, id, filepath.Join(dir, "ev-after"), wantTypes)
	for i := range after {
		if !bytes.Equal(after[i], agencyEv[i]) {
			t.Errorf("evidence %d changed across the restart", i+1)
		}
	}
}

// checkEvidence writes the caller's evidence of a message with the CLI and
// checks the files: names, types in order, signatures and the chain, and
// OpenSSL's verdict where it is installed. It returns the DER files.
func checkEvidence(ctx context.Context, t *testing.T, n *nodeProc, idDir, id, out string, want []string) [][]byte {
	t.Helper()
	var listed []map[string]any
	if err := n.runJSON(ctx, idDir, &listed, "evidence", id, "-o", out); err != nil {
		t.Fatal(err)
	}
	if len(listed) != len(want) {
		t.Fatalf("evidence lists %d files, want %d", len(listed), len(want))
	}
	roots, err := pki.LoadCertificates(filepath.Join(idDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	trust, err := pki.NewTrustStore(roots, filepath.Join(n.dir, "ca", "crl.pem"))
	if err != nil {
		t.Fatal(err)
	}
	_, haveOpenSSL := exec.LookPath("openssl")
	var ders [][]byte
	var links []evidence.Link
	for i, typ := range want {
		name := filepath.Join(out, twoDigit(i+1)+"-"+typ+".p7m")
		der, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("evidence file: %v", err)
		}
		ev, err := evidence.Verify(der, cms.Policy{Trust: trust, At: time.Now()})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(ev.Statement.Type) != typ || ev.Statement.MessageID != id {
			t.Fatalf("%s holds a %s about %s", name, ev.Statement.Type, ev.Statement.MessageID)
		}
		links = append(links, ev.Link())
		ders = append(ders, der)
		if haveOpenSSL == nil {
			cmd := exec.CommandContext(ctx, "openssl", "cms", "-verify", "-inform", "DER", "-in", name, "-CAfile", filepath.Join(idDir, "ca.pem"))
			stdout, err := cmd.Output()
			if err != nil {
				t.Fatalf("openssl cms -verify %s: %v", name, err)
			}
			if !strings.Contains(string(stdout), `"type":"`+typ+`"`) {
				t.Fatalf("openssl printed %q, want the %s statement", stdout, typ)
			}
		}
	}
	if err := evidence.CheckChain(links); err != nil {
		t.Fatal(err)
	}
	return ders
}

func twoDigit(i int) string { return fmt.Sprintf("%02d", i) }
