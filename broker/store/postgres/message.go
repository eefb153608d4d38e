package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"kurier.dev/kurier/broker"
)

// copyRecord is a copy encoded for the copies table.
type copyRecord struct {
	c        broker.Copy
	deadline *int64 // nil when nothing is due
	record   []byte
}

func copyRow(c broker.Copy) (copyRecord, error) {
	v, err := json.Marshal(c)
	if err != nil {
		return copyRecord{}, fmt.Errorf("encode copy: %w", err)
	}
	r := copyRecord{c: c, record: v}
	if !c.Deadline.IsZero() {
		d := nanos(c.Deadline)
		r.deadline = &d
	}
	return r, nil
}

func decodeCopy(v []byte) (*broker.Copy, error) {
	var c broker.Copy
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, fmt.Errorf("decode copy: %w", err)
	}
	return &c, nil
}

func decodeMessage(v []byte) (*broker.Message, error) {
	var m broker.Message
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("decode message: %w", err)
	}
	return &m, nil
}

// newCopies are copies of one message with their first evidence, checked
// and encoded before the transaction.
type newCopies struct {
	id     string
	copies []copyRecord
	ev     *evidenceWrite
}

func prepareCopies(id string, copies []broker.Copy, evs []broker.Evidence) (*newCopies, error) {
	nc := &newCopies{id: id, ev: &evidenceWrite{id: id}}
	seen := make(map[string]bool, len(copies))
	for _, c := range copies {
		if c.MessageID != id {
			return nil, fmt.Errorf("%w: copy for message %q", broker.ErrInvalid, c.MessageID)
		}
		if err := checkKeyPart("recipient", c.Recipient); err != nil {
			return nil, err
		}
		if seen[c.Recipient] {
			return nil, fmt.Errorf("%w: two copies for %s", broker.ErrInvalid, c.Recipient)
		}
		seen[c.Recipient] = true
		r, err := copyRow(c)
		if err != nil {
			return nil, err
		}
		nc.copies = append(nc.copies, r)
	}
	for _, ev := range evs {
		if ev.MessageID != id {
			return nil, fmt.Errorf("%w: evidence for message %q", broker.ErrInvalid, ev.MessageID)
		}
		p, err := prepareEvidence(ev)
		if err != nil {
			return nil, err
		}
		nc.ev.pending = append(nc.ev.pending, p)
	}
	return nc, nil
}

// queue adds to b the statements that insert the copies and those that
// count the evidence's positions and lock the log (see evidenceWrite);
// nc.ev.finish writes the evidence after the batch ran.
func (nc *newCopies) queue(b *pgx.Batch) {
	n := len(nc.copies)
	if n > 0 {
		rcpts, locals, received, deadlines := make([]string, n), make([]bool, n), make([]int64, n), make([]*int64, n)
		states, heads, records := make([]string, n), make([]string, n), make([][]byte, n)
		for i, r := range nc.copies {
			rcpts[i], locals[i], received[i], deadlines[i] = r.c.Recipient, r.c.Local, nanos(r.c.Received), r.deadline
			states[i], heads[i], records[i] = string(r.c.State), r.c.Head, r.record
		}
		b.Queue(`INSERT INTO copies (message_id, recipient, local, received_ns, deadline_ns, state, head, record)
			SELECT $1, * FROM unnest($2::text[], $3::boolean[], $4::bigint[], $5::bigint[], $6::text[], $7::text[], $8::bytea[])`,
			nc.id, rcpts, locals, received, deadlines, states, heads, records)
	}
	nc.ev.queue(b)
}

// sendWrites runs a batch of writes and says what a constraint that
// refused one of them means.
func sendWrites(ctx context.Context, tx pgx.Tx, b *pgx.Batch) error {
	err := tx.SendBatch(ctx, b).Close()
	code, constraint := pgCode(err)
	switch {
	case err == nil:
		return nil
	case code == codeUniqueViolation && constraint == "copies_pkey":
		return fmt.Errorf("%w: a copy exists already", broker.ErrExists)
	case code == codeUniqueViolation && constraint == "messages_blob_key":
		return fmt.Errorf("%w: the payload blob belongs to another message", broker.ErrInvalid)
	}
	return fmt.Errorf("store: %w", err)
}

// CreateMessage stores a message (in its sender's sent listing), its
// recipients' copies (local ones in their mailboxes), its first evidence
// (appended to the transparency log, in the order given, and returned
// with LeafIndex set) and its outbound queue entries, in one transaction.
//
// The blob m.Blob must be complete, with the size and SHA-256 that
// m.Header announces, and belong to no other message. If a message with
// the same id is stored already, nothing is written and the error wraps
// broker.ErrExists when its EnvelopeSHA256 is m's, broker.ErrDuplicate
// otherwise. Other errors: broker.ErrInvalid for inconsistent arguments or
// a blob that does not match, broker.ErrNotFound for a missing or
// incomplete blob.
func (s *Store) CreateMessage(ctx context.Context, m *broker.Message, copies []broker.Copy, evs []broker.Evidence, outbound []broker.Outbound) ([]broker.Evidence, error) {
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
	nc, err := prepareCopies(id, copies, evs)
	if err != nil {
		return nil, fmt.Errorf("create message %s: %w", id, err)
	}
	q, err := prepareOutbound(id, outbound)
	if err != nil {
		return nil, fmt.Errorf("create message %s: %w", id, err)
	}
	var out []broker.Evidence
	err = s.write(ctx, func(tx pgx.Tx) error {
		if err := checkMessage(ctx, tx, m); err != nil {
			return err
		}
		// One round trip for the rows, the evidence's positions and the
		// log's lock, one for the evidence and the log.
		b := &pgx.Batch{}
		ran, inserted := false, false
		b.Queue(`INSERT INTO messages (id, sender, received_ns, envelope_sha256, blob, record)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING`,
			id, m.Header.From, nanos(m.Received), m.EnvelopeSHA256, m.Blob, msgVal).Exec(func(tag pgconn.CommandTag) error {
			ran, inserted = true, tag.RowsAffected() == 1
			return nil
		})
		q.queue(b)
		nc.queue(b)
		err := sendWrites(ctx, tx, b)
		if ran && !inserted {
			// Stored meanwhile by another transaction, now committed
			// (what else the batch did, or failed at, is rolled back):
			// the next attempt's check says whether it is this message.
			return errRetry
		}
		if err != nil {
			return err
		}
		out, err = nc.ev.finish(ctx, tx)
		return err
	})
	if errors.Is(err, broker.ErrExists) {
		if derr := s.durable(ctx); derr != nil {
			err = derr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create message %s: %w", id, err)
	}
	return out, nil
}

// checkMessage looks, in one round trip, for a stored message of m's id
// (broker.ErrExists or broker.ErrDuplicate) and checks m's blob, which it
// keeps from being deleted until tx ends (FOR KEY SHARE).
func checkMessage(ctx context.Context, tx pgx.Tx, m *broker.Message) error {
	var stored, sum string
	var found, blobFound, complete bool
	var size int64
	b := &pgx.Batch{}
	b.Queue("SELECT envelope_sha256 FROM messages WHERE id = $1", m.ID()).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&stored)
		found = err == nil
		return ignoreNoRows(err)
	})
	b.Queue("SELECT complete, size, sha256 FROM blobs WHERE id = $1 FOR KEY SHARE", m.Blob).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&complete, &size, &sum)
		blobFound = err == nil
		return ignoreNoRows(err)
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("look for the message and its payload blob: %w", err)
	}
	switch {
	case found && stored == m.EnvelopeSHA256:
		return broker.ErrExists
	case found:
		return broker.ErrDuplicate
	case !blobFound:
		return fmt.Errorf("payload blob %s: %w", m.Blob, broker.ErrNotFound)
	case !complete:
		return fmt.Errorf("payload blob %s is still being written: %w", m.Blob, broker.ErrNotFound)
	case size != m.Header.PayloadSize || sum != m.Header.PayloadSHA256:
		return fmt.Errorf("%w: payload blob %s has %d bytes with SHA-256 %s, the envelope announces %d bytes with %s",
			broker.ErrInvalid, m.Blob, size, sum, m.Header.PayloadSize, m.Header.PayloadSHA256)
	}
	return nil
}

func ignoreNoRows(err error) error {
	if errNoRows(err) {
		return nil
	}
	return err
}

// AddCopies adds copies of a stored message, with their evidence, in one
// transaction. Errors wrap broker.ErrNotFound if there is no such message,
// broker.ErrDuplicate if it has another envelope digest than envSHA256,
// broker.ErrExists if one of the copies exists already (nothing is
// written then), and broker.ErrInvalid for inconsistent arguments.
func (s *Store) AddCopies(ctx context.Context, id, envSHA256 string, copies []broker.Copy, evs []broker.Evidence) ([]broker.Evidence, error) {
	if err := checkKeyPart("message id", id); err != nil {
		return nil, fmt.Errorf("add copies: %w", err)
	}
	nc, err := prepareCopies(id, copies, evs)
	if err != nil {
		return nil, fmt.Errorf("add copies to %s: %w", id, err)
	}
	var out []broker.Evidence
	err = s.write(ctx, func(tx pgx.Tx) error {
		var stored string
		err := tx.QueryRow(ctx, "SELECT envelope_sha256 FROM messages WHERE id = $1 FOR KEY SHARE", id).Scan(&stored)
		switch {
		case errNoRows(err):
			return broker.ErrNotFound
		case err != nil:
			return fmt.Errorf("look for the message: %w", err)
		case stored != envSHA256:
			return broker.ErrDuplicate
		}
		b := &pgx.Batch{}
		nc.queue(b)
		if err := sendWrites(ctx, tx, b); err != nil {
			return err
		}
		out, err = nc.ev.finish(ctx, tx)
		return err
	})
	if errors.Is(err, broker.ErrExists) {
		if derr := s.durable(ctx); derr != nil {
			err = derr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("add copies to %s: %w", id, err)
	}
	return out, nil
}

// Message returns the stored message with the id, or an error wrapping
// broker.ErrNotFound.
func (s *Store) Message(ctx context.Context, id string) (*broker.Message, error) {
	var v []byte
	err := s.pool.QueryRow(ctx, "SELECT record FROM messages WHERE id = $1", id).Scan(&v)
	if errNoRows(err) {
		return nil, fmt.Errorf("load message %s: %w", id, broker.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load message %s: %w", id, err)
	}
	m, err := decodeMessage(v)
	if err != nil {
		return nil, fmt.Errorf("load message %s: %w", id, err)
	}
	return m, nil
}

// Copy returns recipient's copy of a message, or an error wrapping
// broker.ErrNotFound.
func (s *Store) Copy(ctx context.Context, messageID, recipient string) (*broker.Copy, error) {
	var v []byte
	err := s.pool.QueryRow(ctx, "SELECT record FROM copies WHERE message_id = $1 AND recipient = $2", messageID, recipient).Scan(&v)
	if errNoRows(err) {
		return nil, fmt.Errorf("load copy of %s for %s: %w", messageID, recipient, broker.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load copy of %s for %s: %w", messageID, recipient, err)
	}
	c, err := decodeCopy(v)
	if err != nil {
		return nil, fmt.Errorf("load copy of %s for %s: %w", messageID, recipient, err)
	}
	return c, nil
}
