package pgtest

import "syscall"

// serverAttr runs the server as cred (nil: as the test binary's user) and
// has it shut down fast when the thread that started it ends.
func serverAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGINT}
}
