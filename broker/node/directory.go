package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/pki"
)

// How long the node trusts another node's directory answers. An entry
// older than remoteRefresh is still used, and asked for again in the
// background; until remoteMaxAge it serves while the other node cannot be
// reached, so that a short outage only delays relay. An answer that a
// mailbox does not exist is kept for remoteNegative, so that a new
// mailbox is found soon.
const (
	remoteRefresh  = time.Hour
	remoteMaxAge   = 24 * time.Hour
	remoteNegative = time.Minute
	// refreshTimeout bounds one background refresh.
	refreshTimeout = 30 * time.Second
	// maxRemoteEntries bounds the cache; past it the oldest entries go.
	maxRemoteEntries = 10000
)

// remoteDirectory caches what other nodes' directories answered.
type remoteDirectory struct {
	mu         sync.Mutex
	entries    map[string]remoteEntry
	refreshing map[string]bool
}

// startRefresh reports whether the caller should refresh addr, and marks
// it as being refreshed; finish with endRefresh.
func (d *remoteDirectory) startRefresh(addr string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.refreshing[addr] {
		return false
	}
	if d.refreshing == nil {
		d.refreshing = map[string]bool{}
	}
	d.refreshing[addr] = true
	return true
}

func (d *remoteDirectory) endRefresh(addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.refreshing, addr)
}

type remoteEntry struct {
	p       Participant
	found   bool
	fetched time.Time
}

func (d *remoteDirectory) get(addr string) (remoteEntry, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.entries[addr]
	return e, ok
}

func (d *remoteDirectory) put(addr string, e remoteEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.entries == nil {
		d.entries = make(map[string]remoteEntry)
	}
	if _, ok := d.entries[addr]; !ok && len(d.entries) >= maxRemoteEntries {
		// A full cache first gives up an answer that a mailbox does not
		// exist, so that questions about made-up addresses cannot push out
		// the answers that carry senders through an outage.
		if !e.found {
			return
		}
		victim := ""
		for a, x := range d.entries {
			if victim == "" || evictBefore(x, d.entries[victim]) {
				victim = a
			}
		}
		delete(d.entries, victim)
	}
	d.entries[addr] = e
}

// evictBefore reports whether x leaves a full cache before y: negative
// answers first, then the oldest.
func evictBefore(x, y remoteEntry) bool {
	if x.found != y.found {
		return !x.found
	}
	return x.fetched.Before(y.fetched)
}

// Lookup returns the directory entry of an address, local or at another
// domain's node. It returns an error wrapping broker.ErrNotFound if there
// is no such mailbox or no node for its domain is known,
// broker.ErrState if the mailbox's encryption certificate is not valid now
// (revoked or expired: no sender may encrypt to it), broker.ErrSignature
// if another node answered with a certificate for someone else, and
// broker.ErrUnavailable if the other node cannot be reached and has not
// answered for the address within the last 24 hours, or if this node's
// CRL is out of date.
//
// Security: an entry from another node is used only if its encryption
// certificate verifies under the federation's trust anchors now and names
// exactly the address asked for; the check is repeated on every use, so a
// revoked or expired certificate stops being served at once.
func (n *Node) Lookup(ctx context.Context, addr string) (Participant, error) {
	domain := address.DomainOf(addr)
	if n.domains[domain] {
		return n.localEntry(addr)
	}
	if n.peers == nil || !n.peers.Knows(domain) {
		return Participant{}, fmt.Errorf("%w: no mailbox %s: no node for domain %s is known to this node", broker.ErrNotFound, addr, domain)
	}
	now := n.now()
	cached, ok := n.remote.get(addr)
	age := now.Sub(cached.fetched)
	switch {
	case ok && cached.found && age < remoteRefresh, ok && !cached.found && age < remoteNegative:
	case ok && cached.found && age < remoteMaxAge:
		n.refreshInBackground(addr)
	default:
		p, found, err := n.peers.Lookup(ctx, addr)
		switch {
		case errors.Is(err, broker.ErrUnavailable):
			return Participant{}, fmt.Errorf("look up %s: %w; try again later", addr, err)
		case err != nil:
			return Participant{}, fmt.Errorf("look up %s at the node of %s: %w", addr, domain, err)
		}
		cached = remoteEntry{p: p, found: found, fetched: now}
		n.remote.put(addr, cached)
	}
	if !cached.found {
		return Participant{}, fmt.Errorf("%w: no mailbox %s at the node of %s", broker.ErrNotFound, addr, domain)
	}
	if err := n.checkEntry(cached.p, addr); err != nil {
		// The entry stays, so that the refusal stands while addr's node is
		// down (a sender is not told to try again for a revoked
		// certificate), and is asked for again, so that a certificate its
		// holder renewed is found soon.
		n.refreshInBackground(addr)
		return Participant{}, err
	}
	return cached.p, nil
}

// refreshInBackground asks addr's node for its entry again, unless that
// is under way already, and keeps the new answer. While the node cannot be
// reached, the old answer stays.
func (n *Node) refreshInBackground(addr string) {
	if !n.remote.startRefresh(addr) {
		return
	}
	n.background.Go(func() {
		defer n.remote.endRefresh(addr)
		ctx, cancel := context.WithTimeout(n.stopping, refreshTimeout)
		defer cancel()
		p, found, err := n.peers.Lookup(ctx, addr)
		if err != nil {
			n.log.Warn("directory of another node unreachable; using its earlier answer", slog.String(broker.LogMailbox, addr), slog.Any(broker.LogErr, err))
			return
		}
		n.remote.put(addr, remoteEntry{p: p, found: found, fetched: n.now()})
	})
}

// checkEntry checks another node's directory entry for addr.
func (n *Node) checkEntry(p Participant, addr string) error {
	cert := p.EncryptionCert
	if p.Address != addr || cert == nil || !slices.Equal(cert.EmailAddresses, []string{addr}) {
		return fmt.Errorf("%w: the node of %s answered for %s with a certificate for %v", broker.ErrSignature, address.DomainOf(addr), p.Address, certAddresses(cert))
	}
	return n.checkEncryptionCert(addr, cert)
}

// checkEncryptionCert checks that senders may encrypt to addr's
// certificate now: it verifies under the federation's roots and is not on
// the current CRL. It returns an error wrapping broker.ErrState if the
// certificate itself is revoked, expired or otherwise not valid, and
// broker.ErrUnavailable if the node cannot tell (its CRL out of date,
// unreadable or malformed), so that nothing is refused for good for want
// of a CRL; the details of the latter, which name the node's files, go to
// the log, not to the caller. It is run on every use of a directory entry,
// local or cached from another node, so that a revoked certificate stops
// being handed out with the CRL that lists it.
func (n *Node) checkEncryptionCert(addr string, cert *x509.Certificate) error {
	_, err := n.trust.Verify(cert, nil, n.now(), x509.ExtKeyUsageEmailProtection)
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pki.ErrRevoked):
		return revokedError{fmt.Errorf("%w: the recipient's encryption certificate is revoked (%s, serial %x); nobody may encrypt to it until its holder has a new one", broker.ErrState, addr, cert.SerialNumber)}
	case errors.Is(err, pki.ErrCRLStale):
		return fmt.Errorf("%w: this node's certificate revocation list is out of date, so it cannot vouch for the encryption certificate of %s; try again once its operator has published a new CRL", broker.ErrUnavailable, addr)
	case errors.As(err, &invalid), errors.As(err, &unknown), cert.IsCA:
		// Expired, not for encryption, not from the federation, a CA's:
		// the certificate's own fault, which only a new one cures.
		return fmt.Errorf("%w: the recipient's encryption certificate is not valid (%s: %v); its holder needs a new one", broker.ErrState, addr, err)
	}
	n.log.Error("cannot check an encryption certificate", slog.String(broker.LogMailbox, addr), slog.Any(broker.LogErr, err))
	return fmt.Errorf("%w: this node cannot check the encryption certificate of %s against its revocation list now; try again later, and tell the node's operator if it persists", broker.ErrUnavailable, addr)
}

func certAddresses(c *x509.Certificate) []string {
	if c == nil {
		return nil
	}
	return c.EmailAddresses
}

// revokedError is a refusal because a certificate is revoked: it is also
// pki.ErrRevoked, so that the caller is told the reason whatever the
// refusal's kind.
type revokedError struct{ error }

func (e revokedError) Unwrap() []error { return []error{e.error, pki.ErrRevoked} }
