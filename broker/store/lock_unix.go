//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// InUse reports whether a process has the store in dir open: badger holds
// an exclusive flock(2) on the directory while it is open, and InUse asks
// for the same lock without waiting (and lets it go at once). A directory
// that does not exist is not in use. kurierd backup asks it to choose
// between the running node's admin socket and opening the store itself.
func InUse(dir string) (bool, error) {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("see whether the store %s is in use: %w", dir, err)
	}
	defer d.Close()
	switch err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); {
	case errors.Is(err, syscall.EWOULDBLOCK):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("see whether the store %s is in use: %w", dir, err)
	}
	syscall.Flock(int(d.Fd()), syscall.LOCK_UN) // closing the file lets it go too
	return false, nil
}
