package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/pki"
)

func TestRun_DevFederation(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fed")
	nodes := []fedNodeJSON{
		{Domain: "stadt.example", Listen: "127.0.0.1:17441"},
		{Domain: "amtsgericht.example", Listen: "127.0.0.1:17442"},
		{Domain: "landgericht.example", Listen: "127.0.0.1:17443"},
	}
	mailboxes := []string{"poststelle@stadt.example", "eingang@amtsgericht.example", "eingang@landgericht.example"}
	args := []string{"dev", "federation", "-o", dir}
	for _, n := range nodes {
		args = append(args, "--node", n.Domain+"="+n.Listen)
	}
	// One mailbox on its own, two in one comma-separated use.
	args = append(args, "--mailbox", mailboxes[0], "--mailbox", mailboxes[1]+","+mailboxes[2])

	var got federationJSON
	kurierJSON(t, &got, args...)
	want := federationJSON{CA: filepath.Join(dir, "ca", "ca.pem"), CRL: filepath.Join(dir, "ca", "crl.pem")}
	for _, n := range nodes {
		n.Config = filepath.Join(dir, n.Domain, "kurierd.yaml")
		want.Nodes = append(want.Nodes, n)
	}
	for _, m := range mailboxes {
		want.Identities = append(want.Identities, identityDirJSON{Address: m, Dir: filepath.Join(dir, "identities", m)})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("dev federation --json (-want +got):\n%s", diff)
	}

	ca, err := pki.LoadCertificates(got.CA)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range got.Nodes {
		cfg, err := daemon.LoadConfig(n.Config)
		if err != nil {
			t.Fatalf("%s: %v", n.Domain, err)
		}
		wantPeers := map[string]string{}
		for _, p := range nodes {
			if p.Domain != n.Domain {
				wantPeers[p.Domain] = p.Listen
			}
		}
		if diff := cmp.Diff(wantPeers, cfg.Peers); diff != "" {
			t.Errorf("%s: peers (-want +got):\n%s", n.Domain, diff)
		}
		if len(cfg.Participants) != 1 || cfg.Participants[0].Address != mailboxes[i] {
			t.Errorf("%s: participants %+v, want %s", n.Domain, cfg.Participants, mailboxes[i])
		}
		id, err := pki.LoadIdentity(cfg.Identity)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := id.Peer(); err != nil || !cmp.Equal(p.Domains, []string{n.Domain}) {
			t.Errorf("%s: node certificate speaks for %v (%v)", n.Domain, p, err)
		}
	}
	for _, m := range got.Identities {
		id, err := pki.LoadIdentity(m.Dir)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := id.Peer(); err != nil || p.Address != m.Address || !id.Roots[0].Equal(ca[0]) {
			t.Errorf("%s: identity speaks for %v (%v)", m.Address, p, err)
		}
	}

	t.Run("human output", func(t *testing.T) {
		out := kurier(t, args...)
		for _, n := range got.Nodes {
			if want := "kurierd -config " + n.Config + "\n"; !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		for _, m := range got.Identities {
			if !strings.Contains(out, m.Address) || !strings.Contains(out, m.Dir) {
				t.Errorf("output lacks the identity %s in %s:\n%s", m.Address, m.Dir, out)
			}
		}
	})

	t.Run("refused", func(t *testing.T) {
		for name, tc := range map[string]struct {
			args []string
			want string
		}{
			"no subcommand":      {[]string{"dev"}, "give federation"},
			"unknown subcommand": {[]string{"dev", "cluster"}, `unknown command "cluster"`},
			"no -o":              {[]string{"dev", "federation", "--node", "stadt.example=127.0.0.1:1"}, "-o DIR is required"},
			"no nodes":           {[]string{"dev", "federation", "-o", t.TempDir()}, "no nodes given"},
			"node without =":     {[]string{"dev", "federation", "-o", t.TempDir(), "--node", "stadt.example"}, "not DOMAIN=HOST:PORT"},
			"positional":         {[]string{"dev", "federation", "-o", t.TempDir(), "extra"}, "unexpected arguments"},
			"mailbox elsewhere": {
				[]string{"dev", "federation", "-o", t.TempDir(), "--node", "stadt.example=127.0.0.1:1", "--mailbox", "eingang@lg.example"},
				"no node serves lg.example",
			},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := try(t, tc.args...)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("kurier %q = %v, want an error mentioning %q", tc.args, err, tc.want)
				}
			})
		}
	})

	t.Run("usage", func(t *testing.T) {
		if out := kurier(t, "help"); !strings.Contains(out, "kurier dev federation -o DIR --node DOMAIN=HOST:PORT") {
			t.Errorf("usage does not mention dev federation:\n%s", out)
		}
	})
}
