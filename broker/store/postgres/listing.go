package postgres

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"kurier.dev/kurier/broker"
)

// A paging cursor is a position in a listing: the Received time (Unix
// nanoseconds, 8 bytes big-endian), a 2-byte length and the message id,
// base64url without padding. It says nothing of whose listing it is, so
// a cursor handed to another mailbox or sender names a position in that
// one's listing only.

func encodeCursor(receivedNS int64, id string) string {
	b := binary.BigEndian.AppendUint64(nil, uint64(receivedNS))
	b = binary.BigEndian.AppendUint16(b, uint16(len(id)))
	return base64.RawURLEncoding.EncodeToString(append(b, id...))
}

func decodeCursor(what, c string) (receivedNS int64, id string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 10 {
		return 0, "", fmt.Errorf("%w: malformed %s cursor", broker.ErrInvalid, what)
	}
	n := int(binary.BigEndian.Uint16(b[8:]))
	if n == 0 || n > maxKeyPart || len(b) != 10+n {
		return 0, "", fmt.Errorf("%w: malformed %s cursor", broker.ErrInvalid, what)
	}
	return int64(binary.BigEndian.Uint64(b)), string(b[10:]), nil
}

// MaxInboxPage and MaxSentPage are the most entries Inbox and Sent return
// at once.
const (
	MaxInboxPage = 1000
	MaxSentPage  = 1000
)

func pageLimit(limit, most int) int {
	if limit <= 0 || limit > most {
		return most
	}
	return limit
}

// InboxCursor returns the cursor from which Inbox lists the entries
// received at at or later: a position at at before any message id.
func (s *Store) InboxCursor(at time.Time) string { return encodeCursor(nanos(at), "\x01") }

// Inbox lists recipient's local copies in order of arrival (the copy's
// Received time, then message id), each with its message, after the
// position named by the cursor after ("" = from the start): at most limit
// entries (up to MaxInboxPage) and the cursor of the next page, "" after
// the last. A malformed cursor is an error wrapping broker.ErrInvalid.
func (s *Store) Inbox(ctx context.Context, recipient, after string, limit int) ([]broker.InboxEntry, string, error) {
	limit = pageLimit(limit, MaxInboxPage)
	start, startID := int64(math.MinInt64), ""
	if after != "" {
		var err error
		if start, startID, err = decodeCursor("inbox", after); err != nil {
			return nil, "", fmt.Errorf("list inbox of %s: %w", recipient, err)
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT c.received_ns, c.record, m.record FROM copies c JOIN messages m ON m.id = c.message_id
		WHERE c.recipient = $1 AND c.local AND (c.received_ns, c.message_id) > ($2, $3)
		ORDER BY c.received_ns, c.message_id LIMIT $4`, recipient, start, startID, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list inbox of %s: %w", recipient, err)
	}
	var entries []broker.InboxEntry
	var next string
	var ns int64
	var cv, mv []byte
	_, err = pgx.ForEachRow(rows, []any{&ns, &cv, &mv}, func() error {
		if len(entries) == limit {
			last := entries[len(entries)-1].Copy
			next = encodeCursor(nanos(last.Received), last.MessageID)
			return nil
		}
		c, err := decodeCopy(cv)
		if err != nil {
			return err
		}
		m, err := decodeMessage(mv)
		if err != nil {
			return err
		}
		entries = append(entries, broker.InboxEntry{Copy: *c, Message: m})
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list inbox of %s: %w", recipient, err)
	}
	return entries, next, nil
}

// Sent lists the messages whose envelope's sender is sender, newest first
// (by Received time, then id, both descending), each with all of its
// copies in order of recipient, after the position named by the cursor
// after ("" = from the newest): at most limit entries (up to MaxSentPage)
// and the cursor of the next page, "" after the last. It reads only
// sender's messages; a malformed cursor is an error wrapping
// broker.ErrInvalid.
func (s *Store) Sent(ctx context.Context, sender, after string, limit int) ([]broker.SentEntry, string, error) {
	limit = pageLimit(limit, MaxSentPage)
	var start int64
	var startID string
	if after != "" {
		var err error
		if start, startID, err = decodeCursor("sent", after); err != nil {
			return nil, "", fmt.Errorf("list sent messages of %s: %w", sender, err)
		}
	}
	var entries []broker.SentEntry
	var next string
	err := s.read(ctx, func(tx pgx.Tx) error {
		var err error
		entries, next, err = sentPage(ctx, tx, sender, start, startID, limit, after == "")
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list sent messages of %s: %w", sender, err)
	}
	return entries, next, nil
}

// sentPage reads one page of Sent: the messages before the position
// (start, startID), or from the newest if first, then their copies.
func sentPage(ctx context.Context, tx pgx.Tx, sender string, start int64, startID string, limit int, first bool) ([]broker.SentEntry, string, error) {
	rows, err := tx.Query(ctx, `SELECT received_ns, id, record FROM messages
		WHERE sender = $1 AND ($4 OR (received_ns, id) < ($2, $3))
		ORDER BY received_ns DESC, id DESC LIMIT $5`, sender, start, startID, first, limit+1)
	if err != nil {
		return nil, "", err
	}
	var entries []broker.SentEntry
	var ids []string
	var next string
	var ns, lastNS int64
	var id string
	var v []byte
	_, err = pgx.ForEachRow(rows, []any{&ns, &id, &v}, func() error {
		if len(entries) == limit {
			next = encodeCursor(lastNS, ids[len(ids)-1])
			return nil
		}
		m, err := decodeMessage(v)
		if err != nil {
			return err
		}
		entries, ids, lastNS = append(entries, broker.SentEntry{Message: m}), append(ids, id), ns
		return nil
	})
	if err != nil || len(ids) == 0 {
		return entries, next, err
	}
	byID := make(map[string]int, len(ids))
	for i, id := range ids {
		byID[id] = i
	}
	rows, err = tx.Query(ctx, "SELECT message_id, record FROM copies WHERE message_id = ANY($1) ORDER BY message_id, recipient", ids)
	if err != nil {
		return nil, "", err
	}
	_, err = pgx.ForEachRow(rows, []any{&id, &v}, func() error {
		c, err := decodeCopy(v)
		if err != nil {
			return err
		}
		e := &entries[byID[id]]
		e.Copies = append(e.Copies, *c)
		return nil
	})
	return entries, next, err
}
