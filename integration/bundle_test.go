package integration

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The checks kurier verify must list for a bundle of one message to one
// recipient with four evidence files.
var wantChecks = []string{
	"bundle format", "trust anchor", "CRL", "envelope", "envelope signature", "index signature", "index",
	"checkpoint signature", "evidence signature", "signer role", "revocation", "statement",
	"envelope digest", "payload digest", "inclusion proof", "evidence chain",
}

type verifyReport struct {
	Verdict string
	File    string
	Chains  []struct {
		Recipient string
		State     string
	}
	Checks []struct {
		Check, Subject, Status, Detail string
	}
}

// TestOneNode_ExportVerify sends, fetches and acknowledges a message,
// exports its bundle, and verifies the bundle in a fresh folder holding
// nothing but it and ca.pem, with no node running.
func TestOneNode_ExportVerify(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	n := startDevNode(t, filepath.Join(dir, "dev"))
	agency, court := n.identity("agency"), n.identity("court")

	// A compliance team keeps a checkpoint before the message is sent.
	before := filepath.Join(dir, "before.checkpoint")
	if _, err := n.run(ctx, court, "checkpoint", "-o", before); err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(dir, "schriftsatz.txt")
	os.WriteFile(doc, []byte("Schriftsatz vom 23.11.2026\n"), 0o600)
	var sent struct{ ID string }
	if err := n.runJSON(ctx, agency, &sent, "send", "--to", courtAddr, "--subject", "Schriftsatz", doc); err != nil {
		t.Fatal(err)
	}
	id := sent.ID
	if _, err := n.run(ctx, court, "fetch", id, "-o", filepath.Join(dir, "eingang"), "--per-message", "--keep-sealed"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.run(ctx, court, "ack", id); err != nil {
		t.Fatal(err)
	}
	bundlePath := filepath.Join(dir, "export", "bundle.zip")
	os.MkdirAll(filepath.Dir(bundlePath), 0o755)
	var exported struct {
		File     string
		Evidence int
		TreeSize uint64 `json:"tree_size"`
	}
	if err := n.runJSON(ctx, agency, &exported, "export", id, "-o", bundlePath, "--since", before); err != nil {
		t.Fatal(err)
	}
	if exported.Evidence != 4 || exported.File != bundlePath {
		t.Fatalf("export printed %+v, want 4 evidence in %s", exported, bundlePath)
	}
	// The court's archive: its bundle with what was delivered, as fetch
	// kept it.
	contentPath := filepath.Join(dir, "export", "bundle-content.zip")
	if _, err := n.run(ctx, court, "export", id, "-o", contentPath, "--with-content", filepath.Join(dir, "eingang", id)); err != nil {
		t.Fatal(err)
	}
	n.stop() // verification is offline

	fresh := filepath.Join(dir, "fresh")
	os.MkdirAll(fresh, 0o755)
	copyFile(t, bundlePath, filepath.Join(fresh, "bundle.zip"))
	copyFile(t, filepath.Join(agency, "ca.pem"), filepath.Join(fresh, "ca.pem"))

	var reports []verifyReport
	stdout, stderr, code := offline(ctx, t, fresh, "verify", "bundle.zip", "--ca", "ca.pem", "--report", "report.html", "--json")
	if code != 0 {
		t.Fatalf("kurier verify exited %d: %s\n%s", code, stderr, stdout)
	}
	if err := json.Unmarshal([]byte(stdout), &reports); err != nil || len(reports) != 1 {
		t.Fatalf("verify --json printed %q (%v), want one report", stdout, err)
	}
	r := reports[0]
	if r.Verdict != "passed" {
		t.Errorf("verify --json gives the verdict %q, want passed", r.Verdict)
	}
	seen := map[string]bool{}
	for _, c := range r.Checks {
		if c.Status != "pass" {
			t.Errorf("check %s %s: %s: %s", c.Check, c.Subject, c.Status, c.Detail)
		}
		seen[c.Check] = true
	}
	for _, want := range wantChecks {
		if !seen[want] {
			t.Errorf("verify did not list the check %q", want)
		}
	}
	if len(r.Chains) != 1 || r.Chains[0].Recipient != courtAddr || r.Chains[0].State != "Acknowledgement" {
		t.Errorf("chains = %+v, want the court's, acknowledged", r.Chains)
	}
	html, err := os.ReadFile(filepath.Join(fresh, "report.html"))
	if err != nil || !bytes.Contains(html, []byte(id)) || !bytes.Contains(html, []byte("Alle Prüfungen bestanden")) {
		t.Errorf("report.html (%v) lacks the message id or the verdict", err)
	}

	// The older checkpoint the team kept, given as --since.
	copyFile(t, before, filepath.Join(fresh, "before.checkpoint"))
	if stdout, stderr, code := offline(ctx, t, fresh, "verify", "bundle.zip", "--ca", "ca.pem", "--since", "before.checkpoint"); code != 0 || !strings.Contains(stdout, "ok   consistency before.checkpoint") {
		t.Errorf("verify --since exited %d: %s\n%s", code, stderr, stdout)
	}

	// The node's published log key, pinned.
	copyFile(t, filepath.Join(n.dir, "node", "log.vkey"), filepath.Join(fresh, "log.vkey"))
	if stdout, stderr, code := offline(ctx, t, fresh, "verify", "bundle.zip", "--ca", "ca.pem", "--log-key", "log.vkey"); code != 0 {
		t.Errorf("verify --log-key exited %d: %s\n%s", code, stderr, stdout)
	}

	// Without the CA certificate, the bundle's own is only a claim.
	if _, _, code := offline(ctx, t, fresh, "verify", "bundle.zip"); code != 3 {
		t.Errorf("verify without --ca exited %d, want 3 (indeterminate)", code)
	}

	// One altered byte in one evidence fails, naming the check and file.
	tampered := filepath.Join(fresh, "tampered.zip")
	rewriteZip(t, filepath.Join(fresh, "bundle.zip"), tampered, "evidence/02-Delivery.p7m", func(b []byte) []byte {
		i := bytes.Index(b, []byte(`"type":"Delivery"`))
		if i < 0 {
			t.Fatal("no statement in the Delivery")
		}
		b[i+9] ^= 0x20 // "delivery"
		return b
	})
	stdout, _, code = offline(ctx, t, fresh, "verify", "tampered.zip", "--ca", "ca.pem")
	if code != 1 || !strings.Contains(stdout, "FAIL evidence signature evidence/02-Delivery.p7m") {
		t.Errorf("verify of a tampered bundle exited %d, want 1 with a failed evidence signature:\n%s", code, stdout)
	}
	stdout, _, code = offline(ctx, t, fresh, "verify", "tampered.zip", "--ca", "ca.pem", "--json")
	if err := json.Unmarshal([]byte(stdout), &reports); code != 1 || err != nil || len(reports) != 1 || reports[0].Verdict != "failed" {
		t.Errorf("verify --json of a tampered bundle exited %d (%v), want 1 and one report with the verdict failed:\n%s", code, err, stdout)
	}

	// The bundle with content proves the document too.
	copyFile(t, contentPath, filepath.Join(fresh, "bundle-content.zip"))
	stdout, stderr, code = offline(ctx, t, fresh, "verify", "bundle-content.zip", "--ca", "ca.pem")
	if code != 0 || !strings.Contains(stdout, "ok   document content/signed.p7m: schriftsatz.txt") || !strings.Contains(stdout, "ok   sealed payload content/payload.p7m") {
		t.Errorf("verify of the bundle with content exited %d: %s\n%s", code, stderr, stdout)
	}

	// A single evidence file from the bundle, with the bundle's CRL.
	extract(t, filepath.Join(fresh, "bundle.zip"), fresh, "evidence/04-Acknowledgement.p7m", "crl.der")
	if stdout, stderr, code := offline(ctx, t, fresh, "verify", filepath.Join("evidence", "04-Acknowledgement.p7m"), "--ca", "ca.pem", "--crl", "crl.der"); code != 0 {
		t.Errorf("verify of one .p7m exited %d: %s\n%s", code, stderr, stdout)
	}
}

// offline runs the kurier CLI in dir with no identity or node configured,
// and returns its output and exit code.
func offline(ctx context.Context, t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.CommandContext(ctx, kurier, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "KURIER_ID=", "KURIER_NODE=127.0.0.1:1", "KURIER_CRL=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("kurier %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// rewriteZip copies the zip from to to, passing entry name through change;
// an entry that change turns into nil is left out.
func rewriteZip(t *testing.T, from, to, name string, change func([]byte) []byte) {
	t.Helper()
	zr, err := zip.OpenReader(from)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range zr.File {
		data := readEntry(t, f)
		if f.Name == name {
			if data = change(data); data == nil {
				continue
			}
		}
		w, err := zw.Create(f.Name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// extract writes the named entries of a zip into dir.
func extract(t *testing.T, from, dir string, names ...string) {
	t.Helper()
	zr, err := zip.OpenReader(from)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	for _, name := range names {
		f, err := zr.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func readEntry(t *testing.T, f *zip.File) []byte {
	t.Helper()
	rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
