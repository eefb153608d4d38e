// Package pgnotify carries the notices of new mailbox entries among the
// kurierd processes that serve one node from one PostgreSQL database
// (node.Notices), over PostgreSQL's LISTEN and NOTIFY, so that a
// subscriber on one process hears of a message that another accepted.
//
// A notice names a recipient and a message id, nothing more: the process
// that hears it reads the copy from the database (node.Node.Announce), so
// a notice sent by anything else than a node's process tells its
// subscribers nothing the database does not hold. Notices are sent after
// the message's commit, on a connection of their own, and are not
// stored: one is lost if its process dies in between, or while a
// listener is reconnecting. The mailbox listing stays complete, and
// subscribers list it after any gap (client.Subscribe says so).
package pgnotify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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

// reconnectDelay is how long the listener waits before it connects again
// after losing its connection.
const reconnectDelay = time.Second

// Notices publishes and listens for mailbox notices on one database. Its
// methods are safe for concurrent use.
type Notices struct {
	pool *pgxpool.Pool
	cfg  *pgx.ConnConfig
	log  *slog.Logger
}

// notice is a notification's payload.
type notice struct {
	Recipient string `json:"r"`
	MessageID string `json:"m"`
}

// Open connects to the database named by dsn (as postgres.Open takes it)
// to publish notices; Listen opens a connection of its own. A nil logger
// is slog.Default().
func Open(ctx context.Context, dsn string, logger *slog.Logger) (*Notices, error) {
	if logger == nil {
		logger = slog.Default()
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
	return &Notices{pool: pool, cfg: cfg.ConnConfig, log: logger}, nil
}

// Close closes the connections Publish uses; Listen ends with its ctx.
func (n *Notices) Close() { n.pool.Close() }

// Publish tells every process listening on the database, this one
// included, that recipient has a new copy of message id (node.Notices).
func (n *Notices) Publish(ctx context.Context, recipient, messageID string) error {
	if err := check(notice{recipient, messageID}); err != nil {
		return fmt.Errorf("publish notice: %w", err)
	}
	b, err := json.Marshal(notice{recipient, messageID})
	if err != nil {
		return fmt.Errorf("publish notice: %w", err)
	}
	if _, err := n.pool.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, string(b)); err != nil {
		return fmt.Errorf("publish notice of %s: %w", messageID, err)
	}
	return nil
}

// Listen calls fn with every notice published on the database until ctx
// ends, one after the other, reconnecting after a lost connection; it
// calls ready (if not nil) once it listens for the first time. An error
// from fn is logged at DEBUG (a copy not there, a mailbox not local): it
// concerns that notice only. It returns ctx's error.
func (n *Notices) Listen(ctx context.Context, ready func(), fn func(ctx context.Context, recipient, messageID string) error) error {
	var once sync.Once
	signal := func() {
		if ready != nil {
			once.Do(ready)
		}
	}
	l := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			return pgx.ConnectConfig(ctx, n.cfg.Copy())
		},
		LogError: func(ctx context.Context, err error) {
			if ctx.Err() == nil {
				n.log.Warn("mailbox notices from the node's other processes", slog.Any(broker.LogErr, err))
			}
		},
		ReconnectDelay: reconnectDelay,
	}
	l.Handle(Channel, handler{n: n, ready: signal, fn: fn})
	err := l.Listen(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("listen for notices: %w", err)
}

// handler hands each notice to fn; its HandleBacklog, which pgxlisten
// calls once it listens, says that it is ready.
type handler struct {
	n     *Notices
	ready func()
	fn    func(ctx context.Context, recipient, messageID string) error
}

func (h handler) HandleNotification(ctx context.Context, nt *pgconn.Notification, _ *pgx.Conn) error {
	var no notice
	if len(nt.Payload) > 2*maxPart+16 {
		return fmt.Errorf("a notice of %d bytes is longer than any a node sends", len(nt.Payload))
	}
	if err := json.Unmarshal([]byte(nt.Payload), &no); err != nil {
		return fmt.Errorf("a notice that is not one a node sends: %w", err)
	}
	if err := check(no); err != nil {
		return err
	}
	if err := h.fn(ctx, no.Recipient, no.MessageID); err != nil {
		h.n.log.Debug("mailbox notice not announced", slog.String(broker.LogMsgID, no.MessageID), slog.Any(broker.LogErr, err))
	}
	return nil
}

// HandleBacklog is called once the connection listens: there is no
// backlog (notices are not stored), but from now on none is missed.
func (h handler) HandleBacklog(context.Context, string, *pgx.Conn) error {
	h.ready()
	return nil
}

// check bounds a notice's parts.
func check(no notice) error {
	if no.Recipient == "" || len(no.Recipient) > maxPart || no.MessageID == "" || len(no.MessageID) > maxPart {
		return errors.New("a notice names a recipient and a message id of 1 to 1024 bytes each")
	}
	return nil
}
