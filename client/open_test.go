package client_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/cms"
)

// A forged message, for the faults a real node never lets through: the
// recipient's checks in Fetch are exercised on bytes (client.Open is Fetch
// after the transfer).
type forgery struct {
	envSigner, docSigner *pki.Identity // default: the agency
	to                   []string      // default: the court
	encryptTo            *pki.Identity // default: the court
	entries              []tarEntry
	manifest             []envelope.File // default: the entries' names, sizes and digests
	// version is the envelope's; default envelope.Version, or
	// envelope.Version2 for a manifest given without digests.
	version int
	tamper  func(payload []byte)
	// corrupt, unlike tamper, changes the payload before the envelope
	// names its digest: a payload the node takes, damaged inside.
	corrupt func(payload []byte)
	// payload, if set, is the payload as it is, instead of the entries
	// signed and encrypted.
	payload []byte
	// trailer follows the end of the tar file, inside the signed content.
	trailer []byte
}

type tarEntry struct {
	name string
	typ  byte
	data string
}

func signer(id *pki.Identity) cms.Signer {
	return cms.Signer{Cert: id.Cert, Key: id.Key, Chain: id.Chain}
}

func forge(t *testing.T, f forgery) (envBytes, sig, payload []byte) {
	t.Helper()
	if f.envSigner == nil {
		f.envSigner = agency
	}
	if f.docSigner == nil {
		f.docSigner = agency
	}
	if f.to == nil {
		f.to = []string{daemon.DevCourt}
	}
	if f.encryptTo == nil {
		f.encryptTo = court
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var manifest []envelope.File
	for _, e := range f.entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Typeflag: typ, Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: time.Unix(0, 0)}
		if typ == tar.TypeSymlink {
			hdr.Linkname, hdr.Size = "/etc/passwd", 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.data)); err != nil {
				t.Fatal(err)
			}
		}
		sum := sha256.Sum256([]byte(e.data)[:hdr.Size])
		manifest = append(manifest, envelope.File{Name: strings.TrimPrefix(e.name, "../"), Size: hdr.Size, SHA256: hex.EncodeToString(sum[:])})
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	buf.Write(f.trailer)
	version := envelope.Version
	if f.manifest != nil {
		manifest = f.manifest
		if manifest[0].SHA256 == "" {
			version = envelope.Version2
		}
	}
	if f.version != 0 {
		version = f.version
	}
	if version != envelope.Version {
		for i := range manifest {
			manifest[i].SHA256 = ""
		}
	}
	signed, err := cms.Sign(buf.Bytes(), signer(f.docSigner))
	if err != nil {
		t.Fatal(err)
	}
	payload, err = cms.Encrypt(signed, []*x509.Certificate{f.encryptTo.EncCert})
	if err != nil {
		t.Fatal(err)
	}
	if f.payload != nil {
		payload = f.payload
	}
	if f.corrupt != nil {
		f.corrupt(payload)
	}
	id, err := envelope.NewID()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(payload)
	now := time.Now().UTC()
	env := &envelope.Envelope{
		Version: version, ID: id, From: daemon.DevAgency, To: f.to, Subject: "forged",
		Created: now, Expires: now.Add(time.Hour), PayloadSHA256: hex.EncodeToString(sum[:]), PayloadSize: int64(len(payload)),
		Files: manifest,
	}
	envBytes, err = env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sig, err = cms.SignDetached(envBytes, signer(f.envSigner))
	if err != nil {
		t.Fatal(err)
	}
	if f.tamper != nil {
		f.tamper(payload)
	}
	return envBytes, sig, payload
}

// hiddenTar returns a tar file of one document, to hide after the end of
// another.
func hiddenTar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "anlage.pdf", Mode: 0o644, Size: 6}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte("hidden")); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestClient_Open(t *testing.T) {
	ct := dial(t, court)
	abc := []tarEntry{{name: "a.txt", data: "abc"}}
	tests := map[string]struct {
		forgery forgery
		want    string // "" for success
	}{
		"genuine":                     {forgery: forgery{entries: []tarEntry{{name: "a.txt", data: "abc"}, {name: "Anlage ü.pdf", data: "%PDF"}}}},
		"genuine, version 2 envelope": {forgery: forgery{version: envelope.Version2, entries: []tarEntry{{name: "a.txt", data: "abc"}}}},
		"document other than the envelope's digest": {
			forgery: forgery{entries: abc, manifest: []envelope.File{{Name: "a.txt", Size: 3, SHA256: sha256Hex("abd")}}},
			want:    `entry 1 ("a.txt") has SHA-256 ` + sha256Hex("abc") + ", the envelope lists " + sha256Hex("abd")},
		"second document other than the envelope's digest": {
			forgery: forgery{entries: []tarEntry{{name: "a.txt", data: "abc"}, {name: "b.txt", data: "b"}},
				manifest: []envelope.File{{Name: "a.txt", Size: 3, SHA256: sha256Hex("abc")}, {Name: "b.txt", Size: 1, SHA256: sha256Hex("c")}}},
			want: `entry 2 ("b.txt") has SHA-256`},
		"documents signed by another participant": {
			forgery: forgery{docSigner: malloryID(t), entries: abc}, want: "document signature: signed by participant mallory@stadt.example"},
		"envelope signed by another participant": {
			forgery: forgery{envSigner: malloryID(t), entries: abc}, want: "envelope signature: signed by participant mallory@stadt.example"},
		"not addressed to the caller": {
			forgery: forgery{to: []string{daemon.DevAgency}, entries: abc}, want: "not addressed to " + daemon.DevCourt},
		"not encrypted to the caller": {
			forgery: forgery{encryptTo: agency, entries: abc}, want: "decrypt"},
		"payload changed": {
			forgery: forgery{entries: abc, tamper: func(p []byte) { p[len(p)-1] ^= 1 }}, want: "SHA-256"},
		"manifest names another file": {
			forgery: forgery{entries: abc, manifest: []envelope.File{{Name: "b.txt", Size: 3}}}, want: `the envelope lists "b.txt" (3 bytes)`},
		"manifest gives another size": {
			forgery: forgery{entries: abc, manifest: []envelope.File{{Name: "a.txt", Size: 2}}}, want: `the envelope lists "a.txt" (2 bytes)`},
		"manifest lists more files": {
			forgery: forgery{entries: abc, manifest: []envelope.File{{Name: "a.txt", Size: 3}, {Name: "b.txt", Size: 1}}}, want: "holds 1 files, the envelope lists 2"},
		"bundle holds more files": {
			forgery: forgery{entries: []tarEntry{{name: "a.txt", data: "abc"}, {name: "b.txt", data: "b"}}, manifest: []envelope.File{{Name: "a.txt", Size: 3}}}, want: "more files than"},
		"manifest in another order": {
			forgery: forgery{entries: []tarEntry{{name: "a.txt", data: "abc"}, {name: "b.txt", data: "b"}}, manifest: []envelope.File{{Name: "b.txt", Size: 1}, {Name: "a.txt", Size: 3}}}, want: "the envelope lists"},
		"entry outside the folder": {
			forgery: forgery{entries: []tarEntry{{name: "../x", data: "abc"}}}, want: "path separator"},
		"symbolic link": {
			forgery: forgery{entries: []tarEntry{{name: "x", typ: tar.TypeSymlink}}}, want: "not a regular file"},
		"directory entry": {
			forgery: forgery{entries: []tarEntry{{name: "d", typ: tar.TypeDir}}}, want: "not a regular file"},
		// Python's tarfile pads to records of 10240 bytes; the Go writer
		// ends after its two zero blocks.
		"genuine, zero padding to a 10240-byte record": {forgery: forgery{entries: abc, trailer: make([]byte, 10240-4*512)}},
		"a second tar file after the end": {
			forgery: forgery{entries: abc, trailer: hiddenTar(t)}, want: "data after the end of the tar file"},
		"zeros, then a byte": {
			forgery: forgery{entries: abc, trailer: append(make([]byte, 4096), 'x')}, want: "data after the end of the tar file: a byte other than zero 4096 bytes after its end"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			envBytes, sig, payload := forge(t, tt.forgery)
			parent := t.TempDir()
			dir := filepath.Join(parent, "in")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			paths, err := ct.Open(envBytes, sig, payload, dir)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				for i, e := range tt.forgery.entries {
					got, err := os.ReadFile(paths[i])
					if err != nil || string(got) != e.data || filepath.Base(paths[i]) != e.name {
						t.Errorf("file %d: %s %q %v", i, paths[i], got, err)
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open: %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(tt.want, "has SHA-256") && !errors.Is(err, client.ErrDocumentDigest) {
				t.Errorf("Open: %v, want it to wrap ErrDocumentDigest", err)
			}
			if names := dirNames(t, dir); len(names) > 0 {
				t.Errorf("a refused message left %q in the folder", names)
			}
			if names := dirNames(t, parent); len(names) != 1 {
				t.Errorf("a refused message left %q next to the folder", names)
			}
		})
	}
}
