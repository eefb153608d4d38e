package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kurier.dev/kurier/broker/store/postgres/pgtest"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/pki"
)

// TestPostgres_TwoProcesses runs one node as two kurierd -dev processes
// on one development folder and one PostgreSQL database, each on its own
// address. A message sent through one is listed, fetched and
// acknowledged through the other, and its evidence chain and exported
// bundle verify; a subscriber on one hears of a message sent through the
// other. Then senders that know both addresses keep sending
// while one process is killed with SIGKILL: every message reaches the
// court's inbox exactly once, and the log stays consistent with a
// checkpoint taken before the kill.
func TestPostgres_TwoProcesses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dsn := pgtest.DSN(t)
	dir := t.TempDir()
	dev := filepath.Join(dir, "dev")
	store := []string{"-listen", "127.0.0.1:0", "-store", dsn}
	// Both at once on a folder and a database that are empty: one
	// creates the CA, identities and log key, and the schema, and the
	// other waits for it and reuses them.
	a, b := launchDevNode(t, dev, store), launchDevNode(t, dev, store)
	a.waitListening()
	b.waitListening()
	if a.addr == b.addr {
		t.Fatalf("both processes listen on %s", a.addr)
	}
	if _, err := os.Stat(filepath.Join(dev, "store")); err == nil {
		t.Error("a node on PostgreSQL made a badger store in the development folder")
	}
	agency, court := a.identity("agency"), a.identity("court")

	before := filepath.Join(dir, "before.checkpoint")
	if _, err := b.run(ctx, court, "checkpoint", "-o", before); err != nil {
		t.Fatal(err)
	}
	id := sendThroughOneFetchThroughOther(ctx, t, a, b, dir)

	// The bundle of the message, exported through the process that did
	// not take it, verifies offline and proves the log consistent with
	// the checkpoint taken through the other before it.
	fresh := filepath.Join(dir, "fresh")
	os.MkdirAll(fresh, 0o755)
	exportAndVerify(ctx, t, b, agency, id, before, fresh, "bundle.zip")

	subscribeAcross(ctx, t, a, b, dir)

	// The failover: a checkpoint, then senders over both addresses while
	// a dies.
	beforeKill := filepath.Join(dir, "before-kill.checkpoint")
	if _, err := b.run(ctx, court, "checkpoint", "-o", beforeKill); err != nil {
		t.Fatal(err)
	}
	last := sendWhileOneDies(ctx, t, a, b, agency, court)
	if t.Failed() {
		return
	}
	exportAndVerify(ctx, t, b, agency, last, beforeKill, fresh, "after-kill.zip")
}

// sendThroughOneFetchThroughOther sends a document from the agency
// through a, lists, fetches and acknowledges it as the court through b,
// checks that both sides get the same complete evidence chain, and
// returns the message's id.
func sendThroughOneFetchThroughOther(ctx context.Context, t *testing.T, a, b *nodeProc, dir string) string {
	t.Helper()
	agency, court := a.identity("agency"), a.identity("court")
	doc := filepath.Join(dir, "klage.txt")
	if err := os.WriteFile(doc, []byte("Klageschrift\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var sent struct{ ID string }
	if err := a.runJSON(ctx, agency, &sent, "send", "--to", courtAddr, "--subject", "Klage", doc); err != nil {
		t.Fatal(err)
	}
	var inbox []struct{ ID, From, Subject string }
	if err := b.runJSON(ctx, court, &inbox, "inbox"); err != nil {
		t.Fatal(err)
	}
	if len(inbox) != 1 || inbox[0].ID != sent.ID || inbox[0].From != agencyAddr {
		t.Fatalf("the court's inbox on the other process = %+v, want %s from %s", inbox, sent.ID, agencyAddr)
	}
	out := filepath.Join(dir, "eingang")
	if _, err := b.run(ctx, court, "fetch", sent.ID, "-o", out); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(out, "klage.txt")); err != nil || string(got) != "Klageschrift\n" {
		t.Fatalf("fetched klage.txt = %q (%v)", got, err)
	}
	if _, err := b.run(ctx, court, "ack", sent.ID); err != nil {
		t.Fatal(err)
	}
	want := []string{"SubmissionAcceptance", "Delivery", "Retrieval", "Acknowledgement"}
	fromA := checkEvidence(ctx, t, a, agency, sent.ID, filepath.Join(dir, "ev-a"), want)
	fromB := checkEvidence(ctx, t, b, court, sent.ID, filepath.Join(dir, "ev-b"), want)
	for i := range fromA {
		if string(fromA[i]) != string(fromB[i]) {
			t.Errorf("evidence %d differs between the processes", i+1)
		}
	}
	return sent.ID
}

// exportAndVerify exports message id's bundle through n with --since
// checkpoint, and verifies it offline in fresh (as name) against the CA
// alone and with the checkpoint.
func exportAndVerify(ctx context.Context, t *testing.T, n *nodeProc, idDir, id, checkpoint, fresh, name string) {
	t.Helper()
	bundle := filepath.Join(fresh, name)
	if _, err := n.run(ctx, idDir, "export", id, "-o", bundle, "--since", checkpoint); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(idDir, "ca.pem"), filepath.Join(fresh, "ca.pem"))
	copyFile(t, checkpoint, filepath.Join(fresh, filepath.Base(checkpoint)))
	stdout, stderr, code := offline(ctx, t, fresh, "verify", name, "--ca", "ca.pem", "--since", filepath.Base(checkpoint))
	if code != 0 || !strings.Contains(stdout, "ok   consistency "+filepath.Base(checkpoint)) {
		t.Errorf("verify %s --since %s exited %d: %s\n%s", name, filepath.Base(checkpoint), code, stderr, stdout)
	}
}

// The failover's load: senders × perSender messages, each with a subject
// of its own; a is killed once killAfter of them have receipts.
const (
	failoverSenders   = 3
	failoverPerSender = 20
	failoverKillAfter = 20
)

// sendWhileOneDies runs the senders over both processes' addresses,
// kills a with SIGKILL while they send, and checks that the court's
// inbox holds every message exactly once. It returns the id of a message
// accepted after the kill.
func sendWhileOneDies(ctx context.Context, t *testing.T, a, b *nodeProc, agencyDir, courtDir string) string {
	t.Helper()
	both := a.addr + "," + b.addr
	var retries, resubmits atomic.Int64
	sender := dialBoth(ctx, t, both, agencyDir, &retries)
	ids, afterKill := sendThroughFault(ctx, t, sender, "failover", failoverPerSender, failoverKillAfter, &resubmits, func() {
		a.kill()
		t.Logf("killed %s (pid %d)", a.addr, a.cmd.Process.Pid)
	})
	t.Logf("%d receipts; the client retried %d calls, the senders resubmitted %d times", len(ids), retries.Load(), resubmits.Load())
	if t.Failed() {
		return ""
	}

	receiver := dialBoth(ctx, t, both, courtDir, &retries)
	inbox, err := receiver.Inbox(ctx)
	if err != nil {
		t.Fatalf("the court's inbox after the kill: %v", err)
	}
	count := map[string]int{}
	for _, e := range inbox {
		count[e.Subject]++
	}
	for g := range failoverSenders {
		for i := range failoverPerSender {
			subject := fmt.Sprintf("failover %d-%02d", g, i)
			if count[subject] != 1 {
				t.Errorf("%q is %d times in the court's inbox, want once", subject, count[subject])
			}
			delete(count, subject)
		}
	}
	delete(count, "Klage")
	delete(count, "Nachtrag")
	if len(count) > 0 {
		t.Errorf("the court's inbox holds messages no one sent: %v", count)
	}
	return afterKill
}

// dialBoth returns a client of the participant in idDir over the list of
// addresses nodes, retrying calls for up to 30 s and counting the retries
// in retries, closed when t ends.
func dialBoth(ctx context.Context, t *testing.T, nodes, idDir string, retries *atomic.Int64) *client.Client {
	t.Helper()
	id, err := pki.LoadIdentity(idDir)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.Dial(ctx, nodes, id, client.WithRetry(30*time.Second), client.WithLogger(slog.New(retryCounter{retries})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// sendUntilReceipt seals one message to the court once and submits the
// same sealed bytes until the node answers with a receipt, as a sender
// must after a submission that ended without an answer: the node takes a
// message it already has as the same one. A refusal is an error. It
// counts its submissions after the first in resubmits.
func sendUntilReceipt(ctx context.Context, cl *client.Client, subject string, resubmits *atomic.Int64) (string, error) {
	m := client.Message{To: []string{courtAddr}, Subject: subject, Documents: []client.Document{{Name: "schriftsatz.txt", Data: []byte(subject + "\n")}}}
	var s *client.Sealed
	var err error
	for s == nil {
		if s, err = cl.Seal(ctx, m); err != nil && ctx.Err() != nil {
			return "", fmt.Errorf("seal %q: %w", subject, err)
		}
	}
	for {
		r, err := cl.Submit(ctx, s, nil)
		var rej *client.RejectedError
		switch {
		case err == nil && r.MessageID != s.ID:
			return "", fmt.Errorf("submit %q: the receipt is for %s, not %s", subject, r.MessageID, s.ID)
		case err == nil:
			return s.ID, nil
		case errors.As(err, &rej), ctx.Err() != nil:
			return "", fmt.Errorf("submit %q: %w", subject, err)
		}
		resubmits.Add(1)
		pause(ctx, 100*time.Millisecond)
	}
}

// subscribeAcross subscribes the court to its mailbox through b, sends
// through a once the subscription is ready, and expects b to announce
// the message: the notice crosses from process to process through
// PostgreSQL.
func subscribeAcross(ctx context.Context, t *testing.T, a, b *nodeProc, dir string) {
	t.Helper()
	var none atomic.Int64
	court := dialBoth(ctx, t, b.addr, b.identity("court"), &none)
	doc := filepath.Join(dir, "nachtrag.txt")
	if err := os.WriteFile(doc, []byte("Nachtrag\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	subCtx, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	var sent struct{ ID string }
	heard := make(chan client.InboxEntry, 1)
	err := court.Subscribe(subCtx, func(e client.InboxEntry) error {
		heard <- e
		return errSubscribed
	}, client.OnReady(func() error {
		return a.runJSON(ctx, a.identity("agency"), &sent, "send", "--to", courtAddr, "--subject", "Nachtrag", doc)
	}))
	if !errors.Is(err, errSubscribed) {
		t.Fatalf("the court's subscription through %s heard nothing of a message sent through %s: %v", b.addr, a.addr, err)
	}
	if e := <-heard; e.ID != sent.ID || e.Subject != "Nachtrag" || e.From != agencyAddr {
		t.Errorf("the subscription through the other process announced %+v, want %s", e, sent.ID)
	}
}

// errSubscribed ends a subscription that heard what it waited for.
var errSubscribed = errors.New("heard the message")
