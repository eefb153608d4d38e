package pki

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// crlRecheck is how often, at most, a TrustStore looks at the CRL file for
// changes: a handshake storm must not turn into a stat storm.
const crlRecheck = time.Second

// TrustStore holds the federation's trust anchors and the CA's CRL; every
// certificate verification in a node and in a client goes through one.
// It is safe for concurrent use.
type TrustStore struct {
	roots   []*x509.Certificate
	pool    *x509.CertPool
	crlPath string
	static  bool // the CRL was given as bytes: nothing to re-read

	clock   atomic.Pointer[func() time.Time] // SetClock's; time.Now unless set
	recheck time.Duration

	chains  chainCache // chains Verify built, by leaf, intermediates and usages
	watcher atomic.Pointer[func(*x509.RevocationList, error)]

	mu        sync.Mutex // guards the fields below
	checkedAt time.Time  // when the file was last stat'ed
	file      os.FileInfo
	crl       *x509.RevocationList
	revoked   map[string]bool // serials (big.Int.String) listed in crl
	loadErr   error           // why the current file could not be used
}

// NewTrustStore returns a trust store over roots and the CRL at crlPath,
// which it reads now and re-reads whenever the file changes (checked at
// most once a second).
//
// The CRL must be signed by one of roots and be fresh (NextUpdate in the
// future) whenever it is used; a CRL file that is missing, unreadable,
// forged or stale makes every check fail (fail closed), and NewTrustStore
// itself returns that error.
//
// crlPath "" means no revocation checking at all. Only a client that
// cannot reach a CRL may do that (for instance a library user verifying a
// downloaded evidence bundle that carries no CRL); a node always passes one.
func NewTrustStore(roots []*x509.Certificate, crlPath string) (*TrustStore, error) {
	if len(roots) == 0 {
		return nil, errors.New("new trust store: no roots")
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		if !r.IsCA {
			return nil, fmt.Errorf("new trust store: root %q is not a CA certificate", r.Subject)
		}
		pool.AddCert(r)
	}
	t := &TrustStore{roots: roots, pool: pool, crlPath: crlPath, recheck: crlRecheck}
	t.SetClock(time.Now)
	if crlPath != "" {
		if _, err := t.currentCRL(); err != nil {
			return nil, fmt.Errorf("new trust store: %w", err)
		}
	}
	return t, nil
}

// NewTrustStoreWithCRL returns a trust store over roots and a CRL given as
// DER bytes, as a client gets it from its node. The CRL must be signed by
// one of roots, which is what makes it safe to take from anyone; it is
// checked for freshness at every use, like a CRL file.
func NewTrustStoreWithCRL(roots []*x509.Certificate, der []byte) (*TrustStore, error) {
	t, err := NewTrustStore(roots, "")
	if err != nil {
		return nil, err
	}
	t.crlPath, t.static = "the CRL received from the node", true
	crl, revoked, err := t.parseCRL(der)
	if err != nil {
		return nil, fmt.Errorf("new trust store: crl: %w", err)
	}
	t.crl, t.revoked = crl, revoked
	if _, err := t.currentCRL(); err != nil {
		return nil, fmt.Errorf("new trust store: %w", err)
	}
	return t, nil
}

// NewTrustStoreWithCRLAt is NewTrustStoreWithCRL for judging the past, as
// an offline verifier of an evidence bundle must: the CRL's freshness is
// judged at the time at (the CRL must not have been due for renewal then)
// instead of now. at is a time the caller can vouch for, such as the time
// of the evidence being checked; a CRL that was current when a bundle was
// exported thereby stays usable for the evidence in it, years later.
func NewTrustStoreWithCRLAt(roots []*x509.Certificate, der []byte, at time.Time) (*TrustStore, error) {
	if at.IsZero() {
		return nil, errors.New("new trust store: no time to judge the CRL at")
	}
	t, err := NewTrustStore(roots, "")
	if err != nil {
		return nil, err
	}
	t.crlPath, t.static = "the given CRL", true
	t.SetClock(func() time.Time { return at })
	crl, revoked, err := t.parseCRL(der)
	if err != nil {
		return nil, fmt.Errorf("new trust store: crl: %w", err)
	}
	t.crl, t.revoked = crl, revoked
	return t, nil
}

// SetClock makes the store judge the CRL's freshness, and when to look at
// the file again, by now instead of the system clock, for a node whose
// clock is injected and for tests that move time on. Certificate validity
// in Verify is judged at the time its caller passes, as before. It may be
// called at any time.
func (t *TrustStore) SetClock(now func() time.Time) { t.clock.Store(&now) }

// now is the store's clock.
func (t *TrustStore) now() time.Time { return (*t.clock.Load())() }

// RevocationList returns the parsed CRL, signature checked, for showing
// what it says; nil for a store without one.
func (t *TrustStore) RevocationList() *x509.RevocationList {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.crl
}

// CRL returns the current CRL as DER, for publishing it to clients or
// putting it into an evidence bundle; it fails like CheckRevoked when the
// CRL is unusable, and with ErrNoCRL for a store without one.
func (t *TrustStore) CRL() ([]byte, error) {
	if t.crlPath == "" {
		return nil, fmt.Errorf("%w: this trust store was given none", ErrNoCRL)
	}
	state, err := t.currentCRL()
	if err != nil {
		return nil, err
	}
	return state.crl.Raw, nil
}

// Roots returns the trust anchors as a pool, for TLS configs.
func (t *TrustStore) Roots() *x509.CertPool { return t.pool }

// HasCRL reports whether the store checks revocation (it was given a CRL
// path).
func (t *TrustStore) HasCRL() bool { return t.crlPath != "" }

// CheckRevoked checks every certificate in chain that was issued by the
// CRL's issuer against the CRL, and returns an error wrapping ErrRevoked,
// naming the serial in hex, for the first one listed. A self-signed root
// ends the chain and needs no lookup; any other certificate issued by
// someone the CRL does not speak for (a leaf under an intermediate, which
// would need that intermediate's own CRL) fails with ErrNoCRL, so that
// revocation never passes unchecked. It fails if the CRL is unusable
// (missing, forged: errors; past NextUpdate: ErrCRLStale). A store without
// a CRL returns nil.
func (t *TrustStore) CheckRevoked(chain []*x509.Certificate) error {
	return t.checkRevoked(chain, t.now())
}

// CheckRevokedAt is CheckRevoked for a signature made at the time at: the
// CRL must not have been due for renewal then. Offline verifiers of old
// evidence use it with the evidence's time; everyone else uses
// CheckRevoked, which judges the CRL now.
func (t *TrustStore) CheckRevokedAt(chain []*x509.Certificate, at time.Time) error {
	return t.checkRevoked(chain, at)
}

func (t *TrustStore) checkRevoked(chain []*x509.Certificate, at time.Time) error {
	if t.crlPath == "" {
		return nil
	}
	state, err := t.crlAt(at)
	if err != nil {
		return fmt.Errorf("check revocation: %w", err)
	}
	for _, c := range chain {
		if !issuedBy(c, state.crl) {
			if bytes.Equal(c.RawIssuer, c.RawSubject) && c.IsCA {
				continue // a trust anchor
			}
			return fmt.Errorf("%w: %q is issued by %q", ErrNoCRL, c.Subject, c.Issuer)
		}
		if state.revoked[c.SerialNumber.String()] {
			return fmt.Errorf("%w: serial %x (%q)", ErrRevoked, c.SerialNumber, c.Subject)
		}
	}
	return nil
}

// Verify verifies cert as an end-entity certificate: a chain through
// intermediates to one of the roots, valid at the time at, allowing every
// EKU in usages (none given: any EKU), then CheckRevoked on that chain. It
// returns the chain, leaf first.
//
// Callers pass the current time, or a time they can prove (a log entry's),
// never a time the signer claims. Revocation is judged by the current CRL
// whatever at is: a certificate revoked today fails for signatures made
// before, which errs on the side of refusing.
func (t *TrustStore) Verify(cert *x509.Certificate, intermediates []*x509.Certificate, at time.Time, usages ...x509.ExtKeyUsage) ([]*x509.Certificate, error) {
	if cert == nil {
		return nil, errors.New("verify: no certificate")
	}
	if at.IsZero() {
		return nil, errors.New("verify: no verification time")
	}
	if cert.IsCA {
		return nil, fmt.Errorf("verify %q: a CA certificate is not an end entity", cert.Subject)
	}
	if len(usages) == 0 {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	}
	key := chainKeyOf(cert, intermediates, usages)
	chain, ok := t.chains.get(key)
	if !ok || !validAt(chain, at) {
		inter := x509.NewCertPool()
		for _, c := range intermediates {
			inter.AddCert(c)
		}
		chains, err := cert.Verify(x509.VerifyOptions{
			Roots:         t.pool,
			Intermediates: inter,
			CurrentTime:   at,
			KeyUsages:     usages,
		})
		if err != nil {
			return nil, fmt.Errorf("verify %q: %w", cert.Subject, err)
		}
		chain = chains[0]
		t.chains.put(key, chain)
	}
	if err := t.CheckRevoked(chain); err != nil {
		return nil, fmt.Errorf("verify %q: %w", cert.Subject, err)
	}
	return slices.Clone(chain), nil
}

// chainCache keeps the chains Verify has built. Building one checks a
// signature per link (tens of µs each), and a node verifies the same few
// certificates, its participants' and its peers', for every message. A
// chain depends only on the leaf, the intermediates offered, the usages
// asked for and the store's roots, which never change; what depends on
// the time (each certificate's validity) is checked on every use, and so
// is revocation (CheckRevoked), so a cached chain answers exactly as a
// new one would.
type chainCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte][]*x509.Certificate
}

// maxCachedChains bounds the cache; when it is full it starts afresh, so
// certificates nobody uses any more do not stay.
const maxCachedChains = 4096

func (c *chainCache) get(k [sha256.Size]byte) ([]*x509.Certificate, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	chain, ok := c.m[k]
	return chain, ok
}

func (c *chainCache) put(k [sha256.Size]byte, chain []*x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedChains {
		c.m = make(map[[sha256.Size]byte][]*x509.Certificate)
	}
	c.m[k] = chain
}

// chainKeyOf identifies what a chain was built from: the leaf, the
// intermediates (in order) and the usages.
func chainKeyOf(cert *x509.Certificate, intermediates []*x509.Certificate, usages []x509.ExtKeyUsage) [sha256.Size]byte {
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field(cert.Raw)
	for _, c := range intermediates {
		field(c.Raw)
	}
	for _, u := range usages {
		field(binary.BigEndian.AppendUint32(nil, uint32(u)))
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// validAt reports whether every certificate of chain is valid at the time
// at, as x509's verification judges it.
func validAt(chain []*x509.Certificate, at time.Time) bool {
	for _, c := range chain {
		if at.Before(c.NotBefore) || at.After(c.NotAfter) {
			return false
		}
	}
	return true
}

// crlState is a parsed, signature-checked CRL.
type crlState struct {
	crl     *x509.RevocationList
	revoked map[string]bool
}

// currentCRL returns the CRL, re-reading the file if it changed since the
// last look (at most once per recheck interval), and checks that it is
// still fresh.
func (t *TrustStore) currentCRL() (crlState, error) { return t.crlAt(t.now()) }

// crlAt is currentCRL with freshness judged at the time at. It tells
// the watcher (SetCRLWatcher) of a change it saw, once the store is
// unlocked.
func (t *TrustStore) crlAt(at time.Time) (crlState, error) {
	st, change, err := t.crlAtLocked(at)
	if w := t.watcher.Load(); change != nil && w != nil {
		(*w)(change.crl, change.err)
	}
	return st, err
}

// crlChange is a CRL file taken up (crl) or found unusable (err).
type crlChange struct {
	crl *x509.RevocationList
	err error
}

// SetCRLWatcher makes the store call fn whenever it takes up a changed
// CRL file, or finds the file it watches unusable: for the node's audit
// log. fn runs on the goroutine of the check that noticed, after the
// store is unlocked, and must not block.
func (t *TrustStore) SetCRLWatcher(fn func(crl *x509.RevocationList, err error)) {
	t.watcher.Store(&fn)
}

func (t *TrustStore) crlAtLocked(at time.Time) (crlState, *crlChange, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var change *crlChange
	if !t.static && (t.checkedAt.IsZero() || now.Sub(t.checkedAt) >= t.recheck || now.Before(t.checkedAt)) {
		t.checkedAt = now
		before, beforeErr := t.crl, t.loadErr
		t.refreshLocked()
		if t.crl != before || (t.loadErr != nil && beforeErr == nil) {
			change = &crlChange{crl: t.crl, err: t.loadErr}
		}
	}
	st, err := t.stateLocked(at)
	return st, change, err
}

// stateLocked returns the CRL held, if it is fresh at the time at.
func (t *TrustStore) stateLocked(at time.Time) (crlState, error) {
	if t.loadErr != nil {
		return crlState{}, t.loadErr
	}
	if !at.Before(t.crl.NextUpdate) {
		return crlState{}, fmt.Errorf("%w: %s was due for renewal at %s (now %s); run `kurier pki crl` on the CA and publish the new CRL",
			ErrCRLStale, t.crlPath, t.crl.NextUpdate.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	}
	return crlState{crl: t.crl, revoked: t.revoked}, nil
}

// refreshLocked re-reads the CRL file if its identity, size or mtime
// changed. On any failure the store keeps no CRL: an unusable file is
// never silently replaced by an older good one.
func (t *TrustStore) refreshLocked() {
	fi, err := os.Stat(t.crlPath)
	if err != nil {
		t.file, t.crl, t.revoked, t.loadErr = nil, nil, nil, fmt.Errorf("read crl: %w", err)
		return
	}
	if t.file != nil && os.SameFile(t.file, fi) && t.file.Size() == fi.Size() && t.file.ModTime().Equal(fi.ModTime()) {
		return
	}
	crl, revoked, err := t.loadCRL()
	t.file = fi
	if err != nil {
		t.crl, t.revoked, t.loadErr = nil, nil, fmt.Errorf("crl %s: %w", t.crlPath, err)
		return
	}
	t.crl, t.revoked, t.loadErr = crl, revoked, nil
}

func (t *TrustStore) loadCRL() (*x509.RevocationList, map[string]bool, error) {
	data, err := readFile(t.crlPath)
	if err != nil {
		return nil, nil, err
	}
	der := data
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != pemCRL {
			return nil, nil, fmt.Errorf("unexpected PEM block %q, want %q", block.Type, pemCRL)
		}
		der = block.Bytes
	}
	return t.parseCRL(der)
}

// parseCRL parses a DER CRL and checks that one of the roots signed it.
func (t *TrustStore) parseCRL(der []byte) (*x509.RevocationList, map[string]bool, error) {
	if len(der) > maxPEMFile {
		return nil, nil, fmt.Errorf("%d bytes, at most %d", len(der), maxPEMFile)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	var signer *x509.Certificate
	for _, r := range t.roots {
		if bytes.Equal(r.RawSubject, crl.RawIssuer) && crl.CheckSignatureFrom(r) == nil {
			signer = r
			break
		}
	}
	if signer == nil {
		return nil, nil, fmt.Errorf("not signed by a trusted root (issuer %q)", crl.Issuer)
	}
	revoked := make(map[string]bool, len(crl.RevokedCertificateEntries))
	for _, e := range crl.RevokedCertificateEntries {
		revoked[e.SerialNumber.String()] = true
	}
	return crl, revoked, nil
}

// issuedBy reports whether cert falls under crl: same issuer name and, when
// both carry one, the same authority key.
func issuedBy(cert *x509.Certificate, crl *x509.RevocationList) bool {
	if !bytes.Equal(cert.RawIssuer, crl.RawIssuer) {
		return false
	}
	if len(cert.AuthorityKeyId) > 0 && len(crl.AuthorityKeyId) > 0 {
		return bytes.Equal(cert.AuthorityKeyId, crl.AuthorityKeyId)
	}
	return true
}
