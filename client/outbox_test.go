package client_test

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/evidence"
)

// TestClient_Outbox sends one message to two recipients (the court and the
// sender itself, the development node's only mailboxes): the court
// fetches and acknowledges it, the other rejects it. The sender's outbox
// lists it first, with each recipient's state; the court's outbox does
// not.
func TestClient_Outbox(t *testing.T) {
	ctx := ctxT(t)
	ag, ct := dial(t, agency), dial(t, court)
	r, err := ag.Send(ctx, client.Message{
		To: []string{daemon.DevCourt, daemon.DevAgency}, Subject: "Ladung", Type: "Ladung", Reference: "7 O 3/26",
		Documents: []client.Document{{Name: "ladung.txt", Data: []byte("Termin am 3.12.\n")}},
	}, nil)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	id := r.MessageID

	f, err := ct.Fetch(ctx, id, t.TempDir())
	if err != nil {
		t.Fatalf("court Fetch: %v", err)
	}
	if _, err := ct.Acknowledge(ctx, f); err != nil {
		t.Fatalf("Acknowledge: %v", err)
	}
	if _, err := ag.Fetch(ctx, id, t.TempDir()); err != nil {
		t.Fatalf("agency Fetch: %v", err)
	}
	if _, err := ag.Reject(ctx, id, evidence.CannotOpen, ""); err != nil {
		t.Fatalf("Reject: %v", err)
	}

	newest, err := ag.Outbox(ctx, 1)
	if err != nil {
		t.Fatalf("Outbox: %v", err)
	}
	if len(newest) != 1 {
		t.Fatalf("Outbox(1) = %d messages, want 1", len(newest))
	}
	want := client.SentMessage{
		ID: id, Subject: "Ladung", Type: "Ladung", Reference: "7 O 3/26",
		Recipients: []client.RecipientState{
			{Address: daemon.DevCourt, State: "acknowledged", Evidence: "Acknowledgement"},
			{Address: daemon.DevAgency, State: "rejected", Evidence: "Rejection", Reason: "cannot-open"},
		},
	}
	if diff := cmp.Diff(want, newest[0], cmpopts.IgnoreFields(client.SentMessage{}, "Created", "Received", "Size"), cmpopts.IgnoreFields(client.RecipientState{}, "Time")); diff != "" {
		t.Errorf("newest outbox entry (-want +got):\n%s", diff)
	}
	for _, rs := range newest[0].Recipients {
		if rs.Time.Before(newest[0].Received) {
			t.Errorf("%s's state dated %s, before the message was received at %s", rs.Address, rs.Time, newest[0].Received)
		}
	}

	all, err := ag.Outbox(ctx, 0)
	if err != nil {
		t.Fatalf("Outbox: %v", err)
	}
	if len(all) == 0 || all[0].ID != id {
		t.Fatalf("Outbox(0) does not start with the newest message")
	}
	for i := 1; i < len(all); i++ {
		if all[i].Received.After(all[i-1].Received) {
			t.Errorf("outbox entry %d received after the one before it: not newest first", i)
		}
	}
	courtSent, err := ct.Outbox(ctx, 0)
	if err != nil {
		t.Fatalf("court Outbox: %v", err)
	}
	if slices.ContainsFunc(courtSent, func(m client.SentMessage) bool { return m.ID == id }) {
		t.Error("the recipient's outbox lists the sender's message")
	}
	if _, _, err := ag.OutboxPage(ctx, "", 101); err == nil {
		t.Error("OutboxPage of 101 messages was not refused")
	}
}
