package rpc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker/rpc"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki/pkitest"
	kurierv1 "kurier.dev/kurier/proto/kurier/v1"
)

// sendTo sends one small message from `from` to the recipients with the
// real client and returns its id.
func sendTo(t *testing.T, c *client.Client, subject string, to ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := c.Send(ctx, client.Message{To: to, Subject: subject, Type: "Schriftsatz", Reference: "4 C 12/26",
		Documents: []client.Document{{Name: "a.txt", Data: []byte("Anlage\n")}}}, nil)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	return r.MessageID
}

// TestListSent_States sends one message to two recipients of the node:
// one fetches and acknowledges it, the other fetches and rejects it. The
// sender's outbox shows each recipient's state, evidence, time and reason.
func TestListSent_States(t *testing.T) {
	ts := startTestServer(t, rpc.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	agency := dialClient(t, ts.addr, pkitest.Agency)
	court := dialClient(t, ts.addr, pkitest.Court)
	other := dialClient(t, ts.addr, pkitest.Other)
	before := time.Now().Add(-time.Second)
	id := sendTo(t, agency, "Klage", pkitest.Court, pkitest.Other)

	out, err := agency.Outbox(ctx, 0)
	if err != nil {
		t.Fatalf("Outbox: %v", err)
	}
	if len(out) != 1 || out[0].ID != id {
		t.Fatalf("Outbox = %+v, want message %s", out, id)
	}
	for _, r := range out[0].Recipients {
		if r.State != "delivered" || r.Evidence != string(evidence.Delivery) {
			t.Errorf("before fetching: %s is %s by %s, want delivered by Delivery", r.Address, r.State, r.Evidence)
		}
	}

	f, err := court.Fetch(ctx, id, t.TempDir())
	if err != nil {
		t.Fatalf("court Fetch: %v", err)
	}
	if _, err := court.Acknowledge(ctx, f); err != nil {
		t.Fatalf("Acknowledge: %v", err)
	}
	if _, err := other.Fetch(ctx, id, t.TempDir()); err != nil {
		t.Fatalf("other Fetch: %v", err)
	}
	if _, err := other.Reject(ctx, id, evidence.NotCompetent, "Zuständig ist das Landgericht"); err != nil {
		t.Fatalf("Reject: %v", err)
	}

	out, err = agency.Outbox(ctx, 0)
	if err != nil {
		t.Fatalf("Outbox: %v", err)
	}
	if len(out) != 1 {
		t.Fatalf("Outbox has %d messages, want 1", len(out))
	}
	m := out[0]
	want := client.SentMessage{
		ID: id, Subject: "Klage", Type: "Schriftsatz", Reference: "4 C 12/26",
		Recipients: []client.RecipientState{
			{Address: pkitest.Court, State: "acknowledged", Evidence: string(evidence.Acknowledgement)},
			{Address: pkitest.Other, State: "rejected", Evidence: string(evidence.Rejection), Reason: "not-competent: Zuständig ist das Landgericht"},
		},
	}
	opts := cmp.Options{
		cmpopts.IgnoreFields(client.SentMessage{}, "Created", "Received", "Size"),
		cmpopts.IgnoreFields(client.RecipientState{}, "Time"),
	}
	if diff := cmp.Diff(want, m, opts); diff != "" {
		t.Errorf("outbox entry (-want +got):\n%s", diff)
	}
	if m.Received.Before(before) || m.Created.After(m.Received.Add(time.Second)) || m.Size <= 0 {
		t.Errorf("created %s, received %s, size %d", m.Created, m.Received, m.Size)
	}
	// Each state's time is that of the evidence it comes from.
	evs, err := agency.Evidence(ctx, id)
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	for _, r := range m.Recipients {
		var last *client.Evidence
		for i := range evs {
			if evs[i].Statement.Recipient == r.Address {
				last = &evs[i]
			}
		}
		if last == nil || !last.Statement.Time.Equal(r.Time) || string(last.Type()) != r.Evidence {
			t.Errorf("%s: state from %s at %s, the newest evidence is %+v", r.Address, r.Evidence, r.Time, last)
		}
	}
}

// TestListSent_Paging pages through the outbox newest first, and refuses
// page sizes and tokens the node would not hand out, saying why.
func TestListSent_Paging(t *testing.T) {
	ts := startTestServer(t, rpc.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	agency := dialClient(t, ts.addr, pkitest.Agency)
	var ids []string
	for i := range 5 {
		ids = append([]string{sendTo(t, agency, "Nr. "+string(rune('1'+i)), pkitest.Court)}, ids...) // newest first
	}

	var paged []string
	token := ""
	for pages := 0; ; pages++ {
		if pages > len(ids) {
			t.Fatal("the outbox keeps handing out page tokens")
		}
		page, next, err := agency.OutboxPage(ctx, token, 2)
		if err != nil {
			t.Fatalf("OutboxPage: %v", err)
		}
		if len(page) == 0 || len(page) > 2 {
			t.Fatalf("a page of %d messages, want 1 or 2", len(page))
		}
		for _, m := range page {
			paged = append(paged, m.ID)
		}
		if next == "" {
			break
		}
		token = next
	}
	if diff := cmp.Diff(ids, paged); diff != "" {
		t.Errorf("paged outbox (-want +got):\n%s", diff)
	}
	newest, err := agency.Outbox(ctx, 3)
	if err != nil {
		t.Fatalf("Outbox(3): %v", err)
	}
	if got := sentIDs(newest); !cmp.Equal(got, ids[:3]) {
		t.Errorf("Outbox(3) = %q, want the newest three %q", got, ids[:3])
	}
	// A page over the byte budget comes back smaller, down to one
	// message, and the listing is still whole and in order.
	restore := rpc.SetMaxSentPageBytes(1)
	page, next, err := agency.OutboxPage(ctx, "", 3)
	if err != nil || len(page) != 1 || next == "" {
		t.Errorf("a page asked for 3 messages over the byte budget: %d messages, next %q, %v; want 1 and a next page", len(page), next, err)
	}
	all, err := agency.Outbox(ctx, 0)
	restore()
	if err != nil || !cmp.Equal(sentIDs(all), ids) {
		t.Errorf("the whole outbox page by page under the byte budget = %q, %v; want %q", sentIDs(all), err, ids)
	}

	mb := kurierv1.NewMailboxServiceClient(dial(t, ts.addr, fx.IDs[pkitest.Agency], ts.trust))
	for name, tt := range map[string]struct {
		req  *kurierv1.ListSentRequest
		want string
	}{
		"page too large":   {&kurierv1.ListSentRequest{PageSize: 101}, "page_size 101 out of range 0..100"},
		"negative page":    {&kurierv1.ListSentRequest{PageSize: -1}, "out of range"},
		"token too long":   {&kurierv1.ListSentRequest{PageToken: strings.Repeat("A", 300)}, "list from the start without one"},
		"token not base64": {&kurierv1.ListSentRequest{PageToken: "!!"}, "malformed sent cursor"},
		"token too short":  {&kurierv1.ListSentRequest{PageToken: "AAAA"}, "malformed sent cursor"},
	} {
		_, err := mb.ListSent(ctx, tt.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.want) {
			t.Errorf("%s: %v, want InvalidArgument saying %q", name, err, tt.want)
		}
	}
}

// TestAuthz_ListSentOnlyOwn: a participant lists only what it sent. The
// recipient and another participant of the same node see none of the
// agency's messages, not even with the agency's own page token.
func TestAuthz_ListSentOnlyOwn(t *testing.T) {
	ts := startTestServer(t, rpc.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	agency := dialClient(t, ts.addr, pkitest.Agency)
	other := dialClient(t, ts.addr, pkitest.Other)
	own := sendTo(t, other, "Eigenes", pkitest.Court) // older than the agency's
	agencys := map[string]bool{}
	for range 3 {
		agencys[sendTo(t, agency, "Vertraulich", pkitest.Court)] = true
	}
	_, token, err := agency.OutboxPage(ctx, "", 1)
	if err != nil || token == "" {
		t.Fatalf("agency's first page: token %q, %v", token, err)
	}
	for who, want := range map[string][]string{pkitest.Other: {own}, pkitest.Court: nil} {
		c := dialClient(t, ts.addr, who)
		out, err := c.Outbox(ctx, 0)
		if err != nil {
			t.Fatalf("%s's outbox: %v", who, err)
		}
		if got := sentIDs(out); !cmp.Equal(got, want) {
			t.Errorf("%s's outbox = %q, want %q", who, got, want)
		}
		// The agency's token names a position; in another's outbox it
		// leads only to that one's own messages older than it.
		page, next, err := c.OutboxPage(ctx, token, 100)
		if err != nil || next != "" {
			t.Fatalf("%s with the agency's page token: next %q, %v", who, next, err)
		}
		for _, m := range page {
			if agencys[m.ID] {
				t.Errorf("%s paged into the agency's message %s with the agency's token", who, m.ID)
			}
		}
		if got := sentIDs(page); !cmp.Equal(got, want) {
			t.Errorf("%s with the agency's page token = %q, want %q", who, got, want)
		}
	}
}

func sentIDs(ms []client.SentMessage) []string {
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	return ids
}
