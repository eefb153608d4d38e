//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package store

import "errors"

// InUse reports whether a process has the store in dir open. On this
// system it cannot tell (badger's lock is not a flock(2) here).
func InUse(dir string) (bool, error) {
	return false, errors.New("cannot tell on this system whether the store is in use; stop the node, or back up through its admin socket")
}
