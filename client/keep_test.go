package client_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/envelope"
)

// TestClient_KeepSealed: a fetch that keeps the originals writes, beside
// the documents, the payload as delivered and the sender-signed original;
// OpenSSL alone decrypts the first into the second with the recipient's
// key, and verifies the second against the CA, its content the documents.
func TestClient_KeepSealed(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl not on PATH, and CI=true: install openssl")
		}
		t.Skip("openssl not on PATH; install it with apt-get install openssl")
	}
	ctx := ctxT(t)
	ag, ct := dial(t, agency), dial(t, court)
	docs := []client.Document{{Name: "klage.pdf", Data: []byte("%PDF-1.7 Klage")}, {Name: "anlage.txt", Data: []byte("Anlage K1")}}
	r, err := ag.Send(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: "Klage", Documents: docs}, nil)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	f, err := ct.FetchWith(ctx, r.MessageID, client.FetchOptions{Dir: base, PerMessage: true, KeepSealed: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, r.MessageID)
	if f.Sealed != filepath.Join(dir, client.SealedFile) || f.Signed != filepath.Join(dir, client.SignedFile) || len(f.Files) != 2 {
		t.Fatalf("kept %q and %q, documents %q; want both originals and the two documents in %s", f.Sealed, f.Signed, f.Files, dir)
	}

	courtID := daemon.DevIdentity(devDir, "court")
	decrypted := filepath.Join(t.TempDir(), "decrypted.p7m")
	run := func(args ...string) []byte {
		t.Helper()
		var stderr bytes.Buffer
		cmd := exec.Command(openssl, args...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return out
	}
	// docs/PROTOCOL.md's recipe, as written there.
	run("cms", "-decrypt", "-inform", "DER", "-in", f.Sealed, "-recip", filepath.Join(courtID, "enc-cert.pem"),
		"-inkey", filepath.Join(courtID, "enc-key.pem"), "-binary", "-out", decrypted)
	want, err := os.ReadFile(f.Signed)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(decrypted); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("openssl's decryption of %s differs from %s (%v)", client.SealedFile, client.SignedFile, err)
	}
	documents := filepath.Join(t.TempDir(), "documents.tar")
	run("cms", "-verify", "-inform", "DER", "-in", f.Signed, "-CAfile", filepath.Join(devDir, "ca", "ca.pem"), "-out", documents)
	content, err := os.ReadFile(documents)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(content))
	if f.Envelope.Version != envelope.Version {
		t.Fatalf("envelope version %d, want %d with document digests", f.Envelope.Version, envelope.Version)
	}
	for i, d := range docs {
		h, err := tr.Next()
		if err != nil || h.Name != d.Name {
			t.Fatalf("the signed content's next file: %v, %v; want %s", h, err, d.Name)
		}
		b, _ := io.ReadAll(tr)
		if !bytes.Equal(b, d.Data) {
			t.Errorf("%s in the signed original differs from what was sent", d.Name)
		}
		// What an archive checks by hand: sha256sum of each file against
		// the envelope's "files".
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != f.Envelope.Files[i].SHA256 {
			t.Errorf("%s in the signed original has SHA-256 %x, the envelope lists %s", d.Name, sum, f.Envelope.Files[i].SHA256)
		}
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Errorf("the signed content holds more than the %d documents: %v", len(docs), err)
	}

	// A second fetch into the same folder keeps nothing over what is there.
	if _, err := ct.FetchWith(ctx, r.MessageID, client.FetchOptions{Dir: dir, KeepSealed: true}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("a second fetch into the folder: %v, want it refused", err)
	}
}
