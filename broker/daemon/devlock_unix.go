//go:build unix

package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDev takes the development folder's creation lock, waiting while
// another kurierd -dev on the same folder holds it, and returns its
// release. Several processes may then start on one folder at once (on
// one PostgreSQL database): the first creates the CA, identities and log
// key, the others wait for it and reuse them.
func lockDev(dir string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, devLockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock the development folder: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock the development folder: %w", err)
	}
	return func() { f.Close() }, nil // closing the file lets the lock go
}
