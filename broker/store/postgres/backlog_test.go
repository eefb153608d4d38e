package postgres_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
	"kurier.dev/kurier/envelope"
)

// backlogStore is a store that reports its backlog, as both backends do.
type backlogStore interface {
	node.Store
	Backlog(ctx context.Context) (broker.Backlog, error)
}

// TestBacklog_AsBadgerReportsIt runs the same messages and steps through
// the badger store and this one: their backlogs are the same.
func TestBacklog_AsBadgerReportsIt(t *testing.T) {
	db, err := store.Open(t.TempDir(), store.Options{Small: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	want := backlogOf(t, db)
	got := backlogOf(t, open(t, pgtest.DSN(t)))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Backlog differs from badger's (-badger +postgres):\n%s", diff)
	}
	if got.Queued["landgericht.example"].Count != 2 || got.Unfetched.Count != 2 || got.Unanswered.Count != 1 {
		t.Errorf("Backlog = %+v, want 2 queued, 2 unfetched, 1 unanswered", got)
	}
}

// backlogOf stores three messages, each to a local court and a remote
// court, the second received first, and fetches the first one's local
// copy; it returns the store's backlog then.
func backlogOf(t *testing.T, st backlogStore) broker.Backlog {
	t.Helper()
	ctx := context.Background()
	const remote = "eingang@landgericht.example"
	var first broker.Copy
	for i, at := range []time.Time{t0, t0.Add(-time.Hour), t0.Add(time.Hour)} {
		payload := []byte{byte(i)}
		blob, err := st.WriteBlob(ctx, bytes.NewReader(payload), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		id, err := envelope.NewID()
		if err != nil {
			t.Fatal(err)
		}
		env := &envelope.Envelope{Version: envelope.Version, ID: id, From: sender, To: []string{court, remote},
			Subject: "Bescheid", Type: "Bescheid", Created: at, Expires: at.Add(time.Hour),
			PayloadSHA256: hex.EncodeToString(blob.SHA256[:]), PayloadSize: blob.Size,
			Files: []envelope.File{{Name: "a.pdf", Size: 1, SHA256: digest(payload)}}}
		raw, err := env.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		m := &broker.Message{Envelope: raw, Header: env, EnvelopeSHA256: envelope.Digest(raw), Received: at, Blob: blob.ID, Expires: at.Add(time.Hour)}
		der := []byte{1, byte(i)}
		copies := []broker.Copy{
			{MessageID: id, Recipient: court, Received: at, State: broker.StateDelivered, Local: true, Head: digest(der)},
			{MessageID: id, Recipient: remote, Received: at, State: broker.StateRelaying, Deadline: at.Add(time.Hour), Head: digest(der)},
		}
		evs := []broker.Evidence{{MessageID: id, Sender: sender, Recipient: court, Type: "Delivery", DER: der}}
		var out []broker.Outbound
		if i < 2 { // the third was relayed meanwhile
			out = []broker.Outbound{{Domain: "landgericht.example", MessageID: id, NextTry: at}}
		}
		if _, err := st.CreateMessage(ctx, m, copies, evs, out); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = copies[0]
		}
	}
	der := []byte{2}
	next := first
	next.State, next.Head = broker.StateRetrieved, digest(der)
	if _, err := st.AppendEvidence(ctx, broker.Step{Evidence: broker.Evidence{MessageID: first.MessageID, Sender: sender, Recipient: court, Type: "Retrieval", DER: der}, PrevHead: first.Head, Next: next}); err != nil {
		t.Fatal(err)
	}
	b, err := st.Backlog(ctx)
	if err != nil {
		t.Fatalf("Backlog: %v", err)
	}
	return b
}
