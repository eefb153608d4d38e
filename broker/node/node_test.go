package node_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/diskspace"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/broker/store/postgres/pgtest"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
	"kurier.dev/kurier/tlog"
)

const (
	agency = pkitest.Agency
	court  = pkitest.Court
	other  = pkitest.Other
)

var fx *pkitest.PKI

// TestMain makes the test PKI, and stops the PostgreSQL cluster that the
// tests of notices through PostgreSQL start.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kurier-pkitest")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if fx, err = pkitest.New(dir); err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := pgtest.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

var signer = pkitest.Signer

func participant(addr string) pki.Peer { return pki.Peer{Kind: pki.KindParticipant, Address: addr} }

type harness struct {
	t     testing.TB
	node  *node.Node
	db    *store.DB
	trust *pki.TrustStore
	now   time.Time
}

func newHarness(t testing.TB, limits node.Limits) *harness {
	t.Helper()
	db, err := store.Open(t.TempDir(), store.Options{Small: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	trust, err := pki.NewTrustStore(fx.Node.Roots, fx.CRL)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, db: db, trust: trust, now: time.Now()}
	h.node = h.newNode(limits, nil)
	return h
}

// newNode returns a node over h's store, as another process of the node
// would be, with notices carrying its mailbox notices.
func (h *harness) newNode(limits node.Limits, notices node.Notices) *node.Node {
	h.t.Helper()
	return h.newNodeOn(h.db, limits, notices)
}

// newNodeOn returns a node over st, with h's PKI and participants.
func (h *harness) newNodeOn(st node.Store, limits node.Limits, notices node.Notices) *node.Node {
	h.t.Helper()
	var parts []node.Participant
	for _, a := range []string{agency, court, other} {
		parts = append(parts, node.Participant{Address: a, EncryptionCert: fx.IDs[a].EncCert})
	}
	n, err := node.New(st, node.Config{
		Domains: []string{"stadt.example", "amtsgericht.example"},
		Signer:  signer(fx.Node), LogKey: fx.LogKey,
		Trust:        h.trust,
		Participants: parts,
		Limits:       limits,
		Notices:      notices,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

// message is a submission as a client would build it; the payload is
// random bytes, since the node never opens it.
type message struct {
	env     *envelope.Envelope
	bytes   []byte
	sig     []byte
	payload []byte
}

func newMessage(t testing.TB, from *pki.Identity, fromAddr string, to ...string) *message {
	t.Helper()
	payload := make([]byte, 3000)
	rand.Read(payload)
	id, err := envelope.NewID()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(payload)
	env := &envelope.Envelope{
		Version: envelope.Version, ID: id, From: fromAddr, To: to,
		Subject: "Klage", Type: "Schriftsatz", Reference: "4 C 12/26",
		Created:       time.Now().UTC(),
		Expires:       time.Now().UTC().Add(7 * 24 * time.Hour),
		PayloadSHA256: hex.EncodeToString(sum[:]), PayloadSize: int64(len(payload)),
		Files: []envelope.File{{Name: "klage.pdf", Size: 100, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}},
	}
	return signMessage(t, from, env, payload)
}

func signMessage(t testing.TB, from *pki.Identity, env *envelope.Envelope, payload []byte) *message {
	t.Helper()
	b, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := cms.SignDetached(b, signer(from))
	if err != nil {
		t.Fatal(err)
	}
	return &message{env: env, bytes: b, sig: sig, payload: payload}
}

func (h *harness) submit(caller string, m *message) (*node.Receipt, error) {
	return h.node.Submit(context.Background(), participant(caller), m.bytes, m.sig, bytes.NewReader(m.payload))
}

func (h *harness) verify(der []byte) *evidence.Evidence {
	h.t.Helper()
	ev, err := evidence.Verify(der, cms.Policy{Trust: h.trust, At: time.Now()})
	if err != nil {
		h.t.Fatalf("evidence does not verify: %v", err)
	}
	return ev
}

func types(evs []broker.Evidence) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

func TestNode_Submit(t *testing.T) {
	h := newHarness(t, node.Limits{})
	m := newMessage(t, fx.IDs[agency], agency, court, other)
	r, err := h.submit(agency, m)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"SubmissionAcceptance", "Delivery", "SubmissionAcceptance", "Delivery"}
	if got := types(r.Evidence); !equal(got, want) {
		t.Fatalf("evidence types = %v, want %v", got, want)
	}
	// Each recipient's chain verifies, is signed by the node and names the envelope.
	for _, rcpt := range []string{court, other} {
		var links []evidence.Link
		for _, ev := range r.Evidence {
			if ev.Recipient != rcpt {
				continue
			}
			e := h.verify(ev.DER)
			// Acceptance is issued under the sender's domain, Delivery under the recipient's.
			wantIssuer := address.DomainOf(agency)
			if e.Statement.Type == evidence.Delivery {
				wantIssuer = address.DomainOf(rcpt)
			}
			if e.Statement.Issuer != wantIssuer || e.Statement.EnvelopeSHA256 != envelope.Digest(m.bytes) || e.Statement.PayloadSHA256 != m.env.PayloadSHA256 {
				t.Errorf("statement %+v does not name the node, envelope and payload", e.Statement)
			}
			links = append(links, e.Link())
		}
		if err := evidence.CheckChain(links); err != nil {
			t.Errorf("chain of %s: %v", rcpt, err)
		}
	}
	entries, _, err := h.node.Inbox(context.Background(), participant(court), "", 10)
	if err != nil || len(entries) != 1 || entries[0].Message.ID() != m.env.ID {
		t.Fatalf("court inbox = %v, %v; want the message", entries, err)
	}
	if entries, _, _ := h.node.Inbox(context.Background(), participant(agency), "", 10); len(entries) != 0 {
		t.Errorf("agency inbox has %d entries, want none", len(entries))
	}

	t.Run("repeat is idempotent", func(t *testing.T) {
		r2, err := h.submit(agency, m)
		if err != nil {
			t.Fatal(err)
		}
		if len(r2.Evidence) != len(r.Evidence) {
			t.Fatalf("repeat returned %d evidence, want %d", len(r2.Evidence), len(r.Evidence))
		}
		for i := range r.Evidence {
			if !bytes.Equal(r.Evidence[i].DER, r2.Evidence[i].DER) {
				t.Errorf("evidence %d differs on repeat", i)
			}
		}
		entries, _, _ := h.node.Inbox(context.Background(), participant(court), "", 10)
		if len(entries) != 1 {
			t.Errorf("court inbox has %d entries after repeat, want 1", len(entries))
		}
	})

	t.Run("same id other content", func(t *testing.T) {
		env := *m.env
		env.Subject = "Something else"
		m2 := signMessage(t, fx.IDs[agency], &env, m.payload)
		_, err := h.submit(agency, m2)
		var rej *node.Rejection
		if !errors.Is(err, broker.ErrDuplicate) || !errors.As(err, &rej) {
			t.Fatalf("err = %v, want a rejection with ErrDuplicate", err)
		}
		e := h.verify(rej.Evidence.DER)
		if e.Statement.Type != evidence.SubmissionRejection || e.Statement.Reason == "" {
			t.Errorf("rejection statement = %+v", e.Statement)
		}
		// The rejection is not stored among the first message's evidence.
		evs, err := h.node.Evidence(context.Background(), participant(agency), m.env.ID)
		if err != nil || len(evs) != len(r.Evidence) {
			t.Errorf("evidence after a duplicate = %v (%v), want the first message's only", types(evs), err)
		}
	})
}

// TestFault_UnreadableCRL: when the node's own CRL file turns unreadable
// or malformed, a recipient's encryption certificate cannot be checked:
// Lookup says so as broker.ErrUnavailable (try again), not as the
// certificate's fault (broker.ErrState, "its holder needs a new one"),
// and names no file of the node; the log has the details.
// TestNode_EnvelopeVersions accepts envelopes of every format version a
// sender may still write (version 3 with document digests, version 2
// without, version 1 without expiry) and hands each recipient exactly the
// bytes the sender signed.
func TestNode_EnvelopeVersions(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, node.Limits{})
	for _, version := range []int{envelope.Version, envelope.Version2, envelope.Version1} {
		t.Run(fmt.Sprintf("version %d", version), func(t *testing.T) {
			m := newMessage(t, fx.IDs[agency], agency, court)
			env := *m.env
			env.Version = version
			env.Files = []envelope.File{{Name: "klage.pdf", Size: 100}}
			if version == envelope.Version {
				env.Files[0].SHA256 = m.env.Files[0].SHA256
			}
			if version == envelope.Version1 {
				env.Expires = time.Time{}
			}
			m = signMessage(t, fx.IDs[agency], &env, m.payload)
			if _, err := h.submit(agency, m); err != nil {
				t.Fatalf("submit: %v", err)
			}
			stored, _, r, err := h.node.Fetch(ctx, participant(court), env.ID)
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
			r.Close()
			if !bytes.Equal(stored.Envelope, m.bytes) || stored.Header.Version != version {
				t.Errorf("fetched envelope version %d, %d bytes; want version %d, the %d bytes signed", stored.Header.Version, len(stored.Envelope), version, len(m.bytes))
			}
		})
	}
}

func TestFault_UnreadableCRL(t *testing.T) {
	for name, corrupt := range map[string]func(path string) error{
		"malformed": func(path string) error { return os.WriteFile(path, []byte("not a CRL"), 0o600) },
		"missing":   os.Remove,
	} {
		t.Run(name, func(t *testing.T) {
			crl := filepath.Join(t.TempDir(), "crl.pem")
			b, err := os.ReadFile(fx.CRL)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(crl, b, 0o600); err != nil {
				t.Fatal(err)
			}
			trust, err := pki.NewTrustStore(fx.Node.Roots, crl)
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			n, err := node.New(newHarness(t, node.Limits{}).db, node.Config{
				Domains: pkitest.Domains, Signer: signer(fx.Node), LogKey: fx.LogKey, Trust: trust,
				Participants: []node.Participant{{Address: court, EncryptionCert: fx.IDs[court].EncCert}},
				Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := n.Lookup(context.Background(), court); err != nil {
				t.Fatalf("Lookup with a good CRL: %v", err)
			}
			if err := corrupt(crl); err != nil {
				t.Fatal(err)
			}
			// The trust store looks at its CRL file at most once a second.
			trust.SetClock(func() time.Time { return time.Now().Add(2 * time.Second) })
			_, err = n.Lookup(context.Background(), court)
			if !errors.Is(err, broker.ErrUnavailable) || errors.Is(err, broker.ErrState) {
				t.Fatalf("Lookup with the CRL %s: %v, want ErrUnavailable", name, err)
			}
			if strings.Contains(err.Error(), crl) || strings.Contains(err.Error(), "needs a new one") {
				t.Errorf("Lookup with the CRL %s: %q names the node's file or blames the certificate", name, err)
			}
			if !strings.Contains(logs.String(), crl) {
				t.Errorf("the log has no details of the failure:\n%s", logs.String())
			}
		})
	}
}

// TestFault_FreeSpaceUnreadable: when the node's disk check fails other
// than by finding the disk full (here statfs of a store folder that is
// gone), the sender is told to try again (broker.ErrUnavailable) without
// the node's path, which goes to the log; nothing is stored or refused
// for good.
func TestFault_FreeSpaceUnreadable(t *testing.T) {
	h := newHarness(t, node.Limits{})
	gone := filepath.Join(t.TempDir(), "store")
	var logs bytes.Buffer
	n, err := node.New(h.db, node.Config{
		Domains: pkitest.Domains, Signer: signer(fx.Node), LogKey: fx.LogKey, Trust: h.trust,
		Participants: []node.Participant{{Address: agency, EncryptionCert: fx.IDs[agency].EncCert}, {Address: court, EncryptionCert: fx.IDs[court].EncCert}},
		Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
		// An alarm that passes statfs's failure on.
		Space: func(int64) (func(), error) {
			_, err := diskspace.Statfs(gone)
			return nil, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := newMessage(t, fx.IDs[agency], agency, court)
	_, err = n.Submit(context.Background(), participant(agency), m.bytes, m.sig, bytes.NewReader(m.payload))
	var rej *node.Rejection
	if !errors.Is(err, broker.ErrUnavailable) || errors.As(err, &rej) || strings.Contains(err.Error(), gone) {
		t.Fatalf("Submit with the free space unreadable: %v, want ErrUnavailable without the node's path", err)
	}
	if !strings.Contains(logs.String(), gone) {
		t.Errorf("the log has no details of the failure:\n%s", logs.String())
	}
	if _, err := h.db.Message(context.Background(), m.env.ID); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("the message was stored: %v", err)
	}
}

func TestNode_Lookup(t *testing.T) {
	h := newHarness(t, node.Limits{})
	if p, err := h.node.Lookup(context.Background(), court); err != nil || p.EncryptionCert != fx.IDs[court].EncCert {
		t.Fatalf("Lookup(court) = %v, %v", p, err)
	}
	if _, err := h.node.Lookup(context.Background(), "niemand@amtsgericht.example"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("unknown address: err = %v, want ErrNotFound", err)
	}
	// A revoked encryption certificate is not handed out.
	id, err := fx.CA.IssueParticipant(filepath.Join(t.TempDir(), "id"), other)
	if err != nil {
		t.Fatal(err)
	}
	if err := fx.CA.Revoke(id.EncCert.SerialNumber, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.CA.WriteCRL(24 * time.Hour); err != nil {
		t.Fatal(err)
	}
	// The trust store looks at its CRL file at most once a second.
	h.trust.SetClock(func() time.Time { return time.Now().Add(2 * time.Second) })
	n, err := node.New(h.db, node.Config{
		Domains: pkitest.Domains, Signer: signer(fx.Node), LogKey: fx.LogKey, Trust: h.trust,
		Participants: []node.Participant{{Address: other, EncryptionCert: id.EncCert}},
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Lookup(context.Background(), other); !errors.Is(err, broker.ErrState) {
		t.Errorf("revoked encryption certificate: err = %v, want ErrState", err)
	}
	// Nor one from outside the federation: its holder needs a new one.
	n, err = node.New(h.db, node.Config{
		Domains: pkitest.Domains, Signer: signer(fx.Node), LogKey: fx.LogKey, Trust: h.trust,
		Participants: []node.Participant{{Address: other, EncryptionCert: fx.Foreign.EncCert}},
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Lookup(context.Background(), other); !errors.Is(err, broker.ErrState) || !strings.Contains(err.Error(), "needs a new one") {
		t.Errorf("foreign encryption certificate: err = %v, want ErrState", err)
	}
}

func TestNode_Clock(t *testing.T) {
	t.Run("envelope from the future", func(t *testing.T) {
		h := newHarness(t, node.Limits{})
		m := newMessage(t, fx.IDs[agency], agency, court)
		m.env.Created = time.Now().Add(time.Hour).UTC()
		m = signMessage(t, fx.IDs[agency], m.env, m.payload)
		if _, err := h.submit(agency, m); !errors.Is(err, broker.ErrInvalid) {
			t.Fatalf("err = %v, want ErrInvalid", err)
		}
	})
	t.Run("clock set back", func(t *testing.T) {
		h := newHarness(t, node.Limits{})
		now := time.Now()
		clock := func() time.Time { return now }
		n, err := node.New(h.db, node.Config{
			Domains: pkitest.Domains, Signer: signer(fx.Node), LogKey: fx.LogKey, Trust: h.trust, Now: func() time.Time { return clock() },
			Participants: []node.Participant{{Address: court, EncryptionCert: fx.IDs[court].EncCert}},
			Logger:       slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		m := newMessage(t, fx.IDs[agency], agency, court)
		if _, err := n.Submit(context.Background(), participant(agency), m.bytes, m.sig, bytes.NewReader(m.payload)); err != nil {
			t.Fatal(err)
		}
		clock = func() time.Time { return now.Add(-time.Hour) }
		if _, err := n.Retrieved(context.Background(), participant(court), m.env.ID); err != nil {
			t.Fatal(err)
		}
		evs, err := n.Evidence(context.Background(), participant(court), m.env.ID)
		if err != nil {
			t.Fatal(err)
		}
		var links []evidence.Link
		for _, ev := range evs {
			links = append(links, h.verify(ev.DER).Link())
		}
		if err := evidence.CheckChain(links); err != nil {
			t.Fatalf("chain after the clock went back: %v", err)
		}
	})
}

func TestNode_SubmitRefused(t *testing.T) {
	tests := map[string]struct {
		limits   node.Limits
		caller   string
		build    func(t *testing.T) *message
		want     error
		rejected bool // an authentic envelope earns a SubmissionRejection
	}{
		"sender is not the caller": {
			caller: other,
			build:  func(t *testing.T) *message { return newMessage(t, fx.IDs[agency], agency, court) },
			want:   broker.ErrForbidden,
		},
		"signed by another participant": {
			caller: agency,
			build:  func(t *testing.T) *message { return newMessage(t, fx.IDs[other], agency, court) },
			want:   broker.ErrSignature,
		},
		"signed by a revoked certificate": {
			caller: agency,
			build:  func(t *testing.T) *message { return newMessage(t, fx.Revoked, agency, court) },
			want:   broker.ErrSignature,
		},
		"signed by a foreign CA": {
			caller: agency,
			build:  func(t *testing.T) *message { return newMessage(t, fx.Foreign, agency, court) },
			want:   broker.ErrSignature,
		},
		"malformed envelope": {
			caller: agency,
			build: func(t *testing.T) *message {
				m := newMessage(t, fx.IDs[agency], agency, court)
				m.bytes = append([]byte(" "), m.bytes...)
				return m
			},
			want: broker.ErrInvalid,
		},
		"malformed signature": {
			caller: agency,
			build: func(t *testing.T) *message {
				m := newMessage(t, fx.IDs[agency], agency, court)
				m.sig = []byte("not CMS")
				return m
			},
			want: broker.ErrSignature,
		},
		"unknown recipient": {
			caller: agency,
			build: func(t *testing.T) *message {
				return newMessage(t, fx.IDs[agency], agency, "niemand@amtsgericht.example")
			},
			want:     broker.ErrUnknownRecipient,
			rejected: true,
		},
		"domain not served": {
			caller:   agency,
			build:    func(t *testing.T) *message { return newMessage(t, fx.IDs[agency], agency, "eingang@lg.example") },
			want:     broker.ErrUnknownRecipient,
			rejected: true,
		},
		"too many recipients": {
			limits:   node.Limits{MaxRecipients: 1},
			caller:   agency,
			build:    func(t *testing.T) *message { return newMessage(t, fx.IDs[agency], agency, court, other) },
			want:     broker.ErrTooLarge,
			rejected: true,
		},
		"payload over the maximum": {
			limits:   node.Limits{MaxPayload: 1000},
			caller:   agency,
			build:    func(t *testing.T) *message { return newMessage(t, fx.IDs[agency], agency, court) },
			want:     broker.ErrTooLarge,
			rejected: true,
		},
		"payload does not match its digest": {
			caller: agency,
			build: func(t *testing.T) *message {
				m := newMessage(t, fx.IDs[agency], agency, court)
				m.payload[10] ^= 1
				return m
			},
			want:     broker.ErrInvalid,
			rejected: true,
		},
		"payload longer than declared": {
			caller: agency,
			build: func(t *testing.T) *message {
				m := newMessage(t, fx.IDs[agency], agency, court)
				m.payload = append(m.payload, 0)
				return m
			},
			want:     broker.ErrInvalid,
			rejected: true,
		},
		"payload shorter than declared": {
			caller: agency,
			build: func(t *testing.T) *message {
				m := newMessage(t, fx.IDs[agency], agency, court)
				m.payload = m.payload[:len(m.payload)-1]
				return m
			},
			want:     broker.ErrInvalid,
			rejected: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, tc.limits)
			m := tc.build(t)
			_, err := h.submit(tc.caller, m)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var rej *node.Rejection
			if got := errors.As(err, &rej); got != tc.rejected {
				t.Fatalf("rejection evidence = %v, want %v (err %v)", got, tc.rejected, err)
			}
			if _, err := h.db.Message(context.Background(), m.env.ID); !errors.Is(err, broker.ErrNotFound) {
				t.Errorf("refused message was stored: %v", err)
			}
			if rej != nil {
				e := h.verify(rej.Evidence.DER)
				if e.Statement.Type != evidence.SubmissionRejection || e.Statement.Reason == "" || e.Statement.Sender != agency {
					t.Errorf("rejection statement = %+v", e.Statement)
				}
				// The sender sees its rejection.
				evs, err := h.node.Evidence(context.Background(), participant(agency), m.env.ID)
				if err != nil || len(evs) != 1 {
					t.Errorf("sender's evidence = %v, %v; want the rejection", types(evs), err)
				}
			}
		})
	}

	t.Run("node certificate may not submit", func(t *testing.T) {
		h := newHarness(t, node.Limits{})
		m := newMessage(t, fx.IDs[agency], agency, court)
		_, err := h.node.Submit(context.Background(), pki.Peer{Kind: pki.KindNode, Domains: []string{"stadt.example"}}, m.bytes, m.sig, bytes.NewReader(m.payload))
		if !errors.Is(err, broker.ErrForbidden) {
			t.Fatalf("err = %v, want ErrForbidden", err)
		}
	})
}

func TestNode_FetchAcknowledge(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, node.Limits{})
	m := newMessage(t, fx.IDs[agency], agency, court)
	if _, err := h.submit(agency, m); err != nil {
		t.Fatal(err)
	}
	id := m.env.ID

	t.Run("only the recipient fetches", func(t *testing.T) {
		for _, caller := range []string{agency, other} {
			if _, _, _, err := h.node.Fetch(ctx, participant(caller), id); !errors.Is(err, broker.ErrNotFound) {
				t.Errorf("fetch by %s: err = %v, want ErrNotFound", caller, err)
			}
		}
	})

	ack := func(t *testing.T, by *pki.Identity, addr string, prev string, at time.Time) []byte {
		t.Helper()
		st := &evidence.Statement{
			Version: evidence.StatementVersion, Type: evidence.Acknowledgement, MessageID: id,
			EnvelopeSHA256: envelope.Digest(m.bytes), PayloadSHA256: m.env.PayloadSHA256,
			Sender: agency, Recipient: addr, Issuer: addr, Time: at, PreviousSHA256: prev,
		}
		b, err := st.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		der, err := cms.Sign(b, signer(by))
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	copyHead := func() string {
		c, err := h.db.Copy(ctx, id, court)
		if err != nil {
			t.Fatal(err)
		}
		return c.Head
	}

	t.Run("acknowledge before fetch", func(t *testing.T) {
		_, err := h.node.Acknowledge(ctx, participant(court), ack(t, fx.IDs[court], court, copyHead(), time.Now()))
		if !errors.Is(err, broker.ErrState) {
			t.Fatalf("err = %v, want ErrState", err)
		}
	})

	_, _, r, err := h.node.Fetch(ctx, participant(court), id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, m.payload) {
		t.Fatalf("fetched payload differs (%v)", err)
	}
	ret, err := h.node.Retrieved(ctx, participant(court), id)
	if err != nil || ret.Type != string(evidence.Retrieval) {
		t.Fatalf("Retrieved = %v, %v", ret.Type, err)
	}
	again, err := h.node.Retrieved(ctx, participant(court), id)
	if err != nil || !bytes.Equal(again.DER, ret.DER) {
		t.Errorf("second Retrieved issued new evidence (%v)", err)
	}

	refused := map[string]struct {
		caller string
		der    func(t *testing.T) []byte
		want   error
	}{
		"signed by the sender": {court, func(t *testing.T) []byte { return ack(t, fx.IDs[agency], court, copyHead(), time.Now()) }, broker.ErrSignature},
		"for someone else":     {agency, func(t *testing.T) []byte { return ack(t, fx.IDs[court], court, copyHead(), time.Now()) }, broker.ErrForbidden},
		"wrong predecessor": {court, func(t *testing.T) []byte {
			return ack(t, fx.IDs[court], court, envelope.Digest([]byte("x")), time.Now())
		}, broker.ErrState},
		"clock far off": {court, func(t *testing.T) []byte { return ack(t, fx.IDs[court], court, copyHead(), time.Now().Add(time.Hour)) }, broker.ErrInvalid},
		"garbage":       {court, func(t *testing.T) []byte { return []byte{0x30, 0x03, 0x01, 0x01, 0xff} }, broker.ErrSignature},
	}
	for name, tc := range refused {
		t.Run(name, func(t *testing.T) {
			if _, err := h.node.Acknowledge(ctx, participant(tc.caller), tc.der(t)); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}

	der := ack(t, fx.IDs[court], court, copyHead(), time.Now())
	stored, err := h.node.Acknowledge(ctx, participant(court), der)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := h.node.Acknowledge(ctx, participant(court), der); err != nil || again.LeafIndex != stored.LeafIndex {
		t.Errorf("repeated acknowledgement: %v, %v", again, err)
	}
	later := ack(t, fx.IDs[court], court, evidence.Digest(der), time.Now())
	if _, err := h.node.Acknowledge(ctx, participant(court), later); !errors.Is(err, broker.ErrState) {
		t.Errorf("second, different acknowledgement: err = %v, want ErrState", err)
	}

	t.Run("evidence views", func(t *testing.T) {
		want := []string{"SubmissionAcceptance", "Delivery", "Retrieval", "Acknowledgement"}
		for _, caller := range []string{agency, court} {
			evs, err := h.node.Evidence(ctx, participant(caller), id)
			if err != nil || !equal(types(evs), want) {
				t.Errorf("%s sees %v (%v), want %v", caller, types(evs), err, want)
			}
			var links []evidence.Link
			for _, ev := range evs {
				links = append(links, h.verify(ev.DER).Link())
			}
			if err := evidence.CheckChain(links); err != nil {
				t.Errorf("%s's chain: %v", caller, err)
			}
		}
		if _, err := h.node.Evidence(ctx, participant(other), id); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("a third participant sees evidence: %v", err)
		}
	})
}

func TestNode_Subscribe(t *testing.T) {
	h := newHarness(t, node.Limits{})
	ch, cancel, err := h.node.Subscribe(participant(court))
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	m := newMessage(t, fx.IDs[agency], agency, court)
	if _, err := h.submit(agency, m); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-ch:
		if e.Message.ID() != m.env.ID {
			t.Errorf("notice for %s, want %s", e.Message.ID(), m.env.ID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notice within 5s")
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestHostile_SubmitRefused has a sender's own software put a
// bidirectional override into a file name, bypassing the client's checks:
// the node refuses the envelope at submission and stores nothing.
func TestHostile_SubmitRefused(t *testing.T) {
	h := newHarness(t, node.Limits{})
	m := newMessage(t, fx.IDs[agency], agency, court)
	evil := bytes.Replace(m.bytes, []byte(`"klage.pdf"`), []byte(`"klage\u202efdp.exe"`), 1)
	sig, err := cms.SignDetached(evil, signer(fx.IDs[agency]))
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.node.Submit(context.Background(), participant(agency), evil, sig, bytes.NewReader(m.payload))
	if !errors.Is(err, broker.ErrInvalid) || !strings.Contains(err.Error(), "U+202E") {
		t.Fatalf("Submit: %v, want ErrInvalid naming U+202E", err)
	}
	if evs, err := h.db.Evidence(context.Background(), m.env.ID); err != nil || len(evs) != 0 {
		t.Fatalf("evidence stored for a refused envelope: %v (%v)", evs, err)
	}
}

// failingStep is the one fake here: a store whose AppendEvidence stores
// the step for real and then fails as a failed fsync would, as often as
// fail says. An EIO from fsync cannot be produced for real on this
// machine (it needs a device-mapper target such as dm-flakey).
type failingStep struct {
	*store.DB
	fail atomic.Int32
}

func (f *failingStep) AppendEvidence(ctx context.Context, s broker.Step) (broker.Evidence, error) {
	ev, err := f.DB.AppendEvidence(ctx, s)
	if err == nil && f.fail.Add(-1) >= 0 {
		return broker.Evidence{}, fmt.Errorf("commit: sync %s: %w", "000001.vlog", syscall.EIO)
	}
	return ev, err
}

// TestFault_StepCommitFails: when the commit of a copy's step (its
// Retrieval, the recipient's Acknowledgement) fails in a way that leaves
// open whether it was stored, the caller is told that the outcome is
// unknown (broker.ErrUnknownOutcome, Unavailable at the gRPC face), not
// an internal error; asking again returns what was stored.
func TestFault_StepCommitFails(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, node.Limits{})
	st := &failingStep{DB: h.db}
	n, err := node.New(st, node.Config{
		Domains: pkitest.Domains, Signer: signer(fx.Node), LogKey: fx.LogKey, Trust: h.trust,
		Participants: []node.Participant{{Address: agency, EncryptionCert: fx.IDs[agency].EncCert}, {Address: court, EncryptionCert: fx.IDs[court].EncCert}},
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	m := newMessage(t, fx.IDs[agency], agency, court)
	if _, err := n.Submit(ctx, participant(agency), m.bytes, m.sig, bytes.NewReader(m.payload)); err != nil {
		t.Fatal(err)
	}
	id := m.env.ID

	st.fail.Store(1)
	if _, err := n.Retrieved(ctx, participant(court), id); !errors.Is(err, broker.ErrUnknownOutcome) {
		t.Fatalf("Retrieved with a failed commit: %v, want ErrUnknownOutcome", err)
	}
	ret, err := n.Retrieved(ctx, participant(court), id)
	if err != nil || ret.Type != string(evidence.Retrieval) {
		t.Fatalf("Retrieved again: %v, %v; want the stored Retrieval", ret.Type, err)
	}

	stmt := &evidence.Statement{
		Version: evidence.StatementVersion, Type: evidence.Acknowledgement, MessageID: id,
		EnvelopeSHA256: envelope.Digest(m.bytes), PayloadSHA256: m.env.PayloadSHA256,
		Sender: agency, Recipient: court, Issuer: court, Time: time.Now(), PreviousSHA256: evidence.Digest(ret.DER),
	}
	der, err := evidence.Sign(stmt, signer(fx.IDs[court]))
	if err != nil {
		t.Fatal(err)
	}
	st.fail.Store(1)
	if _, err := n.Acknowledge(ctx, participant(court), der); !errors.Is(err, broker.ErrUnknownOutcome) {
		t.Fatalf("Acknowledge with a failed commit: %v, want ErrUnknownOutcome", err)
	}
	ack, err := n.Acknowledge(ctx, participant(court), der)
	if err != nil || !bytes.Equal(ack.DER, der) {
		t.Fatalf("Acknowledge again: %v; want the stored Acknowledgement", err)
	}
}

// failingAdd stores relayed copies and rejections for real and then fails
// as a failed fsync would, once each time fail is set (the same fault as
// failingStep).
type failingAdd struct {
	*store.DB
	fail atomic.Bool
}

func (f *failingAdd) AddEvidence(ctx context.Context, ev broker.Evidence) (broker.Evidence, error) {
	stored, err := f.DB.AddEvidence(ctx, ev)
	return stored, f.failed(err)
}

func (f *failingAdd) AddCopies(ctx context.Context, id, envSHA256 string, copies []broker.Copy, evs []broker.Evidence) ([]broker.Evidence, error) {
	stored, err := f.DB.AddCopies(ctx, id, envSHA256, copies, evs)
	return stored, f.failed(err)
}

func (f *failingAdd) failed(err error) error {
	if err == nil && f.fail.Swap(false) {
		return fmt.Errorf("commit: sync %s: %w", "000001.vlog", syscall.EIO)
	}
	return err
}

// TestFault_RelayCommitFails: when the commit of a relayed message's
// rejections, or of copies added to a message relayed before, fails in a
// way that leaves open whether they were stored, the relaying node is
// told that the outcome is unknown (and so relays again), not of an
// internal error; relaying again gets the stored answer.
func TestFault_RelayCommitFails(t *testing.T) {
	ctx := context.Background()
	const domain, nobody = "amtsgericht.example", "niemand@amtsgericht.example"
	logKey, _, err := tlog.GenerateKey(tlog.Origin(domain))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, node.Limits{})
	st := &failingAdd{DB: h.db}
	n, err := node.New(st, node.Config{
		Domains: []string{domain}, Signer: signer(fx.Node), LogKey: logKey, Trust: h.trust,
		Participants: []node.Participant{{Address: court, EncryptionCert: fx.IDs[court].EncCert}},
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	city := pki.Peer{Kind: pki.KindNode, Domains: pkitest.Domains}
	// relay hands n the message m for recipients, each with the city's
	// SubmissionAcceptance (made once per recipient) as its chain.
	chains := map[string][]broker.Evidence{}
	relay := func(m *message, recipients ...string) ([][]broker.Evidence, error) {
		in := node.Incoming{Envelope: m.bytes, Signature: m.sig, Recipients: recipients}
		for _, to := range recipients {
			if chains[m.env.ID+to] == nil {
				sa, err := evidence.Sign(&evidence.Statement{
					Version: evidence.StatementVersion, Type: evidence.SubmissionAcceptance, MessageID: m.env.ID,
					EnvelopeSHA256: envelope.Digest(m.bytes), PayloadSHA256: m.env.PayloadSHA256,
					Sender: agency, Recipient: to, Issuer: "stadt.example", Time: time.Now(),
				}, signer(fx.Node))
				if err != nil {
					t.Fatal(err)
				}
				chains[m.env.ID+to] = []broker.Evidence{{DER: sa, Log: tlog.Origin("stadt.example")}}
			}
			in.Chains = append(in.Chains, chains[m.env.ID+to])
		}
		return n.Receive(ctx, city, in, bytes.NewReader(m.payload))
	}

	t.Run("rejections", func(t *testing.T) {
		m := newMessage(t, fx.IDs[agency], agency, nobody)
		st.fail.Store(true)
		if _, err := relay(m, nobody); !errors.Is(err, broker.ErrUnknownOutcome) {
			t.Fatalf("relay refused with a failed commit: %v, want ErrUnknownOutcome", err)
		}
		answer, err := relay(m, nobody)
		if err != nil || len(answer) != 1 || len(answer[0]) != 1 || answer[0][0].Type != string(evidence.RelayRejection) {
			t.Fatalf("relay again: %v (%v), want the RelayRejection", answer, err)
		}
	})
	t.Run("copies added", func(t *testing.T) {
		m := newMessage(t, fx.IDs[agency], agency, court, nobody)
		if _, err := relay(m, court); err != nil {
			t.Fatal(err)
		}
		st.fail.Store(true)
		if _, err := relay(m, court, nobody); !errors.Is(err, broker.ErrUnknownOutcome) {
			t.Fatalf("relay of a further recipient with a failed commit: %v, want ErrUnknownOutcome", err)
		}
		answer, err := relay(m, court, nobody)
		if err != nil || len(answer) != 2 || len(answer[1]) == 0 {
			t.Fatalf("relay again: %v (%v), want an answer for both", answer, err)
		}
	})
}
