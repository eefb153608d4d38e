// Package daemontest runs the development node (kurierd -dev) in process,
// for the tests of packages built on a node: the real setup, over real
// mutual TLS on 127.0.0.1 and a real badger store.
package daemontest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/pki"
)

// Node is a running development node.
type Node struct {
	Dir    string // the development directory: CA, node, identities, store
	Addr   string // host:port it listens on
	CRL    string // the CA's CRL file
	Agency *pki.Identity
	Court  *pki.Identity

	cfg    *daemon.Config
	cancel context.CancelFunc
	done   chan error
}

// Start sets up (or reuses) the development directory dir and runs a node
// on 127.0.0.1 with a free port. The node logs to stderr if KURIER_TEST_LOG
// is set.
func Start(dir string) (*Node, error) {
	cfg, err := daemon.Dev(dir, "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	n := &Node{Dir: dir, CRL: cfg.CRL}
	if n.Agency, err = pki.LoadIdentity(daemon.DevIdentity(dir, "agency")); err != nil {
		return nil, err
	}
	if n.Court, err = pki.LoadIdentity(daemon.DevIdentity(dir, "court")); err != nil {
		return nil, err
	}
	return n.run(cfg)
}

// StartReplica runs another process of n's node: the same configuration,
// domains and node identity on another free port of 127.0.0.1, with a
// store of its own in data. Clients that fail over (client.Dial with
// several addresses) see one node; as the stores are apart, a message
// is only in the store of the process it was submitted to.
func (n *Node) StartReplica(data string) (*Node, error) {
	cfg := *n.cfg
	cfg.Listen, cfg.Data = "127.0.0.1:0", data
	r := *n
	return r.run(&cfg)
}

// run runs a node of cfg for n and returns n once it listens.
func (n *Node) run(cfg *daemon.Config) (*Node, error) {
	n.cfg, n.done = cfg, make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("KURIER_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	ready := make(chan net.Addr, 1)
	go func() { n.done <- daemon.Run(ctx, cfg, logger, func(a net.Addr) { ready <- a }) }()
	select {
	case a := <-ready:
		n.Addr = a.String()
		return n, nil
	case err := <-n.done:
		cancel()
		return nil, err
	case <-time.After(30 * time.Second):
		cancel()
		return nil, errors.New("node did not start within 30s")
	}
}

// Stop stops the node and returns what it ended with.
func (n *Node) Stop() error {
	n.cancel()
	return <-n.done
}

// Main is a test package's TestMain around one development node: it starts
// the node in a fresh temporary directory, calls setUp (which may be nil)
// to build the package's fixture, runs the tests, stops the node, removes
// the directory and exits with the tests' code.
func Main(m *testing.M, setUp func(n *Node) error) {
	os.Exit(run(m, setUp))
}

func run(m *testing.M, setUp func(n *Node) error) int {
	// A fuzzing worker gets its inputs from the coordinating process, which
	// has the fixture; starting a node in every worker would leave no time
	// to fuzz.
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "kurier-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	n, err := Start(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start node:", err)
		return 1
	}
	defer func() {
		if err := n.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "node:", err)
		}
	}()
	if setUp != nil {
		if err := setUp(n); err != nil {
			fmt.Fprintln(os.Stderr, "set up the fixture:", err)
			return 1
		}
	}
	return m.Run()
}

// Dial connects a client as id to the node, checking certificates against
// the CA's CRL file.
func (n *Node) Dial(ctx context.Context, id *pki.Identity) (*client.Client, error) {
	return client.Dial(ctx, n.Addr, id, client.WithCRL(n.CRL))
}
