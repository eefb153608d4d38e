package storetest

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
)

// Bounds of the concurrency test: writers at once, and messages each
// writer stores (each with three evidence, one step and, for every fifth,
// a rejection stored beside it).
const (
	writers   = 8
	perWriter = 50
)

// checkpoint is a tree head a reader saw while writers wrote.
type checkpoint struct {
	size uint64
	root []byte
}

// testConcurrentWriters runs writers that create messages, step their
// copies and add evidence at once, while a reader takes tree heads as a
// node signing checkpoints does (LogSize, MarkLog, LogRoot). Afterwards the log must be gap-free
// (every leaf index given once, LogSize the number of evidence), every
// leaf must be the evidence that names it, every inclusion proof must
// verify against LogRoot, and every tree head seen on the way must be a
// prefix of the final tree.
func testConcurrentWriters(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)

	// Messages and steps are built here: t.Fatal must not be called from
	// the writers' goroutines.
	type work struct {
		m      Message
		step   broker.Step
		reject *broker.Evidence
	}
	jobs := make([][]work, writers)
	for w := range jobs {
		sender := []string{Agency, Other}[w%2]
		for i := range perWriter {
			m := build(t, st, sender, t0.Add(time.Duration(w*perWriter+i)*time.Millisecond), Court, Other)
			j := work{m: m, step: step(t, sender, m.Copies[0], "Retrieval", broker.StateRetrieved)}
			if i%5 == 0 {
				j.reject = &broker.Evidence{MessageID: m.Msg.ID(), Sender: sender, Type: "NonDelivery", DER: random(t, 90)}
			}
			jobs[w] = append(jobs[w], j)
		}
	}

	var (
		mu     sync.Mutex
		leaves = map[uint64][]byte{}
		stored = map[string][]broker.Evidence{} // by message id, as the writes returned them
	)
	record := func(id string, evs ...broker.Evidence) {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range evs {
			if _, dup := leaves[ev.LeafIndex]; dup {
				t.Errorf("leaf index %d given twice", ev.LeafIndex)
			}
			leaves[ev.LeafIndex] = ev.DER
		}
		stored[id] = append(stored[id], evs...)
	}

	var seen []checkpoint
	// The writers tick after each message; the reader takes a tree head
	// whenever it sees a tick, as often as it keeps up.
	tick, done := make(chan struct{}, 1), make(chan struct{})
	var reader sync.WaitGroup
	reader.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-tick:
			}
			size, err := st.LogSize(ctx)
			if err != nil {
				t.Errorf("LogSize while writing: %v", err)
				return
			}
			// As the node signs a checkpoint: mark the size durably first.
			if err := st.MarkLog(ctx, size); err != nil {
				t.Errorf("MarkLog(%d) while writing: %v", size, err)
				return
			}
			root, err := st.LogRoot(ctx, size)
			if err != nil {
				t.Errorf("LogRoot(%d) while writing: %v", size, err)
				return
			}
			seen = append(seen, checkpoint{size, root})
		}
	})

	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for _, j := range jobs[w] {
				id := j.m.Msg.ID()
				evs, err := st.CreateMessage(ctx, j.m.Msg, j.m.Copies, j.m.Evidence, nil)
				if err != nil {
					t.Errorf("CreateMessage: %v", err)
					return
				}
				for k := 1; k < len(evs); k++ {
					if evs[k].LeafIndex != evs[k-1].LeafIndex+1 {
						t.Errorf("one message's evidence got leaf indexes %d and %d: not appended together", evs[k-1].LeafIndex, evs[k].LeafIndex)
					}
				}
				record(id, evs...)
				ev, err := st.AppendEvidence(ctx, j.step)
				if err != nil {
					t.Errorf("AppendEvidence: %v", err)
					return
				}
				record(id, ev)
				if j.reject != nil {
					ev, err := st.AddEvidence(ctx, *j.reject)
					if err != nil {
						t.Errorf("AddEvidence: %v", err)
						return
					}
					record(id, ev)
				}
				select {
				case tick <- struct{}{}:
				default:
				}
			}
		})
	}
	wg.Wait()
	close(done)
	reader.Wait()
	if t.Failed() {
		return
	}

	want := uint64(writers * perWriter * (3 + 1))
	want += uint64(writers * ((perWriter + 4) / 5))
	n := logSize(t, st)
	if n != want || uint64(len(leaves)) != want {
		t.Fatalf("LogSize %d, %d distinct leaf indexes given, want %d", n, len(leaves), want)
	}
	ders := make([][]byte, n)
	for i := range n {
		der, ok := leaves[i]
		if !ok {
			t.Fatalf("leaf index %d never given: the log has a gap", i)
		}
		ders[i] = der
	}
	for id, evs := range stored {
		diff(t, "Evidence of "+id, evs, evidenceOf(t, st, id))
	}
	tree := refTree(ders)
	root := checkRoot(t, st, tree, ders, n)
	for i := range n {
		checkInclusion(t, st, tree, ders[i], i, n, root)
	}
	for _, c := range seen {
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
		page, next, err := st.Inbox(ctx, Court, cursor, 100)
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
