package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
)

// lease takes the relay of id to RemoteDomain for holder at now for a
// minute, and reports whether it did.
func lease(t *testing.T, st node.Store, id, holder string, now time.Time) bool {
	t.Helper()
	ok, err := st.LeaseRelay(context.Background(), RemoteDomain, id, holder, now, now.Add(time.Minute))
	if err != nil {
		t.Fatalf("LeaseRelay of %s by %s: %v", id, holder, err)
	}
	return ok
}

func testLeaseRelay(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	ms := queued(t, st, 2)
	id := ms[0].Msg.ID()
	steps := []struct {
		what   string
		holder string
		at     time.Duration // after t0
		want   bool
	}{
		{"a first lease", "a", 0, true},
		{"another holder's lease while it runs", "b", 30 * time.Second, false},
		{"the holder's own lease again, extended", "a", 50 * time.Second, true},
		{"another holder's lease within the extension", "b", 80 * time.Second, false},
		{"another holder's lease once it has run out", "b", 110 * time.Second, true},
		{"the first holder's, now that it is another's", "a", 120 * time.Second, false},
	}
	for _, s := range steps {
		if got := lease(t, st, id, s.holder, t0.Add(s.at)); got != s.want {
			t.Fatalf("LeaseRelay: %s = %v, want %v", s.what, got, s.want)
		}
	}
	// Leases are per message: the other one is free.
	if !lease(t, st, ms[1].Msg.ID(), "a", t0.Add(120*time.Second)) {
		t.Fatal("LeaseRelay of another queued message refused")
	}
	// Only the holder releases its lease.
	if err := st.ReleaseRelay(ctx, RemoteDomain, id, "a"); err != nil {
		t.Fatalf("ReleaseRelay by a holder that has no lease: %v", err)
	}
	if lease(t, st, id, "a", t0.Add(121*time.Second)) {
		t.Fatal("ReleaseRelay by another holder ended b's lease")
	}
	// The retry state is written under a lease and keeps it.
	o := ms[0].Outbound[0]
	o.Attempts, o.NextTry = 1, t0.Add(time.Hour)
	if err := st.SetOutbound(ctx, o); err != nil {
		t.Fatal(err)
	}
	if lease(t, st, id, "a", t0.Add(122*time.Second)) {
		t.Fatal("SetOutbound ended the lease on its entry")
	}
	if got, err := st.OutboundEntry(ctx, RemoteDomain, id); err != nil || got != o {
		t.Errorf("OutboundEntry under a lease = %+v, %v; want %+v", got, err, o)
	}
	if err := st.ReleaseRelay(ctx, RemoteDomain, id, "b"); err != nil {
		t.Fatalf("ReleaseRelay: %v", err)
	}
	if !lease(t, st, id, "a", t0.Add(123*time.Second)) {
		t.Fatal("LeaseRelay after the holder released it refused")
	}
	testLeaseRelayNotQueued(t, st, ms)
}

// testLeaseRelayNotQueued checks that only queued messages are leased.
func testLeaseRelayNotQueued(t *testing.T, st node.Store, ms []Message) {
	ctx := context.Background()
	local := Create(t, st, Agency, t0, Court)
	if _, err := st.FinishRelay(ctx, RemoteDomain, ms[1].Msg.ID(), nil, true); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, domain, id string }{
		{"a message queued nowhere", RemoteDomain, local.Msg.ID()},
		{"a message no longer queued", RemoteDomain, ms[1].Msg.ID()},
		{"a message queued for another domain", "amtsgericht.example", ms[0].Msg.ID()},
		{"an unknown message", RemoteDomain, "0193aaaa-0000-7000-8000-000000000000"},
	} {
		if _, err := st.LeaseRelay(ctx, tt.domain, tt.id, "a", t0, t0.Add(time.Minute)); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("LeaseRelay of %s: %v, want ErrNotFound", tt.name, err)
		}
		if err := st.ReleaseRelay(ctx, tt.domain, tt.id, "a"); err != nil {
			t.Errorf("ReleaseRelay of %s: %v, want nothing done", tt.name, err)
		}
	}
	if _, err := st.LeaseRelay(ctx, RemoteDomain, ms[0].Msg.ID(), "", t0, t0.Add(time.Minute)); err == nil {
		t.Error("LeaseRelay without a holder succeeded")
	}
}

// testLeaseRelayRace has eight holders lease each message at once, as the
// processes sharing a store do: one of them gets it.
func testLeaseRelayRace(t *testing.T, open Open) {
	ctx := context.Background()
	st := open(t)
	for _, m := range queued(t, st, 10) {
		var calls []func() error
		for h := range 8 {
			calls = append(calls, func() error {
				ok, err := st.LeaseRelay(ctx, RemoteDomain, m.Msg.ID(), fmt.Sprint("holder-", h), t0, t0.Add(time.Minute))
				if err == nil && !ok {
					err = errLeased
				}
				return err
			})
		}
		oneWins(t, "LeaseRelay of "+m.Msg.ID(), race(calls...), errLeased)
	}
}

var errLeased = errors.New("leased by another holder")
