package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki"
)

// The development node of kurierd, in process, over real mutual TLS.
var (
	devDir   string
	nodeAddr string
	crlPath  string
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	for _, v := range []string{"KURIER_ID", "KURIER_NODE", "KURIER_CRL"} {
		os.Unsetenv(v)
	}
	dir, err := os.MkdirTemp("", "kurier-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	devDir = dir
	cfg, err := daemon.Dev(dir, "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "dev setup:", err)
		return 1
	}
	crlPath = cfg.CRL
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a net.Addr) { ready <- a })
	}()
	select {
	case a := <-ready:
		nodeAddr = a.String()
	case err := <-done:
		cancel()
		fmt.Fprintln(os.Stderr, "node:", err)
		return 1
	}
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "node:", err)
	}
	return code
}

// kurier runs the command line and returns stdout, failing the test on
// error.
func kurier(t *testing.T, args ...string) string {
	t.Helper()
	out, err := try(t, args...)
	if err != nil {
		t.Fatalf("kurier %s: %s", strings.Join(args, " "), describe(err))
	}
	return out
}

func try(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, args, &stdout, &stderr)
	if stderr.Len() > 0 {
		t.Logf("stderr of kurier %q:\n%s", args, stderr.String())
	}
	return stdout.String(), err
}

// kurierJSON runs a command with --json, checks that stdout holds exactly
// one JSON value and decodes it into v.
func kurierJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := kurier(t, append(args, "--json")...)
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("kurier %q --json: %v in %q", args, err, out)
	}
	if err := dec.Decode(new(json.RawMessage)); !errors.Is(err, io.EOF) {
		t.Fatalf("kurier %q --json printed more than one JSON value: %q", args, out)
	}
}

func as(who string) []string {
	return []string{"--id", daemon.DevIdentity(devDir, who), "--node", nodeAddr, "--crl", crlPath}
}

func TestRun_Mailbox(t *testing.T) {
	src := t.TempDir()
	big := make([]byte, 3<<20/2)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"Schriftsatz.pdf": big, "Anlage 1.txt": []byte("Anlage\n")}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(src, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// Flags after the files, and the identity from the environment.
	t.Setenv("KURIER_ID", daemon.DevIdentity(devDir, "agency"))
	t.Setenv("KURIER_NODE", nodeAddr)
	var sent struct {
		ID       string
		Evidence []struct{ Type, Recipient string }
	}
	kurierJSON(t, &sent, "send", "--to", daemon.DevCourt, "--subject", "Klageerwiderung",
		filepath.Join(src, "Schriftsatz.pdf"), filepath.Join(src, "Anlage 1.txt"),
		"--type", "Schriftsatz", "--reference", "3 C 123/26", "--crl", crlPath)
	if sent.ID == "" || len(sent.Evidence) != 2 || sent.Evidence[0].Type != "SubmissionAcceptance" {
		t.Fatalf("send: %+v", sent)
	}
	id := sent.ID

	t.Run("send plain", func(t *testing.T) {
		out := kurier(t, append(as("agency"), "send", "--to", daemon.DevCourt, "--subject", "plain", filepath.Join(src, "Anlage 1.txt"))...)
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || len(lines[0]) != 36 {
			t.Errorf("send printed %q, want the message id", out)
		}
	})

	t.Run("inbox", func(t *testing.T) {
		var entries []map[string]any
		kurierJSON(t, &entries, append(as("court"), "inbox")...)
		i := slices.IndexFunc(entries, func(e map[string]any) bool { return e["id"] == id })
		if i < 0 {
			t.Fatalf("message %s not in %v", id, entries)
		}
		e := entries[i]
		for k, want := range map[string]any{"from": daemon.DevAgency, "subject": "Klageerwiderung", "type": "Schriftsatz", "reference": "3 C 123/26", "state": "delivered"} {
			if e[k] != want {
				t.Errorf("%s = %v, want %v", k, e[k], want)
			}
		}
		if _, err := time.Parse(time.RFC3339, e["received"].(string)); err != nil {
			t.Errorf("received: %v", err)
		}
		if e["size"].(float64) < float64(len(big)) {
			t.Errorf("size %v", e["size"])
		}
		table := kurier(t, append(as("court"), "inbox")...)
		if !strings.Contains(table, id) || !strings.Contains(table, "SUBJECT") {
			t.Errorf("inbox table:\n%s", table)
		}
		// Nobody writes to the agency.
		if out := kurier(t, append(as("agency"), "inbox", "--json")...); strings.TrimSpace(out) != "[]" {
			t.Errorf("empty inbox --json printed %q", out)
		}
	})

	t.Run("reject before fetch", func(t *testing.T) {
		_, err := try(t, append(as("court"), "reject", id, "--code", "not-competent")...)
		if err == nil || !strings.Contains(err.Error(), "fetch the message before rejecting it") {
			t.Errorf("reject before fetch: %v", err)
		}
	})

	t.Run("fetch", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "new")
		var f struct {
			ID, From, Subject string
			Files             []string
			Retrieval         struct{ Type string }
		}
		kurierJSON(t, &f, append([]string{"fetch", id, "-o", dir}, as("court")...)...)
		if f.ID != id || f.From != daemon.DevAgency || f.Subject != "Klageerwiderung" || f.Retrieval.Type != "Retrieval" || len(f.Files) != 2 {
			t.Fatalf("fetch: %+v", f)
		}
		for _, p := range f.Files {
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, files[filepath.Base(p)]) {
				t.Errorf("%s differs from what was sent", p)
			}
		}
		// Again into the same folder: the files are there, nothing changes.
		_, err := try(t, append([]string{"fetch", id, "-o", dir}, as("court")...)...)
		if err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Errorf("fetch over existing files: %v", err)
		}
	})

	t.Run("ack", func(t *testing.T) {
		var ack struct{ ID, Type, SHA256 string }
		kurierJSON(t, &ack, append(as("court"), "ack", id)...)
		if ack.ID != id || ack.Type != "Acknowledgement" || len(ack.SHA256) != 64 {
			t.Errorf("ack: %+v", ack)
		}
		_, err := try(t, append(as("court"), "reject", id, "--code", "not-competent")...)
		if err == nil || !strings.Contains(err.Error(), "an acknowledged message cannot be rejected") {
			t.Errorf("reject after ack: %v", err)
		}
	})

	t.Run("evidence", func(t *testing.T) {
		dir := t.TempDir()
		var list []struct{ File, Type, Recipient, Issuer, Time, SHA256 string }
		kurierJSON(t, &list, append([]string{"evidence", id, "-o", dir}, as("court")...)...)
		var names, kinds []string
		for _, ev := range list {
			names = append(names, filepath.Base(ev.File))
			kinds = append(kinds, ev.Type)
			der, err := os.ReadFile(ev.File)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := evidence.Parse(der)
			if err != nil || string(parsed.Statement.Type) != ev.Type || parsed.Digest() != ev.SHA256 {
				t.Errorf("%s: %v", ev.File, err)
			}
		}
		want := []string{"01-SubmissionAcceptance.p7m", "02-Delivery.p7m", "03-Retrieval.p7m", "04-Acknowledgement.p7m"}
		if diff := cmp.Diff(want, names); diff != "" {
			t.Errorf("evidence files (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"SubmissionAcceptance", "Delivery", "Retrieval", "Acknowledgement"}, kinds); diff != "" {
			t.Errorf("evidence types (-want +got):\n%s", diff)
		}
		// Writing again into the same folder keeps identical files.
		kurier(t, append([]string{"evidence", id, "-o", dir}, as("court")...)...)
	})

	t.Run("failed fetch leaves no folder", func(t *testing.T) {
		parent := t.TempDir()
		_, err := try(t, append(as("agency"), "fetch", id, "-o", filepath.Join(parent, "new", "sub"))...)
		if err == nil {
			t.Fatal("the sender fetched the recipient's copy")
		}
		entries, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) > 0 {
			t.Errorf("a failed fetch left %s/%s behind", parent, entries[0].Name())
		}
	})

	t.Run("errors read well", func(t *testing.T) {
		dir := t.TempDir()
		_, err := try(t, append(as("agency"), "fetch", id, "-o", dir)...)
		if err == nil {
			t.Fatal("the sender fetched the recipient's copy")
		}
		if msg := describe(err); !strings.Contains(msg, "NotFound: ") || strings.Contains(msg, "rpc error") {
			t.Errorf("error reads %q", msg)
		}
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("a failed fetch removed the folder it did not create: %v", err)
		}
		_, err = try(t, append(as("agency"), "send", "--to", "niemand@amtsgericht.example", "--subject", "x", filepath.Join(src, "Anlage 1.txt"))...)
		if err == nil || !strings.Contains(err.Error(), "no mailbox niemand@amtsgericht.example") {
			t.Errorf("send to an unknown address: %v", err)
		}
	})
}

func TestParseExpiry(t *testing.T) {
	const day = 24 * time.Hour
	tests := map[string]struct {
		in        string
		want      time.Duration
		wantError string
	}{
		"hours":             {in: "36h", want: 36 * time.Hour},
		"minutes":           {in: "90m", want: 90 * time.Minute},
		"mixed":             {in: "1h30m", want: 90 * time.Minute},
		"fraction of hours": {in: "1.5h", want: 90 * time.Minute},
		"days":              {in: "14d", want: 14 * day},
		"one day":           {in: "1d", want: day},
		"leading zero":      {in: "07d", want: 7 * day},
		"most days":         {in: "106751d", want: 106751 * day},
		"too many days":     {in: "106752d", wantError: "at most 106751d"},
		"huge days":         {in: "99999999999999999999d", wantError: "at most"},
		"zero":              {in: "0", wantError: "not a positive duration"},
		"zero days":         {in: "0d", wantError: "not a positive duration"},
		"negative":          {in: "-5h", wantError: "not a positive duration"},
		"negative days":     {in: "-5d", wantError: "not a duration"},
		"plus days":         {in: "+5d", wantError: "not a duration"},
		"fraction of days":  {in: "1.5d", wantError: "not a duration"},
		"days and hours":    {in: "1d12h", wantError: "not a duration"},
		"weeks":             {in: "2w", wantError: "not a duration"},
		"no unit":           {in: "14", wantError: "not a duration"},
		"only d":            {in: "d", wantError: "not a duration"},
		"space":             {in: "14 d", wantError: "not a duration"},
		"empty":             {in: "", wantError: "not a duration"},
		"words":             {in: "two weeks", wantError: "not a duration"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseExpiry(tt.in)
			if tt.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantError) {
					t.Errorf("parseExpiry(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.wantError)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("parseExpiry(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestRun_SendExpires(t *testing.T) {
	src := filepath.Join(t.TempDir(), "a.txt")
	if err := os.WriteFile(src, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	court, err := pki.LoadIdentity(daemon.DevIdentity(devDir, "court"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := client.Dial(ctx, nodeAddr, court, client.WithCRL(crlPath))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer cl.Close()
	inbox := func() []client.InboxEntry {
		t.Helper()
		entries, err := cl.Inbox(ctx)
		if err != nil {
			t.Fatalf("Inbox: %v", err)
		}
		return entries
	}

	t.Run("bad value fails before anything is sent", func(t *testing.T) {
		subject := "never sent " + t.Name()
		_, err := try(t, append(as("agency"), "send", "--to", daemon.DevCourt, "--subject", subject, "--expires", "2w", src)...)
		if err == nil || !strings.Contains(err.Error(), "-expires") || !strings.Contains(err.Error(), "not a duration") {
			t.Fatalf("send --expires 2w: %v", err)
		}
		if slices.ContainsFunc(inbox(), func(e client.InboxEntry) bool { return e.Subject == subject }) {
			t.Error("a send with a bad --expires reached the court")
		}
	})

	for flagValue, want := range map[string]time.Duration{"14d": 14 * 24 * time.Hour, "36h": 36 * time.Hour, "": client.DefaultExpiry} {
		t.Run("expires "+flagValue, func(t *testing.T) {
			args := append(as("agency"), "send", "--to", daemon.DevCourt, "--subject", "expires "+flagValue, src)
			if flagValue != "" {
				args = append(args, "--expires", flagValue)
			}
			id := strings.TrimSpace(kurier(t, args...))
			f, err := cl.Fetch(ctx, id, t.TempDir())
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if got := f.Envelope.Expires.Sub(f.Envelope.Created); f.Envelope.Version != envelope.Version || got != want {
				t.Errorf("envelope version %d expires %s after creation, want version %d and %s", f.Envelope.Version, got, envelope.Version, want)
			}
		})
	}
}

func TestWriteEvidence(t *testing.T) {
	evs := make([]client.Evidence, 100)
	for i := range evs {
		evs[i] = client.Evidence{DER: []byte{byte(i)}, Statement: &evidence.Statement{Type: evidence.Delivery}}
	}
	dir := t.TempDir()
	short, err := writeEvidence(dir, evs[:3])
	if err != nil {
		t.Fatalf("writeEvidence of 3: %v", err)
	}
	long, err := writeEvidence(dir, evs)
	if err != nil {
		t.Fatalf("writeEvidence of 100 after 3: %v", err)
	}
	var names []string
	for _, i := range []int{0, 1, 2, 8, 9, 98, 99} {
		names = append(names, filepath.Base(long[i]))
	}
	want := []string{"01-Delivery.p7m", "02-Delivery.p7m", "03-Delivery.p7m", "09-Delivery.p7m", "10-Delivery.p7m", "99-Delivery.p7m", "100-Delivery.p7m"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("file names (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(short, long[:3]); diff != "" {
		t.Errorf("a longer chain named the first files otherwise (-short +long):\n%s", diff)
	}
	if got, err := os.ReadFile(long[99]); err != nil || !bytes.Equal(got, []byte{99}) {
		t.Errorf("%s holds %v: %v", long[99], got, err)
	}
}

func TestRun_PKI(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	var ca struct{ CA, Certificate, Subject string }
	kurierJSON(t, &ca, "pki", "init", "--ca", caDir, "--name", "Test CA")
	if ca.Subject != "CN=Test CA" || ca.Certificate != filepath.Join(caDir, "ca.pem") {
		t.Errorf("init: %+v", ca)
	}
	if _, err := try(t, "pki", "init", "--ca", caDir); err == nil {
		t.Error("a second init replaced the CA")
	}

	var p struct {
		Kind, Address, Serial string
		EncryptionSerial      string `json:"encryption_serial"`
	}
	kurierJSON(t, &p, "pki", "issue", "--ca", caDir, "--participant", "eingang@gericht.example", "-o", filepath.Join(dir, "court"))
	if p.Kind != "participant" || p.Address != "eingang@gericht.example" || !strings.HasPrefix(p.Serial, "0x") || !strings.HasPrefix(p.EncryptionSerial, "0x") {
		t.Fatalf("issue participant: %+v", p)
	}
	id, err := pki.LoadIdentity(filepath.Join(dir, "court"))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("0x%x", id.Cert.SerialNumber) != p.Serial {
		t.Errorf("serial %s, certificate has %x", p.Serial, id.Cert.SerialNumber)
	}
	var n struct {
		Kind    string
		Domains []string
		Serial  string
	}
	kurierJSON(t, &n, "pki", "issue", "--ca", caDir, "--node", "gericht.example,stadt.example", "-o", filepath.Join(dir, "node"))
	if n.Kind != "node" || !slices.Equal(n.Domains, []string{"gericht.example", "stadt.example"}) {
		t.Errorf("issue node: %+v", n)
	}
	if _, err := try(t, "pki", "issue", "--ca", caDir, "-o", filepath.Join(dir, "x")); err == nil {
		t.Error("issue without --node or --participant succeeded")
	}

	// Revoke the signing certificate by hex serial, the encryption
	// certificate by decimal serial.
	var r struct {
		Serial        string
		SerialDecimal string `json:"serial_decimal"`
		Reason        int
	}
	kurierJSON(t, &r, "pki", "revoke", "--ca", caDir, p.Serial, "--reason", "1")
	if r.Serial != p.Serial || r.Reason != 1 {
		t.Errorf("revoke: %+v", r)
	}
	kurier(t, "pki", "revoke", "--ca", caDir, id.EncCert.SerialNumber.String())
	if _, err := try(t, "pki", "revoke", "--ca", caDir, "xyz"); err == nil {
		t.Error("revoke of a malformed serial succeeded")
	}

	var crl struct {
		CRL        string
		Revoked    int
		NextUpdate string `json:"next_update"`
	}
	kurierJSON(t, &crl, "pki", "crl", "--ca", caDir, "--validity", "48h")
	if crl.Revoked != 2 || crl.CRL != filepath.Join(caDir, "crl.pem") {
		t.Errorf("crl: %+v", crl)
	}
	list, err := readCRL(crl.CRL)
	if err != nil {
		t.Fatal(err)
	}
	var serials []*big.Int
	for _, e := range list.RevokedCertificateEntries {
		serials = append(serials, e.SerialNumber)
	}
	for _, want := range []*big.Int{id.Cert.SerialNumber, id.EncCert.SerialNumber} {
		if !slices.ContainsFunc(serials, func(s *big.Int) bool { return s.Cmp(want) == 0 }) {
			t.Errorf("serial %x not in the CRL", want)
		}
	}
	if next, err := time.Parse(time.RFC3339, crl.NextUpdate); err != nil || next.Sub(time.Now()) < 47*time.Hour {
		t.Errorf("next update %s: %v", crl.NextUpdate, err)
	}
	if out := kurier(t, "pki", "crl", "--ca", caDir); strings.TrimSpace(out) != crl.CRL {
		t.Errorf("crl printed %q", out)
	}
}

func TestRun_Usage(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		out := kurier(t, args...)
		for _, cmd := range []string{"kurier send", "kurier inbox", "kurier fetch", "kurier ack", "kurier evidence", "kurier bench", "kurier pki init", "kurier pki revoke", "kurier pki log-key", "kurier pki csr", "kurier pki issue --ca DIR --csr"} {
			if !strings.Contains(out, cmd) {
				t.Errorf("%v: usage does not mention %q", args, cmd)
			}
		}
	}
	if _, err := try(t, "frobnicate"); err == nil {
		t.Error("an unknown command succeeded")
	}
	if _, err := try(t); err == nil {
		t.Error("no command succeeded")
	}
	if _, err := try(t, "send", "-h"); err != nil {
		t.Errorf("send -h: %v", err)
	}
	if _, err := try(t, "inbox"); err == nil || !strings.Contains(err.Error(), "KURIER_ID") {
		t.Errorf("inbox without identity: %v", err)
	}
}

func TestCommand_Parse(t *testing.T) {
	tests := map[string]struct {
		args      []string
		wantPos   []string
		wantOut   string
		wantJSON  bool
		wantError bool
	}{
		"flags first":           {args: []string{"-o", "d", "--json", "id"}, wantPos: []string{"id"}, wantOut: "d", wantJSON: true},
		"flags after":           {args: []string{"id", "-o", "d"}, wantPos: []string{"id"}, wantOut: "d"},
		"interleaved":           {args: []string{"a", "--json", "b", "--o=d", "c"}, wantPos: []string{"a", "b", "c"}, wantOut: "d", wantJSON: true},
		"double dash":           {args: []string{"a", "--", "-o", "x"}, wantPos: []string{"a", "-o", "x"}},
		"unknown flag":          {args: []string{"a", "--nope"}, wantError: true},
		"no arguments":          {args: nil},
		"single dash flag form": {args: []string{"-json", "x"}, wantPos: []string{"x"}, wantJSON: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := newCommand("test", io.Discard)
			out := c.String("o", "", "")
			pos, err := c.parse(tt.args)
			if tt.wantError {
				if err == nil {
					t.Error("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantPos, pos); diff != "" {
				t.Errorf("positional (-want +got):\n%s", diff)
			}
			if *out != tt.wantOut || c.json != tt.wantJSON {
				t.Errorf("-o %q, --json %v", *out, c.json)
			}
		})
	}
}

func TestSplitCommand(t *testing.T) {
	tests := map[string]struct {
		args     []string
		wantCmd  string
		wantRest []string
	}{
		"command first":        {[]string{"inbox", "--json"}, "inbox", []string{"--json"}},
		"options before":       {[]string{"--id", "d", "--json", "fetch", "x"}, "fetch", []string{"--id", "d", "--json", "x"}},
		"option with equals":   {[]string{"--node=h:1", "ack", "x"}, "ack", []string{"--node=h:1", "x"}},
		"value like a command": {[]string{"--id", "inbox", "send", "f"}, "send", []string{"--id", "inbox", "f"}},
		"help":                 {[]string{"--id", "d", "-h"}, "-h", nil},
		"no command":           {[]string{"--id", "d"}, "", []string{"--id", "d"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			cmd, rest := splitCommand(tt.args)
			if cmd != tt.wantCmd || !slices.Equal(rest, tt.wantRest) {
				t.Errorf("splitCommand(%q) = %q, %q; want %q, %q", tt.args, cmd, rest, tt.wantCmd, tt.wantRest)
			}
		})
	}
}

// TestRun_SendSaveResubmitLarge: a document too large for a sealed
// payload in memory goes through `kurier send --save`, and `kurier
// resubmit` of the saved file gets the same message, whose document
// `kurier fetch` writes as it was sent.
func TestRun_SendSaveResubmitLarge(t *testing.T) {
	src := filepath.Join(t.TempDir(), "akte.bin")
	data := make([]byte, 5<<20)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(t.TempDir(), "akte.kurier")
	id := strings.TrimSpace(kurier(t, append(as("agency"), "send", "--to", daemon.DevCourt, "--subject", "groß", "--save", saved, src)...))
	if again := strings.TrimSpace(kurier(t, append(as("agency"), "resubmit", saved)...)); again != id {
		t.Fatalf("resubmit printed %q, want the message id %s", again, id)
	}
	dir := t.TempDir()
	out := kurier(t, append(as("court"), "fetch", id, "-o", dir)...)
	got, err := os.ReadFile(filepath.Join(dir, "akte.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("fetch printed %q; the document has %d bytes (%v), want the %d sent", out, len(got), err, len(data))
	}
}

// TestRun_JSONErrors: a --json command that fails prints one JSON object
// with the error and a code: the node's status code where it refused,
// "usage" for a wrong call; a node address without a port is refused; a
// node that is not there reads as that, not as what failed first.
func TestRun_JSONErrors(t *testing.T) {
	id := daemon.DevIdentity(devDir, "court")
	unknown, err := envelope.NewID()
	if err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(t.TempDir(), "klage.txt")
	if err := os.WriteFile(doc, []byte("Klage"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		args      []string
		code, msg string
		reason    string
	}{
		{"refused by the node", append([]string{"fetch", unknown, "-o", t.TempDir()}, as("court")...), "NotFound", "not in the mailbox", ""},
		{"unknown command", []string{"posteingang"}, "usage", "unknown command", ""},
		{"unknown recipient", append([]string{"send", "--to", "niemand@amtsgericht.example", "--subject", "s", doc}, as("agency")...), "NotFound", "no mailbox niemand@amtsgericht.example", "UNKNOWN_RECIPIENT"},
		{"not a message id", append([]string{"fetch", "4 C 12/26", "-o", t.TempDir()}, as("court")...), "error", "invalid message id", ""},
		{"node without a port", []string{"inbox", "--id", id, "--node", "127.0.0.1"}, "error", `--node "127.0.0.1": give the node as host:port`, ""},
		{"node not there", []string{"inbox", "--id", id, "--node", "127.0.0.1:1"}, "Unavailable", "cannot reach the node at 127.0.0.1:1", ""},
		{"node list element without a port", []string{"inbox", "--id", id, "--node", "127.0.0.1:1,127.0.0.1"}, "error", `--node "127.0.0.1:1,127.0.0.1": element 2, "127.0.0.1", has no port number`, ""},
		{"node list with an empty element", []string{"inbox", "--id", id, "--node", "127.0.0.1:1,,127.0.0.1:2"}, "error", "element 2 of 3 is empty", ""},
		{"node list none there", []string{"inbox", "--id", id, "--node", "127.0.0.1:1,127.0.0.1:2"}, "Unavailable", "cannot reach any of the node's processes at 127.0.0.1:1,127.0.0.1:2", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := try(t, append(tc.args, "--json")...)
			if err == nil {
				t.Fatal("the command succeeded")
			}
			var got struct{ Error, Code, Reason string }
			dec := json.NewDecoder(strings.NewReader(out))
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("stdout %q is no JSON object: %v", out, err)
			}
			if err := dec.Decode(new(json.RawMessage)); !errors.Is(err, io.EOF) {
				t.Fatalf("more than one JSON value: %q", out)
			}
			if got.Code != tc.code || !strings.Contains(got.Error, tc.msg) || got.Reason != tc.reason {
				t.Fatalf("got %+v, want code %s, reason %q and an error saying %q", got, tc.code, tc.reason, tc.msg)
			}
		})
	}
}

// TestRun_NodeList: --node and KURIER_NODE take several processes of the
// node; one that is dead does not stop the command.
func TestRun_NodeList(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "brief.txt")
	if err := os.WriteFile(doc, []byte("Hallo Gericht"), 0o600); err != nil {
		t.Fatal(err)
	}
	var sent struct{ ID string }
	kurierJSON(t, &sent, "send", "--id", daemon.DevIdentity(devDir, "agency"), "--crl", crlPath,
		"--node", "127.0.0.1:1,"+nodeAddr, "--retry-for", "0", "--to", daemon.DevCourt, "--subject", "zwei Adressen", doc)
	t.Setenv("KURIER_NODE", nodeAddr+", 127.0.0.1:1")
	var inbox []struct{ ID string }
	kurierJSON(t, &inbox, "inbox", "--id", daemon.DevIdentity(devDir, "court"), "--crl", crlPath)
	if !slices.ContainsFunc(inbox, func(m struct{ ID string }) bool { return m.ID == sent.ID }) {
		t.Fatalf("inbox through KURIER_NODE=%s lacks %s: %+v", os.Getenv("KURIER_NODE"), sent.ID, inbox)
	}
}

// TestRun_Watch: kurier watch --existing --json prints the mailbox once it
// watches, then each message as it arrives, one JSON object a line, and
// ends cleanly when interrupted.
func TestRun_Watch(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "brief.txt")
	if err := os.WriteFile(doc, []byte("Hallo Gericht"), 0o600); err != nil {
		t.Fatal(err)
	}
	send := func(subject string) string {
		var r struct{ ID string }
		kurierJSON(t, &r, append([]string{"send", "--to", daemon.DevCourt, "--subject", subject, doc}, as("agency")...)...)
		return r.ID
	}
	before := send("vorher")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"watch", "--existing", "--json"}, as("court")...), pw, io.Discard)
		pw.Close()
	}()
	lines := json.NewDecoder(pr)
	next := func(want string) {
		t.Helper()
		for {
			var m struct{ ID, Subject string }
			if err := lines.Decode(&m); err != nil {
				t.Fatalf("watch output: %v", err)
			}
			if m.ID == want {
				return
			}
		}
	}
	next(before) // listed: the watch stands
	after := send("nachher")
	next(after)
	cancel()
	go io.Copy(io.Discard, pr)
	if err := <-done; err != nil {
		t.Fatalf("watch ended with %v, want nil when interrupted", err)
	}
}

// TestRun_Help: every command's --help says what it does, how it is
// called and an example, before its options; kurier pki --help lists the
// pki commands instead of failing.
func TestRun_Help(t *testing.T) {
	for name := range helps {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), append(strings.Fields(name), "--help"), &stdout, &stderr); err != nil {
				t.Fatalf("kurier %s --help: %v", name, err)
			}
			out := stderr.String()
			for _, want := range []string{"Usage: kurier " + name, "Example:\n  kurier " + name, "Options:\n"} {
				if !strings.Contains(out, want) {
					t.Errorf("kurier %s --help lacks %q:\n%s", name, want, out)
				}
			}
		})
	}
	for _, group := range []string{"pki", "dev"} {
		var stdout bytes.Buffer
		if err := run(context.Background(), []string{group, "--help"}, &stdout, io.Discard); err != nil || !strings.Contains(stdout.String(), "kurier "+group+" COMMAND --help") {
			t.Errorf("kurier %s --help: %v\n%s", group, err, stdout.String())
		}
	}
	// Every command a person can call has its help.
	for _, line := range strings.Split(usage, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "kurier" || f[1] == "help" || f[1] == "—" {
			continue
		}
		name := f[1]
		if name == "pki" || name == "dev" {
			name += " " + f[2]
		}
		if _, ok := helps[name]; !ok {
			t.Errorf("kurier %s has no help", name)
		}
	}
}

// TestRun_FetchKeepSealed: kurier fetch --per-message --keep-sealed writes
// the documents and both originals into a folder of the message's own and
// names them in its JSON.
func TestRun_FetchKeepSealed(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "klage.txt")
	if err := os.WriteFile(doc, []byte("Klage"), 0o600); err != nil {
		t.Fatal(err)
	}
	var sent struct{ ID string }
	kurierJSON(t, &sent, append([]string{"send", "--to", daemon.DevCourt, "--subject", "Klage", doc}, as("agency")...)...)
	base := t.TempDir()
	var got struct {
		Files          []string
		Sealed, Signed string
	}
	kurierJSON(t, &got, append([]string{"fetch", sent.ID, "-o", base, "--per-message", "--keep-sealed"}, as("court")...)...)
	dir := filepath.Join(base, sent.ID)
	want := []string{filepath.Join(dir, "klage.txt"), filepath.Join(dir, "payload.p7m"), filepath.Join(dir, "signed.p7m")}
	if have := append(got.Files, got.Sealed, got.Signed); !slices.Equal(have, want) {
		t.Fatalf("fetch wrote %q, want %q", have, want)
	}
	for _, p := range want {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// TestRun_ExportWithContent: the court exports a bundle with the
// originals that fetch --keep-sealed kept, the agency one with its
// document signed again; kurier verify passes both and checks the
// document. The originals of another message are refused, and nothing is
// written.
func TestRun_ExportWithContent(t *testing.T) {
	tmp := t.TempDir()
	base := filepath.Join(tmp, "eingang")
	var ids []string
	var docs []string
	for _, text := range []string{"Klage vom 1.12.", "Klage vom 2.12."} {
		doc := filepath.Join(t.TempDir(), "klage.txt")
		if err := os.WriteFile(doc, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		var sent struct{ ID string }
		kurierJSON(t, &sent, append([]string{"send", "--to", daemon.DevCourt, "--subject", "Klage", doc}, as("agency")...)...)
		kurier(t, append([]string{"fetch", sent.ID, "-o", base, "--per-message", "--keep-sealed"}, as("court")...)...)
		ids, docs = append(ids, sent.ID), append(docs, doc)
	}
	ca := filepath.Join(devDir, "ca", "ca.pem")
	for name, tc := range map[string]struct {
		who     string
		args    []string
		content []string
	}{
		"the fetch folder":      {"court", []string{"--with-content", filepath.Join(base, ids[0])}, []string{"content/signed.p7m", "content/payload.p7m"}},
		"signed.p7m":            {"court", []string{"--with-content", filepath.Join(base, ids[0], "signed.p7m")}, []string{"content/signed.p7m"}},
		"the sender's document": {"agency", []string{"--with-document", docs[0]}, []string{"content/signed.p7m"}},
	} {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "nachweis.zip")
			var got struct {
				File      string
				Content   []string
				Documents int `json:"documents_checked"`
			}
			kurierJSON(t, &got, append(append([]string{"export", ids[0], "-o", out}, tc.args...), as(tc.who)...)...)
			if got.File != out || !slices.Equal(got.Content, tc.content) || got.Documents != 1 {
				t.Fatalf("export printed %+v, want %s with %q and 1 document checked", got, out, tc.content)
			}
			text := kurier(t, "verify", out, "--ca", ca)
			if !strings.Contains(text, "document") || !strings.Contains(text, "content/signed.p7m: klage.txt") {
				t.Errorf("verify does not show the document's check:\n%s", text)
			}
		})
	}
	t.Run("another message's originals", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "nachweis.zip")
		_, err := try(t, append([]string{"export", ids[0], "-o", out, "--with-content", filepath.Join(base, ids[1])}, as("court")...)...)
		if err == nil || !strings.Contains(err.Error(), "the content does not verify as the message's: the documents are not those the envelope lists") {
			t.Fatalf("export = %v, want it refused", err)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a refused export wrote %s (%v)", out, err)
		}
	})
}
