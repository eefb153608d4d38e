package storetest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/tlog"
)

func testCreateMessage(t *testing.T, open Open) {
	ctx := context.Background()
	for _, to := range [][]string{{Court}, {Court, Other, Remote}} {
		st := open(t)
		m := build(t, st, Agency, t0, to...)
		got, err := st.CreateMessage(ctx, m.Msg, m.Copies, m.Evidence, m.Outbound)
		if err != nil {
			t.Fatalf("CreateMessage to %q: %v", to, err)
		}
		want := make([]broker.Evidence, len(m.Evidence))
		for i, ev := range m.Evidence {
			want[i] = withLeaf(ev, uint64(i))
		}
		diff(t, "CreateMessage's evidence", want, got)
		diff(t, "Evidence", want, evidenceOf(t, st, m.Msg.ID()))
		if n := logSize(t, st); n != uint64(len(want)) {
			t.Errorf("LogSize %d after storing %d evidence", n, len(want))
		}
		stored, err := st.Message(ctx, m.Msg.ID())
		if err != nil {
			t.Fatalf("Message: %v", err)
		}
		diff(t, "Message", m.Msg, stored)
		for _, c := range m.Copies {
			diff(t, "Copy for "+c.Recipient, c, storedCopy(t, st, c.MessageID, c.Recipient))
		}
		out, err := st.Outbound(ctx, RemoteDomain, "", 10)
		if err != nil {
			t.Fatalf("Outbound: %v", err)
		}
		diff(t, "Outbound", m.Outbound, out, cmpopts.EquateEmpty())

		if _, err := st.Copy(ctx, m.Msg.ID(), Agency); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("Copy for a non-recipient: %v, want ErrNotFound", err)
		}
		if _, err := st.Message(ctx, "0193aaaa-0000-7000-8000-000000000000"); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("Message of an unknown id: %v, want ErrNotFound", err)
		}
		if _, err := st.Copy(ctx, "0193aaaa-0000-7000-8000-000000000000", Court); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("Copy of an unknown message: %v, want ErrNotFound", err)
		}
	}
}

// checkNothingOf checks that nothing of message m that a refused write was
// to store is visible, and that the log still has size leaves.
func checkNothingOf(t *testing.T, st node.Store, m Message, size uint64) {
	t.Helper()
	ctx := context.Background()
	if n := logSize(t, st); n != size {
		t.Errorf("LogSize %d after a refused write, want %d", n, size)
	}
	for _, c := range m.Copies {
		if _, err := st.Copy(ctx, m.Msg.ID(), c.Recipient); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("Copy for %s after a refused write: %v, want ErrNotFound", c.Recipient, err)
		}
	}
	if out, err := st.Outbound(ctx, RemoteDomain, "", 0); err != nil || len(out) != 0 {
		t.Errorf("Outbound after a refused write = %v, %v; want none", out, err)
	}
	if due, err := st.Due(ctx, t0.Add(365*24*time.Hour), broker.Copy{}, 0); err != nil || len(due) != 0 {
		t.Errorf("Due after a refused write = %v, %v; want none", due, err)
	}
}

func testCreateMessageRepeat(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	first := Create(t, st, Agency, t0, Court)
	size := logSize(t, st)
	for _, tt := range []struct {
		name   string
		envSHA string
		want   error
	}{
		{"same envelope", first.Msg.EnvelopeSHA256, broker.ErrExists},
		{"other envelope", hex.EncodeToString(random(t, 32)), broker.ErrDuplicate},
	} {
		// A repeat arrives with a fresh upload, another recipient set, new
		// evidence, a relayed copy with a deadline and an outbound entry.
		again := build(t, st, Agency, t0.Add(time.Minute), Court, Other, Remote)
		id := first.Msg.ID()
		again.Msg.Header.ID, again.Msg.EnvelopeSHA256 = id, tt.envSHA
		for i := range again.Copies {
			again.Copies[i].MessageID = id
		}
		for i := range again.Evidence {
			again.Evidence[i].MessageID = id
		}
		for i := range again.Outbound {
			again.Outbound[i].MessageID = id
		}
		if _, err := st.CreateMessage(ctx, again.Msg, again.Copies, again.Evidence, again.Outbound); !errors.Is(err, tt.want) {
			t.Fatalf("CreateMessage, %s: %v, want %v", tt.name, err, tt.want)
		}
		stored, err := st.Message(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		diff(t, tt.name+": stored message", first.Msg, stored)
		diff(t, tt.name+": Evidence", first.Evidence, evidenceOf(t, st, id))
		diff(t, tt.name+": Copy for Court", first.Copies[0], storedCopy(t, st, id, Court))
		checkNothingOf(t, st, Message{Msg: again.Msg, Copies: again.Copies[1:]}, size)
		// The repeat's upload belongs to no message: it may be deleted.
		if err := st.DeleteBlob(ctx, again.Msg.Blob); err != nil {
			t.Errorf("%s: DeleteBlob of the repeat's upload: %v", tt.name, err)
		}
	}
	// The next evidence takes the next leaf index: the repeats took none.
	ev, err := st.AddEvidence(ctx, broker.Evidence{MessageID: "0193aaaa-0000-7000-8000-000000000000", Sender: Agency, Type: "SubmissionRejection", DER: random(t, 100)})
	if err != nil {
		t.Fatal(err)
	}
	if ev.LeafIndex != size {
		t.Errorf("leaf index %d after refused repeats, want %d", ev.LeafIndex, size)
	}
}

func testCreateMessageRefused(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	used := Create(t, st, Agency, t0, Court)
	gone := build(t, st, Agency, t0, Court)
	if err := st.DeleteBlob(ctx, gone.Msg.Blob); err != nil {
		t.Fatal(err)
	}
	size := logSize(t, st)
	other := "0193aaaa-0000-7000-8000-000000000000"

	tests := []struct {
		name   string
		modify func(m *Message)
		unfit  bool // a blob not fit for the message: ErrNotFound or ErrInvalid
	}{
		{"deleted blob", func(m *Message) { m.Msg.Blob = gone.Msg.Blob }, true},
		{"blob never written", func(m *Message) { m.Msg.Blob = "no-such-blob" }, true},
		{"blob of another size", func(m *Message) { m.Msg.Header.PayloadSize++ }, true},
		{"blob of another digest", func(m *Message) { m.Msg.Header.PayloadSHA256 = used.Msg.Header.PayloadSHA256 }, true},
		{"blob of another message", func(m *Message) {
			m.Msg.Blob = used.Msg.Blob
			m.Msg.Header.PayloadSHA256, m.Msg.Header.PayloadSize = used.Msg.Header.PayloadSHA256, used.Msg.Header.PayloadSize
		}, true},
		{"copy of another message", func(m *Message) { m.Copies[0].MessageID = other }, false},
		{"two copies for one recipient", func(m *Message) { m.Copies = append(m.Copies, m.Copies[0]) }, false},
		{"evidence of another message", func(m *Message) { m.Evidence[1].MessageID = other }, false},
		{"outbound entry of another message", func(m *Message) { m.Outbound[0].MessageID = other }, false},
	}
	for _, tt := range tests {
		// Every refused create also had a relayed copy with a deadline and
		// an outbound entry to write.
		m := build(t, st, Agency, t0, Court, Remote)
		bad := m.clone()
		tt.modify(&bad)
		_, err := st.CreateMessage(ctx, bad.Msg, bad.Copies, bad.Evidence, bad.Outbound)
		if tt.unfit && !unfitBlob(err) || !tt.unfit && !errors.Is(err, broker.ErrInvalid) {
			t.Errorf("CreateMessage, %s: %v, want ErrInvalid (or ErrNotFound for a blob)", tt.name, err)
			continue
		}
		if _, err := st.Message(ctx, m.Msg.ID()); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("%s: Message after a refused create: %v, want ErrNotFound", tt.name, err)
		}
		if evs := evidenceOf(t, st, m.Msg.ID()); len(evs) != 0 {
			t.Errorf("%s: %d evidence stored by a refused create", tt.name, len(evs))
		}
		checkNothingOf(t, st, m, size)
		diff(t, tt.name+": the other message's copy", used.Copies[0], storedCopy(t, st, used.Msg.ID(), Court))
		// The refusal left nothing behind that stands in the way of the
		// message itself.
		evs, err := st.CreateMessage(ctx, m.Msg, m.Copies, m.Evidence, m.Outbound)
		if err != nil {
			t.Fatalf("%s: CreateMessage of the intact message after the refusal: %v", tt.name, err)
		}
		if evs[0].LeafIndex != size {
			t.Errorf("%s: the refused create used leaf indexes: the next is %d, want %d", tt.name, evs[0].LeafIndex, size)
		}
		size += uint64(len(evs))
		// Leave the queue and deadlines empty for the next case.
		s := step(t, Agency, m.copyOf(t, Remote), "RelayAcceptance", broker.StateDelivered)
		s.Next.Deadline = time.Time{}
		if _, err := st.FinishRelay(ctx, RemoteDomain, m.Msg.ID(), []broker.Step{s}, true); err != nil {
			t.Fatalf("FinishRelay: %v", err)
		}
		size++
	}
}

func testAddCopies(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	m := Create(t, st, Agency, t0, Court)
	id := m.Msg.ID()
	later := t0.Add(time.Minute)
	// Other: a local copy with a deadline; Remote: a relayed one, whose
	// Delivery comes from the other node's log.
	more := []broker.Copy{
		{MessageID: id, Recipient: Other, Received: later, State: broker.StateDelivered, Head: digest([]byte("o")), Local: true, Deadline: t0.Add(time.Hour)},
		{MessageID: id, Recipient: Remote, Received: later, State: broker.StateRelaying, Head: digest([]byte("r"))},
	}
	evs := []broker.Evidence{
		{MessageID: id, Sender: Agency, Recipient: Other, Type: "Delivery", DER: random(t, 300)},
		{Log: tlog.Origin(RemoteDomain), LeafIndex: 40, MessageID: id, Sender: Agency, Recipient: Remote, Type: "Delivery", DER: random(t, 300)},
	}
	size := logSize(t, st)

	refused := []struct {
		name   string
		id     string
		envSHA string
		copies []broker.Copy
		want   error
	}{
		{"a copy exists", id, m.Msg.EnvelopeSHA256, append(slices.Clone(more), m.Copies[0]), broker.ErrExists},
		{"no such message", "0193aaaa-0000-7000-8000-000000000000", m.Msg.EnvelopeSHA256, nil, broker.ErrNotFound},
		{"another envelope", id, hex.EncodeToString(random(t, 32)), more, broker.ErrDuplicate},
	}
	for _, tt := range refused {
		var e []broker.Evidence
		if tt.id == id {
			e = evs
		}
		if _, err := st.AddCopies(ctx, tt.id, tt.envSHA, tt.copies, e); !errors.Is(err, tt.want) {
			t.Errorf("AddCopies, %s: %v, want %v", tt.name, err, tt.want)
		}
		diff(t, tt.name+": Evidence", m.Evidence, evidenceOf(t, st, id))
		diff(t, tt.name+": Copy for Court", m.Copies[0], storedCopy(t, st, id, Court))
		checkNothingOf(t, st, Message{Msg: m.Msg, Copies: more}, size)
	}

	got, err := st.AddCopies(ctx, id, m.Msg.EnvelopeSHA256, more, evs)
	if err != nil {
		t.Fatalf("AddCopies: %v", err)
	}
	added := []broker.Evidence{withLeaf(evs[0], size), evs[1]}
	diff(t, "AddCopies", added, got)
	diff(t, "Evidence", append(slices.Clone(m.Evidence), added...), evidenceOf(t, st, id))
	if n := logSize(t, st); n != size+1 {
		t.Errorf("LogSize %d, want %d: only the own Delivery is logged", n, size+1)
	}
	for _, c := range append([]broker.Copy{m.Copies[0]}, more...) {
		diff(t, "Copy for "+c.Recipient, c, storedCopy(t, st, id, c.Recipient))
	}
	for rcpt, want := range map[string][]broker.InboxEntry{
		Other:  {{Copy: more[0], Message: m.Msg}},
		Remote: nil,
	} {
		page, _, err := st.Inbox(ctx, rcpt, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		diff(t, "Inbox of "+rcpt, want, page, cmpopts.EquateEmpty())
	}
	due, err := st.Due(ctx, t0.Add(time.Hour), broker.Copy{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "Due", []broker.Copy{more[0]}, due, cmpopts.EquateEmpty())
	sent, _, err := st.Sent(ctx, Agency, "", 10)
	if err != nil || len(sent) != 1 {
		t.Fatalf("Sent = %v, %v; want the message", sent, err)
	}
	diff(t, "Sent's copies after AddCopies", append([]broker.Copy{m.Copies[0]}, more...), sent[0].Copies,
		cmpopts.SortSlices(func(a, b broker.Copy) bool { return a.Recipient < b.Recipient }))
}

func testInbox(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	// Created out of mailbox order; two at the same instant (then by id).
	var want []broker.InboxEntry
	for _, d := range []time.Duration{3, 1, 4, 1, 5, 9, 2, 6} {
		m := Create(t, st, Agency, t0.Add(d*time.Second), Court, Other, Remote)
		want = append(want, broker.InboxEntry{Copy: m.Copies[0], Message: m.Msg})
	}
	Create(t, st, Agency, t0, Other) // not for Court
	slices.SortFunc(want, func(a, b broker.InboxEntry) int {
		if c := a.Copy.Received.Compare(b.Copy.Received); c != 0 {
			return c
		}
		return cmpString(a.Copy.MessageID, b.Copy.MessageID)
	})
	for _, tt := range []struct {
		limit int
		pages []int // entries per page
	}{
		{10, []int{8}},
		{4, []int{4, 4}},
		{3, []int{3, 3, 2}},
		{1, []int{1, 1, 1, 1, 1, 1, 1, 1}},
		{1 << 20, []int{8}}, // above any backend's maximum page
	} {
		var got []broker.InboxEntry
		var sizes []int
		for cursor := ""; ; {
			page, next, err := st.Inbox(ctx, Court, cursor, tt.limit)
			if err != nil {
				t.Fatalf("Inbox, limit %d: %v", tt.limit, err)
			}
			got, sizes = append(got, page...), append(sizes, len(page))
			if next == "" {
				break
			}
			if len(sizes) > 20 {
				t.Fatalf("Inbox, limit %d: paging does not end", tt.limit)
			}
			cursor = next
		}
		diff(t, "Inbox page sizes", tt.pages, sizes)
		diff(t, "Inbox entries", want, got)
	}
	testInboxCursor(t, st, want)

	// The backend's own page size, whatever it is, lists them all.
	page, next, err := st.Inbox(ctx, Court, "", 0)
	if err != nil || next != "" {
		t.Fatalf("Inbox with limit 0: cursor %q, %v", next, err)
	}
	diff(t, "Inbox with limit 0", want, page)

	if page, next, err := st.Inbox(ctx, Agency, "", 10); err != nil || len(page) != 0 || next != "" {
		t.Errorf("Inbox of an empty mailbox = %d entries, %q, %v; want none", len(page), next, err)
	}
	if page, _, err := st.Inbox(ctx, Remote, "", 10); err != nil || len(page) != 0 {
		t.Errorf("Inbox of a remote recipient = %d entries, %v; want none: relayed copies are in no mailbox here", len(page), err)
	}

	// A step changes the copy listed, not its place.
	e := want[0]
	s := step(t, Agency, e.Copy, "Retrieval", broker.StateRetrieved)
	s.Next.Received = t0.Add(time.Hour) // the store keeps the copy's own
	apply(t, st, s)
	first, _, err := st.Inbox(ctx, Court, "", 1)
	if err != nil || len(first) != 1 {
		t.Fatalf("Inbox after a step: %v, %v", first, err)
	}
	e.Copy.Head, e.Copy.State = s.Next.Head, broker.StateRetrieved
	diff(t, "Inbox's first entry after a step", e, first[0])
}

func testInboxMalformedCursor(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	Create(t, st, Agency, t0, Court)
	for _, c := range []string{"!!", "AAAA", "not a cursor at all"} {
		if _, _, err := st.Inbox(ctx, Court, c, 10); !errors.Is(err, broker.ErrInvalid) {
			t.Errorf("Inbox with cursor %q: %v, want ErrInvalid", c, err)
		}
	}
}

// testCreateMessageAtLimits stores a message as large as the node takes
// by default: node.DefaultMaxRecipients recipients, each with a Delivery
// the size of a real one (a CMS signature with its certificate chain,
// some KiB), all in one transaction.
func testCreateMessageAtLimits(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	var to []string
	for i := range node.DefaultMaxRecipients {
		to = append(to, fmt.Sprintf("postfach-%03d@amtsgericht.example", i))
	}
	m := build(t, st, Agency, t0, to...)
	for i := range m.Evidence {
		m.Evidence[i].DER = random(t, 6<<10)
		if m.Evidence[i].Recipient != "" {
			m.Copies[i-1].Head = digest(m.Evidence[i].DER)
		}
	}
	evs, err := st.CreateMessage(ctx, m.Msg, m.Copies, m.Evidence, m.Outbound)
	if err != nil {
		t.Fatalf("CreateMessage to %d recipients: %v", len(to), err)
	}
	if len(evs) != len(to)+1 || evs[len(evs)-1].LeafIndex != uint64(len(to)) {
		t.Errorf("CreateMessage returned %d evidence, the last at leaf %d; want %d up to leaf %d", len(evs), evs[len(evs)-1].LeafIndex, len(to)+1, len(to))
	}
	diff(t, "Evidence", evs, evidenceOf(t, st, m.Msg.ID()))
	page, _, err := st.Sent(ctx, Agency, "", 10)
	if err != nil || len(page) != 1 || len(page[0].Copies) != len(to) {
		t.Fatalf("Sent = %v, %v; want the message with its %d copies", page, err, len(to))
	}
}

// testInboxCursor checks that InboxCursor starts Inbox at the entries
// received at a time or later, ties included, page by page.
func testInboxCursor(t *testing.T, st node.Store, want []broker.InboxEntry) {
	ctx := context.Background()
	for _, at := range []time.Duration{0, time.Second, 1500 * time.Millisecond, 2 * time.Second, 9 * time.Second, 10 * time.Second} {
		var from []broker.InboxEntry
		for _, e := range want {
			if !e.Copy.Received.Before(t0.Add(at)) {
				from = append(from, e)
			}
		}
		var got []broker.InboxEntry
		for cursor, pages := st.InboxCursor(t0.Add(at)), 0; ; pages++ {
			if pages > len(want) {
				t.Fatal("Inbox from InboxCursor: paging does not end")
			}
			page, next, err := st.Inbox(ctx, Court, cursor, 2)
			if err != nil {
				t.Fatalf("Inbox from InboxCursor(t0+%s): %v", at, err)
			}
			got = append(got, page...)
			if next == "" {
				break
			}
			cursor = next
		}
		diff(t, fmt.Sprintf("Inbox from InboxCursor(t0+%s)", at), from, got)
	}
}
