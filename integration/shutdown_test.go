package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/client"
)

// heldUpload is a submission held after its first payload chunk until it
// is let go: a sender whose upload is under way.
type heldUpload struct {
	once    sync.Once
	holding chan struct{} // closed once the submission is held
	letGo   chan struct{}
	done    chan error
	receipt *client.Receipt
}

func (h *heldUpload) progress(sent, _ int64) {
	if sent > 0 {
		h.once.Do(func() { close(h.holding); <-h.letGo })
	}
}

// TestOperator_ShutdownWhileBusy sends SIGTERM to a kurierd that has a
// subscriber and two uploads under way, as an operator's restart would:
// the subscription ends with Unavailable "the node is shutting down", the
// upload that goes on gets its receipt, the stalled one fails with
// Unavailable (safe to submit again), the process exits cleanly within
// 2 s, and after a restart every message that got a receipt is in the
// court's inbox, whole.
func TestOperator_ShutdownWhileBusy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n := startDevNode(t, filepath.Join(t.TempDir(), "dev"))
	crl := filepath.Join(n.dir, "ca", "crl.pem")
	dialAs := func(name, addr string) *client.Client { return dialIdentity(ctx, t, n.identity(name), addr, crl) }
	agency, court := dialAs("agency", n.addr), dialAs("court", n.addr)

	docs := map[string][]byte{}
	var docsMu sync.Mutex
	send := func(subject string, size int, progress func(sent, total int64)) (*client.Receipt, error) {
		data := make([]byte, size)
		rand.Read(data)
		sealed, err := agency.Seal(ctx, client.Message{To: []string{courtAddr}, Subject: subject, Documents: []client.Document{{Name: subject + ".pdf", Data: data}}})
		if err != nil {
			return nil, err
		}
		docsMu.Lock()
		docs[sealed.ID] = data
		docsMu.Unlock()
		return agency.Submit(ctx, sealed, progress)
	}
	received := map[string]bool{} // message ids with a receipt

	// The subscription is live once it announces a message.
	notices := make(chan client.InboxEntry, 16)
	subEnded := make(chan error, 1)
	go func() {
		subEnded <- court.Subscribe(ctx, func(e client.InboxEntry) error { notices <- e; return nil })
	}()
	for live := false; !live; {
		r, err := send("vorab", 1000, nil)
		if err != nil {
			t.Fatal(err)
		}
		received[r.MessageID] = true
		select {
		case <-notices:
			live = true
		case err := <-subEnded:
			t.Fatalf("the subscription ended before SIGTERM: %v", err)
		case <-time.After(time.Second):
			// Subscribed after the message was stored: send another.
		}
	}

	hold := func(subject string) *heldUpload {
		h := &heldUpload{holding: make(chan struct{}), letGo: make(chan struct{}), done: make(chan error, 1)}
		go func() {
			r, err := send(subject, 2<<20, h.progress)
			h.receipt = r
			h.done <- err
		}()
		select {
		case <-h.holding:
		case err := <-h.done:
			t.Fatalf("submission %s ended before it was held: %v", subject, err)
		}
		return h
	}
	goesOn, stalls := hold("weiter"), hold("haengt")
	// The node reads a connection's frames in order: once it answers a
	// later call, both uploads are under way in it.
	if _, err := agency.Inbox(ctx); err != nil {
		t.Fatal(err)
	}

	term := time.Now()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM to kurierd %d: %v", n.cmd.Process.Pid, err)
	}
	wantShuttingDown(t, "the subscription", <-subEnded)
	close(goesOn.letGo)
	if err := <-goesOn.done; err != nil {
		// Only if this machine held it up past the node's StopIdle.
		wantShuttingDown(t, "the upload that went on", err)
	} else {
		received[goesOn.receipt.MessageID] = true
		t.Log("the upload that went on during the stop got its receipt")
	}
	select {
	case <-n.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("kurierd still runs 20s after SIGTERM\n%s", n.logs)
	}
	took := time.Since(term)
	t.Logf("kurierd exited %v after SIGTERM", took)
	if took > 2*time.Second {
		t.Errorf("kurierd took %v to exit after SIGTERM, want at most 2s\n%s", took, n.logs)
	}
	if code := n.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("kurierd exited with %d after SIGTERM, want 0\n%s", code, n.logs)
	}
	if logs := n.logs.String(); !strings.Contains(logs, "node stopped serving") || strings.Contains(logs, "were cut") || strings.Contains(logs, "level=ERROR") {
		t.Errorf("kurierd's log of the stop:\n%s", logs)
	}
	close(stalls.letGo)
	if err := <-stalls.done; err == nil {
		t.Error("the upload held until kurierd had exited got a receipt")
	} else {
		wantShuttingDown(t, "the stalled upload", err)
	}

	n2 := startDevNode(t, n.dir)
	court2 := dialAs("court", n2.addr)
	inbox, err := court2.Inbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, e := range inbox {
		listed[e.ID] = true
	}
	for id, data := range docs {
		if listed[id] != received[id] {
			t.Errorf("message %s: in the inbox after the restart %v, receipt %v", id, listed[id], received[id])
		}
		if !received[id] {
			continue
		}
		f, err := court2.Fetch(ctx, id, t.TempDir())
		if err != nil {
			t.Fatalf("fetch %s after the restart: %v", id, err)
		}
		if len(f.Files) != 1 {
			t.Fatalf("fetch %s: %d files", id, len(f.Files))
		}
		if got, err := os.ReadFile(f.Files[0]); err != nil || !bytes.Equal(got, data) {
			t.Errorf("message %s after the restart: the document differs (%v)", id, err)
		}
	}
}

// wantShuttingDown fails the test unless err is the Unavailable a
// stopping node answers with.
func wantShuttingDown(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "the node is shutting down") {
		t.Errorf("%s while kurierd stopped: %v, want Unavailable saying the node is shutting down", what, err)
	}
}
