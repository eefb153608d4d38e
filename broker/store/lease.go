package store

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// leases are the relays leased (see LeaseRelay). A badger store is open in
// one process only (its directory is locked), so they live in memory: the
// lease only has to keep the relay worker and Expire of that process
// apart, and a restart, which ends every relay under way, ends every lease
// with it.
type leases struct {
	mu sync.Mutex
	m  map[string]lease
}

type lease struct {
	holder string
	until  time.Time
}

// LeaseRelay takes the relay of message id to the node of domain for
// holder until until, unless another holder's lease on it runs past now;
// ok reports whether it did. A holder may take its own lease again to
// extend it. An error wrapping broker.ErrNotFound if the message is not
// queued for domain.
func (db *DB) LeaseRelay(ctx context.Context, domain, id, holder string, now, until time.Time) (bool, error) {
	if holder == "" {
		return false, fmt.Errorf("lease relay of %s to %s: no holder", id, domain)
	}
	if _, err := db.OutboundEntry(ctx, domain, id); err != nil {
		return false, fmt.Errorf("lease relay: %w", err)
	}
	l := &db.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	k := string(outboundKey(domain, id))
	if cur, ok := l.m[k]; ok && cur.holder != holder && cur.until.After(now) {
		return false, nil
	}
	if l.m == nil {
		l.m = map[string]lease{}
	}
	l.m[k] = lease{holder: holder, until: until}
	return true, nil
}

// ReleaseRelay ends holder's lease on the relay of message id to the node
// of domain; a lease that holder no longer has is left alone.
func (db *DB) ReleaseRelay(ctx context.Context, domain, id, holder string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("release relay of %s to %s: %w", id, domain, err)
	}
	l := &db.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	k := string(outboundKey(domain, id))
	if cur, ok := l.m[k]; ok && cur.holder == holder {
		delete(l.m, k)
	}
	return nil
}
