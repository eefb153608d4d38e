package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// Password is the password of the postgres role on every cluster this
// test binary starts, which asks for it (scram-sha-256) on every TCP
// connection; it is new for each binary.
var Password = password

// Server is a PostgreSQL cluster of one test's own, which the test may
// stop and start again, to see how what uses it meets an outage; the
// shared cluster of DSN stays up for the others. It asks for Password.
type Server struct {
	bin, dir, data string
	cred           *syscall.Credential
	port           int
	base           *url.URL
	srv            atomic.Pointer[server] // nil while stopped
	dbs            atomic.Int64
}

// NewServer starts a cluster for t alone, removed when t ends. It skips
// t (or fails it under CI=true) as DSN does without PostgreSQL's
// binaries, and skips it when $KURIER_TEST_POSTGRES names a server,
// which is not the tests' to stop.
func NewServer(t testing.TB) *Server {
	t.Helper()
	if os.Getenv(EnvDSN) != "" {
		t.Skipf("pgtest: $%s names a server the tests do not stop", EnvDSN)
	}
	bin, err := findBin()
	if err != nil {
		if os.Getenv("CI") != "true" {
			t.Skipf("%v: apt-get install postgresql", err)
		}
		t.Fatalf("pgtest: %v", err)
	}
	s, err := initServer(bin)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.stop("fast"); err != nil {
			t.Errorf("pgtest: stop PostgreSQL: %v", err)
		}
		os.RemoveAll(s.dir)
	})
	s.Start(t)
	return s
}

// initServer creates the cluster's folder with password authentication
// over TCP and picks its port.
func initServer(bin string) (*Server, error) {
	dir, err := os.MkdirTemp("", "kurier-pgtest-")
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir, data: filepath.Join(dir, "data")}
	fail := func(err error) (*Server, error) { os.RemoveAll(dir); return nil, err }
	if s.cred, err = serverUser(dir); err != nil {
		return fail(err)
	}
	auth, err := authArgs(dir, s.cred)
	if err != nil {
		return fail(err)
	}
	if err := s.run("initdb", append([]string{"-D", s.data, "-U", "postgres", "--encoding=UTF8", "--locale=C", "--no-instructions", "--no-sync"}, auth...)...); err != nil {
		return fail(err)
	}
	if s.port, err = freePort(); err != nil {
		return fail(err)
	}
	s.base = baseURL(s.port)
	return s, nil
}

func (s *Server) run(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Start starts the stopped server on its port and returns once it takes
// connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if s.srv.Load() != nil {
		t.Fatal("pgtest: the server runs already")
	}
	srv, err := startServer(s.bin, s.dir, s.data, s.cred, s.port)
	if err == nil {
		s.srv.Store(srv)
		err = awaitServer(s.base, srv)
	}
	if err != nil {
		t.Fatalf("pgtest: start PostgreSQL: %v", err)
	}
}

// Stop stops the server at once, as a crash of its machine would
// (pg_ctl stop -m immediate): connections are cut, nothing is flushed
// beyond what was committed, and it recovers from its WAL on Start.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if err := s.stop("immediate"); err != nil {
		t.Fatalf("pgtest: stop PostgreSQL: %v", err)
	}
}

func (s *Server) stop(mode string) error {
	srv := s.srv.Swap(nil)
	if srv == nil {
		return nil
	}
	err := s.run("pg_ctl", "stop", "-w", "-m", mode, "-D", s.data)
	if werr := srv.wait(); err == nil && werr != nil {
		var exit *exec.ExitError
		if mode != "immediate" || !errors.As(werr, &exit) {
			err = fmt.Errorf("the server ended with %w", werr)
		}
	}
	return err
}

// DSN returns the DSN, with Password, of a new, empty database on s.
func (s *Server) DSN(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("kurier_test_%d", s.dbs.Add(1))
	c := &cluster{base: s.base}
	if err := c.exec(context.Background(), "CREATE DATABASE "+name+" TEMPLATE template0 ENCODING 'UTF8'"); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	u := *s.base
	u.Path = "/" + name
	return u.String()
}

// Port is the loopback TCP port s listens on.
func (s *Server) Port() int { return s.port }
