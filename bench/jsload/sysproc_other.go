//go:build unix && !linux

package jsload

import "syscall"

// childAttr puts the server child in a process group of its own, so that
// a terminal's signals reach only this process, which then stops the
// child.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
