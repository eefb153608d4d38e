package postgres

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ParseConfig parses dsn as Open takes it (a PostgreSQL URL or key=value
// string, with pgxpool's pool_* settings), for the callers that check or
// open it elsewhere. Its error never quotes dsn, which may hold a
// password: pgx's own error quotes the DSN with what it recognises as a
// password masked, and a DSN that does not parse is just where it may
// not recognise one (password = x, an unterminated or escaped quote).
//
// A DSN without connect_timeout, or with libpq's connect_timeout=0 (wait
// for ever), gets DefaultConnectTimeout: the pool goes
// on making a connection that its caller gave up waiting for, and one to
// a host that does not answer (a network partition) would otherwise hold
// its place in the pool until the kernel gives up, minutes after the
// network is back.
func ParseConfig(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, dsnError(err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	return cfg, nil
}

// DefaultConnectTimeout bounds a connection attempt, TLS and
// authentication included, for a DSN that names no connect_timeout.
const DefaultConnectTimeout = 10 * time.Second

// dsnError says why a DSN did not parse without quoting it: pgconn's own
// description up to the value it names, if any, and not its cause, since
// both may quote a fragment of the DSN, which may be a piece of the
// password (a value pgconn does not know for one, in a DSN that does not
// parse). The error is a new one rather than a wrapper, so that no caller
// can reach the DSN through it (pgconn.ParseConfigError.ConnString).
func dsnError(err error) error {
	var pe *pgconn.ParseConfigError
	if !errors.As(err, &pe) {
		return errors.New("the DSN does not parse")
	}
	bare := *pe
	bare.ConnString = ""
	why, ok := strings.CutPrefix(bare.Error(), "cannot parse ``: ")
	if !ok {
		return errors.New("the DSN does not parse")
	}
	if cause := pe.Unwrap(); cause != nil {
		why = strings.TrimSuffix(why, " ("+cause.Error()+")")
	}
	why, _, _ = strings.Cut(why, ":")
	if why == "" || strings.ContainsAny(why, "\"'`=") {
		return errors.New("the DSN does not parse")
	}
	return fmt.Errorf("the DSN does not parse: %s", why)
}
