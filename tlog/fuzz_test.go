package tlog_test

import (
	"bytes"
	"testing"

	"kurier.dev/kurier/tlog"
)

func FuzzParseCheckpoint(f *testing.F) {
	f.Add([]byte("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"))
	f.Add([]byte("o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"))
	f.Add([]byte("o\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\next\n"))
	f.Add([]byte("\n\n\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := tlog.ParseCheckpoint(body)
		if err != nil {
			return
		}
		if !bytes.Equal(c.Marshal(), body) {
			t.Errorf("Marshal(ParseCheckpoint(%q)) = %q", body, c.Marshal())
		}
	})
}

func FuzzOpen(f *testing.F) {
	// A fixed key (a test key, not used anywhere else), so that the seed
	// corpus stays valid.
	const (
		skey = "PRIVATE+KEY+stadt.example/kurier-log+c466aa93+AWpaRqW03qNLElPJg5ijxwXzQ2ndDBWEyAJ63h4V8JqH"
		vkey = "stadt.example/kurier-log+c466aa93+AcrblpVVAEnXyJW9YmA3hKCB54S5hPPQhryKIIOz9fuT"
	)
	signed, err := tlog.Sign(tlog.Checkpoint{Origin: origin, Size: 7, Root: testRoot("a")}, skey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signed)
	f.Add(bytes.Replace(signed, []byte("\n7\n"), []byte("\n8\n"), 1))
	f.Add([]byte("stadt.example/kurier-log\n7\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n— stadt.example/kurier-log AAAA\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := tlog.Open(b, vkey)
		if err != nil {
			return
		}
		if c.Origin != origin || !bytes.HasPrefix(b, c.Marshal()) {
			t.Errorf("Open(%q) = %+v", b, c)
		}
	})
}
