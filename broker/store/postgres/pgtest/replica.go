package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// StandbyName is the standby's application_name, which the primary's
// synchronous_standby_names names when the pair is synchronous.
const StandbyName = "standby1"

// ReplicationUser is the role the standby streams the primary's WAL as.
const ReplicationUser = "replicator"

// Pair is a PostgreSQL primary and a standby that streams its WAL, each a
// throwaway cluster of its own on a free loopback port, for tests of what
// a failover does to the store: KillPrimary crashes the primary, Promote
// makes the standby the primary. Both are stopped when the test ends.
type Pair struct {
	t                testing.TB
	bin              string
	primary, standby *member
	killed           atomic.Bool
}

// member is one server of a Pair.
type member struct {
	dir, data string
	port      int
	cred      *syscall.Credential
	srv       *server
}

// PairOptions says how StartPair sets up the pair.
type PairOptions struct {
	// Synchronous makes every commit on the primary wait until the
	// standby has flushed it (synchronous_standby_names names the
	// standby, synchronous_commit is on), so that an answered write
	// survives a failover to it.
	Synchronous bool
}

// StartPair starts a primary and a streaming standby as the servers of
// DSN do (fsync on, as the postgres system user under root): the primary
// with wal_level=replica and a replication role that pg_hba.conf lets in
// from 127.0.0.1, the standby from pg_basebackup -R of it. It returns
// once the standby streams (and, if o.Synchronous, once the primary
// counts it as its synchronous standby). It skips t without PostgreSQL's
// binaries, or fails it under CI=true.
func StartPair(t testing.TB, o PairOptions) *Pair {
	t.Helper()
	bin, err := pairBin()
	if err != nil {
		if os.Getenv("CI") != "true" {
			t.Skipf("pgtest: %v: apt-get install postgresql", err)
		}
		t.Fatalf("pgtest: %v", err)
	}
	p := &Pair{t: t, bin: bin}
	t.Cleanup(p.stop)
	if p.primary, err = p.initPrimary(); err != nil {
		t.Fatalf("pgtest: primary: %v", err)
	}
	if p.standby, err = p.cloneStandby(); err != nil {
		t.Fatalf("pgtest: standby: %v", err)
	}
	if err := p.awaitStreaming(o.Synchronous); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return p
}

// pairBin returns the folder of initdb and pg_basebackup: findBin's, or
// the one a link on $PATH to initdb leads to, where a Debian system keeps
// the programs it links to none.
func pairBin() (string, error) {
	bin, err := findBin()
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(filepath.Join(bin, "initdb")); err == nil {
		bin = filepath.Dir(real)
	}
	if _, err := os.Stat(filepath.Join(bin, "pg_basebackup")); err != nil {
		return "", fmt.Errorf("no pg_basebackup beside initdb in %s", bin)
	}
	return bin, nil
}

// newMember makes a temporary folder for a server, given to the user it
// runs as, and picks its port.
func newMember() (*member, error) {
	dir, err := os.MkdirTemp("", "kurier-pgtest-pair-")
	if err != nil {
		return nil, err
	}
	m := &member{dir: dir, data: filepath.Join(dir, "data")}
	if m.cred, err = serverUser(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if m.port, err = freePort(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return m, nil
}

// run runs one of PostgreSQL's programs as m's user in m's folder, for
// at most two minutes (a pg_basebackup that waits for WAL, a promotion
// that does not end).
func (p *Pair) run(m *member, name string, args ...string) error {
	return p.runEnv(m, nil, name, args...)
}

// runEnv is run with env added to the program's environment.
func (p *Pair) runEnv(m *member, env []string, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, name), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = m.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: m.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// primaryConf is what the primary's postgresql.conf adds for streaming
// replication; wal_level=replica and ten WAL senders are PostgreSQL's
// defaults since version 10, said here as an operator would.
const primaryConf = `
wal_level = replica
max_wal_senders = 10
`

// pairHBA lets the tests in over the socket, and with the password (see
// password) over 127.0.0.1, also the replication role for replication.
const pairHBA = `local all all trust
host all all 127.0.0.1/32 scram-sha-256
host replication ` + ReplicationUser + ` 127.0.0.1/32 scram-sha-256
`

// initPrimary creates and starts the primary and its replication role.
func (p *Pair) initPrimary() (*member, error) {
	m, err := newMember()
	if err != nil {
		return nil, err
	}
	auth, err := authArgs(m.dir, m.cred)
	if err != nil {
		return m, err
	}
	if err := p.run(m, "initdb", append([]string{"-D", m.data, "-U", "postgres", "--encoding=UTF8", "--locale=C", "--no-instructions", "--no-sync"}, auth...)...); err != nil {
		return m, err
	}
	if err := appendFile(filepath.Join(m.data, "postgresql.conf"), primaryConf); err != nil {
		return m, err
	}
	if err := os.WriteFile(filepath.Join(m.data, "pg_hba.conf"), []byte(pairHBA), 0o600); err != nil {
		return m, err
	}
	if err := p.startMember(m); err != nil {
		return m, err
	}
	return m, execOn(m.port, "postgres", "CREATE ROLE "+ReplicationUser+" WITH REPLICATION LOGIN PASSWORD '"+password+"'")
}

// cloneStandby copies the primary with pg_basebackup -R, which writes
// standby.signal and the primary_conninfo the standby streams with, and
// starts the copy.
func (p *Pair) cloneStandby() (*member, error) {
	m, err := newMember()
	if err != nil {
		return nil, err
	}
	// The password goes in the environment, not on a command line any
	// user can read; -R writes it into primary_conninfo, in the standby's
	// own folder.
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=%s application_name=%s", p.primary.port, ReplicationUser, StandbyName)
	if err := p.runEnv(m, []string{"PGPASSWORD=" + password}, "pg_basebackup", "-D", m.data, "-R", "-X", "stream", "-c", "fast", "--no-sync", "-d", conninfo); err != nil {
		return m, err
	}
	return m, p.startMember(m)
}

// startMember starts m's server and waits until it takes connections.
func (p *Pair) startMember(m *member) error {
	srv, err := startServer(p.bin, m.dir, m.data, m.cred, m.port)
	if err != nil {
		return err
	}
	m.srv = srv
	return awaitServer(baseURL(m.port), srv)
}

// awaitStreaming waits until the primary sends WAL to the standby and,
// if synchronous, makes it the synchronous standby (set only now: with
// no standby connected, every commit would wait) and waits until the
// primary counts it as one.
func (p *Pair) awaitStreaming(synchronous bool) error {
	if err := p.awaitReplication("streaming", "async"); err != nil {
		return err
	}
	if !synchronous {
		return nil
	}
	if err := execOn(p.primary.port, "postgres", "ALTER SYSTEM SET synchronous_standby_names = '"+StandbyName+"'"); err != nil {
		return fmt.Errorf("set synchronous_standby_names: %w", err)
	}
	if err := execOn(p.primary.port, "postgres", "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("reload the primary's settings: %w", err)
	}
	return p.awaitReplication("streaming", "sync")
}

// awaitReplication waits up to a minute until pg_stat_replication on the
// primary shows the standby in state with sync_state.
func (p *Pair) awaitReplication(state, syncState string) error {
	deadline := time.Now().Add(time.Minute)
	var got string
	for time.Now().Before(deadline) {
		err := queryOn(p.primary.port, "postgres", func(ctx context.Context, c *pgx.Conn) error {
			return c.QueryRow(ctx, "SELECT coalesce(string_agg(state || '/' || sync_state, ','), '') FROM pg_stat_replication WHERE application_name = $1", StandbyName).Scan(&got)
		})
		if err == nil && got == state+"/"+syncState {
			return nil
		}
		time.Sleep(50 * time.Millisecond) // polls another process, with a deadline
	}
	log, _ := os.ReadFile(p.standby.srv.log)
	return fmt.Errorf("the standby is not %s/%s on the primary a minute after its start (%q):\n%s", state, syncState, got, log)
}

// CreateDatabase creates a new, empty database on the primary, which the
// standby replicates, and returns its name.
func (p *Pair) CreateDatabase() string {
	p.t.Helper()
	name := fmt.Sprintf("kurier_test_%d_%d", os.Getpid(), dbCount.Add(1))
	if err := execOn(p.primary.port, "postgres", "CREATE DATABASE "+name+" TEMPLATE template0 ENCODING 'UTF8'"); err != nil {
		p.t.Fatalf("pgtest: create database: %v", err)
	}
	return name
}

// DSN returns a DSN of database db that names both servers, the primary
// first, with target_session_attrs=read-write, so that pgx connects to
// whichever of them takes writes: the primary, and after Promote the
// former standby.
func (p *Pair) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres:%s@%s,%s/%s?sslmode=disable&target_session_attrs=read-write",
		password, hostPort(p.primary.port), hostPort(p.standby.port), db)
}

// PrimaryDSN returns a DSN of database db on the primary alone.
func (p *Pair) PrimaryDSN(db string) string { return memberDSN(p.primary.port, db) }

// StandbyDSN returns a DSN of database db on the standby alone.
func (p *Pair) StandbyDSN(db string) string { return memberDSN(p.standby.port, db) }

func memberDSN(port int, db string) string {
	u := baseURL(port)
	u.Path = "/" + db
	return u.String()
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// KillPrimary ends the primary's postmaster with SIGKILL, as a crash of
// its machine would end it, and returns once it has been reaped. Its
// backends notice that it died and end their connections.
func (p *Pair) KillPrimary() {
	p.t.Helper()
	p.killed.Store(true)
	if err := syscall.Kill(p.primary.srv.pid, syscall.SIGKILL); err != nil {
		p.t.Fatalf("pgtest: kill the primary (pid %d): %v", p.primary.srv.pid, err)
	}
	select {
	case <-p.primary.srv.exited:
		if p.primary.srv.err == nil {
			p.t.Fatal("pgtest: the primary ended well after SIGKILL")
		}
	case <-time.After(time.Minute):
		p.t.Fatal("pgtest: the primary did not end within a minute of SIGKILL")
	}
}

// Promote makes the standby the primary (pg_ctl promote) and returns once
// it takes writes. After a synchronous pair's failover the new primary
// has no standby, and its synchronous_standby_names is empty (the setting
// was made on the old primary after the copy), so that its commits do not
// wait for one.
func (p *Pair) Promote() {
	p.t.Helper()
	if err := p.run(p.standby, "pg_ctl", "promote", "-w", "-t", "60", "-D", p.standby.data); err != nil {
		p.t.Fatalf("pgtest: promote the standby: %v", err)
	}
	var readOnly string
	err := queryOn(p.standby.port, "postgres", func(ctx context.Context, c *pgx.Conn) error {
		return c.QueryRow(ctx, "SHOW transaction_read_only").Scan(&readOnly)
	})
	if err != nil || readOnly != "off" {
		p.t.Fatalf("pgtest: the promoted standby does not take writes (transaction_read_only %q): %v", readOnly, err)
	}
}

// stop stops the servers still running and removes their folders.
func (p *Pair) stop() {
	for _, m := range []*member{p.standby, p.primary} {
		if m == nil {
			continue
		}
		if m.srv != nil && !(m == p.primary && p.killed.Load()) {
			err := p.run(m, "pg_ctl", "stop", "-w", "-m", "fast", "-D", m.data)
			if werr := m.srv.wait(); err == nil && werr != nil {
				err = fmt.Errorf("the server ended with %w", werr)
			}
			if err != nil {
				p.t.Errorf("pgtest: stop the server on port %d: %v", m.port, err)
			}
		}
		if err := os.RemoveAll(m.dir); err != nil {
			p.t.Errorf("pgtest: %v", err)
		}
	}
}

// execOn runs one statement on database db of the server on port.
func execOn(port int, db, sql string) error {
	return queryOn(port, db, func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, sql)
		return err
	})
}

// queryOn runs fn on a connection to database db of the server on port,
// within 30 s.
func queryOn(port int, db string, fn func(context.Context, *pgx.Conn) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, memberDSN(port, db))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return fn(ctx, conn)
}

func appendFile(name, text string) error {
	f, err := os.OpenFile(name, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	return errors.Join(err, f.Close())
}
