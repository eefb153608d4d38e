// Package admin is a running node's local administration API: HTTP over a
// unix socket in the node's data directory, for the node's own user only.
// It has one operation, backup (POST /v1/backup), which streams a
// consistent backup of the store (store.DB.Backup) while the node keeps
// serving; kurierd backup is its client (Backup).
//
// # Who may connect
//
// The socket is admin/kurierd.sock in the data directory. The folder
// admin/ is made with mode 0700 (and set to it if it exists), so nobody
// else can reach the socket, whatever the data directory's own mode, and
// the socket itself is 0600. On Linux the server also asks the kernel who
// connected (SO_PEERCRED) and answers anyone but the node's own user with
// 403; root is no exception, so that a backup is always taken by the user
// that owns the node's files.
package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/store"
)

const (
	socketDir  = "admin"
	socketName = "kurierd.sock"
	// BackupPath is the backup operation's URL path.
	BackupPath = "/v1/backup"
	// errorTrailer carries, after the stream, why a backup failed part
	// way: the status was sent with the first bytes.
	errorTrailer = "Kurier-Backup-Error"
	// maxSocketPath is the longest path a unix socket may have (sun_path
	// holds 108 bytes on Linux, 104 on BSDs, with the terminating zero);
	// see socketAddr for longer ones.
	maxSocketPath = 103
)

// ErrNotRunning is returned by Backup when no node answers on the socket.
var ErrNotRunning = errors.New("no node answers on the admin socket")

// SocketPath is where the admin socket of the node with data directory
// dataDir is.
func SocketPath(dataDir string) string {
	return filepath.Join(dataDir, socketDir, socketName)
}

// Backuper is what the server backs up: *store.DB.
type Backuper interface {
	Backup(ctx context.Context, w io.Writer) (store.BackupInfo, error)
}

// Server serves the admin API until Close.
type Server struct {
	srv     *http.Server
	dir     string
	served  chan error
	release func() // of the socket's address, after the listener is closed

	closeOnce sync.Once
	closeErr  error
}

// Listen creates the admin socket in dataDir and serves b's backups on it.
// The caller holds the store open, whose lock keeps every other node off
// dataDir, so a socket left behind by a node that crashed is replaced.
func Listen(dataDir string, b Backuper, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.Default()
	}
	path := SocketPath(dataDir)
	dir := filepath.Dir(path)
	if err := privateDir(dir); err != nil {
		return nil, fmt.Errorf("admin socket folder %s: %w", dir, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove the old admin socket: %w", err)
	}
	addr, release, err := socketAddr(path)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	lis, err := net.Listen("unix", addr)
	if err != nil {
		release()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		lis.Close()
		release()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	h := &handler{b: b, log: logger, uid: os.Getuid(), one: make(chan struct{}, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc(BackupPath, h.backup)
	s := &Server{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ConnContext:       withPeer,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
		dir:     dir,
		served:  make(chan error, 1),
		release: release,
	}
	go func() { s.served <- s.srv.Serve(lis) }()
	logger.Info("admin socket listening", slog.String("socket", path))
	return s, nil
}

// privateDir makes dir, or checks that it is a folder and not a link, and
// sets its mode to 0700.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return errors.New("not a folder (a link or a file is in its place; remove it)")
	}
	return os.Chmod(dir, 0o700)
}

// Close stops the server: backups in progress are cut off (their clients
// see an incomplete stream and fail), and the socket is removed. Calls
// after the first return what the first did.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		err := s.srv.Close()
		if serr := <-s.served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
			err = serr
		}
		s.release()
		os.Remove(s.dir) // only if empty: the socket is gone with the listener
		if err != nil {
			s.closeErr = fmt.Errorf("close the admin socket: %w", err)
		}
	})
	return s.closeErr
}

type handler struct {
	b   Backuper
	log *slog.Logger
	uid int
	one chan struct{} // holds a token while a backup runs: one at a time
}

// writeIdle is how long a backup's client may take to accept the next
// bytes: a backup holds a read transaction and the removal of payload
// files off, so a client that stalls is cut off rather than waited for.
const writeIdle = time.Minute

// maxBackup bounds a whole backup, however steadily its client reads: a
// client that takes a trickle just within writeIdle would otherwise keep
// the read transaction, and the payload removals held off, for ever. A
// day copies more than a node's disk at the slowest disk's pace.
const maxBackup = 24 * time.Hour

// backup streams a backup. The status goes with the first bytes, so a
// failure after them is told in the trailer, and the stream lacks its end
// record (the client refuses it either way).
func (h *handler) backup(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	if uid, known := peerFrom(r.Context()); known && uid != h.uid {
		h.log.Warn("admin socket: refused a connection of another user", slog.Int("uid", uid))
		http.Error(w, fmt.Sprintf("the admin socket serves only the node's own user (uid %d); run kurierd backup as that user", h.uid), http.StatusForbidden)
		return
	}
	select {
	case h.one <- struct{}{}:
		defer func() { <-h.one }()
	default:
		http.Error(w, "a backup is being taken already; try again when it is done", http.StatusConflict)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Trailer", errorTrailer)
	start := time.Now()
	cw := &countingWriter{w: w, rc: http.NewResponseController(w)}
	ctx, cancel := context.WithTimeout(r.Context(), maxBackup)
	defer cancel()
	info, err := h.b.Backup(ctx, cw)
	if err != nil {
		h.log.Warn("backup through the admin socket failed", slog.Any(broker.LogErr, err))
		if cw.n == 0 {
			w.Header().Del("Trailer")
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set(errorTrailer, oneLine(err.Error()))
		return
	}
	h.log.Info("backup taken through the admin socket", slog.Uint64("log_size", info.LogSize), slog.Uint64("keys", info.Keys),
		slog.Uint64("payload_files", info.PayloadFiles), slog.Int64("bytes", cw.n), slog.Duration("took", time.Since(start)))
}

// oneLine makes s fit a header value.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// countingWriter counts what it writes, each write within writeIdle.
type countingWriter struct {
	w  io.Writer
	rc *http.ResponseController
	n  int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if err := c.rc.SetWriteDeadline(time.Now().Add(writeIdle)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return 0, err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Backup takes a backup through the admin socket of the node running on
// dataDir and writes it to w, checking the stream as it passes
// (store.VerifyBackup): it returns nil only once w has received a whole
// backup. An error wraps ErrNotRunning if nothing answers on the socket.
func Backup(ctx context.Context, dataDir string, w io.Writer) (store.BackupInfo, error) {
	path := SocketPath(dataDir)
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			addr, release, err := socketAddr(path)
			if err != nil {
				return nil, &net.OpError{Op: "dial", Net: "unix", Err: err}
			}
			defer release()
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		},
		DisableCompression: true,
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://kurierd"+BackupPath, nil)
	if err != nil {
		return store.BackupInfo{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return store.BackupInfo{}, fmt.Errorf("%w (%s): %v", ErrNotRunning, path, err)
		}
		return store.BackupInfo{}, fmt.Errorf("back up through %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return store.BackupInfo{}, fmt.Errorf("back up through %s: the node answered %s: %s", path, resp.Status, strings.TrimSpace(string(msg)))
	}
	tee := io.TeeReader(resp.Body, w)
	info, verr := store.VerifyBackup(ctx, tee)
	if verr == nil {
		// Up to the end of the body, where the trailer is.
		if _, err := io.Copy(io.Discard, tee); err != nil {
			verr = err
		}
	}
	if msg := resp.Trailer.Get(errorTrailer); msg != "" {
		return store.BackupInfo{}, fmt.Errorf("back up through %s: the node failed the backup: %s", path, msg)
	}
	if verr != nil {
		return store.BackupInfo{}, fmt.Errorf("back up through %s: %w", path, verr)
	}
	return info, nil
}
