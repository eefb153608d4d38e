package store_test

import (
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/broker/store"
)

// The badger store is a node.Store. The check sits here, not in package
// node, so that the node links no backend, and not in the store's own
// code, so that the store need not link the node.
var _ node.Store = (*store.DB)(nil)
