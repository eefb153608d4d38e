package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/daemon/daemontest"
)

// TestSend_Example builds the example as a user would and sends a file
// with it to the development node; README.md shows the same program.
func TestSend_Example(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, program, _ := bytes.Cut(src, []byte("package main\n"))
	if !bytes.Contains(readme, append([]byte("package main\n"), program...)) {
		t.Error("README.md does not show examples/send/main.go as it is (from package main on)")
	}

	dir := t.TempDir()
	n, err := daemontest.Start(filepath.Join(dir, "dev"))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	bin := filepath.Join(dir, "send")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	doc := filepath.Join(dir, "brief.txt")
	if err := os.WriteFile(doc, []byte("Hallo Gericht"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-id", daemon.DevIdentity(n.Dir, "agency"), "-node", n.Addr,
		"-to", daemon.DevCourt, "-subject", "Erster Schriftsatz", doc).CombinedOutput()
	if err != nil {
		t.Fatalf("send: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)^sent [0-9a-f-]{36}$`).Match(out) || !strings.Contains(string(out), "evidence: SubmissionAcceptance") ||
		!strings.Contains(string(out), "evidence: Delivery") {
		t.Fatalf("send printed:\n%s", out)
	}
}
