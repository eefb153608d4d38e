package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/internal/logbuf"
)

// TestFault_SendAcrossRestart kills the node (SIGKILL) and sends while it
// is down: kurier send keeps trying with the same sealed message and goes
// through once the node is back, and a resubmission of the saved message
// afterwards returns the same id. The court's inbox holds the message
// once.
func TestFault_SendAcrossRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	listen := freePort(t)
	n := startDevNodeOn(t, filepath.Join(dir, "dev"), listen)
	agency, court := n.identity("agency"), n.identity("court")
	doc := filepath.Join(dir, "eilantrag.txt")
	os.WriteFile(doc, []byte("Eilantrag\n"), 0o600)
	saved := filepath.Join(dir, "eilantrag.sealed")
	n.kill()

	cmd := exec.CommandContext(ctx, kurier, "send", "--to", courtAddr, "--subject", "Eilantrag", "--retry-for", "60s",
		"--save", saved, doc, "--id", agency, "--node", listen)
	cmd.Env = append(os.Environ(), "KURIER_ID=", "KURIER_NODE=")
	var stdout bytes.Buffer
	stderr := &logbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(stderr.String(), "trying again") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("kurier send did not try again while the node was down:\n%s", stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	n2 := startDevNodeOn(t, n.dir, listen)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("kurier send: %v\n%s", err, stderr)
	}
	id := strings.TrimSpace(stdout.String())

	again, err := n2.run(ctx, agency, "resubmit", saved)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(again) != id {
		t.Fatalf("resubmit printed %q, want the first id %q", again, id)
	}
	var inbox []struct{ ID string }
	if err := n2.runJSON(ctx, court, &inbox, "inbox"); err != nil {
		t.Fatal(err)
	}
	if len(inbox) != 1 || inbox[0].ID != id {
		t.Fatalf("court inbox = %+v, want the message %s once", inbox, id)
	}
}
