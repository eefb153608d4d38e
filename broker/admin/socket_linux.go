package admin

import (
	"fmt"
	"os"
	"path/filepath"
)

// socketAddr returns the address to bind or dial for the socket at path:
// path itself, or, if it is longer than a unix socket address may be, the
// same file reached through /proc/self/fd of its folder, opened here;
// release closes that folder once the address is no longer used (after
// the dial, or when the listener is closed).
func socketAddr(path string) (addr string, release func(), err error) {
	if len(path) <= maxSocketPath {
		return path, func() {}, nil
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return "", nil, err
	}
	addr = fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), filepath.Base(path))
	return addr, func() { d.Close() }, nil
}
