package store

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"
)

// currentFormat is the version of the key layout this package writes
// (s/format). Version 1, the layout before it, had no such key: its
// evidence keys held a node-wide counter as their position, kept in
// s/evseq, and there were no n/ counters.
const currentFormat = 2

// upgrade brings a store of an earlier layout to the current one before
// the committer starts: it gives every message its n/ counter, one more
// than the highest position among its evidence keys, and then records the
// format (last, so that an upgrade cut short runs again, and gives the
// same counters, at the next Open). A store of a newer format is refused.
func upgrade(bdb *badger.DB, logger *slog.Logger) error {
	var format uint64
	if err := bdb.View(func(txn *badger.Txn) error {
		v, ok, err := get(txn, formatKey)
		if err != nil || !ok {
			return err
		}
		format, err = decodeSeq(v)
		return err
	}); err != nil {
		return fmt.Errorf("read the store's format: %w", err)
	}
	switch {
	case format == currentFormat:
		return nil
	case format > currentFormat:
		return fmt.Errorf("the store has format %d, written by a newer Kurier; this version reads format %d", format, currentFormat)
	}
	next, err := countPositions(bdb)
	if err != nil {
		return fmt.Errorf("upgrade the store: %w", err)
	}
	wb := bdb.NewWriteBatch()
	defer wb.Cancel()
	for id, pos := range next {
		if err := wb.Set(positionKey(id), encodeSeq(pos)); err != nil {
			return fmt.Errorf("upgrade the store: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("upgrade the store: %w", err)
	}
	if err := bdb.Update(func(txn *badger.Txn) error {
		if err := txn.Delete(legacySeqKey); err != nil {
			return err
		}
		return txn.Set(formatKey, encodeSeq(currentFormat))
	}); err != nil {
		return fmt.Errorf("upgrade the store: %w", err)
	}
	if len(next) > 0 {
		logger.Info("store upgraded", "format", currentFormat, "messages", len(next))
	}
	return nil
}

// countPositions returns, for every message with evidence, one more than
// its highest evidence position.
func countPositions(bdb *badger.DB) (map[string]uint64, error) {
	next := map[string]uint64{}
	prefix := []byte("e/")
	err := bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.Valid(); it.Next() {
			id, pos, ok := parseEvidenceKey(it.Item().Key())
			if !ok {
				return errors.New("malformed evidence key")
			}
			next[id] = max(next[id], pos+1)
		}
		return nil
	})
	return next, err
}
