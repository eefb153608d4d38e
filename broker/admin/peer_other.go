//go:build !linux

package admin

import (
	"context"
	"net"
)

// withPeer does nothing here: this system's peer credentials are not
// asked; the modes of the socket and its folder keep others out.
func withPeer(ctx context.Context, _ net.Conn) context.Context { return ctx }

// peerFrom cannot tell who connected on this system.
func peerFrom(context.Context) (uid int, known bool) { return -1, false }
