//go:build linux

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// lockDir takes the lock badger takes on an open store's directory, an
// exclusive flock(2) on dir, without waiting: it fails if a node has the
// store open, and while it is held no node can open one there. The
// returned function lets it go.
func lockDir(dir string) (func(), error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	switch err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB); {
	case errors.Is(err, unix.EWOULDBLOCK):
		d.Close()
		return nil, errInUse(dir)
	case err != nil:
		d.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { d.Close() }, nil // closing it lets the lock go
}

// exchangeDirs exchanges the directories at a and b atomically, or returns
// errNoExchange if the kernel or the file system cannot.
func exchangeDirs(a, b string) error {
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		return errNoExchange
	}
	if err != nil {
		return fmt.Errorf("exchange %s and %s: %w", a, b, err)
	}
	return nil
}

// checkSameFS refuses dir if it is a mount point: the working directory,
// beside it, would be on another file system, and could not take its
// place.
func checkSameFS(dir string) error {
	var d, p unix.Stat_t
	if err := unix.Stat(dir, &d); err != nil {
		return err
	}
	if err := unix.Stat(filepath.Dir(dir), &p); err != nil {
		return err
	}
	if d.Dev != p.Dev {
		return fmt.Errorf("it is a mount point: the restore builds the store beside it, on the same file system, and then puts it in its place; set data to a directory inside the mounted file system (such as %s)",
			filepath.Join(dir, "store"))
	}
	return nil
}
