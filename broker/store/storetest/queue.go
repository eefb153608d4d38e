package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
)

// queued creates n messages to Court and Remote, each queued for
// RemoteDomain, and returns them in order of message id.
func queued(t *testing.T, st node.Store, n int) []Message {
	t.Helper()
	var ms []Message
	for i := range n {
		ms = append(ms, Create(t, st, Agency, t0.Add(time.Duration(i)*time.Second), Court, Remote))
	}
	slices.SortFunc(ms, func(a, b Message) int { return cmpString(a.Msg.ID(), b.Msg.ID()) })
	return ms
}

func testOutbound(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	ms := queued(t, st, 5)
	Create(t, st, Agency, t0, Court) // queued nowhere
	var want []broker.Outbound
	for _, m := range ms {
		want = append(want, m.Outbound...)
	}
	all, err := st.Outbound(ctx, RemoteDomain, "", 10)
	if err != nil {
		t.Fatalf("Outbound: %v", err)
	}
	diff(t, "Outbound, in order of message id", want, all)
	var paged []broker.Outbound
	for after, pages := "", 0; ; pages++ {
		if pages > len(want) {
			t.Fatal("Outbound paging does not end")
		}
		page, err := st.Outbound(ctx, RemoteDomain, after, 2)
		if err != nil {
			t.Fatalf("Outbound after %q: %v", after, err)
		}
		if len(page) > 2 {
			t.Fatalf("Outbound with limit 2 returned %d", len(page))
		}
		paged = append(paged, page...)
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].MessageID
	}
	diff(t, "Outbound page by page", want, paged)
	// After an id that is no longer queued: the entries after it.
	if _, err := st.FinishRelay(ctx, RemoteDomain, ms[1].Msg.ID(), nil, true); err != nil {
		t.Fatal(err)
	}
	rest, err := st.Outbound(ctx, RemoteDomain, ms[1].Msg.ID(), 10)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "Outbound after an id no longer queued", want[2:], rest)
	for _, domain := range []string{"amtsgericht.example", "nowhere.example"} {
		if out, err := st.Outbound(ctx, domain, "", 10); err != nil || len(out) != 0 {
			t.Errorf("Outbound(%s) = %v, %v; want none", domain, out, err)
		}
	}

	e, err := st.OutboundEntry(ctx, RemoteDomain, ms[2].Msg.ID())
	if err != nil {
		t.Fatalf("OutboundEntry: %v", err)
	}
	diff(t, "OutboundEntry", ms[2].Outbound[0], e)
	for _, tt := range []struct{ name, domain, id string }{
		{"another domain", "amtsgericht.example", ms[2].Msg.ID()},
		{"unknown message", RemoteDomain, "0193aaaa-0000-7000-8000-000000000000"},
	} {
		if _, err := st.OutboundEntry(ctx, tt.domain, tt.id); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("OutboundEntry of %s: %v, want ErrNotFound", tt.name, err)
		}
	}
}

func testSetOutbound(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	ms := queued(t, st, 2)
	o := ms[0].Outbound[0]
	o.Attempts, o.NextTry, o.LastError, o.Uncertain = 3, t0.Add(17*time.Minute), "dial landgericht.example: connection refused", true
	if err := st.SetOutbound(ctx, o); err != nil {
		t.Fatalf("SetOutbound: %v", err)
	}
	got, err := st.OutboundEntry(ctx, RemoteDomain, o.MessageID)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "OutboundEntry after SetOutbound", o, got)
	all, err := st.Outbound(ctx, RemoteDomain, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "Outbound after SetOutbound", []broker.Outbound{o, ms[1].Outbound[0]}, all)

	// Cleared again: the zero fields are stored too.
	o.Attempts, o.LastError, o.Uncertain = 0, "", false
	if err := st.SetOutbound(ctx, o); err != nil {
		t.Fatal(err)
	}
	if got, err := st.OutboundEntry(ctx, RemoteDomain, o.MessageID); err != nil || got != o {
		t.Errorf("OutboundEntry after clearing = %+v, %v; want %+v", got, err, o)
	}

	// A message no longer (or never) queued stays unqueued.
	local := Create(t, st, Agency, t0, Court)
	for _, gone := range []broker.Outbound{
		{Domain: RemoteDomain, MessageID: local.Msg.ID(), Attempts: 1, NextTry: t0},
		{Domain: "amtsgericht.example", MessageID: ms[1].Msg.ID(), Attempts: 1, NextTry: t0},
	} {
		if err := st.SetOutbound(ctx, gone); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("SetOutbound of %s to %s, not queued: %v, want ErrNotFound", gone.MessageID, gone.Domain, err)
		}
		if _, err := st.OutboundEntry(ctx, gone.Domain, gone.MessageID); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("SetOutbound queued %s to %s: %v", gone.MessageID, gone.Domain, err)
		}
	}
}

func testFinishRelay(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	ms := queued(t, st, 2)
	m := ms[0]
	id, c := m.Msg.ID(), m.copyOf(t, Remote)
	size := logSize(t, st)

	// Not done: the steps are applied, the entry stays (for a message
	// with more recipients there).
	acc := step(t, Agency, c, "RelayAcceptance", broker.StateRelaying)
	got, err := st.FinishRelay(ctx, RemoteDomain, id, []broker.Step{acc}, false)
	if err != nil {
		t.Fatalf("FinishRelay, not done: %v", err)
	}
	diff(t, "FinishRelay's evidence", []broker.Evidence{withLeaf(acc.Evidence, size)}, got)
	diff(t, "Copy", acc.Next, storedCopy(t, st, id, Remote))
	if _, err := st.OutboundEntry(ctx, RemoteDomain, id); err != nil {
		t.Errorf("OutboundEntry after a relay not done: %v", err)
	}

	// Done: two steps and the removal, together.
	del := step(t, Agency, acc.Next, "RelayAcceptance", broker.StateDelivered)
	del.Next.Deadline = time.Time{}
	ret := step(t, Agency, del.Next, "Retrieval", broker.StateRetrieved)
	got, err = st.FinishRelay(ctx, RemoteDomain, id, []broker.Step{del, ret}, true)
	if err != nil {
		t.Fatalf("FinishRelay, done: %v", err)
	}
	diff(t, "FinishRelay's evidence", []broker.Evidence{withLeaf(del.Evidence, size+1), withLeaf(ret.Evidence, size+2)}, got)
	diff(t, "Copy", ret.Next, storedCopy(t, st, id, Remote))
	diff(t, "Evidence", append(slices.Clone(m.Evidence), withLeaf(acc.Evidence, size), got[0], got[1]), evidenceOf(t, st, id))
	if _, err := st.OutboundEntry(ctx, RemoteDomain, id); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("OutboundEntry after the relay is done: %v, want ErrNotFound", err)
	}
	out, err := st.Outbound(ctx, RemoteDomain, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "Outbound after the relay is done", ms[1].Outbound, out)
	due, err := st.Due(ctx, t0.Add(365*24*time.Hour), broker.Copy{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "Due after the relay is done", []broker.Copy{ms[1].copyOf(t, Remote)}, due)

	// Done without steps: given up by other means.
	if _, err := st.FinishRelay(ctx, RemoteDomain, ms[1].Msg.ID(), nil, true); err != nil {
		t.Fatalf("FinishRelay without steps: %v", err)
	}
	if out, err := st.Outbound(ctx, RemoteDomain, "", 10); err != nil || len(out) != 0 {
		t.Errorf("Outbound after both relays = %v, %v; want none", out, err)
	}
	if n := logSize(t, st); n != size+3 {
		t.Errorf("LogSize %d, want %d", n, size+3)
	}
}

// testFinishRelayConflict checks that FinishRelay is all or nothing: a
// step whose head is stale undoes the steps before it and the removal.
func testFinishRelayConflict(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	m := Create(t, st, Agency, t0, Court, Remote)
	id, c := m.Msg.ID(), m.copyOf(t, Remote)
	size := logSize(t, st)
	acc := step(t, Agency, c, "RelayAcceptance", broker.StateRelaying)
	stale := step(t, Agency, c, "RelayRejection", broker.StateUndeliverable) // chains on the old head too
	for _, tt := range []struct {
		name  string
		steps []broker.Step
		want  error
	}{
		{"stale second step", []broker.Step{acc, stale}, broker.ErrConflict},
		{"no such copy", []broker.Step{acc, step(t, Agency, broker.Copy{MessageID: id, Recipient: Other}, "Delivery", broker.StateDelivered)}, broker.ErrNotFound},
	} {
		if _, err := st.FinishRelay(ctx, RemoteDomain, id, tt.steps, true); !errors.Is(err, tt.want) {
			t.Errorf("FinishRelay, %s: %v, want %v", tt.name, err, tt.want)
		}
		diff(t, tt.name+": Copy", c, storedCopy(t, st, id, Remote))
		diff(t, tt.name+": Evidence", m.Evidence, evidenceOf(t, st, id))
		if _, err := st.OutboundEntry(ctx, RemoteDomain, id); err != nil {
			t.Errorf("%s: OutboundEntry after a refused FinishRelay: %v", tt.name, err)
		}
		if n := logSize(t, st); n != size {
			t.Errorf("%s: LogSize %d, want %d", tt.name, n, size)
		}
	}
}

func testPushes(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	m := Create(t, st, Agency, t0, Court, Other)
	const a, b = "kreis-soest.example", "stadt-hamm.example"
	court, other := m.Copies[0], m.Copies[1]
	var pushedA []broker.Evidence
	for _, typ := range []string{"Retrieval", "Acknowledgement", "Retrieval"} {
		s := step(t, Agency, court, typ, broker.StateRetrieved)
		s.Push = a
		pushedA = append(pushedA, apply(t, st, s))
		court = s.Next
		// One not pushed, and one pushed elsewhere, in between.
		apply(t, st, step(t, Agency, court, "Retrieval", court.State))
		court = storedCopy(t, st, court.MessageID, Court)
	}
	s := step(t, Agency, other, "Retrieval", broker.StateRetrieved)
	s.Push = b
	pushedB := []broker.Evidence{apply(t, st, s)}

	check := func(name, domain string, from uint64, limit int, want []broker.Evidence) {
		t.Helper()
		got, err := st.Pushes(ctx, domain, from, limit)
		if err != nil {
			t.Fatalf("Pushes(%s): %v", domain, err)
		}
		diff(t, name, want, got, cmpopts.EquateEmpty())
	}
	check("Pushes to a", a, 0, 10, pushedA)
	check("Pushes to b", b, 0, 10, pushedB)
	check("Pushes to nobody", "nowhere.example", 0, 10, nil)
	check("Pushes from the second's leaf", a, pushedA[1].LeafIndex, 10, pushedA[1:])
	check("Pushes from after the second's leaf", a, pushedA[1].LeafIndex+1, 10, pushedA[2:])
	check("Pushes, one", a, 0, 1, pushedA[:1])
	check("Pushes beyond the log", a, pushedA[2].LeafIndex+100, 10, nil)

	if err := st.DeletePush(ctx, a, pushedA[1].LeafIndex); err != nil {
		t.Fatalf("DeletePush: %v", err)
	}
	check("Pushes after DeletePush", a, 0, 10, []broker.Evidence{pushedA[0], pushedA[2]})
	for _, tt := range []struct {
		name   string
		domain string
		index  uint64
	}{
		{"again", a, pushedA[1].LeafIndex},
		{"of another domain's entry", b, pushedA[0].LeafIndex},
		{"never queued", a, pushedA[0].LeafIndex + 1},
	} {
		if err := st.DeletePush(ctx, tt.domain, tt.index); err != nil {
			t.Errorf("DeletePush %s: %v, want success", tt.name, err)
		}
	}
	check("Pushes to a at the end", a, 0, 10, []broker.Evidence{pushedA[0], pushedA[2]})
	check("Pushes to b at the end", b, 0, 10, pushedB)
	// The evidence itself stays.
	if n := len(evidenceOf(t, st, m.Msg.ID())); n != len(m.Evidence)+7 {
		t.Errorf("%d evidence after DeletePush, want %d", n, len(m.Evidence)+7)
	}
}

func testDue(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	// Relayed copies are due at their message's expiry, a week after
	// receipt; local delivered ones have no deadline until a step sets
	// one.
	var relayed []broker.Copy
	for _, d := range []time.Duration{3, 1, 4, 5, 2} {
		m := Create(t, st, Agency, t0.Add(d*time.Minute), Court, Remote)
		relayed = append(relayed, m.copyOf(t, Remote))
	}
	local := Create(t, st, Agency, t0, Court)
	slices.SortFunc(relayed, func(a, b broker.Copy) int { return a.Deadline.Compare(b.Deadline) })
	week := 7 * 24 * time.Hour

	due := func(now time.Time, after broker.Copy, limit int) []broker.Copy {
		t.Helper()
		got, err := st.Due(ctx, now, after, limit)
		if err != nil {
			t.Fatalf("Due: %v", err)
		}
		if len(got) > limit {
			t.Fatalf("Due with limit %d returned %d", limit, len(got))
		}
		return got
	}
	diff(t, "Due before any deadline", []broker.Copy(nil), due(t0, broker.Copy{}, 10), cmpopts.EquateEmpty())
	diff(t, "Due at the first deadline", relayed[:1], due(relayed[0].Deadline, broker.Copy{}, 10))
	diff(t, "Due just before the second", relayed[:1], due(relayed[1].Deadline.Add(-time.Microsecond), broker.Copy{}, 10))
	diff(t, "Due, all", relayed, due(t0.Add(2*week), broker.Copy{}, 10))
	diff(t, "Due, two", relayed[:2], due(t0.Add(2*week), broker.Copy{}, 2))
	var paged []broker.Copy
	for after := (broker.Copy{}); len(paged) <= len(relayed); {
		page := due(t0.Add(2*week), after, 1)
		if len(page) == 0 {
			break
		}
		paged = append(paged, page[0])
		after = page[0]
	}
	diff(t, "Due one at a time", relayed, paged)

	// A step sets a deadline (the end of retention), moves it, clears it.
	c := local.Copies[0]
	for _, tt := range []struct {
		name     string
		deadline time.Time
	}{
		{"set", t0.Add(time.Hour)},
		{"moved later", t0.Add(30 * 24 * time.Hour)},
		{"moved earlier", t0.Add(time.Minute)},
		{"cleared", time.Time{}},
	} {
		s := step(t, Agency, c, "Delivery", broker.StateDelivered)
		s.Next.Deadline = tt.deadline
		apply(t, st, s)
		c = s.Next
		var want []broker.Copy // due a day after t0
		if !tt.deadline.IsZero() && !tt.deadline.After(t0.Add(24*time.Hour)) {
			want = []broker.Copy{c}
		}
		diff(t, "Due after the deadline was "+tt.name, want, due(t0.Add(24*time.Hour), broker.Copy{}, 10), cmpopts.EquateEmpty())
	}
	// Copies due are listed as stored, after their steps.
	s := step(t, Agency, relayed[0], "RelayAcceptance", broker.StateRelaying)
	apply(t, st, s)
	diff(t, "Due after a step that keeps the deadline", append([]broker.Copy{s.Next}, relayed[1:]...), due(t0.Add(2*week), broker.Copy{}, 10))
}

// testDueTies pages through copies that share a deadline: in whatever
// order the backend lists them, paging one at a time gives the same order
// and every copy once.
func testDueTies(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	deadline := t0.Add(2 * time.Hour)
	var want []broker.Copy
	for range 3 {
		m := Create(t, st, Agency, t0, Court)
		var more []broker.Copy
		for _, r := range []string{"a@kreis-soest.example", "bb@kreis-soest.example", "c@stadt-hamm.example"} {
			more = append(more, broker.Copy{MessageID: m.Msg.ID(), Recipient: r, Received: t0, State: broker.StateRelaying, Head: digest([]byte(r)), Deadline: deadline})
		}
		if _, err := st.AddCopies(ctx, m.Msg.ID(), m.Msg.EnvelopeSHA256, more, nil); err != nil {
			t.Fatalf("AddCopies: %v", err)
		}
		want = append(want, more...)
	}
	all, err := st.Due(ctx, deadline, broker.Copy{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "Due of copies with one deadline", want, all, cmpopts.SortSlices(func(a, b broker.Copy) bool {
		return a.MessageID+" "+a.Recipient < b.MessageID+" "+b.Recipient
	}))
	var paged []broker.Copy
	for after := (broker.Copy{}); len(paged) <= len(all); {
		page, err := st.Due(ctx, deadline, after, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page[0])
		after = page[0]
	}
	diff(t, "Due one at a time, one deadline", all, paged)
}

// testSetOutboundRace races the relay worker's two ends of a try: one
// records a failed attempt while the other finishes the relay. Whichever
// comes first, the entry is gone at the end: SetOutbound never puts back
// what FinishRelay removed.
func testSetOutboundRace(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	ms := queued(t, st, 20)
	for _, m := range ms {
		o := m.Outbound[0]
		o.Attempts, o.LastError = 1, "connection reset"
		s := step(t, Agency, m.copyOf(t, Remote), "RelayAcceptance", broker.StateDelivered)
		s.Next.Deadline = time.Time{}
		errs := race(
			func() error { return st.SetOutbound(ctx, o) },
			func() error {
				_, err := st.FinishRelay(ctx, RemoteDomain, o.MessageID, []broker.Step{s}, true)
				return err
			},
		)
		if errs[0] != nil && !errors.Is(errs[0], broker.ErrNotFound) || errs[1] != nil {
			t.Fatalf("SetOutbound: %v; FinishRelay: %v; want success or ErrNotFound, and success", errs[0], errs[1])
		}
		if _, err := st.OutboundEntry(ctx, RemoteDomain, o.MessageID); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("OutboundEntry after SetOutbound raced FinishRelay: %v, want ErrNotFound", err)
		}
	}
	if out, err := st.Outbound(ctx, RemoteDomain, "", 100); err != nil || len(out) != 0 {
		t.Errorf("Outbound after the races = %d entries, %v; want none", len(out), err)
	}
}
