//go:build !linux

package pgtest

import "syscall"

// serverAttr runs the server as cred (nil: as the test binary's user).
// Outside Linux nothing stops a server whose test binary died without
// stopping it.
func serverAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}
