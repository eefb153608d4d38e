package rpc_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/broker/rpc"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/pkitest"
)

// testClock is the trust store's clock in tests: the system time moved on
// by what the test adds, so that a test can make the trust store read a new
// CRL at once, or find its CRL stale, without sleeping.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// testServer is a node behind the real gRPC server on 127.0.0.1.
type testServer struct {
	addr  string
	trust *pki.TrustStore
	clock *testClock
	node  *node.Node
	db    *store.DB
	srv   *rpc.Server
}

// startTestServer runs a node with the test federation's participants
// behind the real gRPC server with options o; encCerts, if given, replaces
// the encryption certificates of some participants in its directory.
func startTestServer(t *testing.T, o rpc.Options, encCerts ...map[string]*x509.Certificate) *testServer {
	t.Helper()
	return startSetup(t, setup{opts: o, encCerts: encCerts})
}

// setup is what a test changes of the server startSetup runs.
type setup struct {
	opts     rpc.Options
	dir      string                          // the store's directory; a new temporary one if empty
	encCerts []map[string]*x509.Certificate  // replace participants' encryption certificates
	node     func(*node.Config)              // changes the node's config
	wrap     func(*store.DB) node.Store      // puts something in front of the store
	lis      func(net.Listener) net.Listener // wraps the listener
}

// startSetup runs a node behind the real gRPC server on 127.0.0.1:0, as
// s says, with the trust store on a clock the test can move.
func startSetup(t *testing.T, s setup) *testServer {
	t.Helper()
	dir := s.dir
	if dir == "" {
		dir = t.TempDir()
	}
	db, err := store.Open(dir, store.Options{Small: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var st node.Store = db
	if s.wrap != nil {
		st = s.wrap(db)
	}
	trust, err := fx.Trust()
	if err != nil {
		t.Fatal(err)
	}
	clock := &testClock{}
	trust.SetClock(clock.now)
	cfg := node.Config{
		Domains: pkitest.Domains, Signer: pkitest.Signer(fx.Node), LogKey: fx.LogKey, Trust: trust,
		Participants: participants(s.encCerts), Logger: slog.New(slog.DiscardHandler),
	}
	if s.node != nil {
		s.node(&cfg)
	}
	n, err := node.New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if s.lis != nil {
		lis = s.lis(lis)
	}
	o := s.opts
	o.Trust = trust
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	srv, err := rpc.NewServer(n, pki.ServerTLS(fx.Node, trust, slog.New(slog.DiscardHandler)), o)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Stop(); db.Close() })
	return &testServer{addr: lis.Addr().String(), trust: trust, clock: clock, node: n, db: db, srv: srv}
}

// participants is the test federation's directory, with the encryption
// certificates of encCerts in place of the participants' own.
func participants(encCerts []map[string]*x509.Certificate) []node.Participant {
	var parts []node.Participant
	for addr, id := range fx.IDs {
		p := node.Participant{Address: addr, EncryptionCert: id.EncCert}
		for _, m := range encCerts {
			if c, ok := m[addr]; ok {
				p.EncryptionCert = c
			}
		}
		parts = append(parts, p)
	}
	return parts
}

// revoke puts serial on the CA's CRL and makes ts's trust store read it:
// its clock moves past the interval at which it looks at the file again.
func (ts *testServer) revoke(t *testing.T, serial *big.Int) {
	t.Helper()
	if err := fx.CA.Revoke(serial, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.CA.WriteCRL(24 * time.Hour); err != nil {
		t.Fatal(err)
	}
	ts.clock.advance(2 * time.Second)
}

// freshParticipant issues a new identity for addr, to be revoked by the
// test that asks for it without touching the shared ones.
func freshParticipant(t *testing.T, addr string) *pki.Identity {
	t.Helper()
	id, err := fx.CA.IssueParticipant(filepath.Join(t.TempDir(), "id"), addr)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// expiredLike returns an identity shaped like the participant certificate
// of like (subject, address, usages) and signed by the federation's CA,
// but valid only until yesterday. The CA issues nothing with a past
// validity, so this one is signed with the CA's key directly.
func expiredLike(t *testing.T, like *pki.Identity) *pki.Identity {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fx.Dir, "ca", "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("ca-key.pem holds no PEM block")
	}
	caKey, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)), Subject: like.Cert.Subject,
		EmailAddresses: like.Cert.EmailAddresses, KeyUsage: like.Cert.KeyUsage, ExtKeyUsage: like.Cert.ExtKeyUsage,
		NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour), BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, fx.CA.Certificate(), key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pki.Identity{Cert: cert, Key: key, Roots: like.Roots}
}
