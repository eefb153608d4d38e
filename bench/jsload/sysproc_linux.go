package jsload

import "syscall"

// childAttr puts the server child in a process group of its own, so that
// a terminal's signals reach only this process, which then stops the
// child, and has the kernel kill the child if this process dies first.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
