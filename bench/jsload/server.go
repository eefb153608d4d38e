package jsload

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ChildArg, as the first argument of a binary that calls MaybeServeChild
// first thing in main (or TestMain), makes it serve as the NATS server
// child; the arguments after it are nats-server's command line.
const ChildArg = "-jsload-nats-server"

// stopGrace is how long Stop waits for the server to shut down on SIGTERM
// before it kills it.
const stopGrace = 10 * time.Second

// MaybeServeChild runs the NATS server and exits if this process was
// started as the server child (os.Args[1] is ChildArg), and returns at
// once otherwise. StartServer re-executes the running binary, so the
// binary's main (or a test binary's TestMain) must call it first.
func MaybeServeChild() {
	if len(os.Args) > 1 && os.Args[1] == ChildArg {
		os.Exit(serveChild(os.Args[2:]))
	}
}

// serveChild does what nats-server's own main does with args, and once the
// server accepts connections writes its addresses (server.Ports) as one
// JSON line to standard output, for StartServer. It returns the exit code.
func serveChild(args []string) int {
	fs := flag.NewFlagSet("nats-server", flag.ContinueOnError)
	opts, err := server.ConfigureOptions(fs, args, server.PrintServerAndExit, fs.Usage, server.PrintTLSHelpAndDie)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nats-server: %v\n", err)
		return 2
	}
	s, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nats-server: %v\n", err)
		return 1
	}
	s.ConfigureLogger()
	if err := server.Run(s); err != nil {
		fmt.Fprintf(os.Stderr, "nats-server: %v\n", err)
		return 1
	}
	const ready = 30 * time.Second
	ports := s.PortsInfo(ready)
	if ports == nil || !s.ReadyForConnections(ready) {
		fmt.Fprintf(os.Stderr, "nats-server: not ready for connections after %s\n", ready)
		s.Shutdown()
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(ports); err != nil {
		s.Shutdown()
		return 1
	}
	s.WaitForShutdown()
	return 0
}

// ServerConfig is how StartServer runs the server.
type ServerConfig struct {
	// Dir holds the server's configuration, certificates and log; it must
	// exist.
	Dir string
	// StoreDir is JetStream's store; it is created if missing.
	StoreDir string
	// TLS makes the server require mutual TLS 1.3, with an ECDSA P-256 CA,
	// server and client certificate made for this server in Dir.
	TLS bool
}

// Server is a nats-server with JetStream running in a child process,
// listening on 127.0.0.1 on ports it chose, with every write to a stream
// fsynced before it is acknowledged (sync_interval: always).
type Server struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the child has exited
	waitErr error         // the child's exit, valid once exited is closed
	url     string        // the client URL, nats:// or tls://
	monitor string        // the monitoring URL, http://
	tls     *tls.Config   // the client's, nil without TLS
	logPath string
}

// StartServer writes the server's configuration into cfg.Dir, starts the
// child and returns once it accepts connections or ctx ends. The child is
// in a process group of its own (a terminal's Ctrl-C reaches this process,
// which stops it) and is killed if this process dies.
func StartServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	s := &Server{exited: make(chan struct{}), logPath: filepath.Join(cfg.Dir, "nats-server.log")}
	conf, err := s.writeConfig(cfg)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start nats-server: find this program to re-execute: %w", err)
	}
	logFile, err := os.Create(s.logPath)
	if err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	defer logFile.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	s.cmd = exec.Command(exe, ChildArg, "-c", conf)
	s.cmd.Stdout, s.cmd.Stderr = w, logFile
	s.cmd.SysProcAttr = childAttr()
	err = s.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()

	// The first line is the addresses. The pipe stays open and is drained
	// until the child exits: a write to a closed standard output would
	// kill the server with SIGPIPE.
	line := make(chan []byte, 1)
	go func() {
		defer r.Close()
		br := bufio.NewReader(r)
		b, _ := br.ReadBytes('\n')
		line <- b
		io.Copy(io.Discard, br)
	}()
	var ports server.Ports
	select {
	case b := <-line:
		if err := json.Unmarshal(b, &ports); err != nil || len(ports.Nats) == 0 || len(ports.Monitoring) == 0 {
			s.Kill()
			return nil, fmt.Errorf("start nats-server: it did not report its addresses%s", s.logTail())
		}
	case <-ctx.Done():
		s.Kill()
		return nil, fmt.Errorf("start nats-server: not ready before the run's end: %w", ctx.Err())
	}
	s.url, s.monitor = ports.Nats[0], ports.Monitoring[0]
	return s, nil
}

// writeConfig writes the server's configuration file (and with cfg.TLS its
// certificates) into cfg.Dir and returns the file's path.
func (s *Server) writeConfig(cfg ServerConfig) (string, error) {
	store, err := filepath.Abs(cfg.StoreDir)
	if err != nil {
		return "", fmt.Errorf("nats-server store: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "host: 127.0.0.1\nport: -1\nhttp: \"127.0.0.1:-1\"\n")
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %s\n  sync_interval: always\n}\n", strconv.Quote(store))
	if cfg.TLS {
		files, clientTLS, err := writeCerts(cfg.Dir)
		if err != nil {
			return "", fmt.Errorf("nats-server certificates: %w", err)
		}
		s.tls = clientTLS
		fmt.Fprintf(&b, "tls {\n  cert_file: %s\n  key_file: %s\n  ca_file: %s\n  verify: true\n  min_version: \"1.3\"\n}\n",
			strconv.Quote(files.cert), strconv.Quote(files.key), strconv.Quote(files.ca))
	}
	path := filepath.Join(cfg.Dir, "nats-server.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", fmt.Errorf("nats-server configuration: %w", err)
	}
	return path, nil
}

// PID is the child's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// URL is the address clients connect to.
func (s *Server) URL() string { return s.url }

// Connect opens a client connection to the server, with the client
// certificate if the server requires one. It does not reconnect: a server
// that went away shows as errors.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	o := []nats.Option{nats.Name("jsload"), nats.NoReconnect()}
	if s.tls != nil {
		o = append(o, nats.Secure(s.tls.Clone()))
	}
	nc, err := nats.Connect(s.url, append(o, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats-server at %s: %w", s.url, err)
	}
	return nc, nil
}

// Varz is the server's own account of itself from its monitoring
// endpoint: its version and its active JetStream configuration, among
// them the store directory and whether every write is synced.
func (s *Server) Varz(ctx context.Context) (*server.Varz, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.monitor+"/varz", nil)
	if err != nil {
		return nil, fmt.Errorf("nats-server varz: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("nats-server varz: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("nats-server varz: %s", resp.Status)
	}
	var v server.Varz
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return nil, fmt.Errorf("nats-server varz: %w", err)
	}
	return &v, nil
}

// Stop shuts the server down by SIGTERM, as an operator would, and kills
// it if it has not exited after stopGrace. It returns an error if the
// child had exited before (it failed during the run) or had to be killed.
func (s *Server) Stop() error {
	select {
	case <-s.exited:
		return fmt.Errorf("nats-server (pid %d) exited during the run: %v%s", s.PID(), s.waitErr, s.logTail())
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return s.Kill()
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(stopGrace):
		s.Kill()
		return fmt.Errorf("nats-server (pid %d) did not stop within %s of SIGTERM and was killed", s.PID(), stopGrace)
	}
}

// Kill ends the server with SIGKILL, giving it no chance to flush
// anything, and waits for it to exit.
func (s *Server) Kill() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill nats-server (pid %d): %w", s.PID(), err)
	}
	<-s.exited
	return nil
}

// logTail is the end of the server's log, to tell why it failed.
func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "; the end of its log:\n" + string(bytes.TrimSpace(b))
}
