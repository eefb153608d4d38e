// Package diskspacetest gives tests a real filesystem of a set size to
// fill: a tmpfs, so that a full disk is a real full disk (ENOSPC, and
// SIGBUS for a memory-mapped write past the end of the space), not a
// fake.
package diskspacetest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Tmpfs mounts a tmpfs of size bytes on dir (made if missing; a new
// temporary folder if dir is "") and returns dir; the test's cleanup
// unmounts it. Mounting needs root: where it is not permitted the test is
// skipped with a line saying so, except under CI=true, where it fails.
func Tmpfs(t testing.TB, dir string, size int64) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("a full disk is made with a tmpfs, which needs root (run the test as root): mount: %v: %s", err, strings.TrimSpace(string(out)))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}
