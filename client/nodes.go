package client

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// Bounds of a node list: more processes than this serve no domain, and a
// longer string is a mistake, not a list.
const (
	maxNodes       = 16
	maxNodeListLen = 4096
)

// nodeScheme names the resolver of a node list: it is the client's own
// (grpc.WithResolvers), never registered for the whole program.
const nodeScheme = "kurier-nodes"

// roundRobin is the service config for a node list. Round robin keeps a
// connection to every process and sends each call to a ready one, in turn:
// the load is spread, and a process that stops (its connection goes away,
// or it cannot be reached again) is left out of the turn at once, so the
// retry of a call it failed goes to another. pick_first would send
// everything to one process and move on only when that connection fails.
// Client-side health checking is not enabled: a stopping node tells its
// clients at once (GOAWAY) to make new calls elsewhere anyway, and a
// health stream refused for a stale CRL would hide the node's own clear
// refusal behind "unavailable".
const roundRobin = `{"loadBalancingConfig": [{"round_robin": {}}]}`

// ParseNodes splits a node address as Dial and the --node flag take it:
// host:port, or several processes of the same node as
// host1:port,host2:port (spaces around the commas are allowed). Each
// element must name a port by number; empty and repeated elements are
// refused.
func ParseNodes(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, errors.New("no node address")
	}
	if len(list) > maxNodeListLen {
		return nil, fmt.Errorf("%d bytes; a node list has at most %d", len(list), maxNodeListLen)
	}
	parts := strings.Split(list, ",")
	if len(parts) > maxNodes {
		return nil, fmt.Errorf("%d node addresses; at most %d", len(parts), maxNodes)
	}
	if len(parts) == 1 {
		if !hasPort(parts[0]) {
			return nil, errors.New("give the node as host:port, for example kurier.stadt.example:7443")
		}
		return []string{strings.TrimSpace(parts[0])}, nil
	}
	nodes := make([]string, 0, len(parts))
	seen := make(map[string]bool, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		switch {
		case p == "":
			return nil, fmt.Errorf("element %d of %d is empty; give the nodes as host1:port,host2:port", i+1, len(parts))
		case !hasPort(p):
			return nil, fmt.Errorf("element %d, %q, has no port number; give each node as host:port, for example kurier.stadt.example:7443", i+1, p)
		case seen[p]:
			return nil, fmt.Errorf("%q is listed twice", p)
		}
		seen[p] = true
		nodes = append(nodes, p)
	}
	return nodes, nil
}

// hasPort reports whether addr is host:port with a port from 1 to 65535.
func hasPort(addr string) bool {
	_, port, err := net.SplitHostPort(strings.TrimSpace(addr))
	if err != nil {
		return false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n > 0
}

// dialTarget returns the gRPC target for nodes and the options it needs.
// One address is dialled as before: gRPC's DNS resolver, and pick_first
// over the host's addresses. Several are handed to gRPC as they are,
// through a resolver of the client's own, and balanced by roundRobin; a
// host name among them is looked up when its connection is made.
//
// Every process is held to the same certificate check: the TLS
// configuration names the domain the node must serve (pki.ClientTLS sets
// ServerName), so no address, host name or IP decides what is trusted.
func dialTarget(nodes []string) (string, []grpc.DialOption) {
	if len(nodes) == 1 {
		return nodes[0], nil
	}
	addrs := make([]resolver.Address, len(nodes))
	for i, n := range nodes {
		addrs[i] = resolver.Address{Addr: n}
	}
	r := manual.NewBuilderWithScheme(nodeScheme)
	r.InitialState(resolver.State{Addresses: addrs})
	return nodeScheme + ":///" + nodes[0], []grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(roundRobin),
	}
}
