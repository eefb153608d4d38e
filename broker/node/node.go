// Package node is a Kurier node's logic: it accepts submissions, persists
// them, delivers them to local mailboxes, serves fetches and
// acknowledgements, and issues signed evidence for every step. It knows
// nothing of gRPC: callers pass the authenticated peer (pki.Peer) taken
// from the caller's certificate, and broker/rpc maps the sentinel errors
// of package broker to status codes.
package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/tlog"
)

// Store is what the node needs of its durable state; broker/store
// provides it over badger, broker/store/postgres over PostgreSQL. Every
// method returns errors wrapping the broker sentinels; a context error
// from a write means its outcome is unknown. The conformance suite every
// backend runs, broker/store/storetest, writes down the rules the
// comments here leave open (what a refused write leaves, paging ends,
// proofs' arguments, concurrent writers) and what backends may do
// differently.
type Store interface {
	// WriteBlob streams a payload into the store; broker.ErrTooLarge past max.
	WriteBlob(ctx context.Context, r io.Reader, max int64) (broker.Blob, error)
	// OpenBlob streams a stored payload; broker.ErrNotFound if absent.
	OpenBlob(ctx context.Context, id string) (io.ReadCloser, error)
	// DeleteBlob removes a payload that no message will reference.
	DeleteBlob(ctx context.Context, id string) error
	// CreateMessage durably stores a message, its copies, evidence and
	// outbound queue entries in one transaction and returns the evidence
	// with leaf indexes; broker.ErrExists for the same envelope again,
	// broker.ErrDuplicate for the same id with another envelope,
	// broker.ErrNotFound or broker.ErrInvalid for a blob not fit for it.
	CreateMessage(ctx context.Context, m *broker.Message, copies []broker.Copy, evs []broker.Evidence, out []broker.Outbound) ([]broker.Evidence, error)
	// AddCopies adds copies and their evidence to a stored message with
	// the envelope digest envSHA256: broker.ErrNotFound if there is no such
	// message, broker.ErrDuplicate if it has another envelope,
	// broker.ErrExists if one of the copies exists already.
	AddCopies(ctx context.Context, id, envSHA256 string, copies []broker.Copy, evs []broker.Evidence) ([]broker.Evidence, error)
	// Message returns a stored message; broker.ErrNotFound if absent.
	Message(ctx context.Context, id string) (*broker.Message, error)
	// Copy returns a recipient's copy; broker.ErrNotFound if absent.
	Copy(ctx context.Context, messageID, recipient string) (*broker.Copy, error)
	// Inbox pages through a mailbox in order of arrival; broker.ErrInvalid
	// for a malformed cursor.
	Inbox(ctx context.Context, recipient, after string, limit int) ([]broker.InboxEntry, string, error)
	// InboxCursor returns the cursor from which Inbox lists the entries
	// received at at or later, in any mailbox.
	InboxCursor(at time.Time) string
	// Sent pages through the messages of sender (the envelope's from),
	// newest first by Received time, then id, each with all its copies,
	// and returns the cursor of the next page ("" after the last); it
	// must not read other senders' messages to find them. At most limit
	// entries (a backend may cap it); broker.ErrInvalid for a malformed
	// cursor. A cursor names a position in sender's own listing only.
	Sent(ctx context.Context, sender, after string, limit int) ([]broker.SentEntry, string, error)
	// AppendEvidence applies one step to a copy: broker.ErrConflict if its
	// head is no longer s.PrevHead, broker.ErrNotFound if there is no copy.
	AppendEvidence(ctx context.Context, s broker.Step) (broker.Evidence, error)
	// AddEvidence stores own evidence outside any copy's chain.
	AddEvidence(ctx context.Context, ev broker.Evidence) (broker.Evidence, error)
	// Evidence lists a message's evidence in the order stored.
	Evidence(ctx context.Context, messageID string) ([]broker.Evidence, error)
	// Outbound lists messages queued for the node of domain, in order of
	// message id, after the id after.
	Outbound(ctx context.Context, domain, after string, limit int) ([]broker.Outbound, error)
	// OutboundEntry returns one queue entry; broker.ErrNotFound if the
	// message is not queued for domain.
	OutboundEntry(ctx context.Context, domain, id string) (broker.Outbound, error)
	// SetOutbound replaces a queued message's retry state;
	// broker.ErrNotFound if it is no longer queued.
	SetOutbound(ctx context.Context, o broker.Outbound) error
	// LeaseRelay takes the relay of message id to domain for holder until
	// until, unless another holder's lease runs past now, and reports
	// whether it did; broker.ErrNotFound if the message is not queued for
	// domain. It keeps the processes sharing a store from relaying one
	// message twice at once, and Expire off a relay under way. A backend
	// may also answer false while another process changes the entry at
	// that moment: the caller tries again in a later round.
	LeaseRelay(ctx context.Context, domain, id, holder string, now, until time.Time) (ok bool, err error)
	// ReleaseRelay ends holder's lease, if it still has it.
	ReleaseRelay(ctx context.Context, domain, id, holder string) error
	// FinishRelay applies steps and, if done, removes the message from
	// domain's queue, in one transaction; errors as AppendEvidence's.
	FinishRelay(ctx context.Context, domain, id string, steps []broker.Step, done bool) ([]broker.Evidence, error)
	// Pushes lists own evidence queued for the node of domain, in order,
	// from leaf index from on.
	Pushes(ctx context.Context, domain string, from uint64, limit int) ([]broker.Evidence, error)
	// DeletePush removes one evidence from domain's push queue.
	DeletePush(ctx context.Context, domain string, index uint64) error
	// Due lists copies whose deadline is not after now, earliest first,
	// after the copy after (the zero Copy for the first).
	Due(ctx context.Context, now time.Time, after broker.Copy, limit int) ([]broker.Copy, error)
	// LogSize returns the number of leaves in the transparency log.
	LogSize(ctx context.Context) (uint64, error)
	// MarkLog returns once the store's durable high-water mark covers the
	// log's first size leaves, so that a later start refuses a log that
	// lost any of them; an error if size exceeds the log or the mark
	// cannot be written. Checkpoint calls it before signing.
	MarkLog(ctx context.Context, size uint64) error
	// LogRoot returns the root hash of the log's first size leaves;
	// broker.ErrNotFound beyond the log.
	LogRoot(ctx context.Context, size uint64) ([]byte, error)
	// InclusionProof proves leaf index in the tree of size leaves.
	InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error)
	// ConsistencyProof proves that the tree of size2 extends that of size1.
	ConsistencyProof(ctx context.Context, size1, size2 uint64) ([][]byte, error)
}

// Peers is how the node reaches the nodes of other domains; broker/relay
// provides it over mutual TLS with the node's certificate.
type Peers interface {
	// Knows reports whether a node is configured for domain.
	Knows(domain string) bool
	// Lookup asks the node of addr's domain for addr's directory entry;
	// found is false if that node has no such mailbox. Errors wrap
	// broker.ErrUnavailable when the node cannot be reached.
	Lookup(ctx context.Context, addr string) (p Participant, found bool, err error)
	// LogProofs asks the node whose log has the given origin for that
	// log's current checkpoint and the inclusion proof of each leaf in
	// it. Errors wrap broker.ErrUnavailable when the node cannot be
	// reached.
	LogProofs(ctx context.Context, origin string, leaves []uint64) (RemoteLog, [][][]byte, error)
}

// RemoteLog is the state of another node's transparency log, as that node
// serves it.
type RemoteLog struct {
	Origin     string
	Checkpoint []byte // signed note
	TreeSize   uint64
	// LogKey is the log's verifier key, LogKeySignature the node's
	// detached CMS signature over it.
	LogKey          string
	LogKeySignature []byte
}

// Participant is a local mailbox in the node's directory.
type Participant struct {
	Address     string
	DisplayName string
	Kind        string
	// EncryptionCert is the certificate senders encrypt to.
	EncryptionCert *x509.Certificate
}

// Limits bound what one submission may ask of the node.
type Limits struct {
	MaxPayload    int64 // bytes of sealed payload; default 256 MiB
	MaxRecipients int   // default 100
	// MaxClockSkew bounds how far a client-signed time (an envelope's
	// creation, an acknowledgement's time) may lie from the node's clock;
	// default 10 minutes.
	MaxClockSkew time.Duration
	// MaxUploads bounds how many payloads are streamed into the store at
	// once (each buffers up to a few MiB); more wait. Default 32.
	MaxUploads int
	// MaxUploadsPerSender bounds how many of those one sender (or, for
	// relays, one relaying node) may hold at once, so that nobody can
	// take every slot; more are refused with broker.ErrRateLimited and
	// when to try again. Default 4.
	MaxUploadsPerSender int
	// DefaultExpiry is how long a message whose envelope names no expiry
	// (format version 1) may take to reach its recipients' nodes; default
	// 7 days.
	DefaultExpiry time.Duration
	// MaxExpiry caps every message's expiry, counted from its receipt;
	// default 30 days.
	MaxExpiry time.Duration
	// Retention is how long a delivered copy waits to be retrieved before
	// the node gives up with NonDelivery; default 30 days.
	Retention time.Duration
	// MessagesPerSecond and MessageBurst bound how fast one participant
	// may hand in messages (a token bucket: MessageBurst at once, refilled
	// at MessagesPerSecond); more are refused with a *LimitError (default
	// 10 a second, 100 at once). A repeated submission counts too.
	MessagesPerSecond float64
	MessageBurst      int
	// QuotaBytesPerDay bounds the payload bytes one participant may hand
	// in within any 24 hours (a token bucket of that many bytes, refilled
	// evenly over a day); default 10 GiB. Payloads are kept for good, so
	// this bounds how fast a sender fills the disk, not what it holds.
	QuotaBytesPerDay int64
	// RelayMessagesPerSecond, RelayMessageBurst and RelayQuotaBytesPerDay
	// are the same bounds for each relaying node, which carries all of
	// its domains' senders; defaults 100 a second, 1000 at once, 100 GiB
	// a day.
	RelayMessagesPerSecond float64
	RelayMessageBurst      int
	RelayQuotaBytesPerDay  int64
}

// Default limits.
const (
	DefaultMaxPayload    = 256 << 20
	DefaultMaxRecipients = 100
	DefaultMaxClockSkew  = 10 * time.Minute
	DefaultMaxUploads    = 32
	DefaultMaxPerSender  = 4
	DefaultExpiry        = 7 * 24 * time.Hour
	DefaultMaxExpiry     = 30 * 24 * time.Hour
	DefaultRetention     = 30 * 24 * time.Hour
)

// withDefaults returns l with every zero limit set to its default.
func (l Limits) withDefaults() (Limits, error) {
	if l.MaxPayload <= 0 {
		l.MaxPayload = DefaultMaxPayload
	}
	if l.MaxRecipients <= 0 {
		l.MaxRecipients = DefaultMaxRecipients
	}
	if l.MaxUploads <= 0 {
		l.MaxUploads = DefaultMaxUploads
	}
	if l.MaxUploadsPerSender <= 0 {
		l.MaxUploadsPerSender = DefaultMaxPerSender
	}
	orDefault(&l.MessagesPerSecond, DefaultMessagesPerSecond)
	orDefault(&l.MessageBurst, DefaultMessageBurst)
	orDefault(&l.QuotaBytesPerDay, DefaultQuotaBytesPerDay)
	orDefault(&l.RelayMessagesPerSecond, DefaultRelayMessagesPerSecond)
	orDefault(&l.RelayMessageBurst, DefaultRelayMessageBurst)
	orDefault(&l.RelayQuotaBytesPerDay, DefaultRelayQuotaBytesPerDay)
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&l.MaxClockSkew, DefaultMaxClockSkew}, {&l.DefaultExpiry, DefaultExpiry},
		{&l.MaxExpiry, DefaultMaxExpiry}, {&l.Retention, DefaultRetention},
	} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if l.DefaultExpiry > l.MaxExpiry {
		return Limits{}, fmt.Errorf("default expiry %s exceeds the maximum %s", l.DefaultExpiry, l.MaxExpiry)
	}
	return l, nil
}

// orDefault sets *v to def unless it is positive.
func orDefault[T int | int64 | float64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Config is what a node is made of besides its store.
type Config struct {
	// Domains are the domains whose mailboxes this node holds.
	Domains []string
	// Signer signs the node's evidence: its node certificate and key.
	Signer cms.Signer
	// LogKey signs the transparency log's checkpoints: a signed-note
	// private key (tlog.GenerateKey) named tlog.Origin of the first domain.
	LogKey string
	// Trust verifies every certificate the node is shown.
	Trust *pki.TrustStore
	// Participants is the directory of local mailboxes.
	Participants []Participant
	// Peers reaches other domains' nodes; nil for a node on its own, which
	// refuses every recipient outside its domains.
	Peers Peers
	// Queued, if set, is told the domain whenever a message or an
	// evidence has been queued for that domain's node, so that the relay
	// worker need not wait for its next look at the queues.
	Queued func(domain string)
	// Observer, if set, learns of every submission's outcome and every
	// evidence stored, for the node's metrics.
	Observer Observer
	Limits   Limits
	// Space, if set, is asked for room before every new message is taken
	// (a submission, a relayed message) with its payload's size: it
	// returns the function that gives the room back once the payload is
	// stored or dropped, or an error wrapping broker.ErrNoSpace, which
	// refuses the message because the disk is almost full (see package
	// diskspace). Fetching and acknowledging never ask it.
	Space func(size int64) (release func(), err error)
	// Notices, if set, carries the notices of new mailbox entries among
	// every process that serves this node from one store, so that
	// Subscribe on any of them hears of a message another accepted: the
	// node tells its own subscribers at once and publishes the notice
	// there, and each other process hands those it hears to Announce,
	// and calls Resync after it may have missed some. Without it,
	// subscribers hear only of what their own process stores.
	Notices Notices
	// Holder names this process's leases on relays in the store (see
	// RelayLease): the same for every start of one process, so that a
	// process that restarts after a crash takes back at once the relays
	// it held, and different for each process sharing a store; kurierd
	// uses its host name and listen address. Empty, each node is a holder
	// of its own, whose leases a restart must wait out.
	Holder string
	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Notices carries the notices of new mailbox entries among the processes
// of one node (package broker/store/postgres/pgnotify, over PostgreSQL's
// LISTEN and NOTIFY).
type Notices interface {
	// Publish tells every other process of the node that recipient has
	// a new copy of message id; this process's subscribers were told
	// already, and the notice must not come back to its Announce. A
	// notice may be lost (a process that dies before it publishes, a
	// listener reconnecting, which then calls Resync): the mailbox
	// listing stays complete, and subscribers list it after any gap.
	Publish(ctx context.Context, recipient, messageID string) error
}

// Node is one Kurier node. Its methods are safe for concurrent use.
type Node struct {
	store    Store
	signer   cms.Signer
	trust    *pki.TrustStore
	domain   string // the issuer name on node evidence
	domains  map[string]bool
	dir      map[string]Participant
	limits   Limits
	now      func() time.Time
	log      *slog.Logger
	hub      hub
	notices  Notices       // nil: the hub alone
	uploads  chan struct{} // a slot per payload being stored
	senders  uploadCounts  // the slots each sender holds
	logKey   string
	logVKey  string // logKey's verifier key, named in export indexes
	logVSig  []byte // the node certificate's detached signature over logVKey
	peers    Peers
	queued   func(domain string)
	remote   remoteDirectory
	held     holds  // relays claimed in this process
	holder   string // names this process's leases in the store
	admit    admission
	space    func(size int64) (func(), error)
	heads    recall[*evidence.Statement] // by evidence digest
	messages recall[*broker.Message]     // by id, for the steps of a copy
	obs      Observer
	// stopping ends, and background holds, the work the node does on its
	// own (directory refreshes): Close ends it and waits for it.
	stopping   context.Context
	stop       context.CancelFunc
	background sync.WaitGroup
}

// Close ends the work the node started on its own and waits for it, so
// that nothing of the node runs once its store and peers are closed.
// Calls under way must have returned first.
func (n *Node) Close() {
	n.stop()
	n.background.Wait()
}

// New checks cfg and returns a node over st.
func New(st Store, cfg Config) (*Node, error) {
	if len(cfg.Domains) == 0 {
		return nil, errors.New("new node: no domains")
	}
	if cfg.Signer.Cert == nil || cfg.Signer.Key == nil {
		return nil, errors.New("new node: no signing certificate and key")
	}
	if cfg.Trust == nil {
		return nil, errors.New("new node: no trust store")
	}
	peer, err := pki.PeerOf(cfg.Signer.Cert)
	if err != nil || peer.Kind != pki.KindNode {
		return nil, fmt.Errorf("new node: signing certificate is not a node certificate: %v", err)
	}
	n := &Node{
		store:   st,
		signer:  cfg.Signer,
		trust:   cfg.Trust,
		domain:  cfg.Domains[0],
		domains: make(map[string]bool),
		dir:     make(map[string]Participant),
		now:     cfg.Now,
		log:     cfg.Logger,
		logKey:  cfg.LogKey,
		peers:   cfg.Peers,
		queued:  cfg.Queued,
		space:   cfg.Space,
		notices: cfg.Notices,
		holder:  cfg.Holder,
	}
	// A message's steps follow each other within seconds; these hold
	// those of the last few thousand messages (a stored message is a few
	// KiB, a statement a few hundred bytes).
	n.heads.max, n.messages.max = 8192, 1024
	n.obs = noObserver{}
	if cfg.Observer != nil {
		n.obs, n.store = cfg.Observer, observedStore{Store: st, obs: cfg.Observer}
	}
	if n.queued == nil {
		n.queued = func(string) {}
	}
	if n.holder == "" {
		n.holder = newHolder()
	} else if len(n.holder) > maxHolder {
		return nil, fmt.Errorf("new node: a holder name of %d bytes is longer than %d", len(n.holder), maxHolder)
	}
	if n.logVKey, n.logVSig, err = vouchLogKey(n.domain, cfg); err != nil {
		return nil, fmt.Errorf("new node: %w", err)
	}
	for _, d := range cfg.Domains {
		if err := address.CheckDomain(d); err != nil {
			return nil, fmt.Errorf("new node: %w", err)
		}
		if !peer.Serves(d) {
			return nil, fmt.Errorf("new node: node certificate does not name domain %s", d)
		}
		n.domains[d] = true
	}
	for _, p := range cfg.Participants {
		a, err := address.Parse(p.Address)
		if err != nil {
			return nil, fmt.Errorf("new node: participant: %w", err)
		}
		if !n.domains[a.Domain] {
			return nil, fmt.Errorf("new node: participant %s is not in a domain of this node", p.Address)
		}
		if p.EncryptionCert == nil {
			return nil, fmt.Errorf("new node: participant %s has no encryption certificate", p.Address)
		}
		if _, dup := n.dir[p.Address]; dup {
			return nil, fmt.Errorf("new node: participant %s listed twice", p.Address)
		}
		n.dir[p.Address] = p
	}
	if n.limits, err = cfg.Limits.withDefaults(); err != nil {
		return nil, fmt.Errorf("new node: %w", err)
	}
	n.uploads = make(chan struct{}, n.limits.MaxUploads)
	n.admit.participant = quota{n.limits.MessagesPerSecond, n.limits.MessageBurst, n.limits.QuotaBytesPerDay}
	n.admit.relay = quota{n.limits.RelayMessagesPerSecond, n.limits.RelayMessageBurst, n.limits.RelayQuotaBytesPerDay}
	if n.now == nil {
		n.now = time.Now
	}
	if n.log == nil {
		n.log = slog.Default()
	}
	n.stopping, n.stop = context.WithCancel(context.Background())
	return n, nil
}

// vouchLogKey checks that cfg's log key signs checkpoints of domain's
// log, and returns its verifier key with the node certificate's detached
// signature over it, which export indexes carry.
func vouchLogKey(domain string, cfg Config) (vkey string, sig []byte, err error) {
	if _, err := tlog.Sign(tlog.Checkpoint{Origin: tlog.Origin(domain), Root: tlog.EmptyRoot()}, cfg.LogKey); err != nil {
		return "", nil, fmt.Errorf("log key: %w", err)
	}
	if vkey, err = tlog.VerifierKey(cfg.LogKey); err != nil {
		return "", nil, fmt.Errorf("log key: %w", err)
	}
	if sig, err = cms.SignDetached([]byte(vkey), cfg.Signer); err != nil {
		return "", nil, fmt.Errorf("sign the log key: %w", err)
	}
	return vkey, sig, nil
}

// Domain returns the domain the node names itself by in evidence.
func (n *Node) Domain() string { return n.domain }

// LogOrigin returns the origin of the node's transparency log, the name
// its checkpoints carry and other nodes store with its evidence.
func (n *Node) LogOrigin() string { return tlog.Origin(n.domain) }

// LogKey returns the verifier key of the node's transparency log and the
// node certificate's detached CMS signature over it, by which the node
// vouches for the key to anyone who holds only the CA certificate.
func (n *Node) LogKey() (string, []byte) { return n.logVKey, n.logVSig }

// Serves reports whether domain is one of the node's own.
func (n *Node) Serves(domain string) bool { return n.domains[domain] }

// Limits returns the limits in force.
func (n *Node) Limits() Limits { return n.limits }

// localEntry returns the directory entry of a local address:
// broker.ErrNotFound if there is none, and checkEncryptionCert's errors if
// its encryption certificate is no longer valid (expired or revoked), so
// that no sender encrypts to a compromised key.
func (n *Node) localEntry(addr string) (Participant, error) {
	p, ok := n.dir[addr]
	if !ok {
		return Participant{}, fmt.Errorf("%w: no mailbox %s", broker.ErrNotFound, addr)
	}
	if err := n.checkEncryptionCert(addr, p.EncryptionCert); err != nil {
		return Participant{}, err
	}
	return p, nil
}

// CRL returns the CA's current CRL (DER) as the node checks against it.
func (n *Node) CRL() ([]byte, error) {
	der, err := n.trust.CRL()
	if err != nil {
		return nil, fmt.Errorf("current CRL: %w", err)
	}
	return der, nil
}

// Search returns up to limit directory entries whose address or display
// name contains query (case-insensitive), ordered by address. A mailbox
// whose encryption certificate is not valid now (revoked, expired) is left
// out: its certificate is handed to no one.
func (n *Node) Search(query string, limit int) []Participant {
	q := strings.ToLower(query)
	var found []Participant
	for _, p := range n.dir {
		if strings.Contains(p.Address, q) || strings.Contains(strings.ToLower(p.DisplayName), q) {
			found = append(found, p)
		}
	}
	sort.Slice(found, func(i, j int) bool { return found[i].Address < found[j].Address })
	var out []Participant
	for _, p := range found {
		if limit > 0 && len(out) == limit {
			break
		}
		if n.checkEncryptionCert(p.Address, p.EncryptionCert) == nil {
			out = append(out, p)
		}
	}
	return out
}

func requireParticipant(caller pki.Peer) error {
	if caller.Kind != pki.KindParticipant {
		return fmt.Errorf("%w: only participant certificates may use mailboxes, not %s", broker.ErrForbidden, caller)
	}
	return nil
}

// hub fans out notices of new mailbox entries to subscribers. It
// remembers, per mailbox with subscribers, the last recentNotices
// messages it announced, so that one a resync finds again, or one that
// reaches it twice, is announced once.
type hub struct {
	mu   sync.Mutex
	subs map[string]*mailboxSubs
}

// recentNotices bounds the messages the hub remembers per mailbox with
// subscribers: those a resync after a short outage may find again.
const recentNotices = 64

// mailboxSubs are one mailbox's subscribers and the messages last
// announced to them, recent[next] the oldest once it is full.
type mailboxSubs struct {
	chans  map[chan broker.InboxEntry]struct{}
	recent []string
	next   int
}

func (h *hub) subscribe(addr string) (chan broker.InboxEntry, func()) {
	ch := make(chan broker.InboxEntry, 64)
	h.mu.Lock()
	if h.subs == nil {
		h.subs = make(map[string]*mailboxSubs)
	}
	if h.subs[addr] == nil {
		h.subs[addr] = &mailboxSubs{chans: make(map[chan broker.InboxEntry]struct{})}
	}
	h.subs[addr].chans[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		if ms := h.subs[addr]; ms != nil {
			delete(ms.chans, ch)
			if len(ms.chans) == 0 {
				delete(h.subs, addr)
			}
		}
		h.mu.Unlock()
	}
}

// has reports whether anyone subscribes to addr's mailbox.
func (h *hub) has(addr string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.subs[addr] != nil
}

// mailboxes returns the mailboxes that have subscribers.
func (h *hub) mailboxes() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	addrs := make([]string, 0, len(h.subs))
	for a := range h.subs {
		addrs = append(addrs, a)
	}
	return addrs
}

// publish never blocks: a subscriber that falls 64 notices behind misses
// some and must list its inbox, which stays the source of truth. A
// message announced to the mailbox lately is not announced again.
func (h *hub) publish(e broker.InboxEntry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ms := h.subs[e.Copy.Recipient]
	if ms == nil || slices.Contains(ms.recent, e.Copy.MessageID) {
		return
	}
	if len(ms.recent) < recentNotices {
		ms.recent = append(ms.recent, e.Copy.MessageID)
	} else {
		ms.recent[ms.next] = e.Copy.MessageID
		ms.next = (ms.next + 1) % recentNotices
	}
	for ch := range ms.chans {
		select {
		case ch <- e:
		default:
		}
	}
}
