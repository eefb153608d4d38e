package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/tlog"
)

// CreateMessage stores a message, its recipients' copies (each also entered
// into the recipient's mailbox, ordered by the copy's Received time, then
// message id) and its first evidence, in one durable transaction. Each
// evidence gets the next Seq and is appended to the transparency log, in the
// order given; the evidence is returned with Seq and LeafIndex set.
//
// The payload blob m.Blob must have been written completely by WriteBlob,
// with the size and SHA-256 that m.Header announces, and must not belong to
// another message; from now on it does not count as an orphan.
//
// If a message with the same id is stored already, nothing is written and
// the error wraps broker.ErrExists when its EnvelopeSHA256 is m's (a
// repeat: load the stored evidence with Evidence), broker.ErrDuplicate
// otherwise. Other outcomes: broker.ErrInvalid for inconsistent arguments
// or a blob that does not match the envelope; broker.ErrNotFound if the
// blob is missing or incomplete; broker.ErrTooLarge if the records do not
// fit into one transaction; a context error means the outcome is unknown.
func (db *DB) CreateMessage(ctx context.Context, m *broker.Message, copies []broker.Copy, evs []broker.Evidence) ([]broker.Evidence, error) {
	if m == nil || m.Header == nil {
		return nil, fmt.Errorf("create message: %w: no message or no decoded envelope", broker.ErrInvalid)
	}
	id := m.ID()
	if err := checkKeyPart("message id", id); err != nil {
		return nil, fmt.Errorf("create message: %w", err)
	}
	if !validBlobID(m.Blob) {
		return nil, fmt.Errorf("create message %s: %w: blob id %q is not one WriteBlob returned", id, broker.ErrInvalid, m.Blob)
	}
	if m.EnvelopeSHA256 == "" {
		return nil, fmt.Errorf("create message %s: %w: no envelope digest", id, broker.ErrInvalid)
	}
	msgVal, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("create message %s: %w", id, err)
	}
	size := len(msgVal) + 2*len(id)

	seen := make(map[string]bool, len(copies))
	// Everything that does not depend on the store's state is prepared
	// here, in the caller's goroutine, to keep the committer's share small.
	copyKeys := make([][]byte, len(copies))
	inboxKeys := make([][]byte, len(copies))
	copyVals := make([][]byte, len(copies))
	for i := range copies {
		c := &copies[i]
		if c.MessageID != id {
			return nil, fmt.Errorf("create message %s: %w: copy for message %q", id, broker.ErrInvalid, c.MessageID)
		}
		if err := checkKeyPart("recipient", c.Recipient); err != nil {
			return nil, fmt.Errorf("create message %s: %w", id, err)
		}
		if seen[c.Recipient] {
			return nil, fmt.Errorf("create message %s: %w: two copies for %s", id, broker.ErrInvalid, c.Recipient)
		}
		seen[c.Recipient] = true
		if copyVals[i], err = json.Marshal(c); err != nil {
			return nil, fmt.Errorf("create message %s: %w", id, err)
		}
		copyKeys[i], inboxKeys[i] = copyKey(id, c.Recipient), inboxKey(c.Recipient, c.Received, id)
		size += len(copyVals[i]) + 3*len(c.Recipient) + 4*len(id)
	}
	evVals := make([][]byte, len(evs))
	evLeaves := make([][]byte, len(evs))
	for i := range evs {
		if evs[i].MessageID != id {
			return nil, fmt.Errorf("create message %s: %w: evidence for message %q", id, broker.ErrInvalid, evs[i].MessageID)
		}
		if evVals[i], err = encodeEvidence(evs[i]); err != nil {
			return nil, fmt.Errorf("create message %s: %w", id, err)
		}
		evLeaves[i] = tlog.LeafHash(evs[i].DER)
		size += len(evVals[i]) + 2*len(id) + 32 + logWriteSize
	}

	blob := m.Blob
	mk, hk, rk := messageKey(id), blobHeaderKey(blob), blobRefKey(blob)
	wantSize, wantSHA, envSHA := m.Header.PayloadSize, m.Header.PayloadSHA256, m.EnvelopeSHA256
	out := slices.Clone(evs)
	err = db.submit(ctx, size, func(b *batch) error {
		// Checks.
		if v, ok, err := b.get(mk); err != nil {
			return err
		} else if ok {
			var old broker.Message
			if err := json.Unmarshal(v, &old); err != nil {
				return fmt.Errorf("decode stored message: %w", err)
			}
			if old.EnvelopeSHA256 == envSHA {
				return broker.ErrExists
			}
			return broker.ErrDuplicate
		}
		hv, ok, err := b.get(hk)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("payload blob %s: %w", blob, broker.ErrNotFound)
		}
		h, err := decodeBlobHeader(hv)
		if err != nil {
			return err
		}
		switch {
		case !h.Complete:
			return fmt.Errorf("payload blob %s is still being written: %w", blob, broker.ErrNotFound)
		case h.Size != wantSize || h.SHA256 != wantSHA:
			return fmt.Errorf("%w: payload blob %s has %d bytes with SHA-256 %s, the envelope announces %d bytes with %s",
				broker.ErrInvalid, blob, h.Size, h.SHA256, wantSize, wantSHA)
		}
		if owner, ok, err := b.get(rk); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("%w: payload blob %s belongs to message %s", broker.ErrInvalid, blob, owner)
		}

		// Writes.
		if err := b.set(mk, msgVal); err != nil {
			return err
		}
		if err := b.set(rk, []byte(id)); err != nil {
			return err
		}
		for i := range copyKeys {
			if err := b.set(copyKeys[i], copyVals[i]); err != nil {
				return err
			}
			if err := b.set(inboxKeys[i], nil); err != nil {
				return err
			}
		}
		if len(out) == 0 {
			return nil
		}
		for i := range out {
			if out[i].Seq, out[i].LeafIndex, err = putEvidence(b, id, evVals[i], evLeaves[i]); err != nil {
				return err
			}
		}
		return b.saveCounters()
	})
	if err != nil {
		return nil, fmt.Errorf("create message %s: %w", id, err)
	}
	return out, nil
}

// Message returns the stored message with the id, or an error wrapping
// broker.ErrNotFound.
func (db *DB) Message(ctx context.Context, id string) (*broker.Message, error) {
	var m *broker.Message
	err := db.view(ctx, func(txn *badger.Txn) error {
		var err error
		m, err = loadMessage(txn, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load message %s: %w", id, err)
	}
	return m, nil
}

func loadMessage(txn *badger.Txn, id string) (*broker.Message, error) {
	v, ok, err := get(txn, messageKey(id))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, broker.ErrNotFound
	}
	var m broker.Message
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("decode message: %w", err)
	}
	return &m, nil
}

// Copy returns recipient's copy of a message, or an error wrapping
// broker.ErrNotFound.
func (db *DB) Copy(ctx context.Context, messageID, recipient string) (*broker.Copy, error) {
	if checkKeyPart("message id", messageID) != nil || checkKeyPart("recipient", recipient) != nil {
		return nil, fmt.Errorf("load copy of %s for %s: %w", messageID, recipient, broker.ErrNotFound)
	}
	var c *broker.Copy
	err := db.view(ctx, func(txn *badger.Txn) error {
		var err error
		c, err = loadCopy(txn, messageID, recipient)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load copy of %s for %s: %w", messageID, recipient, err)
	}
	return c, nil
}

func loadCopy(txn *badger.Txn, id, rcpt string) (*broker.Copy, error) {
	v, ok, err := get(txn, copyKey(id, rcpt))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, broker.ErrNotFound
	}
	return decodeCopy(v)
}

func decodeCopy(v []byte) (*broker.Copy, error) {
	var c broker.Copy
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, fmt.Errorf("decode copy: %w", err)
	}
	return &c, nil
}

// MaxInboxPage is the most entries Inbox returns at once.
const MaxInboxPage = 1000

// Inbox lists recipient's copies in mailbox order (the copy's Received
// time, then message id), each with its message. It starts after the
// position named by the cursor after ("" = from the start) and returns at
// most limit entries (limit <= 0 or above MaxInboxPage means MaxInboxPage)
// and the cursor for the next page, "" when there are no more entries. A
// malformed cursor is an error wrapping broker.ErrInvalid.
//
// A cursor is a position, not a snapshot: a copy stored later with an
// earlier Received time than the cursor's position is not listed after it.
func (db *DB) Inbox(ctx context.Context, recipient, after string, limit int) ([]broker.InboxEntry, string, error) {
	if limit <= 0 || limit > MaxInboxPage {
		limit = MaxInboxPage
	}
	if checkKeyPart("recipient", recipient) != nil {
		return nil, "", nil
	}
	prefix := inboxPrefix(recipient)
	start := prefix
	if after != "" {
		suffix, err := decodeCursor(after)
		if err != nil {
			return nil, "", fmt.Errorf("list inbox of %s: %w", recipient, err)
		}
		start = append(slices.Clip(prefix), suffix...)
	}

	var (
		entries []broker.InboxEntry
		next    string
	)
	err := db.view(ctx, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
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
				return fmt.Errorf("malformed mailbox key %q", k)
			}
			ids = append(ids, id)
			last = append(last[:0], suffix...)
		}
		entries = make([]broker.InboxEntry, 0, len(ids))
		for _, id := range ids {
			if err := ctx.Err(); err != nil {
				return err
			}
			c, err := loadCopy(txn, id, recipient)
			if err != nil {
				return fmt.Errorf("copy of %s: %w", id, err)
			}
			m, err := loadMessage(txn, id)
			if err != nil {
				return fmt.Errorf("message %s: %w", id, err)
			}
			entries = append(entries, broker.InboxEntry{Copy: *c, Message: m})
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list inbox of %s: %w", recipient, err)
	}
	return entries, next, nil
}
