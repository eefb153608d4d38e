//go:build !linux

package admin

import "fmt"

// socketAddr returns the address to bind or dial for the socket at path,
// refusing a path longer than a unix socket address may be.
func socketAddr(path string) (addr string, release func(), err error) {
	if len(path) > maxSocketPath {
		return "", nil, fmt.Errorf("the path is %d bytes, longer than the %d a unix socket may have; give the node a data directory with a shorter path", len(path), maxSocketPath)
	}
	return path, func() {}, nil
}
