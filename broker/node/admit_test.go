package node_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/pki"
)

// TestHostileRelayFlood has a peer node relay faster than the node takes
// relays from one peer: it is refused with a *LimitError, counted per
// relaying node and not per sender address, while another peer and the
// node's own participants are not held back.
func TestHostileRelayFlood(t *testing.T) {
	h := newHarness(t, node.Limits{RelayMessagesPerSecond: 0.001, RelayMessageBurst: 2})
	relay := func(peer, from string) error {
		m := newMessage(t, fx.IDs[agency], from, court)
		in := node.Incoming{Envelope: m.bytes, Signature: m.sig, Recipients: []string{court}, Chains: [][]broker.Evidence{{{DER: []byte("chain")}}}}
		_, err := h.node.Receive(context.Background(), pki.Peer{Kind: pki.KindNode, Domains: []string{peer}}, in, bytes.NewReader(m.payload))
		return err
	}
	// The chains are not real, so the relays within the limit are
	// refused too, but later, for their chains.
	for _, from := range []string{"a@landgericht.example", "b@landgericht.example"} {
		if err := relay("landgericht.example", from); err == nil || errors.Is(err, broker.ErrRateLimited) {
			t.Fatalf("relay within the limit: %v, want it refused for its chain, not by the limit", err)
		}
	}
	err := relay("landgericht.example", "c@landgericht.example")
	var lim *node.LimitError
	if !errors.As(err, &lim) || !errors.Is(err, broker.ErrRateLimited) || lim.RetryAfter <= 0 {
		t.Fatalf("third relay from one peer, another sender: %v, want a *LimitError", err)
	}
	if err := relay("verwaltungsgericht.example", "a@verwaltungsgericht.example"); errors.Is(err, broker.ErrRateLimited) {
		t.Fatalf("another peer: %v, want it not limited", err)
	}
	if _, err := h.submit(agency, newMessage(t, fx.IDs[agency], agency, court)); err != nil {
		t.Fatalf("a participant while a peer is limited: %v", err)
	}
}
