package daemon

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"kurier.dev/kurier/broker"
)

// How the readiness probe checks a store on a server: a ping that may
// take probeTimeout, whose answer stands for probeFresh, so that however
// often /readyz is asked, the database sees at most one ping in that
// time. probeTimeout stays below the one second a probe is given by
// default (Kubernetes' timeoutSeconds), so that /readyz answers in it.
const (
	probeTimeout = 700 * time.Millisecond
	probeFresh   = 2 * time.Second
)

// storeProbe tells whether the node's store answers, for /readyz: a load
// balancer then sends no calls to a process whose database is out of
// reach, which could only answer them with Unavailable. Its methods are
// safe for concurrent use.
type storeProbe struct {
	ping   func(context.Context) error
	now    func() time.Time // the clock, injected for the tests
	logger *slog.Logger

	mu      sync.Mutex // held across a ping: probes at once wait for its answer
	checked time.Time  // when ok was found; zero before the first ping
	ok      bool
}

// newStoreProbe returns the probe of ping, or nil for a store that needs
// none (badger in the process itself).
func newStoreProbe(ping func(context.Context) error, logger *slog.Logger) *storeProbe {
	if ping == nil {
		return nil
	}
	return &storeProbe{ping: ping, now: time.Now, logger: logger}
}

// reachable reports whether the store answered its latest ping, pinging
// again once that answer is older than probeFresh. A nil probe's store
// is always reachable. A change is logged once.
func (p *storeProbe) reachable() bool {
	if p == nil {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.checked.IsZero() && p.now().Sub(p.checked) < probeFresh {
		return p.ok
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	err := p.ping(ctx)
	cancel()
	switch {
	case err != nil && (p.ok || p.checked.IsZero()):
		p.logger.Warn("the store cannot be reached; /readyz says not ready until it can", slog.Any(broker.LogErr, err))
	case err == nil && !p.ok && !p.checked.IsZero():
		p.logger.Info("the store can be reached again; /readyz says ready")
	}
	p.ok, p.checked = err == nil, p.now()
	return p.ok
}
