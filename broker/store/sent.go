package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"kurier.dev/kurier/broker"
)

// MaxSentPage is the most entries Sent returns at once.
const MaxSentPage = 1000

// Sent lists the messages stored with sender as their envelope's sender,
// newest first (by the message's Received time, then id, both descending),
// each with all of its copies at this node. It reads the sent index, so
// it never scans other senders' messages. It starts after the position
// named by the cursor after ("" = from the newest) and returns at most
// limit entries (limit <= 0 or above MaxSentPage means MaxSentPage) and the
// cursor for the next page, "" when there are no more. A malformed cursor
// is an error wrapping broker.ErrInvalid.
//
// Security: a cursor names a position within sender's own index, whatever
// bytes it holds, so no cursor leads into another sender's messages.
//
// A cursor is a position, not a snapshot: messages stored after the first
// page was read sort before it and are listed by a new listing only.
func (db *DB) Sent(ctx context.Context, sender, after string, limit int) ([]broker.SentEntry, string, error) {
	if limit <= 0 || limit > MaxSentPage {
		limit = MaxSentPage
	}
	if checkKeyPart("sender", sender) != nil {
		return nil, "", nil
	}
	prefix := sentPrefix(sender)
	// Iterating backwards, badger starts at the last key not after the
	// seek key: for the first page, one after every key of the prefix
	// (longer than any suffix, all 0xff).
	start := append(slices.Clip(prefix), bytes.Repeat([]byte{0xff}, 8+2+maxKeyPart+1)...)
	if after != "" {
		suffix, err := decodeCursor("sent", after)
		if err != nil {
			return nil, "", fmt.Errorf("list sent messages of %s: %w", sender, err)
		}
		start = append(slices.Clip(prefix), suffix...)
	}

	var (
		entries []broker.SentEntry
		next    string
	)
	err := db.view(ctx, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
		defer it.Close()
		var ids []string
		var last []byte
		for it.Seek(start); it.Valid(); it.Next() {
			k := it.Item().Key()
			if after != "" && bytes.Equal(k, start) {
				continue
			}
			if len(ids) == limit {
				next = encodeCursor(last)
				break
			}
			suffix := k[len(prefix):]
			id, ok := parseInboxSuffix(suffix)
			if !ok {
				return fmt.Errorf("malformed sent index key %q", k)
			}
			ids = append(ids, id)
			last = append(last[:0], suffix...)
		}
		entries = make([]broker.SentEntry, 0, len(ids))
		for _, id := range ids {
			if err := ctx.Err(); err != nil {
				return err
			}
			m, err := loadMessage(txn, id)
			if errors.Is(err, broker.ErrNotFound) {
				// A stray index entry (the store check reports it) must
				// not make the sender's whole listing fail.
				continue
			}
			if err != nil {
				return fmt.Errorf("message %s: %w", id, err)
			}
			copies, err := loadCopies(txn, id)
			if err != nil {
				return fmt.Errorf("copies of %s: %w", id, err)
			}
			entries = append(entries, broker.SentEntry{Message: m, Copies: copies})
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list sent messages of %s: %w", sender, err)
	}
	return entries, next, nil
}

// loadCopies returns every copy of message id, in order of recipient.
func loadCopies(txn *badger.Txn, id string) ([]broker.Copy, error) {
	prefix := copiesPrefix(id)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	var copies []broker.Copy
	for it.Seek(prefix); it.Valid(); it.Next() {
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return nil, err
		}
		c, err := decodeCopy(v)
		if err != nil {
			return nil, err
		}
		copies = append(copies, *c)
	}
	return copies, nil
}
