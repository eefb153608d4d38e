//go:build !linux

package store

// lockDir refuses dir if a node has the store in it open. Here it cannot
// hold badger's lock through the swap, so only asks (see InUse); where
// InUse cannot tell, the restore is refused rather than risk a live node.
func lockDir(dir string) (func(), error) {
	busy, err := InUse(dir)
	if err != nil {
		return nil, err
	}
	if busy {
		return nil, errInUse(dir)
	}
	return func() {}, nil
}

// exchangeDirs cannot exchange directories on this system.
func exchangeDirs(a, b string) error { return errNoExchange }

// checkSameFS cannot tell a mount point here; the swap fails on one.
func checkSameFS(dir string) error { return nil }
