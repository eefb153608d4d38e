// Package postgres is a node's store (node.Store) on PostgreSQL, so that
// several kurierd processes can serve one domain from one database and
// PostgreSQL's replication and failover carry its state.
//
// Durability: a write returns only after its transaction committed, and
// PostgreSQL commits as synchronous_commit says; Open refuses a server or
// DSN where it is off, since an acknowledged message could then be lost in
// a crash. An answer survives the loss of the primary only if it was also
// on a standby: set synchronous_standby_names on the primary (for example
// 'ANY 1 (standby1, standby2)') and synchronous_commit to on or
// remote_apply, so that every commit waits for a synchronous standby, and
// fail over only to one of them (Patroni's synchronous_mode, or
// CloudNativePG's synchronous replicas, do both). A DSN naming every
// host with target_session_attrs=read-write (postgres://a,b,c/kurier?
// target_session_attrs=read-write) finds the new primary after a
// failover; a write whose connection broke in its commit answers
// broker.ErrUnknownOutcome, and the client's resubmission of the same
// sealed message tells which. While the database cannot be reached (down,
// restarting, or cut off), calls fail with broker.ErrStoreUnavailable,
// which the node answers as Unavailable, to try again, or, cut off, with
// their own deadline if it comes before the DSN's connect_timeout; they
// work again once it is back.
//
// Statements are prepared and cached per connection (pgx's default), so
// a PgBouncer in front must pool by session, or the DSN must say
// default_query_exec_mode=exec.
//
// The transparency log is appended inside each evidence's transaction,
// under a row lock on its one head row, so that several processes never
// fork it or leave a gap: leaf indexes are known when a call answers. The
// lock is held from the append to the commit (see BenchmarkCreateMessage
// for what that costs).
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"

	"kurier.dev/kurier/broker"
)

//go:embed *.sql
var migrations embed.FS

// VersionTable is the table in which the schema's version is kept (by
// github.com/jackc/tern's migrate package).
const VersionTable = "kurier_schema_version"

// ErrRolledBack is returned by Open when the transparency log is shorter
// than the high-water mark MarkLog wrote, or differs from it at the mark's
// size: the database lost committed evidence (a failover to a standby that
// was behind, or a restore from an older backup). The node must not run
// on it, since it would re-issue log positions that signed checkpoints
// already cover.
var ErrRolledBack = errors.New("the transparency log is behind its high-water mark")

// Store is a node store in a PostgreSQL database. Its methods are safe for
// concurrent use, also by several processes on the same database.
type Store struct {
	pool conns
	log  *slog.Logger
	prb  probe // see Ping

	// marked is the highest mark this process wrote (MarkLog), with the
	// log's root there: a log found shorter or with another root since
	// was rolled back under the running process (a failover to a standby
	// that lost it), which must not go on to sign a forked log.
	mu     sync.Mutex
	marked struct {
		size uint64
		root []byte
	}
}

// Option changes how Open connects.
type Option func(*options)

type options struct {
	logger   *slog.Logger
	maxConns int32
}

// WithLogger sets the logger; by default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithMaxConns bounds the connections the store opens; by default
// pgxpool's (the larger of 4 and the number of CPUs), or pool_max_conns
// in the DSN.
func WithMaxConns(n int32) Option { return func(o *options) { o.maxConns = n } }

// Open connects to the database named by dsn (a PostgreSQL URL or
// key=value string, as libpq takes), applies the schema migrations it has
// not had yet, and checks the transparency log against its high-water
// mark (ErrRolledBack).
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	o := options{logger: slog.Default()}
	for _, f := range opts {
		f(&o)
	}
	cfg, err := ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	if o.maxConns > 0 {
		cfg.MaxConns = o.maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	s := &Store{pool: conns{pool}, log: o.logger}
	if err := s.start(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store on %s:%d/%s: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	return s, nil
}

// start checks the server's durability settings, migrates the schema and
// checks the log's mark.
func (s *Store) start(ctx context.Context) error {
	var syncCommit, fsync string
	if err := s.pool.QueryRow(ctx, "SELECT current_setting('synchronous_commit'), current_setting('fsync')").Scan(&syncCommit, &fsync); err != nil {
		return fmt.Errorf("read the server's settings: %w", err)
	}
	if syncCommit == "off" {
		return errors.New("synchronous_commit is off, so an acknowledged message could be lost in a crash: set it to on (or remote_apply with a synchronous standby)")
	}
	if fsync == "off" {
		s.log.Warn("the PostgreSQL server runs with fsync off: a crash of its machine can lose or damage acknowledged messages")
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	return s.checkMark(ctx)
}

// migrate applies the embedded migrations that the database lacks. tern
// holds an advisory lock meanwhile, so processes starting at once migrate
// one after the other.
func (s *Store) migrate(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate the schema: %w", err)
	}
	defer conn.Release()
	m, err := migrate.NewMigrator(ctx, conn.Conn(), VersionTable)
	if err != nil {
		return fmt.Errorf("migrate the schema: %w", err)
	}
	if err := m.LoadMigrations(migrations); err != nil {
		return fmt.Errorf("load the schema migrations: %w", err)
	}
	v, err := m.GetCurrentVersion(ctx)
	if err != nil {
		return fmt.Errorf("read the schema version: %w", err)
	}
	if int(v) > len(m.Migrations) {
		return fmt.Errorf("the database's schema is version %d, newer than this kurierd's %d: run the newer kurierd", v, len(m.Migrations))
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate the schema from version %d: %w", v, err)
	}
	return nil
}

// Close closes the store's connections; calls under way must have
// returned first.
func (s *Store) Close() {
	s.pool.Close()
	s.prb.close()
}

// durable returns once everything this store's transactions saw committed
// is as durable as a commit of its own: a transaction that only read finds
// rows whose commit may still wait for a synchronous standby (its writer's
// answer lost), and an answer drawn from them ("exists already") would
// promise what a failover could lose. It writes a row, so that its commit
// waits as a write's does; an error is broker.ErrUnknownOutcome.
func (s *Store) durable(ctx context.Context) error {
	err := s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE log_head SET mark_size = mark_size")
		return err
	})
	if err != nil && !errors.Is(err, broker.ErrUnknownOutcome) {
		return fmt.Errorf("%w: wait for the stored copy to be durable: %w", broker.ErrUnknownOutcome, err)
	}
	return err
}

// maxAttempts bounds how often a write is tried when PostgreSQL aborts it
// for a serialization failure or deadlock, which a retry resolves.
const maxAttempts = 5

// write runs fn in a read-committed transaction and commits it, retrying
// a transaction that PostgreSQL aborted for a serialization failure or a
// deadlock. fn must not keep state between attempts.
func (s *Store) write(ctx context.Context, fn func(pgx.Tx) error) error {
	var err error
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		if err = s.tryWrite(ctx, fn); err == nil || !retryable(err) || ctx.Err() != nil {
			break
		}
		s.log.Debug("postgres transaction retried", "attempt", attempt, broker.LogErr, err)
	}
	if retryable(err) {
		return fmt.Errorf("%w: %w", broker.ErrConflict, err)
	}
	return err
}

// tryWrite runs fn in one transaction. A commit whose answer is lost (the
// connection broke, or ctx ended, once COMMIT may have been sent) is
// broker.ErrUnknownOutcome: it may have been applied.
func (s *Store) tryWrite(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // a no-op after Commit
	if err := fn(tx); err != nil {
		if readOnly(err) {
			// A server no longer the primary, reached through a proxy or
			// an address that moved: the connection goes, not back to
			// the pool, so that the next one finds the primary.
			tx.Conn().Close(context.WithoutCancel(ctx))
		}
		return s.unavailable(ctx, err)
	}
	if err := tx.Commit(ctx); err != nil {
		var pe *pgconn.PgError
		switch {
		case errors.As(err, &pe) && pe.SeverityUnlocalized == "ERROR":
			// The server refused the commit (a deferred check, a
			// serialization failure): it rolled the transaction back.
			// A FATAL one ends the connection, perhaps after the commit
			// record was written (terminated while waiting for a
			// synchronous standby): its outcome is unknown.
			return fmt.Errorf("commit: %w", err)
		}
		// Not even pgconn.SafeToRetry tells that COMMIT was not sent: a
		// connection the server ended while the commit waited for a
		// standby reports "conn closed", which it counts as safe.
		return fmt.Errorf("commit: %w: %w", broker.ErrUnknownOutcome, err)
	}
	return nil
}

// PostgreSQL error codes the store branches on.
const (
	codeUniqueViolation      = "23505"
	codeForeignKeyViolation  = "23503"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
)

// pgCode returns the SQLSTATE of a PostgreSQL error in err's chain, or "".
func pgCode(err error) (code, constraint string) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code, pe.ConstraintName
	}
	return "", ""
}

// errRetry asks write for another attempt: what the transaction read
// changed under it, and a new snapshot tells how.
var errRetry = errors.New("the stored state changed during the transaction")

func retryable(err error) bool {
	code, _ := pgCode(err)
	return code == codeSerializationFailure || code == codeDeadlockDetected || errors.Is(err, errRetry)
}

// read runs fn on a read-only, repeatable-read transaction, so that what
// it reads is one consistent state.
func (s *Store) read(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return s.unavailable(ctx, err)
	}
	return s.unavailable(ctx, tx.Commit(ctx))
}

// nanos is how times that order listings are stored: Unix nanoseconds.
// The zero time (nothing due) is stored as NULL by the callers.
func nanos(t time.Time) int64 { return t.UnixNano() }

// maxKeyPart bounds ids and addresses, as the badger store does.
const maxKeyPart = 1024

// checkKeyPart reports whether s may be used as an id or address.
func checkKeyPart(what, s string) error {
	if s == "" || len(s) > maxKeyPart {
		return fmt.Errorf("%w: %s must be 1 to %d bytes", broker.ErrInvalid, what, maxKeyPart)
	}
	return nil
}
