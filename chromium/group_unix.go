//go:build unix

package chromium

import (
	"os/exec"
	"syscall"
)

// ownGroup starts cmd as the leader of a process group of its own, and
// makes cancelling it kill the whole group, not only the browser.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

// killGroup kills whatever is left of cmd's process group once cmd has
// ended: helpers that outlived the browser.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
