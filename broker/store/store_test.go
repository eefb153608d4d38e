package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/tlog"
)

// Addresses and domains used in the fixtures.
const (
	sender = "poststelle@stadt.example"
	court  = "eingang@amtsgericht.example"
	kreis  = "poststelle@kreis-soest.example"
	amt    = "bauamt@stadt.example"

	senderDomain = "stadt.example"
	courtDomain  = "amtsgericht.example"
	kreisDomain  = "kreis-soest.example"
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

// reopen closes db and opens the store in dir again.
func reopen(t testing.TB, db *DB, dir string) *DB {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openTest(t, dir)
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// fixture is a message as the node would hand it to CreateMessage.
type fixture struct {
	msg      *broker.Message
	copies   []broker.Copy
	evs      []broker.Evidence
	outbound []broker.Outbound
}

// newFixture writes a 1 KiB payload blob and builds a message around it
// from sender to the recipients, received at received: a real envelope, one
// local copy per recipient (no deadline) and a SubmissionAcceptance plus one
// Delivery per recipient, each of this node's log with 1 KiB of stand-in
// DER, and no outbound entries.
func newFixture(t testing.TB, db *DB, received time.Time, to ...string) fixture {
	t.Helper()
	payload := randomBytes(t, 1024)
	blob, err := db.WriteBlob(context.Background(), bytes.NewReader(payload), 1<<20)
	if err != nil {
		t.Fatalf("WriteBlob: %v", err)
	}
	return buildFixture(t, blob, received, to...)
}

func buildFixture(t testing.TB, blob broker.Blob, received time.Time, to ...string) fixture {
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
		Expires:       received.Add(7 * 24 * time.Hour),
		PayloadSHA256: hex.EncodeToString(blob.SHA256[:]),
		PayloadSize:   blob.Size,
		Files:         []envelope.File{{Name: "bescheid.pdf", Size: 900, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}},
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
			State: broker.StateDelivered, Head: hex.EncodeToString(randomBytes(t, 32)), Local: true,
		})
		f.evs = append(f.evs, broker.Evidence{MessageID: id, Sender: sender, Recipient: r, Type: "Delivery", DER: randomBytes(t, 1024)})
	}
	return f
}

func (f fixture) create(t testing.TB, db *DB) []broker.Evidence {
	t.Helper()
	evs, err := db.CreateMessage(context.Background(), f.msg, f.copies, f.evs, f.outbound)
	if err != nil {
		t.Fatalf("CreateMessage: %v", err)
	}
	return evs
}

// relayed makes the copy for rcpt the sender node's record of a copy
// relayed to another node: not local, relaying until deadline, and queues
// the message for that node's domain.
func (f *fixture) relayed(t testing.TB, rcpt, domain string, deadline time.Time) {
	t.Helper()
	for i := range f.copies {
		if f.copies[i].Recipient == rcpt {
			f.copies[i].Local, f.copies[i].State, f.copies[i].Deadline = false, broker.StateRelaying, deadline
			for _, o := range f.outbound {
				if o.Domain == domain {
					return
				}
			}
			f.outbound = append(f.outbound, broker.Outbound{Domain: domain, MessageID: f.msg.ID(), NextTry: f.msg.Received})
			return
		}
	}
	t.Fatalf("no copy for %s", rcpt)
}

// nextStep returns the step that moves c on by a new evidence of this
// node's log of the given type: the copy's head becomes the evidence's
// digest and its state the one given; its deadline stays.
func nextStep(t testing.TB, c broker.Copy, typ string, state broker.State) broker.Step {
	t.Helper()
	der := randomBytes(t, 512)
	next := c
	next.Head, next.State = digestHex(der), state
	return broker.Step{
		Evidence: broker.Evidence{MessageID: c.MessageID, Sender: sender, Recipient: c.Recipient, Type: typ, DER: der},
		PrevHead: c.Head,
		Next:     next,
	}
}

// appendStep applies s with AppendEvidence and returns the evidence stored.
func appendStep(t testing.TB, db *DB, s broker.Step) broker.Evidence {
	t.Helper()
	ev, err := db.AppendEvidence(context.Background(), s)
	if err != nil {
		t.Fatalf("AppendEvidence: %v", err)
	}
	return ev
}

// withLeaf returns ev with its leaf index set, as the store returns it.
func withLeaf(ev broker.Evidence, index uint64) broker.Evidence {
	ev.LeafIndex = index
	return ev
}

// dump returns every key and value in the store, to check that a refused
// request wrote nothing at all.
func dump(t testing.TB, db *DB) map[string]string {
	t.Helper()
	// What the store holds, deferred writes included (see enqueue).
	if err := db.barrier(context.Background()); err != nil && !errors.Is(err, ErrFailed) {
		t.Fatal(err)
	}
	kv := map[string]string{}
	err := db.view(context.Background(), func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			kv[string(it.Item().Key())] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// checkUnchanged fails if the store holds other keys or values than before.
func checkUnchanged(t testing.TB, db *DB, before map[string]string) {
	t.Helper()
	if diff := cmp.Diff(before, dump(t, db)); diff != "" {
		t.Errorf("a refused request changed the store (-before +after):\n%s", diff)
	}
}

// hasKey reports whether the store holds k.
func hasKey(t testing.TB, db *DB, k []byte) bool {
	t.Helper()
	var ok bool
	if err := db.view(context.Background(), func(txn *badger.Txn) error {
		var err error
		ok, err = has(txn, k)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ok
}

// evidenceOf returns the stored evidence of a message.
func evidenceOf(t testing.TB, db *DB, id string) []broker.Evidence {
	t.Helper()
	evs, err := db.Evidence(context.Background(), id)
	if err != nil {
		t.Fatalf("Evidence(%s): %v", id, err)
	}
	return evs
}

// logSizeOf returns the size of the store's transparency log.
func logSizeOf(t testing.TB, db *DB) uint64 {
	t.Helper()
	n, err := db.LogSize(context.Background())
	if err != nil {
		t.Fatalf("LogSize: %v", err)
	}
	return n
}

// countKeys counts the keys with the prefix.
func countKeys(t testing.TB, db *DB, prefix []byte) int {
	t.Helper()
	// What the store holds, deferred writes included (see enqueue).
	if err := db.barrier(context.Background()); err != nil && !errors.Is(err, ErrFailed) {
		t.Fatal(err)
	}
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

// TestDB_CreateMessage checks what only the badger store can show: that a
// refused create writes no key at all, and that a message survives a
// reopen. What every backend must do is in storetest (TestConformance).
func TestDB_CreateMessage(t *testing.T) {
	t.Run("repeat", func(t *testing.T) {
		ctx := context.Background()
		db := openTest(t, "")
		f := newFixture(t, db, t0, court)
		first := f.create(t, db)
		last := first[len(first)-1].LeafIndex

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
				// A repeat arrives with a fresh upload, another recipient set,
				// new evidence, a relayed copy with a deadline and an outbound
				// entry.
				again := newFixture(t, db, t0.Add(time.Minute), court, kreis)
				again.relayed(t, kreis, kreisDomain, t0.Add(time.Hour))
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
				for i := range again.outbound {
					again.outbound[i].MessageID = h.ID
				}
				before := dump(t, db)
				_, err := db.CreateMessage(ctx, &m, again.copies, again.evs, again.outbound)
				if !errors.Is(err, tt.want) {
					t.Fatalf("CreateMessage: err %v, want %v", err, tt.want)
				}
				checkUnchanged(t, db, before)

				// Nothing written: same message, no new copy, no new
				// evidence, nothing queued, no leaf index used.
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
				if out, err := db.Outbound(ctx, kreisDomain, "", 0); err != nil || len(out) != 0 {
					t.Errorf("Outbound after a refused repeat = %v, %v; want none", out, err)
				}
				if due, err := db.Due(ctx, t0.Add(24*time.Hour), broker.Copy{}, 0); err != nil || len(due) != 0 {
					t.Errorf("Due after a refused repeat = %v, %v; want none", due, err)
				}
				ev, err := db.AddEvidence(ctx, broker.Evidence{MessageID: "x", Type: "SubmissionRejection"})
				if err != nil {
					t.Fatal(err)
				}
				if ev.LeafIndex != last+1 {
					t.Errorf("next leaf index %d, want %d: the refused repeat used some", ev.LeafIndex, last+1)
				}
				last = ev.LeafIndex
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
			{"outbound entry of another message", func(t *testing.T, f *fixture) { f.outbound[0].MessageID = used.msg.ID() }, broker.ErrInvalid},
			{"outbound entry without a domain", func(t *testing.T, f *fixture) { f.outbound[0].Domain = "" }, broker.ErrInvalid},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				// Every refused create also had a copy with a deadline and
				// an outbound entry to write.
				f := newFixture(t, db, t0, court, kreis)
				f.relayed(t, kreis, kreisDomain, t0.Add(time.Hour))
				tt.modify(t, &f)
				before := dump(t, db)
				if _, err := db.CreateMessage(ctx, f.msg, f.copies, f.evs, f.outbound); !errors.Is(err, tt.want) {
					t.Fatalf("CreateMessage: err %v, want %v", err, tt.want)
				}
				checkUnchanged(t, db, before)
				if _, err := db.Message(ctx, f.msg.ID()); !errors.Is(err, broker.ErrNotFound) {
					t.Errorf("Message after a refused create: err %v, want ErrNotFound", err)
				}
				if evs, _ := db.Evidence(ctx, f.msg.ID()); len(evs) != 0 {
					t.Errorf("%d evidence stored by a refused create", len(evs))
				}
				if out, err := db.Outbound(ctx, kreisDomain, "", 0); err != nil || len(out) != 0 {
					t.Errorf("Outbound after a refused create = %v, %v; want none", out, err)
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
		if last := first[len(first)-1].LeafIndex; second[0].LeafIndex != last+1 {
			t.Errorf("first leaf index after reopen %d, want %d", second[0].LeafIndex, last+1)
		}
		// The log holds the evidence of before and after, in the order stored.
		all := append(first, second...)
		if n := logSizeOf(t, db); n != uint64(len(all)) {
			t.Fatalf("LogSize %d, want %d", n, len(all))
		}
		for i, want := range all {
			leaf, err := db.LogLeaf(ctx, uint64(i))
			if err != nil {
				t.Fatalf("LogLeaf(%d): %v", i, err)
			}
			if diff := cmp.Diff(want, leaf); diff != "" {
				t.Errorf("LogLeaf(%d) (-want +got):\n%s", i, diff)
			}
		}
	})
}

func TestDB_AddCopies(t *testing.T) {
	// A message relayed again, for recipients that had no copy yet.
	ctx := context.Background()
	dir := t.TempDir()
	db := openTest(t, dir)
	f := newFixture(t, db, t0, court)
	created := f.create(t, db)
	id := f.msg.ID()
	later := t0.Add(time.Minute)
	// kreis: a local copy with a deadline; amt: a relayed one, whose
	// Delivery comes from the other node's log.
	more := []broker.Copy{
		{MessageID: id, Recipient: kreis, Received: later, State: broker.StateDelivered, Head: digestHex([]byte("k")), Local: true, Deadline: t0.Add(time.Hour)},
		{MessageID: id, Recipient: amt, Received: later, State: broker.StateRelaying, Head: digestHex([]byte("a"))},
	}
	evs := []broker.Evidence{
		{MessageID: id, Sender: sender, Recipient: kreis, Type: "Delivery", DER: randomBytes(t, 300)},
		{Log: tlog.Origin(senderDomain), LeafIndex: 40, MessageID: id, Sender: sender, Recipient: amt, Type: "Delivery", DER: randomBytes(t, 300)},
	}

	refused := []struct {
		name   string
		id     string
		envSHA string
		copies []broker.Copy
		evs    []broker.Evidence
		want   error
	}{
		{"a copy exists", id, f.msg.EnvelopeSHA256, append(slices.Clone(more), f.copies[0]), evs, broker.ErrExists},
		{"no such message", newID(t), f.msg.EnvelopeSHA256, nil, nil, broker.ErrNotFound},
		{"another envelope", id, hex.EncodeToString(randomBytes(t, 32)), more, evs, broker.ErrDuplicate},
		{"two copies for one recipient", id, f.msg.EnvelopeSHA256, append(slices.Clone(more), more[0]), evs, broker.ErrInvalid},
		{"copy of another message", "0193aaaa-0000-7000-8000-000000000000", f.msg.EnvelopeSHA256, more, nil, broker.ErrInvalid},
		{"evidence of another message", id, f.msg.EnvelopeSHA256, more, append(slices.Clone(evs), broker.Evidence{MessageID: "0193aaaa-0000-7000-8000-000000000000"}), broker.ErrInvalid},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			before := dump(t, db)
			if _, err := db.AddCopies(ctx, tt.id, tt.envSHA, tt.copies, tt.evs); !errors.Is(err, tt.want) {
				t.Fatalf("AddCopies: err %v, want %v", err, tt.want)
			}
			checkUnchanged(t, db, before)
		})
	}

	got, err := db.AddCopies(ctx, id, f.msg.EnvelopeSHA256, more, evs)
	if err != nil {
		t.Fatalf("AddCopies: %v", err)
	}
	next := created[len(created)-1].LeafIndex + 1
	added := []broker.Evidence{withLeaf(evs[0], next), evs[1]}
	if diff := cmp.Diff(added, got); diff != "" {
		t.Errorf("AddCopies (-want +got):\n%s", diff)
	}
	check := func(t *testing.T, db *DB) {
		if diff := cmp.Diff(append(slices.Clone(created), added...), evidenceOf(t, db, id)); diff != "" {
			t.Errorf("Evidence (-want +got):\n%s", diff)
		}
		if n := logSizeOf(t, db); n != next+1 {
			t.Errorf("LogSize %d, want %d", n, next+1)
		}
		for _, c := range append([]broker.Copy{f.copies[0]}, more...) {
			got, err := db.Copy(ctx, id, c.Recipient)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&c, got); diff != "" {
				t.Errorf("Copy(%s) (-want +got):\n%s", c.Recipient, diff)
			}
		}
		for rcpt, want := range map[string][]broker.InboxEntry{
			kreis: {{Copy: more[0], Message: f.msg}},
			amt:   nil,
		} {
			page, _, err := db.Inbox(ctx, rcpt, "", 0)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, page, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Inbox(%s) (-want +got):\n%s", rcpt, diff)
			}
		}
		due, err := db.Due(ctx, t0.Add(time.Hour), broker.Copy{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]broker.Copy{more[0]}, due); diff != "" {
			t.Errorf("Due (-want +got):\n%s", diff)
		}
	}
	check(t, db)
	db = reopen(t, db, dir)
	t.Run("after reopen", func(t *testing.T) { check(t, db) })
}

// TestDB_CreateMessage_Concurrent checks the log against the evidence
// table itself after concurrent creates; storetest's ConcurrentWriters
// checks the same run through the interface.
func TestDB_CreateMessage_Concurrent(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "")
	const n = 64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			f := newFixture(t, db, t0.Add(time.Duration(i)*time.Millisecond), court, kreis)
			if _, err := db.CreateMessage(ctx, f.msg, f.copies, f.evs, nil); err != nil {
				t.Errorf("CreateMessage: %v", err)
			}
		})
	}
	wg.Wait()
	if leaves := checkLog(t, db); len(leaves) != 3*n {
		t.Errorf("%d leaves in the log, want %d", len(leaves), 3*n)
	}
}

// TestDB_Inbox_MalformedCursor refuses a cursor that decodes but names
// no mailbox position (storetest checks paging and cursors that do not
// decode).
func TestDB_Inbox_MalformedCursor(t *testing.T) {
	db := openTest(t, "")
	newFixture(t, db, t0, court).create(t, db)
	c := encodeCursor([]byte("0123456789"))
	if _, _, err := db.Inbox(context.Background(), court, c, 10); !errors.Is(err, broker.ErrInvalid) {
		t.Errorf("Inbox(cursor %q): err %v, want ErrInvalid", c, err)
	}
}

func TestDB_Inbox_Local(t *testing.T) {
	// A copy for a recipient of another node is the sender node's record of
	// a relayed copy: stored, but in no mailbox here, whatever later steps
	// say about Local.
	ctx := context.Background()
	dir := t.TempDir()
	db := openTest(t, dir)
	f := newFixture(t, db, t0, court, kreis)
	f.relayed(t, kreis, kreisDomain, time.Time{})
	f.create(t, db)
	local, remote := f.copies[0], f.copies[1]

	// Steps that claim the other Local change nothing about it.
	s := nextStep(t, local, "Retrieval", broker.StateRetrieved)
	s.Next.Local = false
	appendStep(t, db, s)
	local = s.Next
	local.Local = true
	s = nextStep(t, remote, "RelayAcceptance", broker.StateDelivered)
	s.Next.Local = true
	appendStep(t, db, s)
	remote = s.Next
	remote.Local = false

	check := func(t *testing.T, db *DB) {
		t.Helper()
		tests := []struct {
			name string
			rcpt string
			c    broker.Copy
			want []broker.InboxEntry
		}{
			{"local copy listed", court, local, []broker.InboxEntry{{Copy: local, Message: f.msg}}},
			{"relayed copy not listed", kreis, remote, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				page, next, err := db.Inbox(ctx, tt.rcpt, "", 0)
				if err != nil || next != "" {
					t.Fatalf("Inbox: cursor %q, %v", next, err)
				}
				if diff := cmp.Diff(tt.want, page, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("Inbox(%s) (-want +got):\n%s", tt.rcpt, diff)
				}
				c, err := db.Copy(ctx, f.msg.ID(), tt.rcpt)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(&tt.c, c); diff != "" {
					t.Errorf("Copy(%s) (-want +got):\n%s", tt.rcpt, diff)
				}
			})
		}
	}
	check(t, db)
	t.Run("after reopen", func(t *testing.T) { check(t, reopen(t, db, dir)) })
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

	tests := []struct {
		name   string
		modify func(s *broker.Step)
		want   error
	}{
		{"wrong head", func(s *broker.Step) { s.PrevHead = "00" }, broker.ErrConflict},
		{"no such copy", func(s *broker.Step) { s.Evidence.Recipient, s.Next.Recipient = amt, amt }, broker.ErrNotFound},
		{"no recipient", func(s *broker.Step) { s.Evidence.Recipient, s.Next.Recipient = "", "" }, broker.ErrInvalid},
		{"next record of another copy", func(s *broker.Step) { s.Next.Recipient = kreis }, broker.ErrInvalid},
		{"next record of another message", func(s *broker.Step) { s.Next.MessageID = "0193aaaa-0000-7000-8000-000000000000" }, broker.ErrInvalid},
		{"retrieval", func(*broker.Step) {}, nil},
		{"stale head after the update", func(s *broker.Step) { s.PrevHead = head }, broker.ErrConflict},
	}
	next := created[len(created)-1].LeafIndex + 1
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := dump(t, db)
			evsBefore := evidenceOf(t, db, f.msg.ID())
			s := nextStep(t, f.copies[0], "Retrieval", broker.StateRetrieved)
			// The copy keeps the Received and Local it was stored with.
			s.Next.Received, s.Next.Local = t0.Add(time.Hour), false
			tt.modify(&s)
			got, err := db.AppendEvidence(ctx, s)
			if !errors.Is(err, tt.want) {
				t.Fatalf("AppendEvidence: err %v, want %v", err, tt.want)
			}
			if tt.want != nil {
				checkUnchanged(t, db, before)
				return
			}
			ev := withLeaf(s.Evidence, next)
			next++
			if diff := cmp.Diff(ev, got); diff != "" {
				t.Errorf("AppendEvidence (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(append(evsBefore, ev), evidenceOf(t, db, f.msg.ID())); diff != "" {
				t.Errorf("Evidence (-want +got):\n%s", diff)
			}
			c, err := db.Copy(ctx, f.msg.ID(), court)
			if err != nil {
				t.Fatal(err)
			}
			want := f.copies[0]
			want.Head, want.State = s.Next.Head, broker.StateRetrieved
			if diff := cmp.Diff(&want, c); diff != "" {
				t.Errorf("Copy (-want +got):\n%s", diff)
			}
			page, _, err := db.Inbox(ctx, court, "", 0)
			if err != nil || len(page) != 1 || !cmp.Equal(want, page[0].Copy) {
				t.Errorf("Inbox after the step = %v, %v; want the updated copy", page, err)
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

// TestDB_AddEvidence_OtherLog checks that AddEvidence of another node's
// evidence, which belongs to a copy's chain, writes no key at all.
func TestDB_AddEvidence_OtherLog(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "")
	id, _ := envelope.NewID()
	for range 3 {
		if _, err := db.AddEvidence(ctx, broker.Evidence{MessageID: id, Sender: sender, Type: "SubmissionRejection", DER: randomBytes(t, 100)}); err != nil {
			t.Fatal(err)
		}
	}
	before := dump(t, db)
	ev := broker.Evidence{Log: tlog.Origin(kreisDomain), LeafIndex: 7, MessageID: id, Sender: sender, Type: "SubmissionRejection", DER: randomBytes(t, 100)}
	if _, err := db.AddEvidence(ctx, ev); !errors.Is(err, broker.ErrInvalid) {
		t.Fatalf("AddEvidence: err %v, want ErrInvalid", err)
	}
	checkUnchanged(t, db, before)
	if n := logSizeOf(t, db); n != 3 {
		t.Errorf("LogSize %d, want 3", n)
	}
}

// TestDB_Batch exercises the committer with requests queued into one batch.
func TestDB_Batch(t *testing.T) {
	ctx := context.Background()

	t.Run("failed request leaves the others", func(t *testing.T) {
		db := openTest(t, "")
		a, b := newFixture(t, db, t0, court), newFixture(t, db, t0, court)
		dup := buildFixture(t, broker.Blob{ID: b.msg.Blob, Size: b.msg.Header.PayloadSize}, t0, kreis)
		dup.msg.Header.ID = a.msg.ID() // same id as a, other content, in the same batch
		dup.msg.Header.PayloadSHA256 = b.msg.Header.PayloadSHA256
		dup.copies[0].MessageID, dup.evs[0].MessageID, dup.evs[1].MessageID = a.msg.ID(), a.msg.ID(), a.msg.ID()

		release := holdCommitter(t, db)
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i, f := range []fixture{a, dup, b} {
			wg.Go(func() { _, errs[i] = db.CreateMessage(ctx, f.msg, f.copies, f.evs, nil) })
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
			wg.Go(func() { _, errs[i] = db.CreateMessage(ctx, f.msg, f.copies, f.evs, nil) })
		}
		waitQueued(t, db, n)
		release()
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("CreateMessage %d: %v", i, err)
			}
		}
		// Every evidence of every message stored, and logged without gaps
		// across the split.
		for _, f := range fs {
			if evs := evidenceOf(t, db, f.msg.ID()); len(evs) != 3 {
				t.Errorf("Evidence(%s): %d stored, want 3", f.msg.ID(), len(evs))
			}
		}
		if leaves := checkLog(t, db); len(leaves) != 3*n {
			t.Errorf("%d leaves in the log, want %d", len(leaves), 3*n)
		}
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
		if _, err := db.CreateMessage(ctx, f.msg, f.copies, f.evs, nil); !errors.Is(err, broker.ErrTooLarge) {
			t.Fatalf("CreateMessage: err %v, want ErrTooLarge", err)
		}
		if _, err := db.Message(ctx, f.msg.ID()); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("Message: err %v, want ErrNotFound", err)
		}
		ev, err := db.AddEvidence(ctx, broker.Evidence{MessageID: f.msg.ID(), Type: "SubmissionRejection"})
		if err != nil || ev.LeafIndex != 0 {
			t.Errorf("AddEvidence after the refused request: leaf index %d, %v; want 0", ev.LeafIndex, err)
		}
		if diff := cmp.Diff([]broker.Evidence{ev}, evidenceOf(t, db, f.msg.ID())); diff != "" {
			t.Errorf("Evidence after the refused request (-want +got):\n%s", diff)
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
		go func() { _, err := db.CreateMessage(cctx, f.msg, f.copies, f.evs, f.outbound); done <- err }()
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
	s := nextStep(t, f.copies[0], "Retrieval", broker.StateRetrieved)
	o := broker.Outbound{Domain: courtDomain, MessageID: f.msg.ID()}
	calls := map[string]func() error{
		"CreateMessage":  func() error { _, err := db.CreateMessage(ctx, f.msg, f.copies, f.evs, nil); return err },
		"AddCopies":      func() error { _, err := db.AddCopies(ctx, f.msg.ID(), f.msg.EnvelopeSHA256, f.copies, nil); return err },
		"AppendEvidence": func() error { _, err := db.AppendEvidence(ctx, s); return err },
		"AddEvidence":    func() error { _, err := db.AddEvidence(ctx, f.evs[0]); return err },
		"Evidence":       func() error { _, err := db.Evidence(ctx, f.msg.ID()); return err },
		"Message":        func() error { _, err := db.Message(ctx, f.msg.ID()); return err },
		"Copy":           func() error { _, err := db.Copy(ctx, f.msg.ID(), court); return err },
		"Inbox":          func() error { _, _, err := db.Inbox(ctx, court, "", 0); return err },
		"Outbound":       func() error { _, err := db.Outbound(ctx, courtDomain, "", 0); return err },
		"SetOutbound":    func() error { return db.SetOutbound(ctx, o) },
		"FinishRelay": func() error {
			_, err := db.FinishRelay(ctx, courtDomain, f.msg.ID(), []broker.Step{s}, true)
			return err
		},
		"Pushes":           func() error { _, err := db.Pushes(ctx, senderDomain, 0, 0); return err },
		"DeletePush":       func() error { return db.DeletePush(ctx, senderDomain, 0) },
		"Due":              func() error { _, err := db.Due(ctx, t0, broker.Copy{}, 0); return err },
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

// digestHex is the lowercase hex SHA-256 of b, as copies name their head.
func digestHex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
