package admin

import (
	"context"
	"net"
	"syscall"
)

type peerKey struct{}

// withPeer records the connecting process's user id, as the kernel
// reports it (SO_PEERCRED), in the connection's context.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *syscall.Ucred
	if err := raw.Control(func(fd uintptr) {
		cred, err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cred == nil {
		return context.WithValue(ctx, peerKey{}, -1) // unknown: refused
	}
	return context.WithValue(ctx, peerKey{}, int(cred.Uid))
}

// peerFrom returns the connecting user's id; known is false if the
// system cannot tell.
func peerFrom(ctx context.Context) (uid int, known bool) {
	uid, ok := ctx.Value(peerKey{}).(int)
	if !ok {
		return -1, true // not a unix connection: refused
	}
	return uid, true
}
