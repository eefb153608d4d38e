package daemon_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kurier.dev/kurier/broker/admin"
	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/daemon/daemontest"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/client"
)

// TestBackup_WhileRunning backs up a running development node through its
// admin socket while a sender keeps sending, sends more after the backup,
// loses the store but for its KURIER-LOGMARK, and restores: refused as a
// rollback, then accepted; the restored node serves every message of the
// backup, and its log is consistent with a checkpoint signed before the
// backup.
func TestBackup_WhileRunning(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	cfg, err := daemon.Dev(dir, daemon.DevListen)
	if err != nil {
		t.Fatal(err)
	}
	n, err := daemontest.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			n.Stop()
		}
	}()
	c, err := n.Dial(ctx, n.Agency)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	large := make([]byte, 600<<10) // sealed, well above one chunk: a payload file
	rand.Read(large)
	send := func(data []byte) string {
		t.Helper()
		r, err := c.Send(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: "Schriftsatz", Documents: []client.Document{{Name: "brief.pdf", Data: data}}}, nil)
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		return r.MessageID
	}
	before := []string{send([]byte("kleiner Brief")), send(large), send([]byte("noch ein Brief"))}
	signed, err := c.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}

	sock, err := os.Stat(admin.SocketPath(cfg.Data))
	if err != nil || sock.Mode().Perm() != 0o600 {
		t.Errorf("admin socket: %v, %v; want mode 0600", sock, err)
	}
	sockDir, err := os.Stat(filepath.Dir(admin.SocketPath(cfg.Data)))
	if err != nil || sockDir.Mode().Perm() != 0o700 {
		t.Errorf("admin socket folder: %v, %v; want mode 0700", sockDir, err)
	}

	// Back up while another sender keeps sending.
	var wg sync.WaitGroup
	stopSending := make(chan struct{})
	wg.Go(func() {
		for i := 0; i < 20; i++ {
			select {
			case <-stopSending:
				return
			default:
			}
			if _, err := c.Send(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: "während der Sicherung", Documents: []client.Document{{Name: "a.pdf", Data: large[:300<<10]}}}, nil); err != nil {
				t.Errorf("Send during the backup: %v", err)
				return
			}
		}
	})
	backup := filepath.Join(t.TempDir(), "node.kbak")
	var out bytes.Buffer
	if err := daemon.Backup(ctx, cfg, backup, &out, quiet); err != nil {
		t.Fatalf("Backup of the running node: %v", err)
	}
	close(stopSending)
	wg.Wait()
	if !strings.Contains(out.String(), "through the running node") {
		t.Errorf("Backup did not go through the running node: %s", out.String())
	}
	if err := daemon.Backup(ctx, cfg, backup, &out, quiet); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("Backup over an existing file = %v, want a refusal", err)
	}
	f, err := os.Open(backup)
	if err != nil {
		t.Fatal(err)
	}
	info, err := store.VerifyBackup(ctx, f)
	f.Close()
	if err != nil || info.PayloadFiles < 1 {
		t.Fatalf("the backup file: %+v, %v; want a whole backup with the large payload's file", info, err)
	}
	after := send([]byte("nach der Sicherung"))
	if _, err := c.Checkpoint(ctx); err != nil { // signed after the backup
		t.Fatal(err)
	}
	c.Close()
	stopped = true
	if err := n.Stop(); err != nil {
		t.Fatalf("node: %v", err)
	}

	// The disk is lost but for the mark, kept as the recovery says.
	lost := cfg.Data + ".lost"
	if err := os.Rename(cfg.Data, lost); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(cfg.Data, 0o700); err != nil {
		t.Fatal(err)
	}
	mark, err := os.ReadFile(filepath.Join(lost, store.MarkFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Data, store.MarkFile), mark, 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = daemon.Restore(ctx, cfg, backup, false, &out, quiet)
	if !errors.Is(err, store.ErrRolledBack) {
		t.Fatalf("Restore behind the kept mark = %v, want ErrRolledBack", err)
	}
	if err := daemon.Restore(ctx, cfg, backup, true, &out, quiet); err != nil {
		t.Fatalf("Restore accepting the rollback: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "no problems") {
		t.Errorf("Restore output: %s", out.String())
	}
	if _, err := os.Stat(filepath.Join(cfg.Data, store.RollbackFile)); err != nil {
		t.Errorf("the accepted rollback is not recorded: %v", err)
	}

	n, err = daemontest.Start(dir)
	if err != nil {
		t.Fatalf("start the restored node: %v", err)
	}
	stopped = false
	court, err := n.Dial(ctx, n.Court)
	if err != nil {
		t.Fatal(err)
	}
	defer court.Close()
	inbox, err := court.Inbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range inbox {
		have[e.ID] = true
	}
	for _, id := range before {
		if !have[id] {
			t.Errorf("message %s of the backup missing after the restore", id)
		}
		if _, err := court.Check(ctx, id); err != nil {
			t.Errorf("message %s after the restore: %v", id, err)
		}
	}
	if have[after] {
		t.Errorf("message %s sent after the backup is in the restored node", after)
	}
	if uint64(len(inbox)) != info.LogSize/2 {
		t.Errorf("restored inbox holds %d messages, the backup's log %d leaves (two per message)", len(inbox), info.LogSize)
	}
	// A checkpoint signed before the backup is consistent with the
	// restored log.
	if _, _, err := court.Export(ctx, before[1], signed); err != nil {
		t.Errorf("Export since the checkpoint signed before the backup: %v", err)
	}
}

// TestBackup_Stopped backs up a stopped node by opening its store.
func TestBackup_Stopped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	cfg, err := daemon.Dev(dir, daemon.DevListen)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	if err := daemon.Backup(ctx, cfg, filepath.Join(dir, "none.kbak"), &bytes.Buffer{}, quiet); err == nil || !strings.Contains(err.Error(), "no store") {
		t.Errorf("Backup without a store = %v, want a refusal naming it", err)
	}
	n, err := daemontest.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := n.Dial(ctx, n.Agency)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: "Brief", Documents: []client.Document{{Name: "a.txt", Data: []byte("hallo")}}}, nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(admin.SocketPath(cfg.Data)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket left after the node stopped: %v", err)
	}
	backup := filepath.Join(dir, "node.kbak")
	var out bytes.Buffer
	if err := daemon.Backup(ctx, cfg, backup, &out, quiet); err != nil {
		t.Fatalf("Backup of the stopped node: %v", err)
	}
	if !strings.Contains(out.String(), "the node is stopped") || !strings.Contains(out.String(), "log of 2 leaves") {
		t.Errorf("Backup output: %s", out.String())
	}
	// Restore refuses the directory of the store it came from.
	if err := daemon.Restore(ctx, cfg, backup, false, &out, quiet); !errors.Is(err, store.ErrNotEmpty) {
		t.Errorf("Restore into the node's own store = %v, want ErrNotEmpty", err)
	}
}
