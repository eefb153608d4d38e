package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/daemon/daemontest"
	"kurier.dev/kurier/broker/store"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/tlog"
)

// sendAndStop runs a development node in dir, sends one message per
// document from the agency to the court, calls then (if not nil) while the
// node still runs, stops the node and returns the message ids.
func sendAndStop(t *testing.T, ctx context.Context, dir string, docs []client.Document, then func(c *client.Client)) []string {
	t.Helper()
	n, err := daemontest.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := n.Stop(); err != nil {
			t.Errorf("node: %v", err)
		}
	}()
	c, err := n.Dial(ctx, n.Agency)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var ids []string
	for _, doc := range docs {
		r, err := c.Send(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: "Schriftsatz", Documents: []client.Document{doc}}, nil)
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		ids = append(ids, r.MessageID)
	}
	if then != nil {
		then(c)
	}
	return ids
}

// TestFaultCheckStore runs kurierd -check-store on the store of a real
// development node: clean after messages and a checkpoint, damaged after a
// byte of one of its tables is flipped.
func TestFaultCheckStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	var docs []client.Document
	for i := range 3 {
		docs = append(docs, client.Document{Name: "brief.txt", Data: bytes.Repeat([]byte{'a' + byte(i)}, 1000)})
	}
	sendAndStop(t, ctx, dir, docs, func(c *client.Client) {
		// A checkpoint is handed out only once the mark covers it.
		signed, err := c.Checkpoint(ctx)
		if err != nil {
			t.Fatalf("Checkpoint: %v", err)
		}
		cfg, err := daemon.Dev(dir, daemon.DevListen)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(cfg.Data, store.MarkFile))
		var m struct{ Size uint64 }
		if err == nil {
			err = json.Unmarshal(b, &m)
		}
		size, perr := tlog.PeekSize(signed)
		if err != nil || perr != nil || m.Size < size || size != 6 {
			t.Errorf("mark %s (%v) while the checkpoint has size %d (%v), want at least 6", b, err, size, perr)
		}
	})

	check := func() (string, error) {
		var stdout, stderr bytes.Buffer
		err := run(ctx, []string{"-dev", "-data", dir, "-check-store", "-log-level", "error"}, &stdout, &stderr)
		return stdout.String(), err
	}
	t.Run("clean", func(t *testing.T) {
		out, err := check()
		if err != nil {
			t.Fatalf("-check-store on a clean store: %v\n%s", err, out)
		}
		if !strings.Contains(out, "3 messages, 3 payloads, 3 copies, 6 evidence, 6 log leaves; 0 problems") {
			t.Errorf("summary of a clean store:\n%s", out)
		}
	})

	t.Run("flipped table", func(t *testing.T) {
		cfg, err := daemon.Dev(dir, daemon.DevListen)
		if err != nil {
			t.Fatal(err)
		}
		tables, err := filepath.Glob(filepath.Join(cfg.Data, "*.sst"))
		if err != nil || len(tables) == 0 {
			t.Fatalf("no table in %s (%v)", cfg.Data, err)
		}
		b, err := os.ReadFile(tables[0])
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/4] ^= 0xff
		if err := os.WriteFile(tables[0], b, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := check()
		if !errors.Is(err, broker.ErrDamaged) {
			t.Fatalf("-check-store on a damaged store: %v, want broker.ErrDamaged\n%s", err, out)
		}
		t.Logf("kurierd -check-store:\n%s", out)
		if !strings.Contains(out, "damaged: table "+tables[0]) {
			t.Errorf("output does not name the damaged table %s:\n%s", tables[0], out)
		}
	})
}

// TestFaultFetchDamaged damages the value log of a real development node
// after it stopped: the node starts again, a damaged payload is answered
// with DataLoss (never Internal, never as whole), an intact one is served,
// and -check-store lists the damaged ones.
func TestFaultFetchDamaged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	var docs []client.Document
	for range 12 {
		doc := client.Document{Name: "akte.pdf", Data: make([]byte, 150<<10)} // in the value log
		rand.Read(doc.Data)
		docs = append(docs, doc)
	}
	ids := sendAndStop(t, ctx, dir, docs, nil)
	cfg, err := daemon.Dev(dir, daemon.DevListen)
	if err != nil {
		t.Fatal(err)
	}
	vlogs, err := filepath.Glob(filepath.Join(cfg.Data, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	var vlog string
	var data []byte
	for _, v := range vlogs { // the one holding the payloads
		if b, err := os.ReadFile(v); err == nil && len(b) > len(data) {
			vlog, data = v, b
		}
	}
	data[len(data)*3/4] ^= 0xff
	if err := os.WriteFile(vlog, data, 0o600); err != nil {
		t.Fatal(err)
	}

	n, err := daemontest.Start(dir)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	ct, err := n.Dial(ctx, n.Court)
	if err != nil {
		n.Stop()
		t.Fatal(err)
	}
	damaged := 0
	for _, id := range ids {
		_, err := ct.Fetch(ctx, id, t.TempDir())
		switch code := status.Code(err); {
		case err == nil:
		case code == codes.DataLoss:
			damaged++
		default:
			t.Errorf("Fetch %s: %v (code %v), want the message or DataLoss", id, err, code)
		}
	}
	ct.Close()
	if err := n.Stop(); err != nil {
		t.Fatalf("node: %v", err)
	}
	if damaged == 0 || damaged == len(ids) {
		t.Errorf("%d of %d fetches answered DataLoss, want some", damaged, len(ids))
	}

	var stdout, stderr bytes.Buffer
	err = run(ctx, []string{"-dev", "-data", dir, "-check-store", "-log-level", "error"}, &stdout, &stderr)
	if !errors.Is(err, broker.ErrDamaged) || strings.Count(stdout.String(), "damaged: payload") != damaged {
		t.Errorf("-check-store: %v, want broker.ErrDamaged and %d damaged payloads:\n%s", err, damaged, stdout.String())
	}
}
