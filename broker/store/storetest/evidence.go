package storetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/tlog"
)

func testAppendEvidence(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	m := Create(t, st, Agency, t0, Court, Other)
	size := logSize(t, st)

	s := step(t, Agency, m.Copies[0], "Retrieval", broker.StateRetrieved)
	s.Next.Received = t0.Add(time.Hour) // the copy keeps the Received it was stored with
	got, err := st.AppendEvidence(ctx, s)
	if err != nil {
		t.Fatalf("AppendEvidence: %v", err)
	}
	ev := withLeaf(s.Evidence, size)
	diff(t, "AppendEvidence", ev, got)
	diff(t, "Evidence", append(slices.Clone(m.Evidence), ev), evidenceOf(t, st, m.Msg.ID()))
	if n := logSize(t, st); n != size+1 {
		t.Errorf("LogSize %d, want %d", n, size+1)
	}
	want := m.Copies[0]
	want.Head, want.State = s.Next.Head, broker.StateRetrieved
	diff(t, "Copy after the step", want, storedCopy(t, st, m.Msg.ID(), Court))
	diff(t, "the other copy", m.Copies[1], storedCopy(t, st, m.Msg.ID(), Other))

	// The next step chains on the new head.
	s2 := step(t, Agency, want, "Acknowledgement", broker.StateAcknowledged)
	if ev2 := apply(t, st, s2); ev2.LeafIndex != size+1 {
		t.Errorf("second step's leaf index %d, want %d", ev2.LeafIndex, size+1)
	}

	for _, tt := range []struct {
		name string
		s    broker.Step
	}{
		{"no such copy", step(t, Agency, broker.Copy{MessageID: m.Msg.ID(), Recipient: Agency, Head: m.Copies[0].Head}, "Retrieval", broker.StateRetrieved)},
		{"no such message", step(t, Agency, broker.Copy{MessageID: "0193aaaa-0000-7000-8000-000000000000", Recipient: Court}, "Retrieval", broker.StateRetrieved)},
	} {
		if _, err := st.AppendEvidence(ctx, tt.s); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("AppendEvidence, %s: %v, want ErrNotFound", tt.name, err)
		}
	}
	if n := logSize(t, st); n != size+2 {
		t.Errorf("LogSize %d after refused steps, want %d", n, size+2)
	}
}

func testAppendEvidenceConflict(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	m := Create(t, st, Agency, t0, Court)
	c := m.Copies[0]
	s := step(t, Agency, c, "Retrieval", broker.StateRetrieved)
	apply(t, st, s)
	stored := storedCopy(t, st, c.MessageID, Court)
	evs := evidenceOf(t, st, c.MessageID)
	size := logSize(t, st)

	for _, tt := range []struct {
		name     string
		prevHead string
	}{
		{"stale head", c.Head},
		{"made-up head", digest([]byte("made up"))},
		{"no head", ""},
	} {
		late := step(t, Agency, c, "Retrieval", broker.StateRetrieved)
		late.PrevHead = tt.prevHead
		if _, err := st.AppendEvidence(ctx, late); !errors.Is(err, broker.ErrConflict) {
			t.Errorf("AppendEvidence with a %s: %v, want ErrConflict", tt.name, err)
		}
		diff(t, tt.name+": Copy", stored, storedCopy(t, st, c.MessageID, Court))
		diff(t, tt.name+": Evidence", evs, evidenceOf(t, st, c.MessageID))
		if n := logSize(t, st); n != size {
			t.Errorf("%s: LogSize %d, want %d", tt.name, n, size)
		}
	}
}

// testAppendEvidenceRace races writers on one copy's head: the store's
// compare-and-swap lets exactly one of them move it.
func testAppendEvidenceRace(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	m := Create(t, st, Agency, t0, Court)
	c := m.Copies[0]
	size := logSize(t, st)
	const writers = 8
	steps := make([]broker.Step, writers)
	for i := range steps {
		steps[i] = step(t, Agency, c, "Retrieval", broker.StateRetrieved)
	}
	errs := make([]error, writers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range steps {
		wg.Go(func() {
			<-start
			_, errs[i] = st.AppendEvidence(ctx, steps[i])
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("writers %d and %d both moved the head %s", winner, i, c.Head)
		case err == nil:
			winner = i
		case !errors.Is(err, broker.ErrConflict):
			t.Errorf("writer %d: %v, want ErrConflict or success", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer moved the head")
	}
	diff(t, "Copy", steps[winner].Next, storedCopy(t, st, c.MessageID, Court))
	diff(t, "Evidence", append(slices.Clone(m.Evidence), withLeaf(steps[winner].Evidence, size)), evidenceOf(t, st, c.MessageID))
	if n := logSize(t, st); n != size+1 {
		t.Errorf("LogSize %d, want %d: only the winner is logged", n, size+1)
	}
}

// testEvidenceOfAnotherLog stores evidence that another node issued and
// relayed back: chained with the leaf index that node gave it, but not in
// this node's log.
func testEvidenceOfAnotherLog(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	m := Create(t, st, Agency, t0, Court, Remote)
	size := logSize(t, st)
	s := step(t, Agency, m.copyOf(t, Remote), "Delivery", broker.StateDelivered)
	s.Evidence.Log, s.Evidence.LeafIndex = tlog.Origin(RemoteDomain), 1 // a leaf index this log has too
	got := apply(t, st, s)
	diff(t, "AppendEvidence of another log", s.Evidence, got)
	if n := logSize(t, st); n != size {
		t.Errorf("LogSize %d after evidence of another log, want %d", n, size)
	}
	diff(t, "Evidence", append(slices.Clone(m.Evidence), s.Evidence), evidenceOf(t, st, m.Msg.ID()))
	own := apply(t, st, step(t, Agency, storedCopy(t, st, m.Msg.ID(), Court), "Retrieval", broker.StateRetrieved))
	if own.LeafIndex != size {
		t.Errorf("own evidence after another log's: leaf index %d, want %d", own.LeafIndex, size)
	}

	ev := broker.Evidence{Log: tlog.Origin(RemoteDomain), LeafIndex: 7, MessageID: m.Msg.ID(), Sender: Agency, Type: "SubmissionRejection", DER: random(t, 100)}
	if _, err := st.AddEvidence(ctx, ev); !errors.Is(err, broker.ErrInvalid) {
		t.Errorf("AddEvidence of another log: %v, want ErrInvalid: it belongs to a copy's chain", err)
	}
	if n := logSize(t, st); n != size+1 {
		t.Errorf("LogSize %d, want %d", n, size+1)
	}
}

func testAddEvidence(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	// A SubmissionRejection's message is not stored at all.
	id := "0193aaaa-0000-7000-8000-000000000001"
	var want []broker.Evidence
	for i := range 3 {
		ev := broker.Evidence{MessageID: id, Sender: Agency, Type: "SubmissionRejection", DER: random(t, 100)}
		got, err := st.AddEvidence(ctx, ev)
		if err != nil {
			t.Fatalf("AddEvidence: %v", err)
		}
		ev = withLeaf(ev, uint64(i))
		diff(t, "AddEvidence", ev, got)
		want = append(want, ev)
	}
	diff(t, "Evidence", want, evidenceOf(t, st, id))
	if _, err := st.Message(ctx, id); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("Message after AddEvidence: %v, want ErrNotFound", err)
	}
	if got, err := st.Evidence(ctx, "0193aaaa-0000-7000-8000-000000000002"); err != nil || len(got) != 0 {
		t.Errorf("Evidence of an unknown message = %v, %v; want none, nil", got, err)
	}
	// AddEvidence about a stored message joins its evidence.
	m := Create(t, st, Agency, t0, Court)
	ev := broker.Evidence{MessageID: m.Msg.ID(), Sender: Agency, Recipient: Court, Type: "NonDelivery", DER: random(t, 100)}
	got, err := st.AddEvidence(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	diff(t, "Evidence of a stored message", append(slices.Clone(m.Evidence), withLeaf(ev, got.LeafIndex)), evidenceOf(t, st, m.Msg.ID()))
	diff(t, "Copy after AddEvidence", m.Copies[0], storedCopy(t, st, m.Msg.ID(), Court))
}

// testEvidenceOrder checks that a message's evidence comes back in the
// order it was stored: across many calls and methods, with other
// messages' evidence in between, and with evidence of another log whose
// leaf indexes run backwards.
func testEvidenceOrder(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	m := Create(t, st, Agency, t0, Court, Remote)
	want := m.Evidence
	other := Create(t, st, Other, t0, Court)
	copies := map[string]broker.Copy{Court: m.Copies[0], Remote: m.Copies[1], "other": other.Copies[0]}
	origin := tlog.Origin(RemoteDomain)
	for _, w := range []struct {
		rcpt, typ string
		leaf      uint64 // for evidence of the remote log; 0 for the node's own
	}{
		{Remote, "Delivery", 900},
		{Court, "Retrieval", 0},
		{Remote, "Retrieval", 17},
		{Court, "Acknowledgement", 0},
		{Remote, "Acknowledgement", 3},
	} {
		s := step(t, Agency, copies[w.rcpt], w.typ, copies[w.rcpt].State)
		if w.leaf != 0 {
			s.Evidence.Log, s.Evidence.LeafIndex = origin, w.leaf
		}
		want = append(want, apply(t, st, s))
		copies[w.rcpt] = s.Next
		// Another message's evidence in between.
		o := step(t, Other, copies["other"], "Retrieval", broker.StateRetrieved)
		apply(t, st, o)
		copies["other"] = o.Next
	}
	ev, err := st.AddEvidence(ctx, broker.Evidence{MessageID: m.Msg.ID(), Sender: Agency, Type: "NonDelivery", DER: random(t, 80)})
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, ev)
	diff(t, "Evidence in the order stored", want, evidenceOf(t, st, m.Msg.ID()), cmpopts.EquateEmpty())
}
