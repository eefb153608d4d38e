package rpc

import (
	"net"

	"google.golang.org/grpc/credentials"
)

// watchedCreds tells of every connection whose TLS handshake fails: a
// client without a certificate of the federation, revoked, or refused by
// pki.ServerTLS's checks never reaches a call, so no interceptor sees it.
type watchedCreds struct {
	credentials.TransportCredentials
	failed func(remote net.Addr, err error)
}

// ServerHandshake is the TLS handshake, told of when it fails.
func (c watchedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		c.failed(raw.RemoteAddr(), err)
	}
	return conn, info, err
}

// Clone keeps the watch on a copy.
func (c watchedCreds) Clone() credentials.TransportCredentials {
	return watchedCreds{TransportCredentials: c.TransportCredentials.Clone(), failed: c.failed}
}
