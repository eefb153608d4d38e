//go:build unix

package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckOwner: a backup or restore run as another user than the data
// directory's owner is refused before it writes anything there.
func TestCheckOwner(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	if err := checkOwner(dir, "restore"); err != nil {
		t.Fatalf("a directory yet to be made: %v", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := checkOwner(dir, "restore"); err != nil {
		t.Fatalf("the runner's own directory: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("giving the directory another owner needs root")
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	err := checkOwner(dir, "backup")
	if err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") || !strings.Contains(err.Error(), "kurierd backup") {
		t.Fatalf("a directory of uid 65534, run as root: %v", err)
	}
}
