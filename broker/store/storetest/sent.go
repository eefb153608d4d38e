package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
)

func testSent(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	first := Create(t, st, Agency, t0, Court, Remote)
	Create(t, st, Other, t0.Add(time.Second), Court)
	second := Create(t, st, Agency, t0.Add(2*time.Second), Court)

	// The court answers the first message; the listing follows the step.
	c := first.Copies[0]
	der := random(t, 200)
	next := c
	next.State, next.Head = broker.StateRejected, digest(der)
	if _, err := st.AppendEvidence(ctx, broker.Step{
		Evidence: broker.Evidence{MessageID: c.MessageID, Sender: Agency, Recipient: Court, Type: "Rejection", DER: der},
		PrevHead: c.Head, Next: next,
	}); err != nil {
		t.Fatalf("AppendEvidence: %v", err)
	}

	got, cursor, err := st.Sent(ctx, Agency, "", 10)
	if err != nil {
		t.Fatalf("Sent: %v", err)
	}
	if cursor != "" {
		t.Errorf("Sent of all: next cursor %q, want none", cursor)
	}
	if ids := idsOf(got); !slices.Equal(ids, []string{second.Msg.ID(), first.Msg.ID()}) {
		t.Fatalf("Sent = %q, want the agency's two messages, newest first", ids)
	}
	e := got[1]
	if e.Message.Header.Subject != first.Msg.Header.Subject || !e.Message.Received.Equal(t0) || e.Message.EnvelopeSHA256 != first.Msg.EnvelopeSHA256 {
		t.Errorf("Sent's message %+v is not the one stored", e.Message.Header)
	}
	states := map[string]broker.Copy{}
	for _, c := range e.Copies {
		states[c.Recipient] = c
	}
	if len(e.Copies) != 2 || states[Court].State != broker.StateRejected || states[Court].Head != next.Head ||
		states[Remote].State != broker.StateRelaying || states[Remote].Local {
		t.Errorf("Sent's copies %+v, want the court's rejected and the remote one relaying", e.Copies)
	}

	for sender, want := range map[string]int{Other: 1, Court: 0, "nobody@stadt.example": 0, "": 0} {
		got, cursor, err := st.Sent(ctx, sender, "", 10)
		if err != nil || len(got) != want || cursor != "" {
			t.Errorf("Sent(%q) = %d entries, cursor %q, %v; want %d", sender, len(got), cursor, err, want)
		}
		for _, e := range got {
			if e.Message.Header.From != sender {
				t.Errorf("Sent(%q) lists a message from %s", sender, e.Message.Header.From)
			}
		}
	}
}

func testSentPaging(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	var want []string
	// Received out of order, and two at the same time (then by id).
	for _, d := range []time.Duration{3, 1, 4, 1, 5, 9, 2} {
		m := Create(t, st, Agency, t0.Add(d*time.Second), Court)
		Create(t, st, Other, t0.Add(d*time.Second), Court)
		want = append(want, m.Msg.ID())
	}
	byTime := map[string]time.Time{}
	var all []string
	for cursor, pages := "", 0; ; pages++ {
		if pages > len(want) {
			t.Fatal("Sent keeps handing out cursors")
		}
		page, next, err := st.Sent(ctx, Agency, cursor, 2)
		if err != nil {
			t.Fatalf("Sent page %d: %v", pages, err)
		}
		if len(page) > 2 || len(page) == 0 {
			t.Fatalf("Sent page %d has %d entries, want 1 or 2", pages, len(page))
		}
		for _, e := range page {
			all = append(all, e.Message.ID())
			byTime[e.Message.ID()] = e.Message.Received
		}
		if next == "" {
			break
		}
		cursor = next
	}
	slices.SortFunc(want, func(a, b string) int {
		if c := byTime[b].Compare(byTime[a]); c != 0 {
			return c
		}
		return -cmpString(a, b)
	})
	if !slices.Equal(all, want) {
		t.Errorf("paged Sent = %q, want %q (newest first, then by id descending)", all, want)
	}
}

func testSentCursorOfAnotherSender(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	for i := range 3 {
		Create(t, st, Agency, t0.Add(time.Duration(i)*time.Second), Court)
	}
	other := Create(t, st, Other, t0.Add(-time.Hour), Court)
	_, cursor, err := st.Sent(ctx, Agency, "", 1)
	if err != nil || cursor == "" {
		t.Fatalf("Sent: cursor %q, %v", cursor, err)
	}
	// The agency's cursor names a position; in another sender's listing it
	// leads to that sender's messages only.
	got, _, err := st.Sent(ctx, Other, cursor, 10)
	if err != nil {
		t.Fatalf("Sent with another sender's cursor: %v", err)
	}
	for _, e := range got {
		if e.Message.Header.From != Other {
			t.Errorf("another sender's cursor led to a message from %s", e.Message.Header.From)
		}
	}
	if ids := idsOf(got); len(ids) != 1 || ids[0] != other.Msg.ID() {
		t.Errorf("Sent(other, agency's cursor) = %q, want only the other's message", ids)
	}
}

func testSentMalformedCursor(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	Create(t, st, Agency, t0, Court)
	for _, c := range []string{"!!", "AAAA", "not a cursor at all"} {
		if _, _, err := st.Sent(ctx, Agency, c, 10); !errors.Is(err, broker.ErrInvalid) {
			t.Errorf("Sent with cursor %q: %v, want ErrInvalid", c, err)
		}
	}
}

func idsOf(es []broker.SentEntry) []string {
	var ids []string
	for _, e := range es {
		ids = append(ids, e.Message.ID())
	}
	return ids
}
