package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/client"
)

// TestRun_BackupRestore runs kurierd backup and kurierd restore on a
// stopped development node's config, as an operator would.
func TestRun_BackupRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	sendAndStop(t, ctx, dir, []client.Document{{Name: "brief.txt", Data: []byte("Hallo Gericht")}}, nil)
	config := filepath.Join(dir, "kurierd.yaml")
	cfg, err := daemon.LoadConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	kurierd := func(args ...string) (string, error) {
		var stdout, stderr bytes.Buffer
		err := run(ctx, append(args, "-log-level", "error"), &stdout, &stderr)
		return stdout.String() + stderr.String(), err
	}
	backup := filepath.Join(t.TempDir(), "node.kbak")
	if out, err := kurierd("backup", "-config", config, "-o", backup); err != nil || !strings.Contains(out, "log of 2 leaves") {
		t.Fatalf("kurierd backup: %v\n%s", err, out)
	}
	if out, err := kurierd("restore", "-config", config, "-i", backup); !errors.Is(err, store.ErrNotEmpty) {
		t.Fatalf("kurierd restore into the node's own data: %v, want ErrNotEmpty\n%s", err, out)
	}
	if err := os.RemoveAll(cfg.Data); err != nil {
		t.Fatal(err)
	}
	out, err := kurierd("restore", "-config", config, "-i", backup)
	if err != nil || !strings.Contains(out, "1 messages, 1 payloads, 1 copies, 2 evidence: no problems") {
		t.Fatalf("kurierd restore: %v\n%s", err, out)
	}
	if out, err := kurierd("-check-store", "-config", config); err != nil {
		t.Errorf("kurierd -check-store on the restored store: %v\n%s", err, out)
	}
}
