package storetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
)

// race runs each of the calls at once and returns their errors.
func race(calls ...func() error) []error {
	errs := make([]error, len(calls))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, call := range calls {
		wg.Go(func() {
			<-start
			errs[i] = call()
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// oneWins checks that exactly one of errs is nil and every other wraps
// lost, and returns the winner's index.
func oneWins(t *testing.T, what string, errs []error, lost error) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("%s: attempts %d and %d both succeeded", what, winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, lost):
			t.Errorf("%s: attempt %d: %v, want success or %v", what, i, err, lost)
		}
	}
	if winner < 0 {
		t.Fatalf("%s: no attempt succeeded", what)
	}
	return winner
}

// upload writes the payload of blob again, as a resubmission uploads it
// anew, and returns the new blob's id.
func upload(t *testing.T, st node.Store, blob string) string {
	t.Helper()
	ctx := context.Background()
	rc, err := st.OpenBlob(ctx, blob)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.WriteBlob(ctx, bytes.NewReader(payload), int64(len(payload)))
	if err != nil {
		t.Fatal(err)
	}
	return b.ID
}

// testCreateMessageRace submits one message several times at once, each
// with its own upload, as a client does that resubmits while its first
// attempt is still under way: one is stored, the others are repeats.
func testCreateMessageRace(t *testing.T, open Open) {
	st := open(t)
	m := build(t, st, Agency, t0, Court, Remote)
	const attempts = 6
	tries := make([]Message, attempts)
	for i := range tries {
		tries[i] = m.clone()
		if i > 0 {
			tries[i].Msg.Blob = upload(t, st, m.Msg.Blob)
		}
	}
	stored := make([][]broker.Evidence, attempts)
	var calls []func() error
	for i, try := range tries {
		calls = append(calls, func() error {
			var err error
			stored[i], err = st.CreateMessage(context.Background(), try.Msg, try.Copies, try.Evidence, try.Outbound)
			return err
		})
	}
	winner := oneWins(t, "CreateMessage of one message at once", race(calls...), broker.ErrExists)
	diff(t, "Evidence", stored[winner], evidenceOf(t, st, m.Msg.ID()))
	if n := logSize(t, st); n != uint64(len(m.Evidence)) {
		t.Errorf("LogSize %d, want %d: only one attempt is logged", n, len(m.Evidence))
	}
	got, err := st.Message(context.Background(), m.Msg.ID())
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "Message", tries[winner].Msg, got)
	if out, err := st.Outbound(context.Background(), RemoteDomain, "", 10); err != nil || len(out) != 1 {
		t.Errorf("Outbound = %v, %v; want the message queued once", out, err)
	}
}

// testAddCopiesRace relays one new recipient's copy several times at
// once: one is added, the others find it exists.
func testAddCopiesRace(t *testing.T, open Open) {
	st := open(t)
	m := Create(t, st, Agency, t0, Court)
	id := m.Msg.ID()
	size := logSize(t, st)
	const attempts = 6
	copies := make([]broker.Copy, attempts)
	evs := make([]broker.Evidence, attempts)
	var calls []func() error
	for i := range attempts {
		der := random(t, 150)
		copies[i] = broker.Copy{MessageID: id, Recipient: Other, Received: t0, State: broker.StateDelivered, Head: digest(der), Local: true}
		evs[i] = broker.Evidence{MessageID: id, Sender: Agency, Recipient: Other, Type: "Delivery", DER: der}
		calls = append(calls, func() error {
			_, err := st.AddCopies(context.Background(), id, m.Msg.EnvelopeSHA256, copies[i:i+1], evs[i:i+1])
			return err
		})
	}
	winner := oneWins(t, "AddCopies of one copy at once", race(calls...), broker.ErrExists)
	diff(t, "Copy", copies[winner], storedCopy(t, st, id, Other))
	diff(t, "Evidence", append(slices.Clone(m.Evidence), withLeaf(evs[winner], size)), evidenceOf(t, st, id))
	if n := logSize(t, st); n != size+1 {
		t.Errorf("LogSize %d, want %d", n, size+1)
	}
}

// testPrefixes checks that a name that is a prefix or an extension of a
// stored one names nothing: no listing strays into a neighbour's entries,
// however the backend lays out its keys or queries.
func testPrefixes(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	m := Create(t, st, Agency, t0, Court, Remote)
	id := m.Msg.ID()
	s := step(t, Agency, m.Copies[0], "Retrieval", broker.StateRetrieved)
	s.Push = RemoteDomain
	pushed := apply(t, st, s)
	for _, name := range []string{Court[:len(Court)-1], Court + "x", Court[:len(Court)-1] + "%", "eingang@%", "%", "_", "*", ""} {
		if page, _, err := st.Inbox(ctx, name, "", 10); err != nil && !errors.Is(err, broker.ErrInvalid) || len(page) != 0 {
			t.Errorf("Inbox(%q) = %d entries, %v; want none", name, len(page), err)
		}
		if _, err := st.Copy(ctx, id, name); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("Copy(%s, %q): %v, want ErrNotFound", id, name, err)
		}
	}
	for _, name := range []string{Agency[:len(Agency)-1], Agency + "x", "poststelle@%", "%", ""} {
		if page, _, err := st.Sent(ctx, name, "", 10); err != nil && !errors.Is(err, broker.ErrInvalid) || len(page) != 0 {
			t.Errorf("Sent(%q) = %d entries, %v; want none", name, len(page), err)
		}
	}
	for _, name := range []string{id[:len(id)-1], id + "0", id[:8] + "%", "%", ""} {
		if evs, err := st.Evidence(ctx, name); err != nil || len(evs) != 0 {
			t.Errorf("Evidence(%q) = %d evidence, %v; want none", name, len(evs), err)
		}
		if _, err := st.Message(ctx, name); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("Message(%q): %v, want ErrNotFound", name, err)
		}
	}
	for _, domain := range []string{RemoteDomain[:len(RemoteDomain)-1], RemoteDomain + "x", "landgericht%", "%", ""} {
		if out, err := st.Outbound(ctx, domain, "", 10); err != nil && !errors.Is(err, broker.ErrInvalid) || len(out) != 0 {
			t.Errorf("Outbound(%q) = %v, %v; want none", domain, out, err)
		}
		if evs, err := st.Pushes(ctx, domain, 0, 10); err != nil && !errors.Is(err, broker.ErrInvalid) || len(evs) != 0 {
			t.Errorf("Pushes(%q) = %v, %v; want none", domain, evs, err)
		}
		if _, err := st.OutboundEntry(ctx, domain, id); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("OutboundEntry(%q, %s): %v, want ErrNotFound", domain, id, err)
		}
	}
	// And the real names still find their entries.
	if evs, err := st.Pushes(ctx, RemoteDomain, 0, 10); err != nil || len(evs) != 1 || evs[0].LeafIndex != pushed.LeafIndex {
		t.Errorf("Pushes(%s) = %v, %v; want the one pushed", RemoteDomain, evs, err)
	}
}

// testContextEnded calls every method with a context that has ended: each
// either does its work or fails with an error that says so (wrapping
// context.Canceled), never with another outcome a caller would act on.
func testContextEnded(t *testing.T, open Open) {
	st := open(t)
	m := Create(t, st, Agency, t0, Court, Remote)
	id, c := m.Msg.ID(), m.Copies[0]
	fresh := build(t, st, Agency, t0, Court)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := []struct {
		name string
		call func() error
	}{
		{"WriteBlob", func() error { _, err := st.WriteBlob(ctx, bytes.NewReader(random(t, 300<<10)), 1<<20); return err }},
		{"OpenBlob", func() error {
			rc, err := st.OpenBlob(ctx, m.Msg.Blob)
			if err == nil {
				_, err = io.ReadAll(rc)
				rc.Close()
			}
			return err
		}},
		{"CreateMessage", func() error {
			_, err := st.CreateMessage(ctx, fresh.Msg, fresh.Copies, fresh.Evidence, nil)
			return err
		}},
		{"AddCopies", func() error {
			_, err := st.AddCopies(ctx, id, m.Msg.EnvelopeSHA256, []broker.Copy{{MessageID: id, Recipient: Other, Received: t0, State: broker.StateDelivered, Local: true}}, nil)
			return err
		}},
		{"Message", func() error { _, err := st.Message(ctx, id); return err }},
		{"Copy", func() error { _, err := st.Copy(ctx, id, Court); return err }},
		{"Inbox", func() error { _, _, err := st.Inbox(ctx, Court, "", 10); return err }},
		{"Sent", func() error { _, _, err := st.Sent(ctx, Agency, "", 10); return err }},
		{"AppendEvidence", func() error {
			_, err := st.AppendEvidence(ctx, step(t, Agency, c, "Retrieval", broker.StateRetrieved))
			return err
		}},
		{"AddEvidence", func() error {
			_, err := st.AddEvidence(ctx, broker.Evidence{MessageID: id, Sender: Agency, Type: "NonDelivery", DER: random(t, 50)})
			return err
		}},
		{"Evidence", func() error { _, err := st.Evidence(ctx, id); return err }},
		{"Outbound", func() error { _, err := st.Outbound(ctx, RemoteDomain, "", 10); return err }},
		{"OutboundEntry", func() error { _, err := st.OutboundEntry(ctx, RemoteDomain, id); return err }},
		{"SetOutbound", func() error { return st.SetOutbound(ctx, m.Outbound[0]) }},
		{"FinishRelay", func() error { _, err := st.FinishRelay(ctx, RemoteDomain, id, nil, false); return err }},
		{"Pushes", func() error { _, err := st.Pushes(ctx, RemoteDomain, 0, 10); return err }},
		{"DeletePush", func() error { return st.DeletePush(ctx, RemoteDomain, 0) }},
		{"Due", func() error { _, err := st.Due(ctx, t0, broker.Copy{}, 10); return err }},
		{"LogSize", func() error { _, err := st.LogSize(ctx); return err }},
		{"MarkLog", func() error { return st.MarkLog(ctx, 1) }},
		{"LogRoot", func() error { _, err := st.LogRoot(ctx, 1); return err }},
		{"InclusionProof", func() error { _, err := st.InclusionProof(ctx, 0, 1); return err }},
		{"ConsistencyProof", func() error { _, err := st.ConsistencyProof(ctx, 1, 2); return err }},
		{"DeleteBlob", func() error { return st.DeleteBlob(ctx, fresh.Msg.Blob) }},
	}
	for _, c := range calls {
		if err := c.call(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("%s with an ended context: %v, want success or context.Canceled", c.name, err)
		}
	}
}
