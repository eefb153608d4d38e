package store

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
)

// FuzzHostile_InboxCursor pages through a mailbox of five messages from whatever
// cursor a client sends. A cursor the node never handed out is refused
// with ErrInvalid and an error that does not quote it; any other gives the
// entries after the position it names, as a model of the mailbox says,
// and a next cursor only while more follow. The seeds are the real cursors
// of that mailbox and a few broken ones.
func FuzzHostile_InboxCursor(f *testing.F) {
	ctx := context.Background()
	db := openTest(f, "")
	var want []broker.InboxEntry
	for _, d := range []time.Duration{3, 1, 4, 1, 5} {
		fx := newFixture(f, db, t0.Add(d*time.Second), court)
		fx.create(f, db)
		want = append(want, broker.InboxEntry{Copy: fx.copies[0], Message: fx.msg})
	}
	sortInbox(want)
	suffixes := make([][]byte, len(want))
	for i, e := range want {
		suffixes[i] = inboxSuffix(e.Copy.Received, e.Message.ID())
	}

	f.Add("")
	for cursor := ""; ; {
		_, next, err := db.Inbox(ctx, court, cursor, 1)
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
		page, next, err := db.Inbox(ctx, court, cursor, limit)
		if err != nil {
			if !errors.Is(err, broker.ErrInvalid) {
				t.Fatalf("Inbox(%q): %v, want ErrInvalid", cursor, err)
			}
			if len(err.Error()) > 200 {
				t.Fatalf("Inbox(%q): an error of %d bytes", cursor, len(err.Error()))
			}
			return
		}
		// The model: the entries whose key suffix sorts after the cursor's.
		rest := want
		if cursor != "" {
			after, derr := decodeCursor("inbox", cursor)
			if derr != nil {
				t.Fatalf("Inbox(%q) took a cursor that does not decode: %v", cursor, derr)
			}
			i := 0
			for i < len(suffixes) && bytes.Compare(suffixes[i], after) <= 0 {
				i++
			}
			rest = want[i:]
		}
		wantPage := rest[:min(limit, len(rest))]
		if !slices.EqualFunc(page, wantPage, func(a, b broker.InboxEntry) bool { return a.Message.ID() == b.Message.ID() }) {
			t.Fatalf("Inbox(%q) = %d entries, want the %d after the cursor", cursor, len(page), len(wantPage))
		}
		if (next != "") != (len(rest) > limit) {
			t.Fatalf("Inbox(%q): next %q with %d entries after the cursor", cursor, next, len(rest))
		}
	})
}
