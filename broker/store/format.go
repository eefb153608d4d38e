package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"

	"kurier.dev/kurier/broker"
)

// currentFormat is the version of the layout this package writes
// (s/format). Version 1 had no such key: its evidence keys held a
// node-wide counter as their position, kept in s/evseq, and there were no
// n/ counters. Version 2 kept large payloads as chunks in badger; version
// 3 keeps them in files of their own under payloads/ (blob.go), which a
// Kurier of version 2 would not read: it refuses a store of version 3
// rather than report every large payload as damaged. Version 4 adds the
// sent index (y/), which Open builds for the messages of an older store,
// and which a Kurier of version 3 would not keep up to date: it refuses
// a store of version 4 rather than leave messages out of their senders'
// listings.
const currentFormat = 4

// upgrade brings a store of an earlier layout to the current one before
// the committer starts, and checks what the current one needs. From
// version 1 it gives every message its n/ counter, one more than the
// highest position among its evidence keys; from version 2 (and for a new
// store) it makes the payload folder. It records the format last, so that
// an upgrade cut short runs again, with the same result, at the next
// Open. A store of a newer format is refused, and so is a store of the
// current one whose payload folder is missing or not a folder (restored
// or copied without it: its large payloads would all read as damaged).
// Below version 4 it enters every stored message into the sent index.
func upgrade(dir string, bdb *badger.DB, logger *slog.Logger) error {
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
		return checkPayloadDir(dir)
	case format > currentFormat:
		return fmt.Errorf("the store has format %d, written by a newer Kurier; this version reads format %d", format, currentFormat)
	}
	if format < 2 {
		n, err := addPositions(bdb)
		if err != nil {
			return fmt.Errorf("upgrade the store: %w", err)
		}
		if n > 0 {
			logger.Info("store upgraded: evidence positions counted per message", "messages", n)
		}
	}
	if err := makePayloadDir(dir); err != nil {
		return fmt.Errorf("upgrade the store: %w", err)
	}
	if format < 4 {
		n, damaged, err := indexSent(bdb)
		if err != nil {
			return fmt.Errorf("upgrade the store: build the sent index: %w", err)
		}
		if n > 0 {
			logger.Info("store upgraded: messages entered into their senders' sent index", "messages", n)
		}
		for _, id := range damaged {
			logger.Error("store upgraded without one message in the sent index: its record cannot be read; kurierd -check-store names it, restore it from a backup", "message", id)
		}
	}
	if err := bdb.Update(func(txn *badger.Txn) error {
		return txn.Set(formatKey, encodeSeq(currentFormat))
	}); err != nil {
		return fmt.Errorf("upgrade the store: %w", err)
	}
	return nil
}

// addPositions gives every message its n/ counter (format 1 to 2) and
// returns how many messages it counted.
func addPositions(bdb *badger.DB) (int, error) {
	next, err := countPositions(bdb)
	if err != nil {
		return 0, err
	}
	wb := bdb.NewWriteBatch()
	defer wb.Cancel()
	for id, pos := range next {
		if err := wb.Set(positionKey(id), encodeSeq(pos)); err != nil {
			return 0, err
		}
	}
	if err := wb.Flush(); err != nil {
		return 0, err
	}
	if err := bdb.Update(func(txn *badger.Txn) error { return txn.Delete(legacySeqKey) }); err != nil {
		return 0, err
	}
	return len(next), nil
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

// indexSent enters every stored message into its sender's sent index
// (format 3 to 4) and returns how many it entered, and the ids of the
// messages whose records cannot be read, which it leaves out: one damaged
// record must not keep the node from starting, and the store check names
// it as before. Writing an entry that exists already changes nothing, so
// an upgrade cut short may run again.
func indexSent(bdb *badger.DB) (n int, damaged []string, err error) {
	wb := bdb.NewWriteBatch()
	defer wb.Cancel()
	prefix := []byte("m/")
	err = bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.Valid(); it.Next() {
			var m broker.Message
			id := string(it.Item().Key()[len(prefix):])
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &m) }); err != nil {
				damaged = append(damaged, id)
				continue
			}
			if m.Header == nil || checkKeyPart("sender", m.Header.From) != nil || checkKeyPart("message id", m.Header.ID) != nil {
				damaged = append(damaged, id)
				continue
			}
			if err := wb.Set(sentKey(m.Header.From, m.Received, m.Header.ID), nil); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	if err := wb.Flush(); err != nil {
		return 0, nil, err
	}
	return n, damaged, nil
}
