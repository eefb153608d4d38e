// Package python_test runs send.py, a Kurier client written in Python from
// docs/PROTOCOL.md alone, against a real development node (mutual TLS on
// 127.0.0.1, a badger store), and checks with the Go client what arrived:
// that the document as written down is enough to write a client.
//
// The Python client needs Debian's /usr/bin/python3 with python3-grpcio,
// python3-protobuf, python3-grpc-tools and python3-cryptography, and the
// openssl command. Without them the tests are skipped with a line saying
// what to install; under CI=true they fail instead, since .ci/run installs
// them.
package python_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/daemon/daemontest"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

// python3 is Debian's interpreter, whose packages hold the modules send.py
// imports (another python3 on PATH may have none of them).
const python3 = "/usr/bin/python3"

// packages is what to install for the Python client.
const packages = "python3-grpcio python3-protobuf python3-grpc-tools python3-cryptography"

// runTimeout bounds one run of send.py or protoc.
const runTimeout = 2 * time.Minute

var node *daemontest.Node

func TestMain(m *testing.M) {
	daemontest.Main(m, func(n *daemontest.Node) error { node = n; return nil })
}

// TestPythonClient_Sends sends three documents with send.py to two
// recipients, one document with a non-ASCII name, one with a name too
// long for a plain tar header, one of several payload chunks, under a
// subject with every character that the canonical JSON escapes or must
// not escape. Each recipient fetches them with the Go client, and the
// receipt send.py kept verifies and continues into each one's Retrieval.
func TestPythonClient_Sends(t *testing.T) {
	gen := stubs(t)
	dir := t.TempDir()
	long := strings.Repeat("sehr-lange-anlage-", 8) + ".txt"
	docs := []doc{
		{"brief.txt", []byte("Sehr geehrte Damen und Herren,\n")},
		{"Anlage Übersicht.pdf", random(t, 600<<10)}, // three 256 KiB chunks
		{long, []byte("lang")},
	}
	var paths []string
	for _, d := range docs {
		p := filepath.Join(dir, "docs", d.name)
		write(t, p, d.data)
		paths = append(paths, p)
	}
	subject := "Klage \"Müller\" ./. Stadt \\ <Bau&Recht> \u2028Anlagen"
	receipt := filepath.Join(dir, "receipt")
	to := []string{daemon.DevCourt, daemon.DevAgency}
	out, errOut, err := send(t, gen, append([]string{"--to", to[0], "--to", to[1], "--subject", subject,
		"--type", "Schriftsatz", "--reference", "4 C 12/26", "--receipt", receipt}, paths...)...)
	if err != nil {
		t.Fatalf("send.py: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	m := regexp.MustCompile(`(?m)^sent ([0-9a-f-]{36})$`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "evidence: SubmissionAcceptance by stadt.example") ||
		!strings.Contains(out, "evidence: Delivery by amtsgericht.example") {
		t.Fatalf("send.py printed:\n%s\nstderr:\n%s", out, errOut)
	}
	id := m[1]
	heads := checkReceipt(t, receipt, id, to)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, r := range []struct {
		addr string
		id   *pki.Identity
	}{{daemon.DevCourt, node.Court}, {daemon.DevAgency, node.Agency}} {
		c, err := node.Dial(ctx, r.id)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		f, err := c.Fetch(ctx, id, filepath.Join(dir, "inbox", r.addr))
		if err != nil {
			t.Fatalf("%s cannot fetch what send.py sent: %v", r.addr, err)
		}
		env := f.Envelope
		if env.Version != envelope.Version || len(env.Files) != len(docs) || env.Files[0].SHA256 == "" || env.From != daemon.DevAgency || env.Subject != subject || env.Type != "Schriftsatz" ||
			env.Reference != "4 C 12/26" || !env.Expires.After(env.Created) {
			t.Errorf("envelope: %+v", env)
		}
		if got := f.Signer.EmailAddresses; len(got) != 1 || got[0] != daemon.DevAgency {
			t.Errorf("documents signed by %v, want %s", got, daemon.DevAgency)
		}
		checkDocuments(t, f.Files, docs)
		if got := f.Retrieval.Statement.PreviousSHA256; got != heads[r.addr] {
			t.Errorf("the Retrieval of %s follows %s, not the Delivery in send.py's receipt (%s)", r.addr, got, heads[r.addr])
		}
	}
}

// doc is one document sent.
type doc struct {
	name string
	data []byte
}

// checkDocuments checks that the fetched files are the documents sent,
// in order, byte for byte.
func checkDocuments(t *testing.T, files []string, docs []doc) {
	t.Helper()
	if len(files) != len(docs) {
		t.Fatalf("fetched %v, want %d files", files, len(docs))
	}
	for i, d := range docs {
		if filepath.Base(files[i]) != d.name {
			t.Errorf("file %d is %q, want %q", i+1, filepath.Base(files[i]), d.name)
			continue
		}
		if got, err := os.ReadFile(files[i]); err != nil || !bytes.Equal(got, d.data) {
			t.Errorf("%s: %d bytes (%v), want the %d bytes sent", d.name, len(got), err, len(d.data))
		}
	}
}

// checkReceipt checks what send.py kept in dir for message id to the
// recipients to: the envelope as signed, its signature by the agency, and
// each recipient's SubmissionAcceptance and Delivery, in that order, which
// verify and name this envelope. It returns the SHA-256 of each
// recipient's Delivery.
func checkReceipt(t *testing.T, dir, id string, to []string) map[string]string {
	t.Helper()
	envBytes := read(t, filepath.Join(dir, "envelope.json"))
	env, err := envelope.Parse(envBytes)
	if err != nil || env.ID != id {
		t.Fatalf("receipt envelope.json: %v", err)
	}
	trust := trustStore(t)
	signed, err := cms.VerifyDetached(read(t, filepath.Join(dir, "envelope.p7s")), envBytes,
		cms.Policy{Trust: trust, At: time.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}})
	if err != nil {
		t.Fatalf("receipt envelope.p7s: %v", err)
	}
	if got := signed.Signer.EmailAddresses; len(got) != 1 || got[0] != daemon.DevAgency {
		t.Errorf("envelope signed by %v, want %s", got, daemon.DevAgency)
	}
	heads := map[string]string{}
	n := 0
	for _, r := range to {
		prev := ""
		for _, typ := range []evidence.Type{evidence.SubmissionAcceptance, evidence.Delivery} {
			n++
			name := fmt.Sprintf("%02d-%s.p7m", n, typ)
			der := read(t, filepath.Join(dir, name))
			ev, err := evidence.Verify(der, cms.Policy{Trust: trust, At: time.Now()})
			if err != nil {
				t.Fatalf("receipt %s: %v", name, err)
			}
			st := ev.Statement
			if st.Type != typ || st.MessageID != id || st.Sender != daemon.DevAgency || st.Recipient != r ||
				st.EnvelopeSHA256 != envelope.Digest(envBytes) || st.PayloadSHA256 != env.PayloadSHA256 || st.PreviousSHA256 != prev {
				t.Errorf("receipt %s: %+v", name, st)
			}
			prev = evidence.Digest(der)
		}
		heads[r] = prev
	}
	return heads
}

// TestPythonClient_RefusedEnvelope sends a validly signed envelope with
// white space in it: the node refuses it with the error PROTOCOL.md names,
// send.py says so and exits 1, and nothing is delivered.
func TestPythonClient_RefusedEnvelope(t *testing.T) {
	gen := stubs(t)
	doc := filepath.Join(t.TempDir(), "brief.txt")
	write(t, doc, []byte("Hallo Gericht"))
	out, errOut, err := send(t, gen, "--to", daemon.DevCourt, "--subject", "Klage", "--non-canonical", doc)
	if code := exitCode(err); code != 1 {
		t.Fatalf("send.py --non-canonical exited with %d (%v), want 1\nstdout:\n%s\nstderr:\n%s", code, err, out, errOut)
	}
	const want = "INVALID_ARGUMENT: invalid envelope: not in canonical form"
	m := regexp.MustCompile(`the node refused message ([0-9a-f-]{36}): (.*)`).FindStringSubmatch(errOut)
	if m == nil || !strings.HasPrefix(m[2], want) || strings.Contains(out, "sent") {
		t.Fatalf("send.py printed:\nstdout:\n%s\nstderr:\n%s\nwant the refusal %q", out, errOut, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	court, err := node.Dial(ctx, node.Court)
	if err != nil {
		t.Fatal(err)
	}
	defer court.Close()
	if _, err := court.Check(ctx, m[1]); status.Code(err) != codes.NotFound {
		t.Errorf("the court's fetch of the refused message: %v, want NotFound", err)
	}
}

// TestPythonClient_ReusedID sends a message, then another under the same
// id: the node refuses the second with AlreadyExists and a signed
// SubmissionRejection in the status details, which send.py reads from the
// grpc-status-details-bin trailer and keeps.
func TestPythonClient_ReusedID(t *testing.T) {
	gen := stubs(t)
	dir := t.TempDir()
	doc := filepath.Join(dir, "brief.txt")
	write(t, doc, []byte("Hallo Gericht"))
	out, errOut, err := send(t, gen, "--to", daemon.DevCourt, "--subject", "Erste", doc)
	m := regexp.MustCompile(`(?m)^sent ([0-9a-f-]{36})$`).FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("send.py: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	id := m[1]
	receipt := filepath.Join(dir, "receipt")
	out, errOut, err = send(t, gen, "--to", daemon.DevCourt, "--subject", "Zweite", "--id", id, "--receipt", receipt, doc)
	if code := exitCode(err); code != 1 || !strings.Contains(errOut, "ALREADY_EXISTS: message id "+id+" was already used for another message") ||
		!strings.Contains(errOut, "SubmissionRejection") {
		t.Fatalf("send.py --id %s exited with %d (%v)\nstdout:\n%s\nstderr:\n%s", id, code, err, out, errOut)
	}
	ev, err := evidence.Verify(read(t, filepath.Join(receipt, "00-SubmissionRejection.p7m")), cms.Policy{Trust: trustStore(t), At: time.Now()})
	if err != nil {
		t.Fatalf("the SubmissionRejection send.py kept: %v", err)
	}
	if st := ev.Statement; st.Type != evidence.SubmissionRejection || st.MessageID != id || st.Sender != daemon.DevAgency ||
		st.EnvelopeSHA256 != envelope.Digest(read(t, filepath.Join(receipt, "envelope.json"))) || !strings.Contains(st.Reason, "already used") {
		t.Errorf("SubmissionRejection: %+v", st)
	}
}

// requirePython skips t, or fails it under CI=true, unless send.py can
// run: Debian's python3 with the modules it imports, and openssl.
func requirePython(t *testing.T) {
	t.Helper()
	var problem string
	probe := exec.Command(python3, "-c", "import grpc, grpc_tools.protoc, google.protobuf, cryptography")
	probe.Env = pythonEnv()
	if _, err := exec.LookPath("openssl"); err != nil {
		problem = "no openssl command"
	} else if out, err := probe.CombinedOutput(); err != nil {
		problem = fmt.Sprintf("%s cannot import the client's modules (%v): %s", python3, err, lastLine(out))
	}
	if problem == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: .ci/run installs %s openssl", problem, packages)
	}
	t.Skipf("%s: apt-get install %s openssl", problem, packages)
}

// stubs generates the Python stubs of proto/kurier/v1 into a temporary
// folder, as README.md tells a user to, and returns it.
func stubs(t *testing.T) string {
	t.Helper()
	requirePython(t)
	gen := t.TempDir()
	protos, err := filepath.Glob(filepath.Join("..", "..", "proto", "kurier", "v1", "*.proto"))
	if err != nil || len(protos) == 0 {
		t.Fatalf("no protos in ../../proto/kurier/v1 (%v)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	args := append([]string{"-m", "grpc_tools.protoc", "-I", filepath.Join("..", "..", "proto"),
		"--python_out=" + gen, "--grpc_python_out=" + gen}, protos...)
	cmd := exec.CommandContext(ctx, python3, args...)
	cmd.Env = append(pythonEnv(), "PYTHONDONTWRITEBYTECODE=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate the Python stubs: %v\n%s", err, out)
	}
	return gen
}

// send runs send.py as the development agency with the stubs in gen and
// returns what it printed.
func send(t *testing.T, gen string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	id := daemon.DevIdentity(node.Dir, "agency")
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	argv := append([]string{"send.py", "--node", node.Addr, "--ca", filepath.Join(id, pki.CACertFile),
		"--cert", filepath.Join(id, pki.CertFile), "--key", filepath.Join(id, pki.KeyFile), "--timeout", "60"}, args...)
	cmd := exec.CommandContext(ctx, python3, argv...)
	cmd.Env = append(pythonEnv(), "PYTHONPATH="+gen, "PYTHONDONTWRITEBYTECODE=1")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("send.py did not finish within %s\nstdout:\n%s\nstderr:\n%s", runTimeout, o.String(), e.String())
	}
	return o.String(), e.String(), err
}

// pythonEnv is the environment without PYTHON* variables, which another
// Python installation (pyenv's, a virtualenv) may have set for itself.
func pythonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PYTHON") {
			env = append(env, kv)
		}
	}
	return env
}

// exitCode returns the exit status of a finished command's error, 0 for
// none and -1 for a command that did not run or exit.
func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

// trustStore checks against the development CA and its CRL.
func trustStore(t *testing.T) *pki.TrustStore {
	t.Helper()
	ts, err := pki.NewTrustStore(node.Agency.Roots, node.CRL)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}
