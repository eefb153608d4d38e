// Package pgtest gives tests a real PostgreSQL server: a throwaway cluster
// started once per test binary (initdb in a temporary folder, as the
// postgres system user when the tests run as root, listening on a free
// loopback port that takes a password, fsync on), or the server that $KURIER_TEST_POSTGRES (a
// DSN whose role may create databases) names. Each test gets a fresh,
// empty database of its own. StartPair gives a test a primary and a
// streaming standby of its own, to fail over from one to the other.
//
// A package that uses it calls Main from its TestMain, which stops the
// cluster after the tests. Without PostgreSQL's binaries the tests that
// ask for a database are skipped with how to install them, or fail under
// CI=true, since .ci/run installs them.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the variable that points the tests at an existing server.
const EnvDSN = "KURIER_TEST_POSTGRES"

var (
	mainCalled atomic.Bool
	once       sync.Once
	shared     *cluster
	startErr   error
	dbCount    atomic.Int64
)

// Main runs the tests of m and then stops the cluster, if one was
// started, and exits. Call it from TestMain.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main for a TestMain that has more to clean up after the tests:
// it runs them, stops the cluster, and returns the exit code instead of
// exiting.
func Run(m *testing.M) int {
	mainCalled.Store(true)
	code := m.Run()
	if shared != nil && shared.stop != nil {
		if err := shared.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stop PostgreSQL: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// cluster is a server the tests create databases on.
type cluster struct {
	base     *url.URL     // DSN of its maintenance database
	stop     func() error // nil for an external server
	external bool
}

// DSN returns the DSN of a new, empty database that is dropped (on an
// external server) or thrown away with the cluster when t ends.
func DSN(t testing.TB) string {
	t.Helper()
	if !mainCalled.Load() {
		t.Fatal("pgtest: call pgtest.Main(m) from the package's TestMain, so that the cluster is stopped")
	}
	once.Do(func() { shared, startErr = start() })
	if startErr != nil {
		var missing *missingError
		if errors.As(startErr, &missing) && os.Getenv("CI") != "true" {
			t.Skipf("%v: apt-get install postgresql", startErr)
		}
		t.Fatalf("pgtest: %v", startErr)
	}
	name := fmt.Sprintf("kurier_test_%d_%d", os.Getpid(), dbCount.Add(1))
	ctx := context.Background()
	if err := shared.exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0 ENCODING 'UTF8'"); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	if shared.external {
		t.Cleanup(func() {
			if err := shared.exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
				t.Errorf("pgtest: drop database %s: %v", name, err)
			}
		})
	}
	u := *shared.base
	u.Path = "/" + name
	return u.String()
}

// exec runs one statement on the maintenance database.
func (c *cluster) exec(ctx context.Context, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.base.String())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// missingError says that PostgreSQL's binaries are not installed.
type missingError struct{ err error }

func (e *missingError) Error() string { return e.err.Error() }

func start() (*cluster, error) {
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		u, err := url.Parse(dsn)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return nil, fmt.Errorf("$%s must be a postgres:// URL", EnvDSN)
		}
		return &cluster{base: u, external: true}, nil
	}
	bin, err := findBin()
	if err != nil {
		return nil, &missingError{err}
	}
	return startCluster(bin)
}

// findBin returns the folder of initdb, pg_ctl and postgres: on $PATH, or
// Debian's newest /usr/lib/postgresql/<version>/bin.
func findBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestVersion := "", -1
	for _, d := range dirs {
		v, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if _, serr := os.Stat(filepath.Join(d, "initdb")); err == nil && serr == nil && v > bestVersion {
			best, bestVersion = d, v
		}
	}
	if best == "" {
		return "", errors.New("PostgreSQL's initdb is neither on $PATH nor in /usr/lib/postgresql/*/bin")
	}
	return best, nil
}

// startCluster creates a cluster in a new temporary folder and starts it
// on a free loopback port.
func startCluster(bin string) (*cluster, error) {
	dir, err := os.MkdirTemp("", "kurier-pgtest-")
	if err != nil {
		return nil, err
	}
	cred, err := serverUser(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	data := filepath.Join(dir, "data")
	run := func(name string, args ...string) error {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	// initdb need not sync a cluster that a crash of the machine would
	// throw away anyway; the server itself runs with fsync on.
	auth, err := authArgs(dir, cred)
	if err == nil {
		err = run("initdb", append([]string{"-D", data, "-U", "postgres", "--encoding=UTF8", "--locale=C", "--no-instructions", "--no-sync"}, auth...)...)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	srv, err := startServer(bin, dir, data, cred, port)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	stop := func() error {
		err := run("pg_ctl", "stop", "-w", "-m", "fast", "-D", data)
		if werr := srv.wait(); err == nil && werr != nil {
			err = fmt.Errorf("the server ended with %w", werr)
		}
		if rerr := os.RemoveAll(dir); err == nil {
			err = rerr
		}
		return err
	}
	base := baseURL(port)
	if err := awaitServer(base, srv); err != nil {
		stop()
		return nil, err
	}
	return &cluster{base: base, stop: stop}, nil
}

func baseURL(port int) *url.URL {
	return &url.URL{Scheme: "postgres", User: url.UserPassword("postgres", password), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Path: "/postgres", RawQuery: "sslmode=disable"}
}

// server is the postmaster, a child of the test binary.
type server struct {
	exited chan struct{} // closed when it has ended
	err    error         // how it ended, once exited is closed
	log    string        // its log file
	pid    int           // its process id
}

// startServer starts the postmaster on data as a child process that is
// told to shut down fast (SIGINT) if the test binary dies without
// stopping it (a test timeout's panic, a kill), so that no server
// outlives its tests. Linux sends that signal when the thread that
// started the child ends, so the thread stays locked to a goroutine that
// lives as long as the server.
func startServer(bin, dir, data string, cred *syscall.Credential, port int) (*server, error) {
	srv := &server{exited: make(chan struct{}), log: filepath.Join(dir, "server.log")}
	logFile, err := os.Create(srv.log)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+dir,
		"-c", "fsync="+fsyncSetting(), "-c", "max_connections=200")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logFile, logFile
	cmd.SysProcAttr = serverAttr(cred)
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine, after the server
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("start postgres: %w", err)
			return
		}
		srv.pid = cmd.Process.Pid
		started <- nil
		srv.err = cmd.Wait()
		close(srv.exited)
	}()
	return srv, <-started
}

// wait returns how the server ended, within a minute.
func (s *server) wait() error {
	select {
	case <-s.exited:
		return s.err
	case <-time.After(time.Minute):
		return errors.New("the server did not end within a minute of pg_ctl stop")
	}
}

// awaitServer returns once the server takes connections, or with its log
// if it ends first or takes longer than a minute to start.
func awaitServer(base *url.URL, srv *server) error {
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, base.String())
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-srv.exited:
			log, _ := os.ReadFile(srv.log)
			return fmt.Errorf("postgres ended on start (%v):\n%s", srv.err, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(srv.log)
			return fmt.Errorf("postgres takes no connections a minute after its start: %v\n%s", err, log)
		}
	}
}

// fsyncSetting is on unless $KURIER_TEST_POSTGRES_FSYNC is off: the store's
// durability is what its tests are about, and the benchmarks must pay
// what production pays.
func fsyncSetting() string {
	if os.Getenv("KURIER_TEST_POSTGRES_FSYNC") == "off" {
		return "off"
	}
	return "on"
}

// serverUser returns the credential to run PostgreSQL with: nil (the
// current user) unless the tests run as root, which initdb and postgres
// refuse; then the postgres system user, who is given dir.
func serverUser(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, &missingError{fmt.Errorf("the tests run as root and there is no postgres user to run PostgreSQL as: %w", err)}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, err
	}
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		return nil, fmt.Errorf("give %s to the postgres user: %w", dir, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Reconfigure sets a server setting of the test cluster (ALTER SYSTEM and
// a reload) until t ends, for tests of how the store behaves under it.
// It skips t on an external server ($KURIER_TEST_POSTGRES), which is not
// the tests' to reconfigure. Tests that use it must not run in parallel.
func Reconfigure(t testing.TB, name, value string) {
	t.Helper()
	DSN(t) // starts the cluster, or skips
	if shared.external {
		t.Skipf("pgtest: $%s names a server the tests do not reconfigure", EnvDSN)
	}
	ctx := context.Background()
	set := func(sql string) error {
		if err := shared.exec(ctx, sql); err != nil {
			return err
		}
		return shared.exec(ctx, "SELECT pg_reload_conf()")
	}
	if err := set(fmt.Sprintf("ALTER SYSTEM SET %s = '%s'", pgx.Identifier{name}.Sanitize(), strings.ReplaceAll(value, "'", "''"))); err != nil {
		t.Fatalf("pgtest: set %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := set("ALTER SYSTEM RESET " + pgx.Identifier{name}.Sanitize()); err != nil {
			t.Errorf("pgtest: reset %s: %v", name, err)
		}
	})
}
