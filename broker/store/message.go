package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"

	"kurier.dev/kurier/broker"
)

// CreateMessage stores a message (entered into its sender's sent index,
// ordered by its Received time, then id), its recipients' copies (each local one
// also entered into the recipient's mailbox, ordered by the copy's Received
// time, then message id; each with a Deadline entered into the deadline
// index), its first evidence, and its entries in the outbound queues, in
// one durable transaction. Each evidence of this node's log is appended to
// the transparency log, in the order given; the evidence is returned with
// LeafIndex set.
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
func (db *DB) CreateMessage(ctx context.Context, m *broker.Message, copies []broker.Copy, evs []broker.Evidence, outbound []broker.Outbound) ([]broker.Evidence, error) {
	if m == nil || m.Header == nil {
		return nil, fmt.Errorf("create message: %w: no message or no decoded envelope", broker.ErrInvalid)
	}
	id := m.ID()
	if err := checkKeyPart("message id", id); err != nil {
		return nil, fmt.Errorf("create message: %w", err)
	}
	if err := checkKeyPart("sender", m.Header.From); err != nil {
		return nil, fmt.Errorf("create message %s: %w", id, err)
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
	// Everything that does not depend on the store's state is prepared
	// here, in the caller's goroutine, to keep the committer's share small.
	nc, err := prepareCopies(id, copies, evs)
	if err != nil {
		return nil, fmt.Errorf("create message %s: %w", id, err)
	}
	size := len(msgVal) + 3*len(id) + len(m.Header.From) + nc.size
	outVals := make([][]byte, len(outbound))
	for i, o := range outbound {
		if o.MessageID != id || checkKeyPart("domain", o.Domain) != nil {
			return nil, fmt.Errorf("create message %s: %w: outbound entry for %q to %q", id, broker.ErrInvalid, o.MessageID, o.Domain)
		}
		if outVals[i], err = json.Marshal(o); err != nil {
			return nil, fmt.Errorf("create message %s: %w", id, err)
		}
		size += len(outVals[i]) + len(o.Domain) + len(id) + 8
	}

	blob := m.Blob
	mk, hk, rk := messageKey(id), blobHeaderKey(blob), blobRefKey(blob)
	wantSize, wantSHA, envSHA := m.Header.PayloadSize, m.Header.PayloadSHA256, m.EnvelopeSHA256
	var out []broker.Evidence
	err = db.submitFor(ctx, size, blob, func(b *batch) error {
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
		if err := b.checkBlob(blob, hk, rk, wantSize, wantSHA); err != nil {
			return err
		}

		// Writes.
		if err := b.set(mk, msgVal); err != nil {
			return err
		}
		if err := b.set(rk, []byte(id)); err != nil {
			return err
		}
		if err := b.set(sentKey(m.Header.From, m.Received, id), nil); err != nil {
			return err
		}
		for i, o := range outbound {
			if err := b.set(outboundKey(o.Domain, id), outVals[i]); err != nil {
				return err
			}
		}
		var err error
		out, err = nc.put(b)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create message %s: %w", id, err)
	}
	return out, nil
}

// newCopies are copies of one message with their first evidence, checked
// and encoded outside the committer.
type newCopies struct {
	id      string
	copies  []broker.Copy
	pending []pendingEvidence
	size    int // estimated bytes written
}

func prepareCopies(id string, copies []broker.Copy, evs []broker.Evidence) (*newCopies, error) {
	if err := checkCopies(id, copies); err != nil {
		return nil, err
	}
	nc := &newCopies{id: id, copies: copies, pending: make([]pendingEvidence, len(evs))}
	for _, c := range copies {
		nc.size += 512 + 4*len(c.Recipient) + 6*len(id)
	}
	for i := range evs {
		if evs[i].MessageID != id {
			return nil, fmt.Errorf("%w: evidence for message %q", broker.ErrInvalid, evs[i].MessageID)
		}
		var err error
		if nc.pending[i], err = prepareEvidence(evs[i]); err != nil {
			return nil, err
		}
		nc.size += nc.pending[i].size()
	}
	return nc, nil
}

// put writes the copies (local ones into their mailboxes too) and the
// evidence in the batch, and returns the evidence with leaf indexes. It
// writes the counters last.
func (nc *newCopies) put(b *batch) ([]broker.Evidence, error) {
	for _, c := range nc.copies {
		if err := b.putCopy(c, time.Time{}); err != nil {
			return nil, err
		}
		if c.Local {
			if err := b.set(inboxKey(c.Recipient, c.Received, nc.id), nil); err != nil {
				return nil, err
			}
		}
	}
	out := make([]broker.Evidence, len(nc.pending))
	for i := range nc.pending {
		var err error
		if out[i], _, err = putEvidence(b, nc.pending[i]); err != nil {
			return nil, err
		}
	}
	return out, b.saveCounters()
}

// checkCopies checks that copies are one each for distinct recipients of
// message id.
func checkCopies(id string, copies []broker.Copy) error {
	seen := make(map[string]bool, len(copies))
	for _, c := range copies {
		if c.MessageID != id {
			return fmt.Errorf("%w: copy for message %q", broker.ErrInvalid, c.MessageID)
		}
		if err := checkKeyPart("recipient", c.Recipient); err != nil {
			return err
		}
		if seen[c.Recipient] {
			return fmt.Errorf("%w: two copies for %s", broker.ErrInvalid, c.Recipient)
		}
		seen[c.Recipient] = true
	}
	return nil
}

// checkBlob checks, in the batch, that blob is complete, matches the
// envelope and belongs to no message yet.
func (b *batch) checkBlob(blob string, hk, rk []byte, wantSize int64, wantSHA string) error {
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
	return nil
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

// InboxCursor returns the cursor from which Inbox lists the entries
// received at at or later: a position at at before any message id (whose
// length, 36, is compared before its bytes).
func (db *DB) InboxCursor(at time.Time) string { return encodeCursor(inboxSuffix(at, "\x01")) }

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
		suffix, err := decodeCursor("inbox", after)
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

// AddCopies adds copies of a stored message, with their evidence, in one
// durable transaction: for a message relayed again for recipients that
// had no copy yet. The message must be stored with the envelope digest
// envSHA256. Errors wrap broker.ErrNotFound if there is no such message,
// broker.ErrDuplicate if it has another envelope, broker.ErrExists if one
// of the copies exists already (nothing is written then), and
// broker.ErrInvalid for inconsistent arguments.
func (db *DB) AddCopies(ctx context.Context, id, envSHA256 string, copies []broker.Copy, evs []broker.Evidence) ([]broker.Evidence, error) {
	if err := checkKeyPart("message id", id); err != nil {
		return nil, fmt.Errorf("add copies: %w", err)
	}
	nc, err := prepareCopies(id, copies, evs)
	if err != nil {
		return nil, fmt.Errorf("add copies to %s: %w", id, err)
	}
	mk := messageKey(id)
	var out []broker.Evidence
	err = db.submit(ctx, nc.size, func(b *batch) error {
		v, ok, err := b.get(mk)
		if err != nil {
			return err
		}
		if !ok {
			return broker.ErrNotFound
		}
		var m broker.Message
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("decode stored message: %w", err)
		}
		if m.EnvelopeSHA256 != envSHA256 {
			return broker.ErrDuplicate
		}
		for _, c := range copies {
			if ok, err := b.has(copyKey(id, c.Recipient)); err != nil {
				return err
			} else if ok {
				return fmt.Errorf("%w: copy for %s", broker.ErrExists, c.Recipient)
			}
		}
		out, err = nc.put(b)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("add copies to %s: %w", id, err)
	}
	return out, nil
}
