//go:build !unix

package chromium

import "os/exec"

// ownGroup leaves cmd as it is: without Unix process groups, cancelling
// kills the browser alone.
func ownGroup(cmd *exec.Cmd) {}

// killGroup has nothing to kill beyond what cancelling did.
func killGroup(cmd *exec.Cmd) {}
