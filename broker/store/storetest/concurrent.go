package storetest

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
)

// Bounds of the concurrency test: writers at once, and messages each
// writer stores (each with three evidence, one step and, for every fifth,
// a NonDelivery stored beside it).
const (
	writers   = 8
	perWriter = 50
)

// job is one message a writer stores, with what follows it.
type job struct {
	m      Message
	step   broker.Step
	reject *broker.Evidence
}

// checkpoint is a tree head the reader saw while writers wrote.
type checkpoint struct {
	size uint64
	root []byte
}

// concurrentRun is what the writers and the reader of the concurrency
// test report.
type concurrentRun struct {
	t  *testing.T
	st node.Store

	mu     sync.Mutex
	leaves map[uint64][]byte            // DER by leaf index, as the writes returned them
	stored map[string][]broker.Evidence // by message id, as the writes returned them

	seen []checkpoint // the reader's only
}

// testConcurrentWriters runs writers that create messages, step their
// copies and add evidence at once, while a reader takes tree heads as a
// node signing checkpoints does (LogSize, MarkLog, LogRoot). Afterwards
// the log must be gap-free (every leaf index given once, LogSize the
// number of evidence), every stored evidence must be what the writes
// returned, every inclusion proof must verify against LogRoot, and every
// tree head seen on the way must be a prefix of the final tree.
func testConcurrentWriters(t *testing.T, open Open) {
	st := open(t)
	// Messages and steps are built here: t.Fatal must not be called from
	// the writers' goroutines.
	jobs := make([][]job, writers)
	for w := range jobs {
		sender := []string{Agency, Other}[w%2]
		for i := range perWriter {
			m := build(t, st, sender, t0.Add(time.Duration(w*perWriter+i)*time.Millisecond), Court, Other)
			j := job{m: m, step: step(t, sender, m.Copies[0], "Retrieval", broker.StateRetrieved)}
			if i%5 == 0 {
				j.reject = &broker.Evidence{MessageID: m.Msg.ID(), Sender: sender, Recipient: Other, Type: "NonDelivery", DER: random(t, 90)}
			}
			jobs[w] = append(jobs[w], j)
		}
	}

	r := &concurrentRun{t: t, st: st, leaves: map[uint64][]byte{}, stored: map[string][]broker.Evidence{}}
	// The writers tick after each message; the reader takes a tree head
	// whenever it sees a tick, as often as it keeps up.
	tick, done := make(chan struct{}, 1), make(chan struct{})
	var reader, wg sync.WaitGroup
	reader.Go(func() { r.read(tick, done) })
	for _, js := range jobs {
		wg.Go(func() { r.write(js, tick) })
	}
	wg.Wait()
	close(done)
	reader.Wait()
	if t.Failed() {
		return
	}
	r.check(writers*perWriter*(3+1) + writers*((perWriter+4)/5))
}

// record notes evidence a write returned, and that its leaf index is new.
func (r *concurrentRun) record(id string, evs ...broker.Evidence) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range evs {
		if _, dup := r.leaves[ev.LeafIndex]; dup {
			r.t.Errorf("leaf index %d given twice", ev.LeafIndex)
		}
		r.leaves[ev.LeafIndex] = ev.DER
	}
	r.stored[id] = append(r.stored[id], evs...)
}

// write stores the jobs one after another.
func (r *concurrentRun) write(jobs []job, tick chan<- struct{}) {
	ctx := context.Background()
	for _, j := range jobs {
		id := j.m.Msg.ID()
		evs, err := r.st.CreateMessage(ctx, j.m.Msg, j.m.Copies, j.m.Evidence, nil)
		if err != nil {
			r.t.Errorf("CreateMessage: %v", err)
			return
		}
		for k := 1; k < len(evs); k++ {
			if evs[k].LeafIndex != evs[k-1].LeafIndex+1 {
				r.t.Errorf("one message's evidence got leaf indexes %d and %d: not appended together", evs[k-1].LeafIndex, evs[k].LeafIndex)
			}
		}
		r.record(id, evs...)
		ev, err := r.st.AppendEvidence(ctx, j.step)
		if err != nil {
			r.t.Errorf("AppendEvidence: %v", err)
			return
		}
		r.record(id, ev)
		if j.reject != nil {
			ev, err := r.st.AddEvidence(ctx, *j.reject)
			if err != nil {
				r.t.Errorf("AddEvidence: %v", err)
				return
			}
			r.record(id, ev)
		}
		select {
		case tick <- struct{}{}:
		default:
		}
	}
}

// read takes a tree head at every tick until done.
func (r *concurrentRun) read(tick, done <-chan struct{}) {
	ctx := context.Background()
	for {
		select {
		case <-done:
			return
		case <-tick:
		}
		size, err := r.st.LogSize(ctx)
		if err != nil {
			r.t.Errorf("LogSize while writing: %v", err)
			return
		}
		if err := r.st.MarkLog(ctx, size); err != nil {
			r.t.Errorf("MarkLog(%d) while writing: %v", size, err)
			return
		}
		root, err := r.st.LogRoot(ctx, size)
		if err != nil {
			r.t.Errorf("LogRoot(%d) while writing: %v", size, err)
			return
		}
		r.seen = append(r.seen, checkpoint{size, root})
	}
}

// check checks the log and the evidence after the run: want leaves.
func (r *concurrentRun) check(want int) {
	t, st := r.t, r.st
	n := logSize(t, st)
	if n != uint64(want) || len(r.leaves) != want {
		t.Fatalf("LogSize %d, %d distinct leaf indexes given, want %d", n, len(r.leaves), want)
	}
	ders := make([][]byte, n)
	for i := range n {
		der, ok := r.leaves[i]
		if !ok {
			t.Fatalf("leaf index %d never given: the log has a gap", i)
		}
		ders[i] = der
	}
	for id, evs := range r.stored {
		diff(t, "Evidence of "+id, evs, evidenceOf(t, st, id))
	}
	tree := refTree(ders)
	root := checkRoot(t, st, tree, ders, n)
	for i := range n {
		checkInclusion(t, st, tree, ders[i], i, n, root)
	}
	for _, c := range r.seen {
		if want := tree.HashAt(c.size); !bytes.Equal(c.root, want) {
			t.Fatalf("LogRoot(%d) while writing was %x; the final tree's is %x", c.size, c.root, want)
		}
		checkConsistency(t, st, tree, c.size, n, c.root, root)
	}
	// Every message reached its mailbox.
	count := 0
	for cursor, pages := "", 0; ; pages++ {
		if pages > writers*perWriter {
			t.Fatal("Inbox paging does not end")
		}
		page, next, err := st.Inbox(context.Background(), Court, cursor, 100)
		if err != nil {
			t.Fatal(err)
		}
		count += len(page)
		if next == "" {
			break
		}
		cursor = next
	}
	if count != writers*perWriter {
		t.Errorf("Inbox lists %d messages, want %d", count, writers*perWriter)
	}
}
