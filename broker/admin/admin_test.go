package admin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kurier.dev/kurier/broker/store"
)

// openStore opens a small store in a data directory of its own and stores
// something in it.
func openStore(t *testing.T) (*store.DB, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	db, err := store.Open(dir, store.Options{Small: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.WriteBlob(context.Background(), bytes.NewReader(make([]byte, 300<<10)), 1<<20); err != nil {
		t.Fatal(err)
	}
	return db, dir
}

func listen(t *testing.T, dir string, b Backuper) *Server {
	t.Helper()
	s, err := Listen(dir, b, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestServer_Backup(t *testing.T) {
	ctx := context.Background()
	db, dir := openStore(t)
	s := listen(t, dir, db)

	fi, err := os.Stat(SocketPath(dir))
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %s: %v, %v; want a socket of mode 0600", SocketPath(dir), fi, err)
	}
	if fi, err := os.Stat(filepath.Dir(SocketPath(dir))); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket folder: %v, %v; want mode 0700", fi, err)
	}

	var buf bytes.Buffer
	info, err := Backup(ctx, dir, &buf)
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if got, err := store.VerifyBackup(ctx, bytes.NewReader(buf.Bytes())); err != nil || got.Keys != info.Keys || got.Keys == 0 {
		t.Errorf("what Backup wrote: %+v, %v; Backup said %+v", got, err, info)
	}
	restored := filepath.Join(t.TempDir(), "restored")
	if _, err := store.Restore(ctx, restored, bytes.NewReader(buf.Bytes()), store.RestoreOptions{Store: store.Options{Small: true, Logger: slog.New(slog.DiscardHandler)}}); err != nil {
		t.Errorf("Restore of the backup taken through the socket: %v", err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(SocketPath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
	if _, err := Backup(ctx, dir, io.Discard); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Backup without a server = %v, want ErrNotRunning", err)
	}
}

func TestServer_StaleSocket(t *testing.T) {
	db, dir := openStore(t)
	// A node that crashed leaves its socket, and maybe a wide folder.
	if err := os.MkdirAll(filepath.Join(dir, socketDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(SocketPath(dir), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	listen(t, dir, db)
	if fi, err := os.Stat(filepath.Dir(SocketPath(dir))); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket folder: %v, %v; want mode 0700", fi, err)
	}
	if _, err := Backup(context.Background(), dir, io.Discard); err != nil {
		t.Errorf("Backup: %v", err)
	}
}

func TestServer_Method(t *testing.T) {
	db, dir := openStore(t)
	listen(t, dir, db)
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", SocketPath(dir))
	}}}
	resp, err := c.Get("http://kurierd" + BackupPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET %s = %s, want 405", BackupPath, resp.Status)
	}
}

// failing writes part of a backup, then fails, as a store does whose
// payload file turns out damaged half way.
type failing struct{ db *store.DB }

func (f failing) Backup(ctx context.Context, w io.Writer) (store.BackupInfo, error) {
	var buf bytes.Buffer
	if _, err := f.db.Backup(ctx, &buf); err != nil {
		return store.BackupInfo{}, err
	}
	w.Write(buf.Bytes()[:buf.Len()/2])
	return store.BackupInfo{}, errors.New("payload damaged\nsecond line")
}

// refusing fails before writing anything.
type refusing struct{}

func (refusing) Backup(context.Context, io.Writer) (store.BackupInfo, error) {
	return store.BackupInfo{}, store.ErrClosed
}

func TestFaultBackupFails(t *testing.T) {
	t.Run("part way", func(t *testing.T) {
		db, dir := openStore(t)
		listen(t, dir, failing{db})
		_, err := Backup(context.Background(), dir, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "payload damaged second line") {
			t.Errorf("Backup = %v, want the node's reason", err)
		}
	})
	t.Run("before the first byte", func(t *testing.T) {
		_, dir := openStore(t)
		listen(t, dir, refusing{})
		_, err := Backup(context.Background(), dir, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), store.ErrClosed.Error()) {
			t.Errorf("Backup = %v, want 503 with the node's reason", err)
		}
	})
}

// TestListen_LongPath: a data directory whose socket path is too long for
// a unix socket address still gets its socket (through /proc/self/fd).
func TestListen_LongPath(t *testing.T) {
	db, _ := openStore(t)
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	if len(SocketPath(dir)) <= maxSocketPath {
		t.Fatalf("socket path %s is not too long", SocketPath(dir))
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s := listen(t, dir, db)
	if fi, err := os.Stat(SocketPath(dir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket: %v, %v; want mode 0600", fi, err)
	}
	if _, err := Backup(context.Background(), dir, io.Discard); err != nil {
		t.Errorf("Backup: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(SocketPath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
}

// blocking writes a byte of a backup and waits until released.
type blocking struct {
	started chan struct{}
	release chan struct{}
}

func (b blocking) Backup(ctx context.Context, w io.Writer) (store.BackupInfo, error) {
	w.Write([]byte{0})
	close(b.started)
	<-b.release
	return store.BackupInfo{}, errors.New("released")
}

func TestServer_OneAtATime(t *testing.T) {
	_, dir := openStore(t)
	b := blocking{started: make(chan struct{}), release: make(chan struct{})}
	listen(t, dir, b)
	first := make(chan error, 1)
	go func() { _, err := Backup(context.Background(), dir, io.Discard); first <- err }()
	<-b.started
	_, err := Backup(context.Background(), dir, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "already") {
		t.Errorf("a second Backup while one runs = %v, want 409", err)
	}
	close(b.release)
	if err := <-first; err == nil {
		t.Error("the first Backup succeeded with a failed stream")
	}
}
