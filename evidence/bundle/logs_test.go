package bundle_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki/cms"
	"kurier.dev/kurier/pki/pkitest"
	"kurier.dev/kurier/tlog"
)

// otherLog returns another log of domain as the format holds it: a
// checkpoint signed with a fresh key, the key, and a signature over it.
// What they say is package audit's business, not the format's.
func otherLog(t testing.TB, domain string, size uint64) bundle.Log {
	t.Helper()
	origin := tlog.Origin(domain)
	skey, vkey, err := tlog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	root := sha256.Sum256([]byte(domain))
	cp, err := tlog.Sign(tlog.Checkpoint{Origin: origin, Size: size, Root: root[:]}, skey)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := cms.SignDetached([]byte(vkey), pkitest.Signer(fx.node))
	if err != nil {
		t.Fatal(err)
	}
	return bundle.Log{Origin: origin, Checkpoint: cp, LogKey: vkey, LogKeySignature: sig}
}

// withLogs returns the fixture's bundle with two other logs, the Delivery
// placed in the first and the Retrieval in the second.
func withLogs(t testing.TB) *bundle.Bundle {
	t.Helper()
	b := fresh(t)
	b.Logs = []bundle.Log{otherLog(t, "amtsgericht.example", 7), otherLog(t, "landgericht.example", 3)}
	b.Evidence[1].Log = b.Logs[0].Origin
	b.Evidence[2].Log = b.Logs[1].Origin
	return b
}

func TestBundle_Logs(t *testing.T) {
	b := fresh(t)
	if b.Version != bundle.Version || len(b.Logs) != 0 {
		t.Fatalf("fixture bundle of version %d with %d other logs, want version %d with none", b.Version, len(b.Logs), bundle.Version)
	}
	own := tlog.Origin("stadt.example")
	for _, e := range b.Evidence {
		if e.Log != own {
			t.Errorf("%s is in log %q, want the node's own %s", e.Name, e.Log, own)
		}
	}

	b = withLogs(t)
	data := write(t, b)
	got, err := read(data)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if diff := cmp.Diff(b, got, sameBundle...); diff != "" {
		t.Errorf("read back (-wrote +read):\n%s", diff)
	}
	fs := entries(t, data)
	want := []string{
		bundle.FileReadme, bundle.FileManifest, bundle.FileIndex, bundle.FileEnvelope, bundle.FileSignature,
		bundle.FileCheckpoint, bundle.FileCertificates, bundle.FileCRL,
		"logs/amtsgericht.example/checkpoint", "logs/amtsgericht.example/log.vkey", "logs/amtsgericht.example/log.vkey.p7s",
		"logs/landgericht.example/checkpoint", "logs/landgericht.example/log.vkey", "logs/landgericht.example/log.vkey.p7s",
		"evidence/01-SubmissionAcceptance.p7m", "evidence/02-Delivery.p7m",
		"evidence/03-Retrieval.p7m", "evidence/04-Acknowledgement.p7m",
	}
	if diff := cmp.Diff(want, names(fs)); diff != "" {
		t.Errorf("zip entries (-want +got):\n%s", diff)
	}
	// log.vkey is exactly the signed bytes, so that openssl checks the
	// signature over the file as it is.
	if k := fs.get("logs/amtsgericht.example/log.vkey"); string(k) != b.Logs[0].LogKey {
		t.Errorf("log.vkey = %q, want %q", k, b.Logs[0].LogKey)
	}
	m := string(fs.get(bundle.FileManifest))
	for _, s := range []string{
		`"origin": "amtsgericht.example/kurier-log"`, `"checkpoint": "logs/amtsgericht.example/checkpoint"`,
		`"log_key": "logs/amtsgericht.example/log.vkey"`, `"log_key_signature": "logs/amtsgericht.example/log.vkey.p7s"`,
		`"log": "landgericht.example/kurier-log"`, `"log": "stadt.example/kurier-log"`,
	} {
		if !strings.Contains(m, s) {
			t.Errorf("the manifest lacks %s:\n%s", s, m)
		}
	}
	if r := string(fs.get(bundle.FileReadme)); !strings.Contains(r, "-in logs/DOMAIN/log.vkey.p7s -content logs/DOMAIN/log.vkey -binary -CAfile ca.pem") {
		t.Errorf("README.txt does not say how to check a log key:\n%s", r)
	}

	t.Run("evidence of the node's own log in memory", func(t *testing.T) {
		// A bundle built without naming logs: the exporting node's own,
		// written as the checkpoint's origin.
		b := fresh(t)
		for i := range b.Evidence {
			b.Evidence[i].Log = ""
		}
		got, err := read(write(t, b))
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		for _, e := range got.Evidence {
			if e.Log != own {
				t.Errorf("%s read back in log %q, want %s", e.Name, e.Log, own)
			}
		}
		b.Checkpoint = []byte("not a signed note")
		if err := b.Write(&bytes.Buffer{}, written); !errors.Is(err, bundle.ErrFormat) {
			t.Errorf("Write with no log to name = %v, want ErrFormat", err)
		}
	})
}

func TestBundle_WriteRefusesLogs(t *testing.T) {
	for name, change := range map[string]func(b *bundle.Bundle){
		"format version":          func(b *bundle.Bundle) { b.Version = 3 },
		"log origin":              func(b *bundle.Bundle) { b.Logs[0].Origin = "amtsgericht.example" },
		"log twice":               func(b *bundle.Bundle) { b.Logs[1] = b.Logs[0] },
		"no checkpoint":           func(b *bundle.Bundle) { b.Logs[0].Checkpoint = nil },
		"checkpoint too large":    func(b *bundle.Bundle) { b.Logs[0].Checkpoint = make([]byte, tlog.MaxCheckpointSize+1) },
		"no key":                  func(b *bundle.Bundle) { b.Logs[0].LogKey = "" },
		"key with a newline":      func(b *bundle.Bundle) { b.Logs[0].LogKey += "\n" },
		"key too long":            func(b *bundle.Bundle) { b.Logs[0].LogKey = strings.Repeat("k", 1025) },
		"no key signature":        func(b *bundle.Bundle) { b.Logs[0].LogKeySignature = nil },
		"evidence log not origin": func(b *bundle.Bundle) { b.Evidence[1].Log = "amtsgericht.example" },
		"too many logs": func(b *bundle.Bundle) {
			b.Logs = nil
			for i := range bundle.MaxLogs + 1 {
				l := b.Logs
				b.Logs = append(l, bundle.Log{Origin: tlog.Origin(fmt.Sprintf("n%d.example", i)), Checkpoint: []byte("c"), LogKey: "k", LogKeySignature: []byte("s")})
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			b := withLogs(t)
			change(b)
			if err := b.Write(&bytes.Buffer{}, written); !errors.Is(err, bundle.ErrFormat) {
				t.Errorf("Write = %v, want an error wrapping ErrFormat", err)
			}
		})
	}
}

func TestRead_RefusesLogs(t *testing.T) {
	good := entries(t, write(t, withLogs(t)))
	if _, err := read(good.zip(t)); err != nil {
		t.Fatalf("the entries, zipped again, do not read: %v", err)
	}
	const (
		dir = "logs/amtsgericht.example/"
		cp  = dir + bundle.FileLogCheckpoint
	)
	logs := func(m map[string]any) []any { return m["logs"].([]any) }
	for _, tt := range []struct {
		name string
		fs   func(t *testing.T) files
		want string // in the error
	}{
		{"checkpoint missing", func(*testing.T) files { return good.without(cp) }, "lacks " + cp},
		{"key missing", func(*testing.T) files { return good.without(dir + "log.vkey") }, "lacks " + dir + "log.vkey"},
		{"key signature missing", func(*testing.T) files { return good.without(dir + "log.vkey.p7s") }, "lacks " + dir + "log.vkey.p7s"},
		{"log not in the manifest", func(t *testing.T) files {
			return good.manifest(t, func(m map[string]any) { m["logs"] = logs(m)[1:] })
		}, "which manifest.json does not list"},
		{"log files of a log nobody lists", func(*testing.T) files {
			return good.with("logs/verwaltungsgericht.example/checkpoint", good.get(cp))
		}, "logs/verwaltungsgericht.example/checkpoint, which manifest.json does not list"},
		{"log listed twice", func(t *testing.T) files {
			return good.manifest(t, func(m map[string]any) { m["logs"] = append(logs(m), logs(m)[0]) })
		}, "lists the log amtsgericht.example/kurier-log twice"},
		{"log not an origin", func(t *testing.T) files {
			return good.manifest(t, func(m map[string]any) { logs(m)[0].(map[string]any)["origin"] = "amtsgericht.example" })
		}, "lists a log"},
		{"log file names not the log's", func(t *testing.T) files {
			return good.manifest(t, func(m map[string]any) { logs(m)[0].(map[string]any)["checkpoint"] = "checkpoint" })
		}, "manifest.json is not in the form Kurier writes"},
		{"folder not a domain", func(*testing.T) files { return good.with("logs/Amtsgericht/checkpoint", nil) }, `unexpected entry "logs/Amtsgericht/checkpoint"`},
		{"unknown log file", func(*testing.T) files { return good.with(dir+"log.key", []byte("PRIVATE+KEY")) }, "unexpected entry"},
		{"nested folder", func(*testing.T) files { return good.with(dir+"old/checkpoint", nil) }, "unexpected entry"},
		{"key with a newline", func(*testing.T) files {
			return good.replacing(dir+"log.vkey", append(good.get(dir+"log.vkey"), '\n'))
		}, "key of log amtsgericht.example/kurier-log"},
		{"key over its limit", func(*testing.T) files {
			return good.replacing(dir+"log.vkey", bytes.Repeat([]byte("k"), 2<<10))
		}, "log.vkey: 2048 bytes, at most 1024"},
		{"too many logs", func(t *testing.T) files {
			return good.manifest(t, func(m map[string]any) { m["logs"] = slices.Repeat(logs(m)[:1], bundle.MaxLogs+1) })
		}, "lists too many entries"},
		{"logs in version 1", func(t *testing.T) files {
			return good.manifest(t, func(m map[string]any) {
				m["version"] = 1
				for _, e := range manifestEvidence(m) {
					delete(e.(map[string]any), "log")
				}
			})
		}, "a version 1 bundle holds no other logs"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := read(tt.fs(t).zip(t))
			if !errors.Is(err, bundle.ErrFormat) {
				t.Fatalf("Read = %v, %v; want an error wrapping ErrFormat", b, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Read error %q does not say %q", err, tt.want)
			}
		})
	}
}
