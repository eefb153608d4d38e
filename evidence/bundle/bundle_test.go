package bundle_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/daemon/daemontest"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
	"kurier.dev/kurier/tlog"
)

// fx is the fixture the tests share: the bundle of one message from the
// agency to the court, delivered, retrieved and acknowledged on a real
// development node and exported by the agency.
var fx struct {
	node *pki.Identity // the node's identity, which signs indexes
	zip  []byte        // the bundle as Write wrote it, dated written
}

// written is the time the fixture's bundle was written with.
var written = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) { daemontest.Main(m, setUp) }

func setUp(n *daemontest.Node) error {
	dir := n.Dir
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	if fx.node, err = pki.LoadIdentity(filepath.Join(dir, "node")); err != nil {
		return err
	}
	ag, err := n.Dial(ctx, n.Agency)
	if err != nil {
		return err
	}
	defer ag.Close()
	ct, err := n.Dial(ctx, n.Court)
	if err != nil {
		return err
	}
	defer ct.Close()
	r, err := ag.Send(ctx, client.Message{
		To: []string{daemon.DevCourt}, Subject: "Klage",
		Documents: []client.Document{{Name: "klage.txt", Data: []byte("Klageschrift")}},
	}, nil)
	if err != nil {
		return err
	}
	inbox := filepath.Join(dir, "inbox")
	if err := os.Mkdir(inbox, 0o700); err != nil {
		return err
	}
	f, err := ct.Fetch(ctx, r.MessageID, inbox)
	if err != nil {
		return err
	}
	if _, err := ct.Acknowledge(ctx, f); err != nil {
		return err
	}
	b, _, err := ag.Export(ctx, r.MessageID)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := b.Write(&buf, written); err != nil {
		return err
	}
	fx.zip = buf.Bytes()
	return nil
}

// fresh returns a copy of the fixture's bundle.
func fresh(t testing.TB) *bundle.Bundle {
	t.Helper()
	b, err := bundle.Read(bytes.NewReader(fx.zip), int64(len(fx.zip)))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return b
}

func write(t testing.TB, b *bundle.Bundle) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := b.Write(&buf, written); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return buf.Bytes()
}

func read(data []byte) (*bundle.Bundle, error) {
	return bundle.Read(bytes.NewReader(data), int64(len(data)))
}

// sameBundle compares bundles field by field, certificates by their DER.
var sameBundle = []cmp.Option{
	cmp.Comparer(func(a, b *x509.Certificate) bool { return a.Equal(b) }),
	cmpopts.EquateEmpty(),
}

func TestBundle_WriteRead(t *testing.T) {
	b := fresh(t)
	if b.MessageID == "" || len(b.Evidence) != 4 || len(b.Certificates) == 0 {
		t.Fatalf("fixture bundle: message %q, %d evidence, %d certificates", b.MessageID, len(b.Evidence), len(b.Certificates))
	}
	data := write(t, b)
	got, err := read(data)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if diff := cmp.Diff(b, got, sameBundle...); diff != "" {
		t.Errorf("read back (-wrote +read):\n%s", diff)
	}

	// The same bundle written at the same time gives the same bytes: the
	// ones the fixture was written as.
	if !bytes.Equal(data, fx.zip) {
		t.Error("a bundle read and written again differs from the file it was read from")
	}

	// Every part is a file of its own, in a fixed order, dated as asked.
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		if !f.Modified.Equal(written) {
			t.Errorf("%s dated %v, want %v", f.Name, f.Modified, written)
		}
	}
	want := []string{
		bundle.FileReadme, bundle.FileManifest, bundle.FileIndex, bundle.FileEnvelope, bundle.FileSignature,
		bundle.FileCheckpoint, bundle.FileCertificates, bundle.FileCRL,
		"evidence/01-SubmissionAcceptance.p7m", "evidence/02-Delivery.p7m",
		"evidence/03-Retrieval.p7m", "evidence/04-Acknowledgement.p7m",
	}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("zip entries (-want +got):\n%s", diff)
	}
	files := entries(t, data)
	if _, err := x509.ParseRevocationList(files.get(bundle.FileCRL)); err != nil {
		t.Errorf("crl.der is not a DER CRL: %v", err)
	}
	if _, err := evidence.Parse(files.get("evidence/02-Delivery.p7m")); err != nil {
		t.Errorf("evidence/02-Delivery.p7m is not an evidence file: %v", err)
	}

	t.Run("consistency proofs", func(t *testing.T) {
		b := fresh(t)
		b.Consistency = []bundle.Consistency{
			{From: 0, Proof: nil},
			{From: 1, Proof: [][]byte{hash("a"), hash("b")}},
		}
		got, err := read(write(t, b))
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if diff := cmp.Diff(b, got, sameBundle...); diff != "" {
			t.Errorf("read back (-wrote +read):\n%s", diff)
		}
	})
}

// TestBundle_Content: the content part (the sender-signed original and
// the payload as delivered) is written stored under content/, after the
// evidence, reads back byte for byte, may take the bundle beyond MaxSize,
// and README.txt says how to check it by hand; without it the bundle keeps
// the bytes it had.
func TestBundle_Content(t *testing.T) {
	b := fresh(t)
	// More than MaxSize: the content is what may be large.
	b.Signed = bytes.Repeat([]byte("signed original "), bundle.MaxSize/16+1)
	b.Sealed = []byte("payload as delivered")
	data := write(t, b)
	if len(data) <= bundle.MaxSize {
		t.Fatalf("the bundle has %d bytes; the test wants more than MaxSize", len(data))
	}
	got, err := read(data)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if !bytes.Equal(got.Signed, b.Signed) || !bytes.Equal(got.Sealed, b.Sealed) {
		t.Errorf("the content read back differs: %d and %d bytes, wrote %d and %d", len(got.Signed), len(got.Sealed), len(b.Signed), len(b.Sealed))
	}
	// (cmp would compare the content byte by byte, slowly.)
	b.Signed, b.Sealed, got.Signed, got.Sealed = nil, nil, nil, nil
	if diff := cmp.Diff(b, got, sameBundle...); diff != "" {
		t.Errorf("read back (-wrote +read):\n%s", diff)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		if strings.HasPrefix(f.Name, "content/") && f.Method != zip.Store {
			t.Errorf("%s is compressed (method %d), want it stored", f.Name, f.Method)
		}
	}
	if n := len(names); n < 2 || names[n-2] != bundle.FileContentSigned || names[n-1] != bundle.FileContentSealed {
		t.Errorf("entries %q, want the content last", names)
	}
	if readme := entries(t, data).get(bundle.FileReadme); !bytes.Contains(readme, []byte("content/signed.p7m")) {
		t.Errorf("README.txt does not explain the content:\n%s", readme)
	}

	t.Run("over MaxSizeWithContent", func(t *testing.T) {
		// Refused on its size alone, before anything is read.
		_, err := bundle.Read(bytes.NewReader(fx.zip), bundle.MaxSizeWithContent+1)
		if !errors.Is(err, bundle.ErrFormat) || !strings.Contains(err.Error(), fmt.Sprintf("at most %d", bundle.MaxSizeWithContent)) {
			t.Fatalf("Read = %v, want it refused for its size", err)
		}
	})
	t.Run("signed original alone", func(t *testing.T) {
		b := fresh(t)
		b.Signed = []byte("signed original")
		got, err := read(write(t, b))
		if err != nil || !bytes.Equal(got.Signed, b.Signed) || got.Sealed != nil {
			t.Fatalf("Read: %v, signed %q, sealed %q", err, got.Signed, got.Sealed)
		}
	})
	t.Run("payload alone", func(t *testing.T) {
		b := fresh(t)
		b.Sealed = []byte("payload as delivered")
		var buf bytes.Buffer
		if err := b.Write(&buf, written); !errors.Is(err, bundle.ErrFormat) || !strings.Contains(err.Error(), "without content/signed.p7m") {
			t.Fatalf("Write = %v, want it refused", err)
		}
	})
}

// storedZip writes fs as a zip file of stored entries.
func storedZip(t *testing.T, fs files) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range fs {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestEvidenceName(t *testing.T) {
	for i, tt := range []struct {
		i    int
		t    evidence.Type
		want string
	}{
		{0, evidence.SubmissionAcceptance, "01-SubmissionAcceptance.p7m"},
		{9, evidence.Acknowledgement, "10-Acknowledgement.p7m"},
		{999, evidence.NonDelivery, "1000-NonDelivery.p7m"},
	} {
		if got := bundle.EvidenceName(tt.i, tt.t); got != tt.want {
			t.Errorf("%d: EvidenceName(%d, %s) = %q, want %q", i, tt.i, tt.t, got, tt.want)
		}
	}
}

func TestBundle_WriteRefuses(t *testing.T) {
	for name, change := range map[string]func(b *bundle.Bundle){
		"no message id":          func(b *bundle.Bundle) { b.MessageID = "" },
		"no envelope":            func(b *bundle.Bundle) { b.Envelope = nil },
		"no signature":           func(b *bundle.Bundle) { b.Signature = nil },
		"no index":               func(b *bundle.Bundle) { b.Index = nil },
		"no checkpoint":          func(b *bundle.Bundle) { b.Checkpoint = nil },
		"no CRL":                 func(b *bundle.Bundle) { b.CRL = nil },
		"no evidence":            func(b *bundle.Bundle) { b.Evidence = nil },
		"evidence name":          func(b *bundle.Bundle) { b.Evidence[1].Name = "../02-Delivery.p7m" },
		"evidence name twice":    func(b *bundle.Bundle) { b.Evidence[1].Name = b.Evidence[0].Name },
		"empty evidence":         func(b *bundle.Bundle) { b.Evidence[1].DER = nil },
		"evidence too large":     func(b *bundle.Bundle) { b.Evidence[1].DER = make([]byte, evidence.MaxSize+1) },
		"short proof hash":       func(b *bundle.Bundle) { b.Evidence[1].Proof = [][]byte{hash("x")[:31]} },
		"proof too long":         func(b *bundle.Bundle) { b.Evidence[1].Proof = slices.Repeat([][]byte{hash("x")}, tlog.MaxProofLen+1) },
		"short consistency hash": func(b *bundle.Bundle) { b.Consistency = []bundle.Consistency{{From: 1, Proof: [][]byte{{1}}}} },
		"too many consistency proofs": func(b *bundle.Bundle) {
			b.Consistency = make([]bundle.Consistency, bundle.MaxConsistency+1)
		},
		"too many certificates": func(b *bundle.Bundle) {
			b.Certificates = slices.Repeat(b.Certificates[:1], bundle.MaxCertificates+1)
		},
	} {
		t.Run(name, func(t *testing.T) {
			b := fresh(t)
			change(b)
			err := b.Write(&bytes.Buffer{}, written)
			if !errors.Is(err, bundle.ErrFormat) {
				t.Errorf("Write = %v, want an error wrapping ErrFormat", err)
			}
		})
	}
}

// files are a zip file's entries, in order.
type files []file

type file struct {
	name string
	data []byte
}

func entries(t *testing.T, data []byte) files {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var fs files
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		fs = append(fs, file{f.Name, buf.Bytes()})
	}
	return fs
}

func (fs files) get(name string) []byte {
	for _, f := range fs {
		if f.name == name {
			return f.data
		}
	}
	return nil
}

func (fs files) without(name string) files {
	return slices.DeleteFunc(slices.Clone(fs), func(f file) bool { return f.name == name })
}

func (fs files) with(name string, data []byte) files {
	return append(slices.Clone(fs), file{name, data})
}

// replacing returns fs with name's data replaced.
func (fs files) replacing(name string, data []byte) files {
	out := slices.Clone(fs)
	for i := range out {
		if out[i].name == name {
			out[i].data = data
		}
	}
	return out
}

// manifest returns fs with the manifest changed by edit, which gets and
// returns it decoded as generic JSON.
func (fs files) manifest(t *testing.T, edit func(m map[string]any)) files {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(fs.get(bundle.FileManifest), &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return fs.replacing(bundle.FileManifest, data)
}

func (fs files) zip(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range fs {
		w, err := zw.Create(f.name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// manifestEvidence returns the manifest's list of evidence.
func manifestEvidence(m map[string]any) []any { return m["evidence"].([]any) }

func TestRead_Refuses(t *testing.T) {
	good := entries(t, fx.zip)
	if _, err := read(good.zip(t)); err != nil {
		t.Fatalf("the fixture's entries, zipped again, do not read: %v", err)
	}
	ack := good.get("evidence/04-Acknowledgement.p7m")

	for _, tt := range []struct {
		name string
		data func(t *testing.T) []byte
		want string // in the error
	}{
		{"not a zip", func(*testing.T) []byte { return []byte("Klageschrift, kein Bündel") }, "zip"},
		{"empty", func(*testing.T) []byte { return nil }, "zip"},
		{"empty zip", func(t *testing.T) []byte { return files{}.zip(t) }, "starting with its first entry"},
		{"truncated", func(*testing.T) []byte { return fx.zip[:len(fx.zip)-10] }, "zip"},
		{"over MaxSize without content", func(t *testing.T) []byte {
			// Only the content entries may take a bundle past MaxSize.
			return storedZip(t, good.with(bundle.FileReadme+"x", make([]byte, bundle.MaxSize)))
		}, fmt.Sprintf("besides the content, at most %d", bundle.MaxSize)},
		{"payload without the signed original", func(t *testing.T) []byte {
			return good.with(bundle.FileContentSealed, []byte("sealed")).zip(t)
		}, "content/payload.p7m without content/signed.p7m"},
		{"empty signed original", func(t *testing.T) []byte {
			return good.with(bundle.FileContentSigned, nil).zip(t)
		}, "content/signed.p7m of 0 bytes"},
		{"unknown entry", func(t *testing.T) []byte { return good.with("notes.txt", []byte("x")).zip(t) }, `unexpected entry "notes.txt"`},
		{"data after the manifest", func(t *testing.T) []byte {
			return good.without(bundle.FileManifest).with(bundle.FileManifest, append(good.get(bundle.FileManifest), "{}"...)).zip(t)
		}, "manifest.json is not in the form Kurier writes"},
		{"manifest key in other case", func(t *testing.T) []byte {
			m := bytes.Replace(good.get(bundle.FileManifest), []byte(`"format"`), []byte(`"FORMAT"`), 1)
			return good.without(bundle.FileManifest).with(bundle.FileManifest, m).zip(t)
		}, "manifest.json is not in the form Kurier writes"},
		{"text before the certificates", func(t *testing.T) []byte {
			c := append([]byte("Bitte beachten: alles gültig\n"), good.get(bundle.FileCertificates)...)
			return good.without(bundle.FileCertificates).with(bundle.FileCertificates, c).zip(t)
		}, "certificates.pem is not in the form Kurier writes"},
		{"directory entry outside the format", func(t *testing.T) []byte { return good.with("anlagen/", nil).zip(t) }, `unexpected entry "anlagen/"`},
		{"path outside", func(t *testing.T) []byte {
			return good.with("evidence/../01-Delivery.p7m", ack).zip(t)
		}, "unexpected entry"},
		{"evidence name", func(t *testing.T) []byte {
			return good.with("evidence/5-Acknowledgement.p7m", ack).zip(t)
		}, "unexpected entry"},
		{"duplicate entry", func(t *testing.T) []byte {
			return good.with(bundle.FileCheckpoint, good.get(bundle.FileCheckpoint)).zip(t)
		}, `entry "checkpoint" twice`},
		{"duplicate evidence entry", func(t *testing.T) []byte {
			return good.with("evidence/02-Delivery.p7m", ack).zip(t)
		}, `entry "evidence/02-Delivery.p7m" twice`},
		{"evidence not in the manifest", func(t *testing.T) []byte {
			return good.with("evidence/05-Acknowledgement.p7m", ack).zip(t)
		}, "which manifest.json does not list"},
		{"manifest entry without file", func(t *testing.T) []byte {
			return good.without("evidence/03-Retrieval.p7m").zip(t)
		}, "lists evidence/03-Retrieval.p7m, which the bundle does not hold"},
		{"manifest lists a file that is not evidence", func(t *testing.T) []byte {
			return good.manifest(t, func(m map[string]any) {
				manifestEvidence(m)[0].(map[string]any)["file"] = bundle.FileIndex
			}).without("evidence/01-SubmissionAcceptance.p7m").zip(t)
		}, "lists index.p7m, which the bundle does not hold"},
		{"manifest lists an evidence twice", func(t *testing.T) []byte {
			return good.manifest(t, func(m map[string]any) {
				ev := manifestEvidence(m)
				m["evidence"] = append(ev, ev[0])
			}).zip(t)
		}, "twice"},
		{"manifest missing", func(t *testing.T) []byte { return good.without(bundle.FileManifest).zip(t) }, "manifest.json is missing"},
		{"index missing", func(t *testing.T) []byte { return good.without(bundle.FileIndex).zip(t) }, "index.p7m is missing"},
		{"CRL missing", func(t *testing.T) []byte { return good.without(bundle.FileCRL).zip(t) }, "crl.der is missing"},
		{"no evidence", func(t *testing.T) []byte {
			fs := good.manifest(t, func(m map[string]any) { m["evidence"] = []any{} })
			for _, f := range good {
				if strings.HasPrefix(f.name, "evidence/") {
					fs = fs.without(f.name)
				}
			}
			return fs.zip(t)
		}, "0 evidence files"},
		{"manifest not JSON", func(t *testing.T) []byte {
			return good.replacing(bundle.FileManifest, []byte("format: kurier-bundle")).zip(t)
		}, "manifest.json"},
		{"manifest unknown field", func(t *testing.T) []byte {
			return good.manifest(t, func(m map[string]any) { m["signed_by"] = "the node" }).zip(t)
		}, "unknown field"},
		{"manifest format", func(t *testing.T) []byte {
			return good.manifest(t, func(m map[string]any) { m["format"] = "zip" }).zip(t)
		}, `names format "zip"`},
		{"manifest version", func(t *testing.T) []byte {
			return good.manifest(t, func(m map[string]any) { m["version"] = 3 }).zip(t)
		}, "version 3"},
		{"manifest version 1 naming logs", func(t *testing.T) []byte {
			return good.manifest(t, func(m map[string]any) { m["version"] = 1 }).zip(t)
		}, "names a log, which version 1 does not"},
		{"manifest evidence without its log", func(t *testing.T) []byte {
			return good.manifest(t, func(m map[string]any) {
				delete(manifestEvidence(m)[1].(map[string]any), "log")
			}).zip(t)
		}, "manifest.json is not in the form Kurier writes"},
		{"manifest evidence in a log that is not an origin", func(t *testing.T) []byte {
			return good.manifest(t, func(m map[string]any) {
				manifestEvidence(m)[1].(map[string]any)["log"] = "amtsgericht.example"
			}).zip(t)
		}, "log of evidence 02-Delivery.p7m"},
		{"short proof hash", func(t *testing.T) []byte {
			return good.manifest(t, func(m map[string]any) {
				manifestEvidence(m)[1].(map[string]any)["inclusion_proof"] = []any{"AAAA"}
			}).zip(t)
		}, "inclusion proof of 02-Delivery.p7m"},
		{"certificates not PEM", func(t *testing.T) []byte {
			return good.replacing(bundle.FileCertificates, []byte("certificate")).zip(t)
		}, "certificates.pem: not PEM"},
		{"certificates with a key", func(t *testing.T) []byte {
			return good.replacing(bundle.FileCertificates, append(good.get(bundle.FileCertificates),
				"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"...)).zip(t)
		}, `unexpected PEM block "PRIVATE KEY"`},
		{"entry over its limit", func(t *testing.T) []byte {
			// A megabyte of zeros deflates to a kilobyte.
			return good.replacing(bundle.FileCheckpoint, make([]byte, 1<<20)).zip(t)
		}, "checkpoint: 1048576 bytes, at most"},
		{"entry larger than its header says", func(t *testing.T) []byte {
			return lyingEntry(t, good.without(bundle.FileCheckpoint), bundle.FileCheckpoint, make([]byte, 1<<20))
		}, "checkpoint"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := tt.data(t)
			b, err := read(data)
			if !errors.Is(err, bundle.ErrFormat) {
				t.Fatalf("Read = %v, %v; want an error wrapping ErrFormat", b, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Read error %q does not say %q", err, tt.want)
			}
		})
	}
}

// lyingEntry returns fs zipped with an entry name whose header claims 100
// bytes, however much data inflates to.
func lyingEntry(t *testing.T, fs files, name string, data []byte) []byte {
	t.Helper()
	// Deflate data by writing it into a zip of its own and taking it out
	// raw.
	var deflated bytes.Buffer
	zw := zip.NewWriter(&deflated)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "x", Method: zip.Deflate})
	if err == nil {
		_, err = w.Write(data)
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(deflated.Bytes()), int64(deflated.Len()))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := zr.File[0].OpenRaw()
	if err != nil {
		t.Fatal(err)
	}
	var compressed bytes.Buffer
	if _, err := compressed.ReadFrom(raw); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	zw = zip.NewWriter(&out)
	for _, f := range fs {
		w, err := zw.Create(f.name)
		if err == nil {
			_, err = w.Write(f.data)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	w, err = zw.CreateRaw(&zip.FileHeader{
		Name: name, Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(data[:100]),
		CompressedSize64: uint64(compressed.Len()), UncompressedSize64: 100,
	})
	if err == nil {
		_, err = w.Write(compressed.Bytes())
	}
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func digest(s string) string { return hex.EncodeToString(hash(s)) }

// validIndex returns an index of the current version without other logs.
func validIndex() *bundle.Index {
	return &bundle.Index{
		Version:     bundle.IndexVersion,
		MessageID:   "0195f2a4-7c3e-7b1a-9d2e-5f6a7b8c9d0e",
		RequestedBy: daemon.DevAgency,
		Time:        time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC),
		Origin:      tlog.Origin("stadt.example"),
		LogKey:      "stadt.example/kurier-log+12345678+AQ==",
		TreeSize:    42,
		Evidence:    []string{digest("a"), digest("b")},
		CRLSHA256:   digest("crl"),
	}
}

// validIndexV1 returns an index of version 1, as nodes wrote them before
// version 2.
func validIndexV1() *bundle.Index {
	ix := validIndex()
	ix.Version = 1
	return ix
}

// validIndexV2 returns an index of version 2 naming two other logs.
func validIndexV2() *bundle.Index {
	ix := validIndex()
	ix.Version = 2
	ix.Logs = []bundle.IndexLog{
		{Origin: tlog.Origin("amtsgericht.example"), LogKey: "amtsgericht.example/kurier-log+87654321+AQ==", TreeSize: 7},
		{Origin: tlog.Origin("landgericht.example"), LogKey: "landgericht.example/kurier-log+0badcafe+Ag==", TreeSize: 1},
	}
	return ix
}

func TestIndex_MarshalParse(t *testing.T) {
	ix := validIndexV1()
	b, err := ix.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	want := `{"version":1,"message_id":"0195f2a4-7c3e-7b1a-9d2e-5f6a7b8c9d0e","requested_by":"poststelle@stadt.example",` +
		`"time":"2025-03-01T12:00:00.123456Z","origin":"stadt.example/kurier-log","log_key":"stadt.example/kurier-log+12345678+AQ==",` +
		`"tree_size":42,"evidence_sha256":["` + digest("a") + `","` + digest("b") + `"],"crl_sha256":"` + digest("crl") + `"}`
	if string(b) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", b, want)
	}
	got, err := bundle.ParseIndex(b)
	if err != nil {
		t.Fatalf("ParseIndex: %v", err)
	}
	if diff := cmp.Diff(ix, got); diff != "" {
		t.Errorf("parsed (-marshalled +parsed):\n%s", diff)
	}
	if d := got.Domain(); d != "stadt.example" {
		t.Errorf("Domain = %q", d)
	}

	t.Run("in another time zone", func(t *testing.T) {
		ix := validIndexV1()
		ix.Time = ix.Time.In(time.FixedZone("MEZ", 3600))
		b2, err := ix.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, b2) {
			t.Errorf("Marshal depends on the time zone:\n%s\n%s", b, b2)
		}
	})

	t.Run("MaxEvidence", func(t *testing.T) {
		// An export may hold MaxEvidence evidence; its index must read
		// back, and the signed index must fit into a bundle.
		ix := validIndex()
		ix.Evidence = nil
		for i := range bundle.MaxEvidence {
			ix.Evidence = append(ix.Evidence, digest(fmt.Sprint(i)))
		}
		b, err := ix.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if _, err := bundle.ParseIndex(b); err != nil {
			t.Fatalf("ParseIndex of %d bytes: %v", len(b), err)
		}
		bd := fresh(t)
		if bd.Index, err = cms.Sign(b, pkitest.Signer(fx.node)); err != nil {
			t.Fatal(err)
		}
		if _, err := read(write(t, bd)); err != nil {
			t.Fatalf("a bundle with an index of MaxEvidence does not read back: %v", err)
		}
		ix.Evidence = append(ix.Evidence, digest("one too many"))
		if _, err := ix.Marshal(); !errors.Is(err, bundle.ErrFormat) {
			t.Errorf("Marshal of MaxEvidence+1 = %v, want ErrFormat", err)
		}
	})

}

// TestIndex_MaxLogs: the largest index there can be, MaxEvidence evidence
// and MaxLogs other logs of the longest domains with keys as long as a
// bundle allows, reads back and fits into a bundle.
func TestIndex_MaxLogs(t *testing.T) {
	ix := validIndex()
	ix.Evidence = nil
	for i := range bundle.MaxEvidence {
		ix.Evidence = append(ix.Evidence, digest(fmt.Sprint(i)))
	}
	for i := range bundle.MaxLogs {
		origin := tlog.Origin(longestDomain(i))
		key := origin + "+" + strings.Repeat("k", 1024-len(origin)-1)
		ix.Logs = append(ix.Logs, bundle.IndexLog{Origin: origin, LogKey: key, TreeSize: 1<<64 - 1})
	}
	b, err := ix.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if _, err := bundle.ParseIndex(b); err != nil {
		t.Fatalf("ParseIndex of %d bytes: %v", len(b), err)
	}
	bd := fresh(t)
	if bd.Index, err = cms.Sign(b, pkitest.Signer(fx.node)); err != nil {
		t.Fatal(err)
	}
	if _, err := read(write(t, bd)); err != nil {
		t.Fatalf("a bundle with an index of %d bytes does not read back: %v", len(b), err)
	}
	ix.Logs = append(ix.Logs, bundle.IndexLog{Origin: tlog.Origin("one.too-many.example"), LogKey: "k", TreeSize: 1})
	if _, err := ix.Marshal(); !errors.Is(err, bundle.ErrFormat) {
		t.Errorf("Marshal of MaxLogs+1 = %v, want ErrFormat", err)
	}
}

// longestDomain returns the i-th of distinct domains of the greatest
// length an address allows.
func longestDomain(i int) string {
	first := fmt.Sprintf("n%03d", i) + strings.Repeat("a", 63-4)
	d := first + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "."
	return d + strings.Repeat("d", address.MaxDomainLen-len(d))
}

func TestIndex_MarshalParseV2(t *testing.T) {
	ix := validIndexV2()
	b, err := ix.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	want := `{"version":2,"message_id":"0195f2a4-7c3e-7b1a-9d2e-5f6a7b8c9d0e","requested_by":"poststelle@stadt.example",` +
		`"time":"2025-03-01T12:00:00.123456Z","origin":"stadt.example/kurier-log","log_key":"stadt.example/kurier-log+12345678+AQ==",` +
		`"tree_size":42,"logs":[{"origin":"amtsgericht.example/kurier-log","log_key":"amtsgericht.example/kurier-log+87654321+AQ==","tree_size":7},` +
		`{"origin":"landgericht.example/kurier-log","log_key":"landgericht.example/kurier-log+0badcafe+Ag==","tree_size":1}],` +
		`"evidence_sha256":["` + digest("a") + `","` + digest("b") + `"],"crl_sha256":"` + digest("crl") + `"}`
	if string(b) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", b, want)
	}
	got, err := bundle.ParseIndex(b)
	if err != nil {
		t.Fatalf("ParseIndex: %v", err)
	}
	if diff := cmp.Diff(ix, got); diff != "" {
		t.Errorf("parsed (-marshalled +parsed):\n%s", diff)
	}
	if l, ok := got.Log(tlog.Origin("landgericht.example")); !ok || l.TreeSize != 1 {
		t.Errorf("Log(landgericht) = %+v, %v", l, ok)
	}
	if _, ok := got.Log(got.Origin); ok {
		t.Error("Log finds the node's own log among the others")
	}

	// Without other logs the list is there, empty.
	ix.Logs = nil
	if b, err = ix.Marshal(); err != nil || !bytes.Contains(b, []byte(`"tree_size":42,"logs":[],"evidence_sha256"`)) {
		t.Errorf("Marshal without other logs = %s, %v", b, err)
	}
	if got, err := bundle.ParseIndex(b); err != nil || got.Logs != nil {
		t.Errorf("ParseIndex without other logs = %+v, %v", got, err)
	}
}

func TestIndex_Real(t *testing.T) {
	b := fresh(t)
	signed, err := cms.ParseSigned(b.Index)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := bundle.ParseIndex(signed.Content)
	if err != nil {
		t.Fatalf("ParseIndex: %v", err)
	}
	again, err := ix.Marshal()
	if err != nil || !bytes.Equal(again, signed.Content) {
		t.Errorf("Marshal = %s, %v; want the signed bytes %s", again, err, signed.Content)
	}
	size, err := tlog.PeekSize(b.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	var digests []string
	for _, e := range b.Evidence {
		digests = append(digests, evidence.Digest(e.DER))
	}
	switch {
	case ix.MessageID != b.MessageID:
		t.Errorf("index of message %s, bundle of %s", ix.MessageID, b.MessageID)
	case ix.RequestedBy != daemon.DevAgency:
		t.Errorf("index requested by %s", ix.RequestedBy)
	case ix.TreeSize != size:
		t.Errorf("index tree size %d, checkpoint %d", ix.TreeSize, size)
	case ix.Domain() != daemon.DevDomains[0]:
		t.Errorf("index of the log of %s", ix.Domain())
	case !slices.Equal(ix.Evidence, digests):
		t.Errorf("index lists %v, bundle holds %v", ix.Evidence, digests)
	case ix.CRLSHA256 != evidence.Digest(b.CRL):
		t.Errorf("index names CRL %s, bundle holds %s", ix.CRLSHA256, evidence.Digest(b.CRL))
	}
}

func TestParseIndex_Refuses(t *testing.T) {
	canon, err := validIndex().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, canon, "", "  "); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(canon, &m); err != nil {
		t.Fatal(err)
	}
	sorted, err := json.Marshal(m) // keys in alphabetical order
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"indented":           indented.Bytes(),
		"keys sorted":        sorted,
		"trailing newline":   append(bytes.Clone(canon), '\n'),
		"escaped character":  bytes.Replace(canon, []byte(`"poststelle@`), []byte(`"\u0070oststelle@`), 1),
		"upper-case key":     bytes.Replace(canon, []byte(`"origin"`), []byte(`"Origin"`), 1),
		"time not UTC":       bytes.Replace(canon, []byte(`12:00:00.123456Z`), []byte(`13:00:00.123456+01:00`), 1),
		"time in seconds":    bytes.Replace(canon, []byte(`12:00:00.123456Z`), []byte(`12:00:00Z`), 1),
		"tree size as text":  bytes.Replace(canon, []byte(`"tree_size":42`), []byte(`"tree_size":"42"`), 1),
		"unknown field":      bytes.Replace(canon, []byte(`"message_id"`), []byte(`"note":"","message_id"`), 1),
		"second value":       append(bytes.Clone(canon), "{}"...),
		"too large":          append(bytes.Clone(canon), bytes.Repeat([]byte(" "), 1<<20)...),
		"not JSON":           []byte("index"),
		"without logs key":   bytes.Replace(canon, []byte(`"logs":[],`), nil, 1),
		"version 1 logs key": bytes.Replace(canon, []byte(`"version":2,`), []byte(`"version":1,`), 1),
		"logs null":          bytes.Replace(canon, []byte(`"logs":[]`), []byte(`"logs":null`), 1),
	} {
		t.Run(name, func(t *testing.T) {
			if bytes.Equal(data, canon) {
				t.Fatal("the test case does not change the index")
			}
			if _, err := bundle.ParseIndex(data); !errors.Is(err, bundle.ErrFormat) {
				t.Errorf("ParseIndex = %v, want an error wrapping ErrFormat", err)
			}
		})
	}

	for name, change := range map[string]func(ix *bundle.Index){
		"version":               func(ix *bundle.Index) { ix.Version = 3 },
		"version 1 with logs":   func(ix *bundle.Index) { ix.Version = 1; ix.Logs = validIndexV2().Logs },
		"log origin":            func(ix *bundle.Index) { ix.Logs[0].Origin = "amtsgericht.example" },
		"log twice":             func(ix *bundle.Index) { ix.Logs[1] = ix.Logs[0] },
		"own log among others":  func(ix *bundle.Index) { ix.Logs[1].Origin = ix.Origin },
		"no key of a log":       func(ix *bundle.Index) { ix.Logs[0].LogKey = "" },
		"log key with a space":  func(ix *bundle.Index) { ix.Logs[0].LogKey += " x" },
		"log key too long":      func(ix *bundle.Index) { ix.Logs[0].LogKey = strings.Repeat("k", 1025) },
		"empty other log":       func(ix *bundle.Index) { ix.Logs[0].TreeSize = 0 },
		"no message id":         func(ix *bundle.Index) { ix.MessageID = "" },
		"no time":               func(ix *bundle.Index) { ix.Time = time.Time{} },
		"no log key":            func(ix *bundle.Index) { ix.LogKey = "" },
		"empty log":             func(ix *bundle.Index) { ix.TreeSize = 0 },
		"no evidence":           func(ix *bundle.Index) { ix.Evidence = nil },
		"upper-case digest":     func(ix *bundle.Index) { ix.Evidence[1] = strings.ToUpper(ix.Evidence[1]) },
		"short digest":          func(ix *bundle.Index) { ix.Evidence[1] = ix.Evidence[1][:62] },
		"requested by nobody":   func(ix *bundle.Index) { ix.RequestedBy = "" },
		"requested by domain":   func(ix *bundle.Index) { ix.RequestedBy = "stadt.example" },
		"origin without log":    func(ix *bundle.Index) { ix.Origin = "stadt.example" },
		"origin without a dot":  func(ix *bundle.Index) { ix.Origin = "" },
		"message id not a UUID": func(ix *bundle.Index) { ix.MessageID = "\x1b[2Jok" },
		"no CRL digest":         func(ix *bundle.Index) { ix.CRLSHA256 = "" },
	} {
		t.Run(name, func(t *testing.T) {
			ix := validIndexV2()
			change(ix)
			if _, err := ix.Marshal(); !errors.Is(err, bundle.ErrFormat) {
				t.Errorf("Marshal = %v, want an error wrapping ErrFormat", err)
			}
			// Nor does such an index parse, even written by hand.
			w := validIndexV2()
			good, _ := w.Marshal()
			bad := indexJSON(ix)
			if bytes.Equal(good, bad) {
				t.Fatal("the test case does not change the index")
			}
			if _, err := bundle.ParseIndex(bad); !errors.Is(err, bundle.ErrFormat) {
				t.Errorf("ParseIndex = %v, want an error wrapping ErrFormat", err)
			}
		})
	}
}

// indexJSON writes ix in the index's JSON form without validating it:
// with the list of other logs unless it is of version 1 and has none.
func indexJSON(ix *bundle.Index) []byte {
	t := ""
	if !ix.Time.IsZero() {
		t = ix.Time.UTC().Format(evidence.TimeFormat)
	}
	ev := ix.Evidence
	if ev == nil {
		ev = []string{}
	}
	type v1 struct {
		Version     int      `json:"version"`
		MessageID   string   `json:"message_id"`
		RequestedBy string   `json:"requested_by"`
		Time        string   `json:"time"`
		Origin      string   `json:"origin"`
		LogKey      string   `json:"log_key"`
		TreeSize    uint64   `json:"tree_size"`
		Evidence    []string `json:"evidence_sha256"`
		CRLSHA256   string   `json:"crl_sha256"`
	}
	w1 := v1{ix.Version, ix.MessageID, ix.RequestedBy, t, ix.Origin, ix.LogKey, ix.TreeSize, ev, ix.CRLSHA256}
	if ix.Version == 1 && ix.Logs == nil {
		b, _ := json.Marshal(w1)
		return b
	}
	logs := ix.Logs
	if logs == nil {
		logs = []bundle.IndexLog{}
	}
	b, _ := json.Marshal(struct {
		Version     int               `json:"version"`
		MessageID   string            `json:"message_id"`
		RequestedBy string            `json:"requested_by"`
		Time        string            `json:"time"`
		Origin      string            `json:"origin"`
		LogKey      string            `json:"log_key"`
		TreeSize    uint64            `json:"tree_size"`
		Logs        []bundle.IndexLog `json:"logs"`
		Evidence    []string          `json:"evidence_sha256"`
		CRLSHA256   string            `json:"crl_sha256"`
	}{w1.Version, w1.MessageID, w1.RequestedBy, w1.Time, w1.Origin, w1.LogKey, w1.TreeSize, logs, ev, w1.CRLSHA256})
	return b
}

func TestRead_RefusesHiddenContent(t *testing.T) {
	buf := bytes.NewBuffer(fx.zip)
	prefixed := append([]byte("hidden text\n"), fx.zip...)
	if _, err := bundle.Read(bytes.NewReader(prefixed), int64(len(prefixed))); !errors.Is(err, bundle.ErrFormat) {
		t.Errorf("Read of a zip with data before it: %v, want ErrFormat", err)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, f := range zr.File {
		if err := zw.Copy(f); err != nil {
			t.Fatal(err)
		}
	}
	zw.SetComment("hidden text")
	zw.Close()
	if _, err := bundle.Read(bytes.NewReader(out.Bytes()), int64(out.Len())); !errors.Is(err, bundle.ErrFormat) {
		t.Errorf("Read of a zip with a comment: %v, want ErrFormat", err)
	}
}

// rawEntry is a zip entry written as it is: data already compressed (or
// stored), and a header that may lie about the size it unpacks to.
type rawEntry struct {
	name     string
	method   uint16
	data     []byte // as stored in the file
	declared uint64 // the uncompressed size the header claims
	crc      uint32
}

// deflated returns data deflated, as a raw entry of name declaring its
// true size.
func deflated(t *testing.T, name string, data []byte) rawEntry {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	f := zr.File[0]
	rc, err := f.OpenRaw()
	if err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	if _, err := raw.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	return rawEntry{name: name, method: zip.Deflate, data: raw.Bytes(), declared: f.UncompressedSize64, crc: f.CRC32}
}

// rawZip writes fs stored, then the raw entries.
func rawZip(t *testing.T, fs files, raws ...rawEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range fs {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range raws {
		w, err := zw.CreateRaw(&zip.FileHeader{Name: r.name, Method: r.method, CRC32: r.crc,
			CompressedSize64: uint64(len(r.data)), UncompressedSize64: r.declared})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(r.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestHostile_ReadInflated: deflated entries, which Write never writes
// but a re-zipped bundle has, read only as far as their headers declare,
// and the declared sizes together no further than MaxSizeWithContent: a
// small file cannot make Read allocate more than the largest bundle it
// reads, nor an entry hold more or fewer bytes than its header says.
func TestHostile_ReadInflated(t *testing.T) {
	good := entries(t, fx.zip)
	signed := bytes.Repeat([]byte("signed original "), 1<<12)

	t.Run("deflated content, as declared", func(t *testing.T) {
		b, err := read(rawZip(t, good, deflated(t, bundle.FileContentSigned, signed)))
		if err != nil || !bytes.Equal(b.Signed, signed) {
			t.Fatalf("Read of deflated content: %v, %d bytes", err, len(b.Signed))
		}
	})
	t.Run("declared sizes over MaxSizeWithContent", func(t *testing.T) {
		// A few kilobytes that would unpack to more than 530 MiB, each
		// entry within its own limit but the content.
		tiny := deflated(t, bundle.FileContentSigned, []byte("x"))
		huge := func(name string, n uint64) rawEntry {
			e := tiny
			e.name, e.declared = name, n
			return e
		}
		data := rawZip(t, good.without(bundle.FileReadme),
			huge(bundle.FileContentSigned, bundle.MaxContentSize), huge(bundle.FileContentSealed, bundle.MaxContentSize),
			huge(bundle.FileReadme, bundle.MaxSize+1))
		_, err := read(data)
		if !errors.Is(err, bundle.ErrFormat) || !strings.Contains(err.Error(), fmt.Sprintf("unpack to more than %d bytes", bundle.MaxSizeWithContent)) {
			t.Fatalf("Read of a %d-byte zip declaring over %d bytes: %v, want it refused before reading", len(data), bundle.MaxSizeWithContent, err)
		}
	})
	t.Run("more than declared", func(t *testing.T) {
		e := deflated(t, bundle.FileContentSigned, make([]byte, 1<<20))
		e.declared = 100
		_, err := read(rawZip(t, good, e))
		if !errors.Is(err, bundle.ErrFormat) || !strings.Contains(err.Error(), bundle.FileContentSigned+": after its 100 bytes") {
			t.Fatalf("Read of an entry inflating past its header: %v, want it refused", err)
		}
	})
	t.Run("fewer than declared", func(t *testing.T) {
		e := deflated(t, bundle.FileContentSigned, signed)
		e.declared = uint64(len(signed)) + 1
		_, err := read(rawZip(t, good, e))
		if !errors.Is(err, bundle.ErrFormat) || !strings.Contains(err.Error(), "fewer than the") {
			t.Fatalf("Read of an entry shorter than its header: %v, want it refused", err)
		}
	})
	t.Run("wrong CRC-32", func(t *testing.T) {
		e := deflated(t, bundle.FileContentSigned, signed)
		e.crc ^= 1
		_, err := read(rawZip(t, good, e))
		if !errors.Is(err, bundle.ErrFormat) || !strings.Contains(err.Error(), "checksum") {
			t.Fatalf("Read of an entry failing its CRC-32: %v, want it refused", err)
		}
	})
}

// TestBundle_ReadMemory: reading content allocates about its size once,
// not the doublings of growing a buffer.
func TestBundle_ReadMemory(t *testing.T) {
	b := fresh(t)
	b.Signed = make([]byte, 16<<20)
	data := write(t, b)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	got, err := read(data)
	runtime.ReadMemStats(&after)
	if err != nil || len(got.Signed) != len(b.Signed) {
		t.Fatalf("Read: %v, %d bytes of content", err, len(got.Signed))
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > uint64(len(b.Signed))*5/4 {
		t.Errorf("reading %d bytes of content allocated %d bytes, want at most a quarter more", len(b.Signed), n)
	}
}
