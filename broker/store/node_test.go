package store_test

import (
	"log/slog"
	"testing"

	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/broker/store/storetest"
)

// The badger store is a node.Store. The check sits here, not in package
// node, so that the node links no backend, and not in the store's own
// code, so that the store need not link the node.
var _ node.Store = (*store.DB)(nil)

// TestConformance runs the backend-neutral suite of node.Store against
// badger stores in temporary folders.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) node.Store {
		db, err := store.Open(t.TempDir(), store.Options{Small: true, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	})
}
