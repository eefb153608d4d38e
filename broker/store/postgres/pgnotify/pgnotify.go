// Package pgnotify carries the notices of new mailbox entries among the
// kurierd processes that serve one node from one PostgreSQL database
// (node.Notices), over PostgreSQL's LISTEN and NOTIFY, so that a
// subscriber on one process hears of a message that another accepted.
//
// A notice names a recipient and a message id, nothing more: the process
// that hears it reads the copy from the database (node.Node.Announce), so
// a notice sent by anything else than a node's process tells its
// subscribers nothing the database does not hold. Each notice carries the
// origin of the Notices that sent it, a random value drawn at Open, and
// a listener drops its own process's notices, whose subscribers the node
// told at once. Notices are sent after the message's commit, on a
// connection of their own, and are not stored: one is lost if its
// process dies in between, or while a listener is reconnecting. Once it
// listens again, the listener asks the node to resync (Handler.Resync),
// so that its subscribers hear of what was stored meanwhile; the mailbox
// listing stays complete, and subscribers list it after any gap
// (client.Subscribe says so).
package pgnotify

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgxlisten"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store/postgres"
)

// Channel is the PostgreSQL notification channel of mailbox notices.
const Channel = "kurier_inbox"

// maxPart bounds a notice's recipient and message id, as the stores
// bound ids and addresses; PostgreSQL bounds a payload to 8000 bytes.
const maxPart = 1024

// maxOrigin bounds a notice's origin; a node's is 22 bytes.
const maxOrigin = 64

// maxPayload bounds a notice's JSON: its three parts and the keys and
// quotes around them.
const maxPayload = 2*maxPart + maxOrigin + 32

// The listener waits firstDelay before it connects again after losing its
// connection, and twice as long after each try that fails, up to
// maxDelay: a database that is down for long is tried, and logged, once
// a minute.
const (
	firstDelay = time.Second
	maxDelay   = time.Minute
)

// noticeTimeout bounds the handling of one notice, so that a call stuck
// on the database cannot hold up the notices after it.
const noticeTimeout = 5 * time.Second

// resyncTimeout bounds a resync after the listener listens again.
const resyncTimeout = 30 * time.Second

// resyncMargin is how long before the listener found its connection lost
// a resync looks back: a dead server is found only by TCP keepalive (see
// keepalive, at most about 25 s), and the processes' clocks, which stamp
// a copy's arrival, may differ by a few seconds.
const resyncMargin = 2 * time.Minute

// keepalive probes the listener's idle connection, which otherwise only
// waits to read, so that a server that went away without closing it
// (a failed primary, a cut network) is found within about 25 s.
var keepalive = net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3}

// Notices publishes and listens for mailbox notices on one database. Its
// methods are safe for concurrent use.
type Notices struct {
	pool   *pgxpool.Pool
	cfg    *pgx.ConnConfig
	log    *slog.Logger
	origin string // this Notices' notices carry it; its listener drops them
	now    func() time.Time
	after  func(time.Duration) <-chan time.Time
}

// Option changes how Open sets up a Notices.
type Option func(*Notices)

// WithClock sets the clock a resync's start is read from and the timer
// the listener waits on before it connects again (default time.Now and
// time.After), so that tests control when it reconnects.
func WithClock(now func() time.Time, after func(time.Duration) <-chan time.Time) Option {
	return func(n *Notices) { n.now, n.after = now, after }
}

// notice is a notification's payload. Origin is empty in the notices of
// a process older than origins, which no listener drops.
type notice struct {
	Origin    string `json:"o,omitempty"`
	Recipient string `json:"r"`
	MessageID string `json:"m"`
}

// Open connects to the database named by dsn (as postgres.Open takes it)
// to publish notices; Listen opens a connection of its own. A nil logger
// is slog.Default().
func Open(ctx context.Context, dsn string, logger *slog.Logger, opts ...Option) (*Notices, error) {
	if logger == nil {
		logger = slog.Default()
	}
	var nonce [16]byte
	rand.Read(nonce[:]) // never fails (crypto/rand)
	n := &Notices{log: logger, origin: base64.RawURLEncoding.EncodeToString(nonce[:]), now: time.Now, after: time.After}
	for _, o := range opts {
		o(n)
	}
	cfg, err := postgres.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open notices: %w", err)
	}
	// A notice is one short statement; a few connections carry a node's.
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open notices: %w", err)
	}
	n.pool, n.cfg = pool, cfg.ConnConfig
	return n, nil
}

// Close closes the connections Publish uses; Listen ends with its ctx.
func (n *Notices) Close() { n.pool.Close() }

// Publish tells every other process listening on the database that
// recipient has a new copy of message id (node.Notices); this one's
// listener drops it, since the node told its own subscribers already.
func (n *Notices) Publish(ctx context.Context, recipient, messageID string) error {
	no := notice{Origin: n.origin, Recipient: recipient, MessageID: messageID}
	if err := check(no); err != nil {
		return fmt.Errorf("publish notice: %w", err)
	}
	b, err := json.Marshal(no)
	if err != nil {
		return fmt.Errorf("publish notice: %w", err)
	}
	if _, err := n.pool.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, string(b)); err != nil {
		return fmt.Errorf("publish notice of %s: %w", messageID, err)
	}
	return nil
}

// Handler is what Listen hands the notices of the node's other
// processes to. Notice is required; Ready and Resync may be nil.
type Handler struct {
	// Ready is called once, when the listener listens for the first time.
	Ready func()
	// Notice is called with each notice of another process, one after
	// the other, with a ctx that ends after noticeTimeout. An error
	// concerns that notice only (a copy not there, a mailbox not local)
	// and is logged at DEBUG.
	Notice func(ctx context.Context, recipient, messageID string) error
	// Resync is called each time the listener listens again after it
	// lost its connection (or after its first tries failed), with a time
	// before which no notice was lost: the node tells its subscribers of
	// the copies stored since, which they may not have heard of. An
	// error is logged.
	Resync func(ctx context.Context, since time.Time) error
}

// Listen hands every notice of the node's other processes to h until ctx
// ends, reconnecting after a lost connection with a backoff from
// firstDelay to maxDelay. It returns ctx's error.
func (n *Notices) Listen(ctx context.Context, h Handler) error {
	s := &session{n: n, h: h}
	cfg := n.cfg.Copy()
	cfg.DialFunc = (&net.Dialer{KeepAliveConfig: keepalive}).DialContext
	l := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			if err := s.wait(ctx); err != nil {
				return nil, err
			}
			return pgx.ConnectConfig(ctx, cfg.Copy())
		},
		// pgxlisten reports here only a connection that failed or was
		// lost (the handler logs its own errors): wait logs it, with
		// when the listener tries again.
		LogError: func(_ context.Context, err error) { s.lastErr = err },
		// pgxlisten reconnects at once; wait spaces the tries.
		ReconnectDelay: -1,
	}
	l.Handle(Channel, handler{s})
	err := l.Listen(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("listen for notices: %w", err)
}

// session is one Listen's state. pgxlisten calls Connect, LogError and
// the handler's methods from Listen's goroutine, one after the other, so
// it needs no lock.
type session struct {
	n        *Notices
	h        Handler
	once     sync.Once
	started  bool      // Connect was called before
	failures int       // connections tried since the listener last listened
	lost     time.Time // when the first of them was tried
	lastErr  error
}

// wait returns at once the first time; later, the listener lost its
// connection or failed to get one, and wait logs why and waits before
// the next try, longer after each failure. It returns ctx's error if ctx
// ends first.
func (s *session) wait(ctx context.Context) error {
	if !s.started {
		s.started = true
		return nil
	}
	s.failures++
	if s.failures == 1 {
		s.lost = s.n.now()
	}
	d := backoff(s.failures)
	if ctx.Err() == nil {
		s.n.log.Warn("no connection for the notices of the node's other processes; subscribers here hear only of messages this process accepts until it is back",
			slog.Int("attempt", s.failures), slog.Duration("retry_in", d), slog.Any(broker.LogErr, s.lastErr))
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.n.after(d):
		return nil
	}
}

// backoff is how long the listener waits before its try after failures
// tries: firstDelay, doubled each time, at most maxDelay.
func backoff(failures int) time.Duration {
	d := firstDelay
	for i := 1; i < failures && d < maxDelay; i++ {
		d *= 2
	}
	return min(d, maxDelay)
}

// handler hands each notice to the session's Handler; its HandleBacklog,
// which pgxlisten calls each time it listens, says that it is ready, or
// resyncs after a loss.
type handler struct{ s *session }

func (h handler) HandleNotification(ctx context.Context, nt *pgconn.Notification, _ *pgx.Conn) error {
	s := h.s
	no, err := parse(nt.Payload)
	if err != nil {
		s.n.log.Warn("a mailbox notice that no node sends", slog.Int("bytes", len(nt.Payload)), slog.Any(broker.LogErr, err))
		return nil
	}
	if no.Origin == s.n.origin {
		return nil // the node told this process's subscribers when it published
	}
	ctx, cancel := context.WithTimeout(ctx, noticeTimeout)
	defer cancel()
	if err := s.h.Notice(ctx, no.Recipient, no.MessageID); err != nil {
		s.n.log.Debug("mailbox notice not announced", slog.String(broker.LogMsgID, no.MessageID), slog.Any(broker.LogErr, err))
	}
	return nil
}

// HandleBacklog is called once the connection listens: there is no
// backlog (notices are not stored), but from now on none is missed, and
// after a loss the node looks up what it may have missed.
func (h handler) HandleBacklog(ctx context.Context, _ string, _ *pgx.Conn) error {
	s := h.s
	if s.h.Ready != nil {
		s.once.Do(s.h.Ready)
	}
	if s.failures == 0 {
		return nil
	}
	s.n.log.Info("listening again for the notices of the node's other processes", slog.Int("attempts", s.failures))
	since := s.lost.Add(-resyncMargin)
	s.failures, s.lastErr = 0, nil
	if s.h.Resync == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, resyncTimeout)
	defer cancel()
	if err := s.h.Resync(ctx, since); err != nil {
		s.n.log.Warn("resync mailbox notices after the listener reconnected; subscribers here may have missed messages until they list their inbox", slog.Any(broker.LogErr, err))
	}
	return nil
}

// parse reads and checks a notification's payload, which anything that
// may connect to the database can send.
func parse(payload string) (notice, error) {
	var no notice
	if len(payload) > maxPayload {
		return no, fmt.Errorf("a notice of %d bytes is longer than any a node sends", len(payload))
	}
	if err := json.Unmarshal([]byte(payload), &no); err != nil {
		return no, fmt.Errorf("a notice that is not one a node sends: %w", err)
	}
	return no, check(no)
}

// check bounds a notice's parts.
func check(no notice) error {
	if no.Recipient == "" || len(no.Recipient) > maxPart || no.MessageID == "" || len(no.MessageID) > maxPart {
		return errors.New("a notice names a recipient and a message id of 1 to 1024 bytes each")
	}
	if len(no.Origin) > maxOrigin {
		return fmt.Errorf("a notice's origin is at most %d bytes", maxOrigin)
	}
	return nil
}
