package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/envelope"
)

// TestRelayOf_Batches queues a message for more recipients at one domain
// than a relay carries: relayOf hands out the first maxRelayBatch and
// says there are more.
func TestRelayOf_Batches(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(t.TempDir(), store.Options{Small: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	payload := []byte("sealed")
	blob, err := db.WriteBlob(ctx, bytes.NewReader(payload), int64(len(payload)))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := envelope.NewID()
	now := time.Now().UTC()
	sum := sha256.Sum256(payload)
	env := &envelope.Envelope{Version: envelope.Version, ID: id, From: "poststelle@stadt.example", Subject: "Rundschreiben",
		Created: now, Expires: now.Add(time.Hour), PayloadSHA256: hex.EncodeToString(sum[:]), PayloadSize: int64(len(payload)),
		Files: []envelope.File{{Name: "a.pdf", Size: 1, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}}}
	const n = maxRelayBatch + 20
	var copies []broker.Copy
	var evs []broker.Evidence
	for i := range n {
		to := fmt.Sprintf("amt%d@kreis.example", i)
		env.To = append(env.To, to)
		copies = append(copies, broker.Copy{MessageID: id, Recipient: to, Received: now, State: broker.StateRelaying, Deadline: now.Add(time.Hour)})
		evs = append(evs, broker.Evidence{MessageID: id, Sender: env.From, Recipient: to, Type: "SubmissionAcceptance", DER: []byte("evidence " + to)})
	}
	m := &broker.Message{Header: env, EnvelopeSHA256: "e3", Received: now, Blob: blob.ID, Expires: now.Add(time.Hour)}
	out := []broker.Outbound{{Domain: "kreis.example", MessageID: id, NextTry: now}}
	if _, err := db.CreateMessage(ctx, m, copies, evs, out); err != nil {
		t.Fatal(err)
	}
	nd := &Node{store: db, domain: "stadt.example", domains: map[string]bool{"stadt.example": true}}
	r, err := nd.relayOf(ctx, out[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Recipients) != maxRelayBatch || !r.More || r.Recipients[0] != "amt0@kreis.example" {
		t.Fatalf("relayOf gave %d recipients (more %v), want the first %d and more", len(r.Recipients), r.More, maxRelayBatch)
	}
	if len(r.Chains) != maxRelayBatch || r.Chains[0][0].Log != "stadt.example/kurier-log" {
		t.Fatalf("chains: %d, log %q", len(r.Chains), r.Chains[0][0].Log)
	}
}
