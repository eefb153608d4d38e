package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/envelope"
)

// Addresses used in the fixtures.
const (
	sender = "poststelle@stadt.example"
	court  = "eingang@amtsgericht.example"
	kreis  = "poststelle@kreis-soest.example"
	amt    = "bauamt@stadt.example"
)

var t0 = time.Date(2026, 11, 23, 10, 15, 2, 123456000, time.UTC)

// openTest opens a small store in dir (a fresh temporary one if dir is "")
// and closes it when the test ends.
func openTest(t testing.TB, dir string, opts ...func(*Options)) *DB {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	o := Options{Small: true, Logger: slog.New(slog.DiscardHandler)}
	for _, f := range opts {
		f(&o)
	}
	db, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// fixture is a message as the node would hand it to CreateMessage.
type fixture struct {
	msg    *broker.Message
	copies []broker.Copy
	evs    []broker.Evidence
}

// newFixture writes a 1 KiB payload blob and builds a message around it
// from sender to the recipients, received at received: a real envelope, one
// copy per recipient and a SubmissionAcceptance plus one Delivery per
// recipient, each with 1 KiB of stand-in DER.
func newFixture(t testing.TB, db *DB, received time.Time, to ...string) fixture {
	t.Helper()
	payload := randomBytes(t, 1024)
	blob, err := db.WriteBlob(context.Background(), bytes.NewReader(payload), 1<<20)
	if err != nil {
		t.Fatalf("WriteBlob: %v", err)
	}
	return buildFixture(t, blob, received, to...)
}

func buildFixture(t testing.TB, blob Blob, received time.Time, to ...string) fixture {
	t.Helper()
	id, err := envelope.NewID()
	if err != nil {
		t.Fatal(err)
	}
	env := &envelope.Envelope{
		Version:       envelope.Version,
		ID:            id,
		From:          sender,
		To:            to,
		Subject:       "Bescheid über die Baugenehmigung",
		Type:          "Bescheid",
		Reference:     "Az. 63/2026-0815",
		Created:       received.Add(-time.Second),
		PayloadSHA256: hex.EncodeToString(blob.SHA256[:]),
		PayloadSize:   blob.Size,
		Files:         []envelope.File{{Name: "bescheid.pdf", Size: 900}},
	}
	raw, err := env.Marshal()
	if err != nil {
		t.Fatalf("Marshal envelope: %v", err)
	}
	f := fixture{msg: &broker.Message{
		Envelope:       raw,
		Signature:      randomBytes(t, 700),
		Header:         env,
		EnvelopeSHA256: envelope.Digest(raw),
		Received:       received,
		Blob:           blob.ID,
	}}
	f.evs = append(f.evs, broker.Evidence{MessageID: id, Sender: sender, Type: "SubmissionAcceptance", DER: randomBytes(t, 1024)})
	for _, r := range to {
		f.copies = append(f.copies, broker.Copy{
			MessageID: id, Recipient: r, Received: received,
			State: broker.StateDelivered, Head: hex.EncodeToString(randomBytes(t, 32)),
		})
		f.evs = append(f.evs, broker.Evidence{MessageID: id, Sender: sender, Recipient: r, Type: "Delivery", DER: randomBytes(t, 1024)})
	}
	return f
}

func (f fixture) create(t testing.TB, db *DB) []broker.Evidence {
	t.Helper()
	evs, err := db.CreateMessage(context.Background(), f.msg, f.copies, f.evs)
	if err != nil {
		t.Fatalf("CreateMessage: %v", err)
	}
	return evs
}

// countKeys counts the keys with the prefix.
func countKeys(t testing.TB, db *DB, prefix []byte) int {
	t.Helper()
	n := 0
	err := db.view(context.Background(), func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// holdCommitter blocks the committer until the returned release is called,
// so that the requests queued meanwhile form one batch.
func holdCommitter(t testing.TB, db *DB) (release func()) {
	t.Helper()
	held, hold := make(chan struct{}), make(chan struct{})
	go db.submit(context.Background(), 0, func(*batch) error {
		close(held)
		<-hold
		return nil
	})
	<-held
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	return release
}

// waitQueued waits until n requests wait for the committer.
func waitQueued(t testing.TB, db *DB, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(db.reqs) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", len(db.reqs), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDB_CreateMessage(t *testing.T) {
	tests := []struct {
		name string
		to   []string
	}{
		{"one recipient", []string{court}},
		{"three recipients", []string{court, kreis, amt}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db := openTest(t, "")
			f := newFixture(t, db, t0, tt.to...)
			got := f.create(t, db)

			want := make([]broker.Evidence, len(f.evs))
			for i, ev := range f.evs {
				ev.Seq, ev.LeafIndex = uint64(i+1), uint64(i)
				want[i] = ev
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("CreateMessage evidence (-want +got):\n%s", diff)
			}
			m, err := db.Message(ctx, f.msg.ID())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(f.msg, m); diff != "" {
				t.Errorf("Message (-want +got):\n%s", diff)
			}
			for _, c := range f.copies {
				got, err := db.Copy(ctx, c.MessageID, c.Recipient)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(&c, got); diff != "" {
					t.Errorf("Copy(%s) (-want +got):\n%s", c.Recipient, diff)
				}
			}
			stored, err := db.Evidence(ctx, f.msg.ID())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, stored); diff != "" {
				t.Errorf("Evidence (-want +got):\n%s", diff)
			}
			if _, err := db.Copy(ctx, f.msg.ID(), sender); !errors.Is(err, broker.ErrNotFound) {
				t.Errorf("Copy for a non-recipient: err %v, want ErrNotFound", err)
			}
		})
	}

	t.Run("seq increases across calls", func(t *testing.T) {
		db := openTest(t, "")
		var last uint64
		for i := range 5 {
			for _, ev := range newFixture(t, db, t0.Add(time.Duration(i)), court, kreis).create(t, db) {
				if ev.Seq != last+1 {
					t.Fatalf("Seq %d after %d", ev.Seq, last)
				}
				last = ev.Seq
			}
		}
	})

	t.Run("repeat", func(t *testing.T) {
		ctx := context.Background()
		db := openTest(t, "")
		f := newFixture(t, db, t0, court)
		first := f.create(t, db)
		last := first[len(first)-1].Seq

		tests := []struct {
			name   string
			modify func(*broker.Message)
			want   error
		}{
			{"same envelope", func(*broker.Message) {}, broker.ErrExists},
			{"different envelope", func(m *broker.Message) { m.EnvelopeSHA256 = hex.EncodeToString(randomBytes(t, 32)) }, broker.ErrDuplicate},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				// A repeat arrives with a fresh upload, another recipient set and new evidence.
				again := newFixture(t, db, t0.Add(time.Minute), court, kreis)
				m := *again.msg
				h := *m.Header
				h.ID = f.msg.ID()
				m.Header = &h
				m.EnvelopeSHA256 = f.msg.EnvelopeSHA256
				tt.modify(&m)
				for i := range again.copies {
					again.copies[i].MessageID = h.ID
				}
				for i := range again.evs {
					again.evs[i].MessageID = h.ID
				}
				_, err := db.CreateMessage(ctx, &m, again.copies, again.evs)
				if !errors.Is(err, tt.want) {
					t.Fatalf("CreateMessage: err %v, want %v", err, tt.want)
				}

				// Nothing written: same message, no new copy, no new evidence, no Seq used.
				stored, err := db.Message(ctx, f.msg.ID())
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(f.msg, stored); diff != "" {
					t.Errorf("stored message changed (-want +got):\n%s", diff)
				}
				if _, err := db.Copy(ctx, f.msg.ID(), kreis); !errors.Is(err, broker.ErrNotFound) {
					t.Errorf("Copy for the repeat's extra recipient: err %v, want ErrNotFound", err)
				}
				evs, err := db.Evidence(ctx, f.msg.ID())
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(first, evs); diff != "" {
					t.Errorf("evidence changed (-want +got):\n%s", diff)
				}
				if n := countKeys(t, db, blobRefKey(again.msg.Blob)); n != 0 {
					t.Errorf("the repeat's blob became referenced")
				}
				ev, err := db.AddEvidence(ctx, broker.Evidence{MessageID: "x", Type: "SubmissionRejection"})
				if err != nil {
					t.Fatal(err)
				}
				if ev.Seq != last+1 {
					t.Errorf("next Seq %d, want %d: the refused repeat used some", ev.Seq, last+1)
				}
				last = ev.Seq
			})
		}
	})

	t.Run("refused", func(t *testing.T) {
		ctx := context.Background()
		db := openTest(t, "")
		used := newFixture(t, db, t0, court)
		used.create(t, db)

		tests := []struct {
			name   string
			modify func(t *testing.T, f *fixture)
			want   error
		}{
			{"copy of another message", func(t *testing.T, f *fixture) { f.copies[0].MessageID = used.msg.ID() }, broker.ErrInvalid},
			{"two copies for one recipient", func(t *testing.T, f *fixture) { f.copies = append(f.copies, f.copies[0]) }, broker.ErrInvalid},
			{"evidence of another message", func(t *testing.T, f *fixture) { f.evs[1].MessageID = used.msg.ID() }, broker.ErrInvalid},
			{"no such blob", func(t *testing.T, f *fixture) { f.msg.Blob = newBlobID() }, broker.ErrNotFound},
			{"malformed blob id", func(t *testing.T, f *fixture) { f.msg.Blob = "../etc" }, broker.ErrInvalid},
			{"blob of another size", func(t *testing.T, f *fixture) { f.msg.Header.PayloadSize++ }, broker.ErrInvalid},
			{"blob of another message", func(t *testing.T, f *fixture) {
				f.msg.Blob = used.msg.Blob
				f.msg.Header.PayloadSHA256, f.msg.Header.PayloadSize = used.msg.Header.PayloadSHA256, used.msg.Header.PayloadSize
			}, broker.ErrInvalid},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				f := newFixture(t, db, t0, court)
				tt.modify(t, &f)
				if _, err := db.CreateMessage(ctx, f.msg, f.copies, f.evs); !errors.Is(err, tt.want) {
					t.Fatalf("CreateMessage: err %v, want %v", err, tt.want)
				}
				if _, err := db.Message(ctx, f.msg.ID()); !errors.Is(err, broker.ErrNotFound) {
					t.Errorf("Message after a refused create: err %v, want ErrNotFound", err)
				}
				if evs, _ := db.Evidence(ctx, f.msg.ID()); len(evs) != 0 {
					t.Errorf("%d evidence stored by a refused create", len(evs))
				}
			})
		}
	})

	t.Run("durable across reopen", func(t *testing.T) {
		ctx := context.Background()
		dir := t.TempDir()
		db := openTest(t, dir)
		f := newFixture(t, db, t0, court, kreis)
		first := f.create(t, db)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Message(ctx, f.msg.ID()); !errors.Is(err, ErrClosed) {
			t.Errorf("Message after Close: err %v, want ErrClosed", err)
		}

		db = openTest(t, dir)
		m, err := db.Message(ctx, f.msg.ID())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(f.msg, m); diff != "" {
			t.Errorf("Message after reopen (-want +got):\n%s", diff)
		}
		c, err := db.Copy(ctx, f.msg.ID(), kreis)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(&f.copies[1], c); diff != "" {
			t.Errorf("Copy after reopen (-want +got):\n%s", diff)
		}
		evs, err := db.Evidence(ctx, f.msg.ID())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(first, evs); diff != "" {
			t.Errorf("Evidence after reopen (-want +got):\n%s", diff)
		}
		rc, err := db.OpenBlob(ctx, f.msg.Blob)
		if err != nil {
			t.Fatalf("OpenBlob after reopen (was the referenced blob swept?): %v", err)
		}
		rc.Close()

		second := newFixture(t, db, t0.Add(time.Hour), court).create(t, db)
		if last := first[len(first)-1].Seq; second[0].Seq != last+1 {
			t.Errorf("first Seq after reopen %d, want %d", second[0].Seq, last+1)
		}
		all, err := db.EvidenceSince(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(append(first, second...), all); diff != "" {
			t.Errorf("EvidenceSince(0) (-want +got):\n%s", diff)
		}
		tail, err := db.EvidenceSince(ctx, 2, 2)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(all[2:4], tail); diff != "" {
			t.Errorf("EvidenceSince(2, 2) (-want +got):\n%s", diff)
		}
	})
}

func TestDB_CreateMessage_Concurrent(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "")
	const n = 64
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seqs = map[uint64]string{}
		ids  []string
	)
	for i := range n {
		wg.Go(func() {
			f := newFixture(t, db, t0.Add(time.Duration(i)*time.Millisecond), court, kreis)
			evs, err := db.CreateMessage(ctx, f.msg, f.copies, f.evs)
			if err != nil {
				t.Errorf("CreateMessage: %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids = append(ids, f.msg.ID())
			for j, ev := range evs {
				if prev, dup := seqs[ev.Seq]; dup {
					t.Errorf("Seq %d given twice (%s and %s)", ev.Seq, prev, f.msg.ID())
				}
				seqs[ev.Seq] = f.msg.ID()
				if j > 0 && ev.Seq <= evs[j-1].Seq {
					t.Errorf("Seqs of one message not increasing: %d after %d", ev.Seq, evs[j-1].Seq)
				}
			}
		})
	}
	wg.Wait()
	if len(seqs) != 3*n {
		t.Fatalf("%d Seqs, want %d", len(seqs), 3*n)
	}
	for s := uint64(1); s <= 3*n; s++ {
		if _, ok := seqs[s]; !ok {
			t.Errorf("Seq %d missing: not contiguous", s)
		}
	}
	page, next, err := db.Inbox(ctx, court, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != n || next != "" {
		t.Errorf("Inbox: %d entries and cursor %q, want %d and none", len(page), next, n)
	}
	if leaves := checkLog(t, db); len(leaves) != 3*n {
		t.Errorf("%d leaves in the log, want %d", len(leaves), 3*n)
	}
}

func TestDB_Inbox(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "")
	// Created out of mailbox order; two at the same instant (ordered by id).
	times := []time.Duration{3, 1, 4, 1, 5, 9, 2, 6}
	var want []broker.InboxEntry
	for _, d := range times {
		f := newFixture(t, db, t0.Add(d*time.Second), court, kreis)
		f.create(t, db)
		want = append(want, broker.InboxEntry{Copy: f.copies[0], Message: f.msg})
	}
	newFixture(t, db, t0, kreis).create(t, db) // not for court
	sortInbox(want)

	tests := []struct {
		name  string
		limit int
		pages []int // entries per page
	}{
		{"one page", 0, []int{8}},
		{"exact pages", 4, []int{4, 4}},
		{"pages of three", 3, []int{3, 3, 2}},
		{"one by one", 1, []int{1, 1, 1, 1, 1, 1, 1, 1}},
		{"limit above the maximum", 5000, []int{8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []broker.InboxEntry
			var sizes []int
			cursor := ""
			for {
				page, next, err := db.Inbox(ctx, court, cursor, tt.limit)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, page...)
				sizes = append(sizes, len(page))
				if next == "" {
					break
				}
				if len(sizes) > 20 {
					t.Fatal("paging does not end")
				}
				cursor = next
			}
			if diff := cmp.Diff(tt.pages, sizes); diff != "" {
				t.Errorf("page sizes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("empty mailbox", func(t *testing.T) {
		page, next, err := db.Inbox(ctx, amt, "", 10)
		if err != nil || len(page) != 0 || next != "" {
			t.Errorf("Inbox(empty) = %d entries, %q, %v; want none", len(page), next, err)
		}
	})
	t.Run("malformed cursor", func(t *testing.T) {
		for _, c := range []string{"!!", "AAAA", encodeCursor([]byte("0123456789"))} {
			if _, _, err := db.Inbox(ctx, court, c, 10); !errors.Is(err, broker.ErrInvalid) {
				t.Errorf("Inbox(cursor %q): err %v, want ErrInvalid", c, err)
			}
		}
	})
}

// sortInbox sorts entries into mailbox order.
func sortInbox(es []broker.InboxEntry) {
	for i := 1; i < len(es); i++ {
		for j := i; j > 0 && less(es[j], es[j-1]); j-- {
			es[j], es[j-1] = es[j-1], es[j]
		}
	}
}

func less(a, b broker.InboxEntry) bool {
	if !a.Copy.Received.Equal(b.Copy.Received) {
		return a.Copy.Received.Before(b.Copy.Received)
	}
	return a.Copy.MessageID < b.Copy.MessageID
}

func TestDB_AppendEvidence(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "")
	f := newFixture(t, db, t0, court, kreis)
	created := f.create(t, db)
	head := f.copies[0].Head
	newHead := hex.EncodeToString(randomBytes(t, 32))

	tests := []struct {
		name      string
		recipient string
		prevHead  string
		want      error
	}{
		{"wrong head", court, "00", broker.ErrConflict},
		{"no such copy", amt, head, broker.ErrNotFound},
		{"retrieval", court, head, nil},
		{"stale head after the update", court, head, broker.ErrConflict},
	}
	last := created[len(created)-1].Seq
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := db.Evidence(ctx, f.msg.ID())
			if err != nil {
				t.Fatal(err)
			}
			ev := broker.Evidence{MessageID: f.msg.ID(), Sender: sender, Recipient: tt.recipient, Type: "Retrieval", DER: randomBytes(t, 1024)}
			got, err := db.AppendEvidence(ctx, ev, tt.prevHead, newHead, broker.StateRetrieved)
			if !errors.Is(err, tt.want) {
				t.Fatalf("AppendEvidence: err %v, want %v", err, tt.want)
			}
			after, err := db.Evidence(ctx, f.msg.ID())
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != nil {
				if diff := cmp.Diff(before, after); diff != "" {
					t.Errorf("evidence changed by a refused append (-want +got):\n%s", diff)
				}
				return
			}
			last++
			ev.Seq, ev.LeafIndex = last, last-1
			if diff := cmp.Diff(ev, got); diff != "" {
				t.Errorf("AppendEvidence (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(append(before, ev), after); diff != "" {
				t.Errorf("Evidence (-want +got):\n%s", diff)
			}
			c, err := db.Copy(ctx, f.msg.ID(), tt.recipient)
			if err != nil {
				t.Fatal(err)
			}
			want := f.copies[0]
			want.Head, want.State = newHead, broker.StateRetrieved
			if diff := cmp.Diff(&want, c); diff != "" {
				t.Errorf("Copy (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("other copy untouched", func(t *testing.T) {
		c, err := db.Copy(ctx, f.msg.ID(), kreis)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(&f.copies[1], c); diff != "" {
			t.Errorf("Copy (-want +got):\n%s", diff)
		}
	})
}

func TestDB_AddEvidence(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "")
	id, _ := envelope.NewID()
	var want []broker.Evidence
	for i := range 3 {
		ev := broker.Evidence{MessageID: id, Sender: sender, Type: "SubmissionRejection", DER: randomBytes(t, 100)}
		got, err := db.AddEvidence(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		ev.Seq, ev.LeafIndex = uint64(i+1), uint64(i)
		if diff := cmp.Diff(ev, got); diff != "" {
			t.Errorf("AddEvidence (-want +got):\n%s", diff)
		}
		want = append(want, ev)
	}
	got, err := db.Evidence(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Evidence (-want +got):\n%s", diff)
	}
	if got, err := db.Evidence(ctx, "0193aaaa-0000-7000-8000-000000000000"); err != nil || len(got) != 0 {
		t.Errorf("Evidence of an unknown message = %v, %v; want none, nil", got, err)
	}
}

// TestDB_Batch exercises the committer with requests queued into one batch.
func TestDB_Batch(t *testing.T) {
	ctx := context.Background()

	t.Run("failed request leaves the others", func(t *testing.T) {
		db := openTest(t, "")
		a, b := newFixture(t, db, t0, court), newFixture(t, db, t0, court)
		dup := buildFixture(t, Blob{ID: b.msg.Blob, Size: b.msg.Header.PayloadSize}, t0, kreis)
		dup.msg.Header.ID = a.msg.ID() // same id as a, other content, in the same batch
		dup.msg.Header.PayloadSHA256 = b.msg.Header.PayloadSHA256
		dup.copies[0].MessageID, dup.evs[0].MessageID, dup.evs[1].MessageID = a.msg.ID(), a.msg.ID(), a.msg.ID()

		release := holdCommitter(t, db)
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i, f := range []fixture{a, dup, b} {
			wg.Go(func() { _, errs[i] = db.CreateMessage(ctx, f.msg, f.copies, f.evs) })
			waitQueued(t, db, i+1)
		}
		release()
		wg.Wait()
		if errs[0] != nil || !errors.Is(errs[1], broker.ErrDuplicate) || errs[2] != nil {
			t.Fatalf("errors %v, want nil, ErrDuplicate, nil", errs)
		}
		for _, f := range []fixture{a, b} {
			evs, err := db.Evidence(ctx, f.msg.ID())
			if err != nil || len(evs) != 2 {
				t.Errorf("Evidence(%s) = %d, %v; want 2", f.msg.ID(), len(evs), err)
			}
		}
		if _, err := db.Copy(ctx, a.msg.ID(), kreis); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("the duplicate's copy was stored: %v", err)
		}
	})

	t.Run("split when too big", func(t *testing.T) {
		// Evidence of 45 KiB (60 KiB as JSON) stays below the value
		// threshold, in the LSM tree, and counts fully against the
		// transaction limit (about 1.2 MB with Small).
		db := openTest(t, "")
		db.maxBatchBytes = 1 << 30
		const n = 16
		fs := make([]fixture, n)
		for i := range fs {
			fs[i] = newFixture(t, db, t0, court, kreis)
			for j := range fs[i].evs {
				fs[i].evs[j].DER = randomBytes(t, 45<<10)
			}
		}
		release := holdCommitter(t, db)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, f := range fs {
			wg.Go(func() { _, errs[i] = db.CreateMessage(ctx, f.msg, f.copies, f.evs) })
		}
		waitQueued(t, db, n)
		release()
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("CreateMessage %d: %v", i, err)
			}
		}
		all, err := db.EvidenceSince(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 3*n {
			t.Errorf("%d evidence stored, want %d", len(all), 3*n)
		}
		for i, ev := range all {
			if ev.Seq != uint64(i+1) {
				t.Fatalf("evidence %d has Seq %d", i, ev.Seq)
			}
		}
		checkLog(t, db)
		db.Close()
		if db.splits == 0 {
			t.Error("the batch was never split: the test did not exercise ErrTxnTooBig")
		}
	})

	t.Run("too big alone", func(t *testing.T) {
		db := openTest(t, "")
		f := newFixture(t, db, t0, court)
		for range 24 {
			f.evs = append(f.evs, broker.Evidence{MessageID: f.msg.ID(), Type: "Delivery", DER: randomBytes(t, 45<<10)})
		}
		if _, err := db.CreateMessage(ctx, f.msg, f.copies, f.evs); !errors.Is(err, broker.ErrTooLarge) {
			t.Fatalf("CreateMessage: err %v, want ErrTooLarge", err)
		}
		if _, err := db.Message(ctx, f.msg.ID()); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("Message: err %v, want ErrNotFound", err)
		}
		ev, err := db.AddEvidence(ctx, broker.Evidence{MessageID: f.msg.ID(), Type: "SubmissionRejection"})
		if err != nil || ev.Seq != 1 || ev.LeafIndex != 0 {
			t.Errorf("AddEvidence after the refused request: Seq %d, leaf index %d, %v; want 1 and 0", ev.Seq, ev.LeafIndex, err)
		}
		if leaves := checkLog(t, db); len(leaves) != 1 {
			t.Errorf("%d leaves in the log, want 1", len(leaves))
		}
	})

	t.Run("cancelled while queued", func(t *testing.T) {
		db := openTest(t, "")
		f := newFixture(t, db, t0, court)
		release := holdCommitter(t, db)
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { _, err := db.CreateMessage(cctx, f.msg, f.copies, f.evs); done <- err }()
		waitQueued(t, db, 1)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("CreateMessage: err %v, want context.Canceled", err)
		}
		release()
		// The committer skips a request whose caller has gone.
		if _, err := db.AddEvidence(ctx, broker.Evidence{MessageID: "x", Type: "t"}); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Message(ctx, f.msg.ID()); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("Message: err %v, want ErrNotFound", err)
		}
	})
}

func TestDB_Close(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "")
	f := newFixture(t, db, t0, court)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	calls := map[string]func() error{
		"CreateMessage":    func() error { _, err := db.CreateMessage(ctx, f.msg, f.copies, f.evs); return err },
		"AddEvidence":      func() error { _, err := db.AddEvidence(ctx, f.evs[0]); return err },
		"Message":          func() error { _, err := db.Message(ctx, f.msg.ID()); return err },
		"Inbox":            func() error { _, _, err := db.Inbox(ctx, court, "", 0); return err },
		"WriteBlob":        func() error { _, err := db.WriteBlob(ctx, strings.NewReader("x"), 10); return err },
		"OpenBlob":         func() error { _, err := db.OpenBlob(ctx, f.msg.Blob); return err },
		"SweepBlobs":       func() error { _, err := db.SweepBlobs(ctx); return err },
		"LogSize":          func() error { _, err := db.LogSize(ctx); return err },
		"LogRoot":          func() error { _, err := db.LogRoot(ctx, 0); return err },
		"LogLeaf":          func() error { _, err := db.LogLeaf(ctx, 0); return err },
		"InclusionProof":   func() error { _, err := db.InclusionProof(ctx, 0, 1); return err },
		"ConsistencyProof": func() error { _, err := db.ConsistencyProof(ctx, 0, 1); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			if err := call(); !errors.Is(err, ErrClosed) {
				t.Errorf("err %v, want ErrClosed", err)
			}
		})
	}
}
