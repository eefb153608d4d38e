package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/diskspace/diskspacetest"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

// saveRandom writes, as `kurier send --save` would, a message from the
// agency to the court with a valid envelope and a payload of random bytes
// instead of CMS, and returns the file and the message id.
func saveRandom(t *testing.T) (string, string) {
	t.Helper()
	id, err := pki.LoadIdentity(daemon.DevIdentity(devDir, "agency"))
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 2048)
	rand.Read(payload)
	msgID, err := envelope.NewID()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(payload)
	now := time.Now().UTC()
	env := &envelope.Envelope{
		Version: envelope.Version, ID: msgID, From: daemon.DevAgency, To: []string{daemon.DevCourt}, Subject: "Zufall",
		Created: now, Expires: now.Add(time.Hour), PayloadSHA256: hex.EncodeToString(sum[:]), PayloadSize: int64(len(payload)),
		Files: []envelope.File{{Name: "klage.pdf", Size: 10, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}},
	}
	b, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := cms.SignDetached(b, cms.Signer{Cert: id.Cert, Key: id.Key, Chain: id.Chain})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "random.kurier")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := (&client.Sealed{ID: msgID, Envelope: b, Signature: sig, Payload: payload}).WriteTo(f); err != nil {
		t.Fatal(err)
	}
	return path, msgID
}

// TestHostile_RejectCommand: a message that cannot be opened is refused
// by `kurier fetch` and `kurier ack` with the hint to reject it, and
// `kurier reject` then records the recipient's signed refusal, which the
// sender's `kurier evidence` shows. A reason with a bidirectional override
// is refused before anything is signed.
func TestHostile_RejectCommand(t *testing.T) {
	file, id := saveRandom(t)
	kurier(t, append(as("agency"), "resubmit", file)...)

	for _, cmd := range [][]string{{"fetch", id, "-o", t.TempDir()}, {"ack", id}} {
		_, err := try(t, append(as("court"), cmd...)...)
		if err == nil || !strings.Contains(err.Error(), "cannot be opened") || !strings.Contains(err.Error(), "kurier reject "+id+" --code cannot-open") {
			t.Errorf("kurier %s of a random payload: %v, want the hint to reject it", cmd[0], err)
		}
	}
	_, err := try(t, append(as("court"), "reject", id, "--reason", "Anlage \u202efdp.exe")...)
	if err == nil || !strings.Contains(err.Error(), "U+202E") {
		t.Errorf("reject with a bidi override: %v", err)
	}
	var rej struct{ ID, Type, SHA256, Reason string }
	kurierJSON(t, &rej, append(as("court"), "reject", id, "--code", "cannot-open", "--reason", "entschlüsselt nicht")...)
	if rej.ID != id || rej.Type != "Rejection" || rej.Reason != "cannot-open: entschlüsselt nicht" || len(rej.SHA256) != 64 {
		t.Errorf("reject: %+v", rej)
	}
	var list []struct{ Type, Issuer, Reason, SHA256 string }
	kurierJSON(t, &list, append(as("agency"), "evidence", id)...)
	if n := len(list); n != 4 || list[3].Type != "Rejection" || list[3].Issuer != daemon.DevCourt || list[3].SHA256 != rej.SHA256 || list[3].Reason != rej.Reason {
		t.Errorf("the sender's evidence: %+v", list)
	}
}

// TestRun_AckOpensFirst: `kurier ack` of a message never fetched opens
// and checks it first, writing nothing, and `kurier fetch --ack` fetches
// and acknowledges in one go.
func TestRun_AckOpensFirst(t *testing.T) {
	src := filepath.Join(t.TempDir(), "a.txt")
	if err := os.WriteFile(src, []byte("Schriftsatz\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	send := func() string {
		return strings.TrimSpace(kurier(t, append(as("agency"), "send", "--to", daemon.DevCourt, "--subject", "ack", src)...))
	}
	id := send()
	var ack struct{ ID, Type string }
	kurierJSON(t, &ack, append(as("court"), "ack", id)...)
	if ack.ID != id || ack.Type != "Acknowledgement" {
		t.Errorf("ack: %+v", ack)
	}

	id = send()
	dir := t.TempDir()
	var f struct {
		Files           []string
		Retrieval       struct{ Type string }
		Acknowledgement *struct{ Type string }
	}
	kurierJSON(t, &f, append(as("court"), "fetch", id, "-o", dir, "--ack")...)
	if len(f.Files) != 1 || f.Retrieval.Type != "Retrieval" || f.Acknowledgement == nil || f.Acknowledgement.Type != "Acknowledgement" {
		t.Errorf("fetch --ack: %+v", f)
	}
}

// TestFault_FetchCommandDiskFull: when the recipient's own disk fills
// while `kurier fetch` writes the documents of a valid message, it says
// to make room and fetch again, not to reject the message.
func TestFault_FetchCommandDiskFull(t *testing.T) {
	src := filepath.Join(t.TempDir(), "akte.bin")
	data := make([]byte, 600<<10)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(kurier(t, append(as("agency"), "send", "--to", daemon.DevCourt, "--subject", "groß", src)...))
	full := diskspacetest.Tmpfs(t, "", 1<<20)
	_, err := try(t, append(as("court"), "fetch", id, "-o", full)...)
	if err == nil || !strings.Contains(err.Error(), "write the documents into") || !strings.Contains(err.Error(), "free space") {
		t.Fatalf("kurier fetch into a full folder: %v, want the hint to make room", err)
	}
	if strings.Contains(err.Error(), "kurier reject") || strings.Contains(err.Error(), "cannot be opened") {
		t.Errorf("kurier fetch into a full folder: %v tells to reject a valid message", err)
	}
	kurier(t, append(as("court"), "fetch", id, "-o", t.TempDir())...)
}
