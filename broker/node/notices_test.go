package node_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
)

// bus carries notices among the nodes of one store within the test, as
// PostgreSQL's LISTEN and NOTIFY carry them among processes (package
// pgnotify, which TestNode_NoticesThroughPostgres and the integration
// test run for real): every Publish reaches every other node's
// Announce. fail makes Publish fail, as a lost database connection
// would.
type bus struct {
	mu    sync.Mutex
	nodes []*node.Node
	fail  error
}

// busEnd is one node's end of the bus: what it publishes reaches the
// other nodes.
type busEnd struct {
	b    *bus
	self int
}

func (e busEnd) Publish(ctx context.Context, recipient, messageID string) error {
	e.b.mu.Lock()
	nodes, fail := e.b.nodes, e.b.fail
	e.b.mu.Unlock()
	if fail != nil {
		return fail
	}
	for i, n := range nodes {
		if i == e.self {
			continue
		}
		if err := n.Announce(ctx, recipient, messageID); err != nil {
			return err
		}
	}
	return nil
}

// next returns the next notice on ch, or fails.
func next(t *testing.T, ch <-chan broker.InboxEntry) broker.InboxEntry {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no notice within 5s")
		return broker.InboxEntry{}
	}
}

// none checks that nothing more is on ch.
func none(t *testing.T, ch <-chan broker.InboxEntry) {
	t.Helper()
	select {
	case e := <-ch:
		t.Fatalf("an extra notice of %s", e.Message.ID())
	default:
	}
}

// TestNode_SubscribeNotices: with Notices, a message accepted by one
// node of a store is announced, once, to subscribers of every node of
// it; a notice of a copy the store does not hold announces nothing; and
// a notice that cannot be published still reaches the accepting node's
// own subscribers.
func TestNode_SubscribeNotices(t *testing.T) {
	h := newHarness(t, node.Limits{})
	b := &bus{}
	one, two := h.newNode(node.Limits{}, busEnd{b, 0}), h.newNode(node.Limits{}, busEnd{b, 1})
	b.nodes = []*node.Node{one, two}
	chOne, cancelOne, err := one.Subscribe(participant(court))
	if err != nil {
		t.Fatal(err)
	}
	defer cancelOne()
	chTwo, cancelTwo, err := two.Subscribe(participant(court))
	if err != nil {
		t.Fatal(err)
	}
	defer cancelTwo()
	submit := func(n *node.Node, m *message) {
		t.Helper()
		if _, err := n.Submit(context.Background(), participant(agency), m.bytes, m.sig, bytes.NewReader(m.payload)); err != nil {
			t.Fatal(err)
		}
	}

	m := newMessage(t, fx.IDs[agency], agency, court)
	submit(one, m)
	for name, ch := range map[string]<-chan broker.InboxEntry{"accepting": chOne, "other": chTwo} {
		if e := next(t, ch); e.Message.ID() != m.env.ID || e.Copy.Recipient != court {
			t.Errorf("the %s node announced %s to %s, want %s to %s", name, e.Message.ID(), e.Copy.Recipient, m.env.ID, court)
		}
		none(t, ch)
	}

	// Notices that name what the store does not hold. A mailbox without
	// subscribers is not looked up at all.
	for name, tc := range map[string]struct {
		recipient, id string
		subscribed    bool
		want          error
	}{
		"unknown message":   {court, "0190c3a1-7d1e-7000-8000-00000000dead", true, broker.ErrNotFound},
		"no such copy":      {agency, m.env.ID, true, broker.ErrNotFound},
		"nobody subscribed": {other, m.env.ID, false, nil},
	} {
		t.Run(name, func(t *testing.T) {
			ch := chTwo
			if tc.subscribed && tc.recipient != court {
				var cancel func()
				if ch, cancel, err = two.Subscribe(participant(tc.recipient)); err != nil {
					t.Fatal(err)
				}
				defer cancel()
			}
			if err := two.Announce(context.Background(), tc.recipient, tc.id); !errors.Is(err, tc.want) {
				t.Errorf("Announce = %v, want %v", err, tc.want)
			}
			none(t, ch)
		})
	}

	b.mu.Lock()
	b.fail = errors.New("connection lost")
	b.mu.Unlock()
	lost := newMessage(t, fx.IDs[agency], agency, court)
	submit(two, lost)
	if e := next(t, chTwo); e.Message.ID() != lost.env.ID {
		t.Errorf("the accepting node announced %s, want %s", e.Message.ID(), lost.env.ID)
	}
	none(t, chTwo)
	none(t, chOne) // the notice is lost to the other; its inbox lists the message
}

// TestNode_AnnounceOnlyWaiting: a notice of a copy that is no longer
// waiting to be fetched (another process's subscriber fetched it before
// the notice arrived) wakes no subscriber.
func TestNode_AnnounceOnlyWaiting(t *testing.T) {
	h := newHarness(t, node.Limits{})
	ctx := context.Background()
	m := newMessage(t, fx.IDs[agency], agency, court)
	if _, err := h.submit(agency, m); err != nil {
		t.Fatal(err)
	}
	_, _, r, err := h.node.Fetch(ctx, participant(court), m.env.ID)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if _, err := h.node.Retrieved(ctx, participant(court), m.env.ID); err != nil {
		t.Fatal(err)
	}
	ch, cancel, err := h.node.Subscribe(participant(court))
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if err := h.node.Announce(ctx, court, m.env.ID); !errors.Is(err, broker.ErrState) {
		t.Errorf("Announce of a retrieved copy = %v, want ErrState", err)
	}
	none(t, ch)
}
