package webverify_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/broker/daemon/daemontest"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/evidence/bundle"
	"kurier.dev/kurier/pki"
)

// fx is what the tests share: one message from the agency to the court,
// fetched and acknowledged on a real development node and exported by
// the agency, as the zip a compliance officer is handed, and the
// federation's CA certificate as ca.pem.
var fx struct {
	id    string
	zip   []byte
	caPEM string // a file of the node's temporary directory
}

func TestMain(m *testing.M) { daemontest.Main(m, setUp) }

func setUp(n *daemontest.Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
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
	sent, err := ag.Send(ctx, client.Message{
		To: []string{daemon.DevCourt}, Subject: "Klage", Reference: "3 O 123/26",
		Documents: []client.Document{{Name: "klageschrift.txt", Data: []byte("Klageschrift")}},
	}, nil)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	fx.id = sent.MessageID
	inbox := filepath.Join(n.Dir, "inbox")
	if err := os.Mkdir(inbox, 0o700); err != nil {
		return err
	}
	f, err := ct.Fetch(ctx, fx.id, inbox)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	if _, err := ct.Acknowledge(ctx, f); err != nil {
		return fmt.Errorf("acknowledge: %w", err)
	}
	b, _, err := ag.Export(ctx, fx.id)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	var buf bytes.Buffer
	if err := b.Write(&buf, time.Now()); err != nil {
		return err
	}
	fx.zip = buf.Bytes()
	fx.caPEM = filepath.Join(n.Dir, "federation-ca.pem")
	return pki.WriteCertificatesPEM(fx.caPEM, n.Agency.Roots...)
}

// tampered returns the fixture's bundle with one digit of the Delivery's
// time changed, as a forger moving the delivery would: the evidence still
// parses, but its signature no longer covers it. It also returns the
// changed file's name in the bundle.
func tampered(t *testing.T) ([]byte, string) {
	t.Helper()
	b, err := bundle.Read(bytes.NewReader(fx.zip), int64(len(fx.zip)))
	if err != nil {
		t.Fatal(err)
	}
	i := deliveryIndex(b)
	if i < 0 {
		t.Fatal("the bundle holds no Delivery")
	}
	der := bytes.Clone(b.Evidence[i].DER)
	const key = `"time":"`
	at := bytes.Index(der, []byte(key))
	if at < 0 {
		t.Fatal("no statement time in the Delivery")
	}
	// 2006-01-02T15:04:05.000000Z: the last microsecond digit.
	at += len(key) + len(evidence.TimeFormat) - len("Z07:00") - 1
	if d := der[at]; d < '0' || d > '9' {
		t.Fatalf("byte %d of the Delivery is %q, not the time's last digit", at, d)
	}
	der[at] = '0' + (der[at]-'0'+1)%10
	b.Evidence[i].DER = der
	var buf bytes.Buffer
	if err := b.Write(&buf, time.Now()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), "evidence/" + b.Evidence[i].Name
}

// deliveryIndex returns the index of the Delivery among b's evidence, or
// -1.
func deliveryIndex(b *bundle.Bundle) int {
	for i, e := range b.Evidence {
		ev, err := evidence.Parse(e.DER)
		if err == nil && ev.Statement.Type == evidence.Delivery {
			return i
		}
	}
	return -1
}
