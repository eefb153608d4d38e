package store

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kurier.dev/kurier/broker"
)

// A store of format 3 has no sent index: Open enters every message into
// it once, so that messages stored before the upgrade are listed like
// those stored after, and records format 4.
func TestDB_UpgradeBuildsSentIndex(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := openTest(t, dir)
	var want []string
	for _, d := range []time.Duration{2, 1, 3} {
		fx := newFixture(t, db, t0.Add(d*time.Second), court)
		fx.create(t, db)
		want = append(want, fx.msg.ID())
	}
	want = []string{want[2], want[0], want[1]} // newest first

	downgradeToFormat3(t, db, len(want))
	if got, _, err := db.Sent(ctx, sender, "", 10); err != nil || len(got) != 0 {
		t.Fatalf("Sent without the index: %d entries, %v; the test did not remove it", len(got), err)
	}

	db = reopen(t, db, dir)
	got, next, err := db.Sent(ctx, sender, "", 10)
	if err != nil || next != "" {
		t.Fatalf("Sent after the upgrade: next %q, %v", next, err)
	}
	var ids []string
	for _, e := range got {
		ids = append(ids, e.Message.ID())
		if len(e.Copies) != 1 || e.Copies[0].Recipient != court {
			t.Errorf("message %s listed with copies %+v", e.Message.ID(), e.Copies)
		}
	}
	if !slices.Equal(ids, want) {
		t.Errorf("Sent after the upgrade = %q, want %q", ids, want)
	}
	if err := db.view(ctx, func(txn *badger.Txn) error {
		v, _, err := get(txn, formatKey)
		if err == nil && string(v) != string(encodeSeq(currentFormat)) {
			t.Errorf("format after the upgrade %x, want %d", v, currentFormat)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// A message stored after the upgrade joins the same listing, once;
	// opening again does not enter anything twice.
	fx := newFixture(t, db, t0.Add(time.Hour), court)
	fx.create(t, db)
	db = reopen(t, db, dir)
	got, _, err = db.Sent(ctx, sender, "", 10)
	if err != nil || len(got) != len(want)+1 || got[0].Message.ID() != fx.msg.ID() {
		t.Errorf("Sent after another message and Open: %d entries, %v", len(got), err)
	}
}

// downgradeToFormat3 makes db a store of format 3, as a Kurier before the
// sent index wrote it: no y/ keys (there must be n of them).
func downgradeToFormat3(t *testing.T, db *DB, n int) {
	t.Helper()
	if err := db.bdb.Update(func(txn *badger.Txn) error {
		if err := txn.Set(formatKey, encodeSeq(3)); err != nil {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("y/")})
		var keys [][]byte
		for it.Seek([]byte("y/")); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		it.Close()
		if len(keys) != n {
			t.Errorf("%d sent index keys before the downgrade, want %d", len(keys), n)
		}
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A backup of a format 3 store restores; the first Open of the restored
// store builds its sent index.
func TestDB_RestoreFormat3BuildsSentIndex(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "")
	var want []string
	for _, d := range []time.Duration{1, 2} {
		fx := newFixture(t, db, t0.Add(d*time.Second), court)
		fx.create(t, db)
		want = append([]string{fx.msg.ID()}, want...)
	}
	downgradeToFormat3(t, db, len(want))
	b, info := backupOf(t, db)
	if info.StoreFormat != 3 {
		t.Fatalf("backup of store format %d, want 3", info.StoreFormat)
	}
	dir, _ := restoreTo(t, b)
	restored := openTest(t, dir)
	got, _, err := restored.Sent(ctx, sender, "", 10)
	if err != nil {
		t.Fatalf("Sent: %v", err)
	}
	var ids []string
	for _, e := range got {
		ids = append(ids, e.Message.ID())
	}
	if !slices.Equal(ids, want) {
		t.Errorf("Sent of the restored store = %q, want %q", ids, want)
	}
}

// FuzzHostile_SentCursor pages through a sender's five messages, beside
// another sender's, from whatever cursor a client sends. A cursor the node
// never handed out is refused with ErrInvalid and a short error; any other
// gives the sender's messages before the position it names (newest
// first), never another sender's, and a next cursor only while more
// follow.
func FuzzHostile_SentCursor(f *testing.F) {
	ctx := context.Background()
	db := openTest(f, "")
	type pos struct {
		suffix []byte
		id     string
	}
	var want []pos
	for _, d := range []time.Duration{3, 1, 4, 1, 5} {
		fx := newFixture(f, db, t0.Add(d*time.Second), court)
		fx.create(f, db)
		want = append(want, pos{inboxSuffix(fx.msg.Received, fx.msg.ID()), fx.msg.ID()})
		other := newFixture(f, db, t0.Add(d*time.Second), court)
		other.msg.Header.From = court
		other.create(f, db)
	}
	slices.SortFunc(want, func(a, b pos) int { return -bytes.Compare(a.suffix, b.suffix) })

	f.Add("")
	for cursor := ""; ; {
		_, next, err := db.Sent(ctx, sender, cursor, 1)
		if err != nil {
			f.Fatal(err)
		}
		if next == "" {
			break
		}
		f.Add(next)
		cursor = next
	}
	for _, c := range []string{"!!", "AAAA", "AAAAAAAAAAAA", encodeCursor([]byte("0123456789")), encodeCursor(append(bytes.Repeat([]byte{0xff}, 8), 0xff, 0xff))} {
		f.Add(c)
	}

	const limit = 2
	f.Fuzz(func(t *testing.T, cursor string) {
		page, next, err := db.Sent(ctx, sender, cursor, limit)
		if err != nil {
			if !errors.Is(err, broker.ErrInvalid) {
				t.Fatalf("Sent(%q): %v, want ErrInvalid", cursor, err)
			}
			if len(err.Error()) > 200 {
				t.Fatalf("Sent(%q): an error of %d bytes", cursor, len(err.Error()))
			}
			return
		}
		// The model: the messages whose key suffix sorts before the cursor's.
		rest := want
		if cursor != "" {
			before, derr := decodeCursor("sent", cursor)
			if derr != nil {
				t.Fatalf("Sent(%q) took a cursor that does not decode: %v", cursor, derr)
			}
			i := 0
			for i < len(want) && bytes.Compare(want[i].suffix, before) >= 0 {
				i++
			}
			rest = want[i:]
		}
		wantPage := rest[:min(limit, len(rest))]
		if !slices.EqualFunc(page, wantPage, func(a broker.SentEntry, b pos) bool {
			return a.Message.ID() == b.id && a.Message.Header.From == sender
		}) {
			t.Fatalf("Sent(%q) = %d entries, want the %d before the cursor", cursor, len(page), len(wantPage))
		}
		if (next != "") != (len(rest) > limit) {
			t.Fatalf("Sent(%q): next %q with %d entries before the cursor", cursor, next, len(rest))
		}
	})
}

// Check reports a message missing from its sender's sent index, which
// only damage can cause in a store of format 4, and not in an older one,
// whose index Open has yet to build.
func TestCheck_SentIndex(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	fx := newFixture(t, db, t0, court)
	fx.create(t, db)
	newFixture(t, db, t0.Add(time.Second), court).create(t, db)
	if err := db.bdb.Update(func(txn *badger.Txn) error {
		return txn.Delete(sentKey(sender, fx.msg.Received, fx.msg.ID()))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, problems := checkStore(t, dir)
	if ps := problems["message"]; len(ps) != 1 || ps[0].Where != fx.msg.ID() {
		t.Errorf("Check with a sent index entry gone: %v, want one problem naming message %s", problems, fx.msg.ID())
	}

	db = openTest(t, dir)
	downgradeToFormat3(t, db, 1)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, problems := checkStore(t, dir); len(problems) != 0 {
		t.Errorf("Check of a format 3 store: %v, want no problems", problems)
	}
}

// An upgrade leaves a message whose record cannot be read out of the sent
// index, and opens: one damaged record must not keep the node down, and
// Check names it as before the upgrade.
func TestFault_UpgradeWithDamagedMessage(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	a := newFixture(t, db, t0.Add(time.Second), court)
	a.create(t, db)
	b := newFixture(t, db, t0.Add(2*time.Second), court)
	b.create(t, db)
	downgradeToFormat3(t, db, 2)
	if err := db.bdb.Update(func(txn *badger.Txn) error {
		return txn.Set(messageKey(a.msg.ID()), []byte("{damaged"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, dir)
	got, _, err := db.Sent(context.Background(), sender, "", 10)
	if err != nil || len(got) != 1 || got[0].Message.ID() != b.msg.ID() {
		t.Fatalf("Sent after upgrading a store with one damaged message: %d entries, %v; want the undamaged one", len(got), err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, problems := checkStore(t, dir); len(problems["message"]) != 1 || problems["message"][0].Where != a.msg.ID() {
		t.Errorf("Check after the upgrade: %v, want the damaged message %s named", problems, a.msg.ID())
	}
}

// A sent index entry whose message is not stored is left out of the
// listing, which goes on, and Check names it; so is one under another
// time than its message's.
func TestCheck_StraySentEntry(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	fx := newFixture(t, db, t0, court)
	fx.create(t, db)
	const stray = "01a2355e-0000-7000-8000-000000000000"
	if err := db.bdb.Update(func(txn *badger.Txn) error {
		if err := txn.Set(sentKey(sender, t0.Add(time.Hour), stray), nil); err != nil {
			return err
		}
		return txn.Set(sentKey(sender, t0.Add(time.Minute), fx.msg.ID()), nil)
	}); err != nil {
		t.Fatal(err)
	}
	got, _, err := db.Sent(context.Background(), sender, "", 10)
	if err != nil || len(got) != 2 {
		t.Fatalf("Sent with a stray index entry: %d entries, %v; want the message (twice, as indexed) and no error", len(got), err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, problems := checkStore(t, dir)
	where := map[string]bool{}
	for _, p := range problems["sent index"] {
		where[p.Where] = true
	}
	if len(problems["sent index"]) != 2 || !where[stray] || !where[fx.msg.ID()] {
		t.Errorf("Check with two stray sent index entries: %v, want both named", problems)
	}
}
