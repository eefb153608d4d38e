package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"kurier.dev/kurier/broker"
)

// PostgreSQL error codes that say the server went away or will not take
// connections now: the connection exception class, and a server shutting
// down, restarting after a crash, or still starting.
// A read-only transaction refused a write (a server demoted to a standby
// by a failover, still reached through a connection of before) and too
// many connections are as passing.
const (
	classConnectionException = "08"
	codeAdminShutdown        = "57P01"
	codeCrashShutdown        = "57P02"
	codeCannotConnectNow     = "57P03"
	codeReadOnlyTransaction  = "25006"
	codeTooManyConnections   = "53300"
)

// conns is the store's connection pool, whose errors that say the
// database cannot be reached wrap broker.ErrStoreUnavailable (as the
// pool's callers need not each tell them), so that a caller is told to
// try again rather than of an internal failure.
type conns struct {
	*pgxpool.Pool
}

// Exec is pgxpool's, with unavailable's errors.
func (p conns) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, err := p.Pool.Exec(ctx, sql, args...)
	return tag, p.unavailable(ctx, err)
}

// Query is pgxpool's; so are its rows' errors, with unavailable's.
func (p conns) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	r, err := p.Pool.Query(ctx, sql, args...)
	if err != nil {
		return r, p.unavailable(ctx, err)
	}
	return rows{r, ctx, p}, nil
}

// QueryRow is pgxpool's; so is its Scan's error, with unavailable's.
func (p conns) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return row{p.Pool.QueryRow(ctx, sql, args...), ctx, p}
}

// BeginTx is pgxpool's, with unavailable's errors; read and tryWrite
// mark those of the statements in the transaction.
func (p conns) BeginTx(ctx context.Context, o pgx.TxOptions) (pgx.Tx, error) {
	tx, err := p.Pool.BeginTx(ctx, o)
	return tx, p.unavailable(ctx, err)
}

// Acquire is pgxpool's, with unavailable's errors.
func (p conns) Acquire(ctx context.Context) (*pgxpool.Conn, error) {
	c, err := p.Pool.Acquire(ctx)
	return c, p.unavailable(ctx, err)
}

// Ping is pgxpool's, with unavailable's errors.
func (p conns) Ping(ctx context.Context) error {
	return p.unavailable(ctx, p.Pool.Ping(ctx))
}

// rows reads a query's rows; the error that ends them may be a lost
// connection.
type rows struct {
	pgx.Rows
	ctx context.Context
	p   conns
}

// Err is the rows' error, with unavailable's.
func (r rows) Err() error { return r.p.unavailable(r.ctx, r.Rows.Err()) }

// row is a query's one row, whose Scan sends the query.
type row struct {
	pgx.Row
	ctx context.Context
	p   conns
}

// Scan is the row's, with unavailable's errors.
func (r row) Scan(dest ...any) error { return r.p.unavailable(r.ctx, r.Row.Scan(dest...)) }

// unavailable wraps err in broker.ErrStoreUnavailable if it says that the
// database cannot be reached, keeping err for the operator's log. An
// unknown outcome stays only that: the write may have been applied, and
// the caller must resubmit the same message to learn whether.
func (p conns) unavailable(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, broker.ErrUnavailable) || errors.Is(err, broker.ErrUnknownOutcome) || !p.unreachable(ctx, err) {
		return err
	}
	return fmt.Errorf("%w: %w", broker.ErrStoreUnavailable, err)
}

// unreachable reports whether err says that the database cannot be
// reached now: a failed connection, or one the server ended or lost. A
// deadline is not: it may have passed while the pool's connections were
// all in use (the node's load) or while a statement waited for a lock,
// and the caller hears DeadlineExceeded; a connection the pool could not
// make fails on its own within the DSN's connect_timeout. A cancelled
// call is the caller's.
func (p conns) unreachable(ctx context.Context, err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true // a connection that could not be made, in time or at all
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case codeAdminShutdown, codeCrashShutdown, codeCannotConnectNow, codeReadOnlyTransaction, codeTooManyConnections:
			return true
		}
		return strings.HasPrefix(pe.Code, classConnectionException)
	}
	var ne net.Error
	// A connection the server closed answers EOF once, and "conn closed"
	// from then on.
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, pgconn.ErrConnClosed)
}

// readOnly reports whether err is a write refused by a read-only server.
func readOnly(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == codeReadOnlyTransaction
}

// read and tryWrite run their function on a transaction's connection,
// which may break under it: unavailable tells that too.
func (s *Store) unavailable(ctx context.Context, err error) error {
	return s.pool.unavailable(ctx, err)
}

// Ping checks that the database answers, for a readiness probe; an error
// wraps broker.ErrStoreUnavailable. It pings over a connection of its own,
// outside the pool: a pool whose connections are all busy with the node's
// load is not an outage, and a ping that waited for one of them would say
// it is. That connection is made in the background, as the pool makes
// its own, within the DSN's connect_timeout for each server it names: a
// ping's short deadline would be gone on the first server of a
// multi-host DSN if that one no longer answers (a failover's old
// primary). Until it is made, the pool's own ping answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.prb.ping(ctx, s.pool.Config().ConnConfig, s.pool.Ping); err != nil {
		return fmt.Errorf("%w: ping the database: %w", broker.ErrStoreUnavailable, err)
	}
	return nil
}

// probe is Ping's connection.
type probe struct {
	mu     sync.Mutex     // held across a ping
	conn   *pgx.Conn      // nil until made, and after a failure
	made   chan *pgx.Conn // while a connection is being made: it, or nil if it failed
	closed bool
}

func (p *probe) ping(ctx context.Context, cfg *pgx.ConnConfig, pool func(context.Context) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil && !p.closed {
		if p.made == nil {
			p.made = make(chan *pgx.Conn, 1)
			go connectProbe(cfg.Copy(), p.made)
		}
		// Half the time left is for the pool's ping, should the
		// connection not be made in the other half.
		wait, stop := context.WithCancel(ctx)
		if d, ok := ctx.Deadline(); ok {
			wait, stop = context.WithTimeout(ctx, time.Until(d)/2)
		}
		select {
		case p.conn = <-p.made:
			p.made = nil
		case <-wait.Done():
		}
		stop()
	}
	if p.conn == nil {
		return pool(ctx)
	}
	if err := p.conn.Ping(ctx); err != nil {
		closing, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		p.conn.Close(closing)
		cancel()
		p.conn = nil
		return err
	}
	return nil
}

// connectProbe makes the probe's connection with no deadline but the
// DSN's connect_timeout for each server, and sends it on made (nil if it
// could not be made).
func connectProbe(cfg *pgx.ConnConfig, made chan<- *pgx.Conn) {
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		c = nil
	}
	made <- c
}

func (p *probe) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.made != nil {
		go func(made <-chan *pgx.Conn) {
			if c := <-made; c != nil {
				c.Close(context.Background())
			}
		}(p.made)
		p.made = nil
	}
	if p.conn != nil {
		p.conn.Close(context.Background())
		p.conn = nil
	}
}
