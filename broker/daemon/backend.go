package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/admin"
	"kurier.dev/kurier/broker/auditlog"
	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/broker/store/postgres"
	"kurier.dev/kurier/broker/store/postgres/pgnotify"
)

// ErrNotBadger is returned by the commands that work on a badger data
// directory (kurierd backup, restore, -check-store) for a node whose store
// is PostgreSQL, whose own tools do that work.
var ErrNotBadger = errors.New("the node's store is PostgreSQL (store.postgres)")

// backend is a node's store with what the daemon needs of it beyond
// node.Store: the upkeep a running node does, and how it learns that the
// store can take no more writes. badgerBackend and postgresBackend are
// the two.
type backend interface {
	node.Store
	// backlog reads what waits in the store for the metrics, or is nil
	// where that is not implemented.
	backlog() func(context.Context) (broker.Backlog, error)
	// sweep deletes payloads that no message references and that no
	// upload under way is writing, and returns how many.
	sweep(ctx context.Context) (int, error)
	// failed is closed once the store takes no more writes; nil if it
	// never stops taking them (a failed write fails on its own).
	failed() <-chan struct{}
	// err says why failed was closed.
	err() error
	// dir is the local directory the store keeps its files in, which
	// the disk alarm watches and the admin socket lives in; "" for a
	// store without one.
	dir() string
	// backups is what serves kurierd backup through the admin socket in
	// dir, recording each in audit; nil where the store's own tools back
	// it up.
	backups(audit *auditlog.Log) admin.Backuper
	// ping checks that the store answers, for /readyz; nil for a store
	// in the process, which answers while the process does.
	ping() func(context.Context) error
	close() error
}

// blobGrace is how old an unreferenced payload must be before a running
// node on PostgreSQL sweeps it, as badger's default (store.Options'
// BlobGrace): longer than any upload (upload_timeout, 30 minutes by
// default) and the wait until its message is stored.
const blobGrace = 24 * time.Hour

// openBackend opens the store cfg names.
func openBackend(ctx context.Context, cfg *Config, logger *slog.Logger) (backend, error) {
	if cfg.Store.Postgres != "" {
		st, err := postgres.Open(ctx, cfg.Store.Postgres, postgres.WithLogger(logger))
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return postgresBackend{st}, nil
	}
	db, err := store.Open(cfg.Data, store.Options{Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return badgerBackend{db, cfg.Data}, nil
}

// badgerBackend is the embedded store of one process, in a data
// directory it locks.
type badgerBackend struct {
	*store.DB
	data string
}

func (b badgerBackend) backlog() func(context.Context) (broker.Backlog, error) { return b.DB.Backlog }
func (b badgerBackend) sweep(ctx context.Context) (int, error)                 { return b.SweepBlobs(ctx) }
func (b badgerBackend) failed() <-chan struct{}                                { return b.Failed() }
func (b badgerBackend) err() error                                             { return b.Err() }
func (b badgerBackend) dir() string                                            { return b.data }
func (b badgerBackend) close() error                                           { return b.Close() }
func (b badgerBackend) ping() func(context.Context) error                      { return nil }
func (b badgerBackend) backups(audit *auditlog.Log) admin.Backuper {
	return auditedBackups{db: b.DB, audit: audit}
}

// postgresBackend is a PostgreSQL database that several processes may
// serve one node from.
type postgresBackend struct {
	*postgres.Store
}

func (p postgresBackend) backlog() func(context.Context) (broker.Backlog, error) {
	return p.Store.Backlog
}

// sweep is safe beside other processes uploading: only payloads older
// than blobGrace are swept, and none that a message is being created
// for (postgres.Store.SweepBlobs).
func (p postgresBackend) sweep(ctx context.Context) (int, error) {
	return p.SweepBlobs(ctx, blobGrace)
}

// failed is nil: a PostgreSQL write that fails fails alone, and the next
// one may succeed once the server is back.
func (p postgresBackend) failed() <-chan struct{} { return nil }
func (p postgresBackend) err() error              { return nil }
func (p postgresBackend) dir() string             { return "" }
func (p postgresBackend) close() error            { p.Close(); return nil }

// ping is the database's, which may be out of reach while the process
// runs.
func (p postgresBackend) ping() func(context.Context) error { return p.Ping }

// backups is nil: pg_dump and PostgreSQL's continuous backup do that.
func (p postgresBackend) backups(*auditlog.Log) admin.Backuper { return nil }

// noticesReady bounds how long a node on PostgreSQL waits at start for
// its listener of the other processes' notices, before it serves without.
const noticesReady = 10 * time.Second

// openNotices returns what carries mailbox notices among the processes
// of a node on PostgreSQL, or nil for one on badger, whose process is
// the only one.
func openNotices(ctx context.Context, cfg *Config, logger *slog.Logger) (*pgnotify.Notices, error) {
	if cfg.Store.Postgres == "" {
		return nil, nil
	}
	no, err := pgnotify.Open(ctx, cfg.Store.Postgres, logger)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return no, nil
}

// listenNotices hands the notices of the node's other processes to n's
// subscribers until ctx ends, in wg, and waits until it listens (at
// most noticesReady), so that a subscriber of this process hears of
// every message the others accept from when the node serves. After the
// listener was without its connection, n resyncs its subscribers with
// the store.
func listenNotices(ctx context.Context, wg *sync.WaitGroup, no *pgnotify.Notices, n *node.Node, logger *slog.Logger) {
	if no == nil {
		return
	}
	listening := make(chan struct{})
	wg.Go(func() {
		no.Listen(ctx, pgnotify.Handler{Ready: func() { close(listening) }, Notice: n.Announce, Resync: n.Resync})
	})
	select {
	case <-listening:
	case <-ctx.Done():
	case <-time.After(noticesReady):
		logger.Warn("not yet listening for the notices of the node's other processes; until it does, subscribers here hear only of messages this process accepts, then of those they missed", slog.Duration("waited", noticesReady))
	}
}

// storeName says where cfg's store is, for the log: the data directory,
// or PostgreSQL's host, port and database (never the DSN, which may hold
// a password).
func storeName(cfg *Config) string {
	if cfg.Store.Postgres == "" {
		return "badger in " + cfg.Data
	}
	pc, err := pgconn.ParseConfig(cfg.Store.Postgres)
	if err != nil {
		return "postgres"
	}
	hosts := []string{net.JoinHostPort(pc.Host, strconv.Itoa(int(pc.Port)))}
	for _, f := range pc.Fallbacks {
		hosts = append(hosts, net.JoinHostPort(f.Host, strconv.Itoa(int(f.Port))))
	}
	// Every server a multi-host DSN names: after a failover the first may
	// be the one that is gone.
	return fmt.Sprintf("postgres on %s/%s", strings.Join(slices.Compact(hosts), ","), pc.Database)
}

// requireBadger refuses a command of a badger data directory (what) for
// a node on PostgreSQL, naming the tool to use instead.
func requireBadger(cfg *Config, what, instead string) error {
	if cfg.Store.Postgres == "" {
		return nil
	}
	return fmt.Errorf("%s: %w: %s", what, ErrNotBadger, instead)
}
