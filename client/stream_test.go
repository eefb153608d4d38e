package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/envelope"
)

// bigSize is a document too large for a sealed payload held in memory
// (4 MiB), so that it takes the path through a temporary file.
const bigSize = 6 << 20

// tempDir points os.TempDir at a new empty folder for the test and returns
// it, to see what the client leaves there.
func tempDir(t *testing.T) string {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	return dir
}

// fetchAll fetches id into a new folder and returns the documents' contents
// by name.
func fetchAll(t *testing.T, c *client.Client, id string) map[string][]byte {
	t.Helper()
	dir := t.TempDir()
	f, err := c.Fetch(ctxT(t), id, dir)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	got := map[string][]byte{}
	for _, p := range f.Files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got[filepath.Base(p)] = b
	}
	if names := dirNames(t, dir); len(names) != len(f.Files) {
		t.Errorf("the folder holds %q, want only the documents", names)
	}
	return got
}

// TestClient_SendReaders sends documents given as readers, a file among
// them, next to one given as bytes: all arrive as they were.
func TestClient_SendReaders(t *testing.T) {
	ag, ct := dial(t, agency), dial(t, court)
	want := map[string][]byte{
		"akte.bin":  randomBytes(t, 700<<10),
		"brief.txt": []byte("Sehr geehrte Damen und Herren,\n"),
		"leer.txt":  {},
		"datei.pdf": randomBytes(t, 300<<10),
	}
	path := filepath.Join(t.TempDir(), "datei.pdf")
	if err := os.WriteFile(path, want["datei.pdf"], 0o600); err != nil {
		t.Fatal(err)
	}
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	id := send(t, ag,
		// A reader that hands out a byte at a time: sizes are counted, not
		// taken from one read.
		client.Document{Name: "akte.bin", Reader: iotest.OneByteReader(bytes.NewReader(want["akte.bin"])), Size: 700 << 10},
		client.Document{Name: "brief.txt", Data: want["brief.txt"]},
		client.Document{Name: "leer.txt", Reader: strings.NewReader(""), Size: 0},
		client.Document{Name: "datei.pdf", Reader: file, Size: int64(len(want["datei.pdf"]))},
	)
	got := fetchAll(t, ct, id)
	for name, b := range want {
		if !bytes.Equal(got[name], b) {
			t.Errorf("%s: fetched %d bytes, not the %d sent", name, len(got[name]), len(b))
		}
	}
}

// TestClient_SendReadersRefused: a reader that gives other than its
// declared size, or fails, ends the sealing with an error naming the
// document, and leaves no temporary file.
func TestClient_SendReadersRefused(t *testing.T) {
	ag := dial(t, agency)
	tmp := tempDir(t)
	big := randomBytes(t, bigSize)
	for name, tt := range map[string]struct {
		doc  client.Document
		want string
	}{
		"shorter":         {client.Document{Name: "a.bin", Reader: bytes.NewReader(big), Size: bigSize + 1}, "a.bin: read 6291456 of the 6291457 bytes declared"},
		"longer":          {client.Document{Name: "a.bin", Reader: bytes.NewReader(big), Size: bigSize - 1}, "a.bin: holds more than the 6291455 bytes declared"},
		"failing":         {client.Document{Name: "a.bin", Reader: io.MultiReader(bytes.NewReader(big), iotest.ErrReader(errors.New("disk gone"))), Size: bigSize + 10}, "a.bin: disk gone"},
		"data and reader": {client.Document{Name: "a.bin", Data: []byte("a"), Reader: strings.NewReader("a"), Size: 1}, `"a.bin" has both Data and a Reader`},
		"negative size":   {client.Document{Name: "a.bin", Reader: strings.NewReader("a"), Size: -1}, "negative size"},
		"size of data":    {client.Document{Name: "a.bin", Data: []byte("a"), Size: 2}, "Size 2 but 1 bytes of Data"},
		"too large":       {client.Document{Name: "a.bin", Reader: strings.NewReader("a"), Size: client.MaxPayload + 1}, "at most"},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := ag.Seal(ctxT(t), client.Message{To: []string{daemon.DevCourt}, Subject: "s", Documents: []client.Document{tt.doc}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				s.Close()
				t.Fatalf("Seal: %v, want an error containing %q", err, tt.want)
			}
			if names := dirNames(t, tmp); len(names) > 0 {
				t.Errorf("a failed Seal left %q in the temporary folder", names)
			}
		})
	}
}

// TestClient_LargeMessage takes a message of several MiB through the path
// of a sealed payload in a temporary file: it is sealed without a file
// that anyone else can see, submitted, fetched and checked, and Check
// writes nothing anywhere.
func TestClient_LargeMessage(t *testing.T) {
	ctx := ctxT(t)
	ag, ct := dial(t, agency), dial(t, court)
	tmp := tempDir(t)
	doc := randomBytes(t, bigSize)
	s, err := ag.Seal(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: "groß", Documents: []client.Document{
		{Name: "akte.bin", Reader: bytes.NewReader(doc), Size: bigSize}}})
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	defer s.Close()
	if s.Payload != nil || s.PayloadSize() <= bigSize {
		t.Fatalf("sealed payload: %d bytes in memory, size %d; want it in a file, larger than the document", len(s.Payload), s.PayloadSize())
	}
	if names := dirNames(t, tmp); len(names) > 0 {
		t.Errorf("the sealed payload's file has a name: %q", names)
	}
	var sent int64
	r, err := ag.Submit(ctx, s, func(n, total int64) { sent = n })
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if sent != s.PayloadSize() {
		t.Errorf("progress ended at %d of %d bytes", sent, s.PayloadSize())
	}
	if got := fetchAll(t, ct, r.MessageID)["akte.bin"]; !bytes.Equal(got, doc) {
		t.Errorf("fetched %d bytes, not the %d sent", len(got), len(doc))
	}
	f, err := ct.Check(ctx, r.MessageID)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if len(f.Files) != 0 || f.Envelope.Files[0].Size != bigSize {
		t.Errorf("Check: files %q, manifest %v", f.Files, f.Envelope.Files)
	}
	if names := dirNames(t, tmp); len(names) > 0 {
		t.Errorf("Check left %q in the temporary folder", names)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := ag.Submit(ctx, s, nil); err == nil || !strings.Contains(err.Error(), "read the sealed payload") {
		t.Errorf("Submit after Close: %v", err)
	}
}

// TestFault_LargeSealedSaveAndResubmit: a sealed payload in a file is
// saved and read back both ways (ReadSealed copies it, OpenSealed reads
// it in place) with the same bytes; the one read in place is submitted
// and fetched; a saved file cut short or grown is refused.
func TestFault_LargeSealedSaveAndResubmit(t *testing.T) {
	ctx := ctxT(t)
	ag, ct := dial(t, agency), dial(t, court)
	doc := randomBytes(t, bigSize)
	s, err := ag.Seal(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: "gespeichert", Documents: []client.Document{
		{Name: "akte.bin", Reader: bytes.NewReader(doc), Size: bigSize}}})
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	defer s.Close()
	path := filepath.Join(t.TempDir(), "msg.sealed")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.WriteTo(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Size() != n {
		t.Errorf("WriteTo counted %d bytes, wrote %d", n, fi.Size())
	}
	want := readAll(t, s.PayloadReader())

	f, err = os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	copied, err := client.ReadSealed(f)
	f.Close()
	if err != nil {
		t.Fatalf("ReadSealed: %v", err)
	}
	defer copied.Close()
	inPlace, err := client.OpenSealed(path)
	if err != nil {
		t.Fatalf("OpenSealed: %v", err)
	}
	defer inPlace.Close()
	for name, back := range map[string]*client.Sealed{"ReadSealed": copied, "OpenSealed": inPlace} {
		if back.ID != s.ID || !bytes.Equal(back.Envelope, s.Envelope) || !bytes.Equal(back.Signature, s.Signature) ||
			back.Payload != nil || !bytes.Equal(readAll(t, back.PayloadReader()), want) {
			t.Errorf("%s: not the sealed message saved, or its payload in memory", name)
		}
	}

	r, err := ag.Submit(ctx, inPlace, nil)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if got := fetchAll(t, ct, r.MessageID)["akte.bin"]; !bytes.Equal(got, doc) {
		t.Errorf("fetched %d bytes, not the %d sent", len(got), len(doc))
	}

	saved, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, tt := range map[string]struct {
		content []byte
		want    string
	}{
		"truncated":  {saved[:len(saved)-1], "unexpected EOF"},
		"data after": {append(saved, 0), "data after the payload"},
	} {
		t.Run(name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "bad.sealed")
			if err := os.WriteFile(bad, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			if s, err := client.OpenSealed(bad); err == nil || !strings.Contains(err.Error(), tt.want) {
				s.Close()
				t.Errorf("OpenSealed: %v, want an error containing %q", err, tt.want)
			}
			if s, err := client.ReadSealed(bytes.NewReader(tt.content)); err == nil {
				s.Close()
				t.Error("ReadSealed accepted it")
			}
		})
	}
}

func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHostile_DamagedPayloadLeavesNothing: a payload damaged inside but
// named by the envelope's digest, so that the node takes it, decrypts to
// documents of the right names and sizes that the sender never signed.
// Fetch refuses the message with an *OpenError and leaves nothing in the
// folder or beside it, though the documents are unpacked before the
// signature over them can be checked; Check refuses it as well, leaving
// nothing in the temporary folder.
func TestHostile_DamagedPayloadLeavesNothing(t *testing.T) {
	ctx := ctxT(t)
	ag, ct := dial(t, agency), dial(t, court)
	tmp := tempDir(t)
	envBytes, sig, payload := forge(t, forgery{
		entries: []tarEntry{{name: "akte.bin", data: string(randomBytes(t, bigSize))}, {name: "b.txt", data: "b"}},
		corrupt: func(p []byte) { p[len(p)/2] ^= 0x80 }, // inside akte.bin's ciphertext
	})
	env, err := envelope.Parse(envBytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ag.Submit(ctx, &client.Sealed{ID: env.ID, Envelope: envBytes, Signature: sig, Payload: payload}, nil); err != nil {
		t.Fatalf("Submit: %v", err)
	}

	parent := t.TempDir()
	dir := filepath.Join(parent, "in")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = ct.Fetch(ctx, env.ID, dir)
	var oe *client.OpenError
	if !errors.As(err, &oe) || !strings.Contains(err.Error(), "document signature") {
		t.Fatalf("Fetch of a damaged payload: %v, want an *OpenError about the document signature", err)
	}
	if names := dirNames(t, dir); len(names) > 0 {
		t.Errorf("a refused message left %q in the folder", names)
	}
	if names := dirNames(t, parent); len(names) != 1 {
		t.Errorf("a refused message left %q next to the folder", names)
	}

	if _, err := ct.Check(ctx, env.ID); !errors.As(err, &oe) {
		t.Errorf("Check of a damaged payload: %v, want an *OpenError", err)
	}
	if names := dirNames(t, tmp); len(names) > 0 {
		t.Errorf("Check left %q in the temporary folder", names)
	}
}

// BenchmarkSealOpen measures the client's own work on a 16 MiB document,
// without the transfer: seal (a directory question to the node, then
// pack, sign, encrypt and hash into the temporary file), and open (what
// Fetch does once the payload has arrived: write and hash it, decrypt,
// verify, unpack and commit).
func BenchmarkSealOpen(b *testing.B) {
	const size = 16 << 20
	doc := make([]byte, size)
	if _, err := rand.Read(doc); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	ag, err := client.Dial(ctx, nodeAddr, agency, client.WithCRL(crlPath))
	if err != nil {
		b.Fatal(err)
	}
	defer ag.Close()
	ct, err := client.Dial(ctx, nodeAddr, court, client.WithCRL(crlPath))
	if err != nil {
		b.Fatal(err)
	}
	defer ct.Close()
	seal := func() *client.Sealed {
		s, err := ag.Seal(ctx, client.Message{To: []string{daemon.DevCourt}, Subject: "bench", Documents: []client.Document{
			{Name: "akte.bin", Reader: bytes.NewReader(doc), Size: size}}})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}

	b.Run("seal", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			seal().Close()
		}
	})
	b.Run("open", func(b *testing.B) {
		s := seal()
		defer s.Close()
		payload, err := io.ReadAll(s.PayloadReader())
		if err != nil {
			b.Fatal(err)
		}
		root := b.TempDir()
		b.SetBytes(size)
		for b.Loop() {
			dir, err := os.MkdirTemp(root, "open-")
			if err != nil {
				b.Fatal(err)
			}
			if _, err := ct.Open(s.Envelope, s.Signature, payload, dir); err != nil {
				b.Fatal(err)
			}
			os.RemoveAll(dir)
		}
	})
}
