package daemon_test

import (
	"context"
	"testing"

	"kurier.dev/kurier/broker/daemon"
	"kurier.dev/kurier/client"
	"kurier.dev/kurier/pki"
)

// dialDev connects to the node at addr as the development identity name
// of the setup in dir, checking against the CRL file crl; it returns the
// client, closed when the test ends, and the identity.
func dialDev(ctx context.Context, t *testing.T, dir, name, addr, crl string) (*client.Client, *pki.Identity) {
	t.Helper()
	id, err := pki.LoadIdentity(daemon.DevIdentity(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx, addr, id, client.WithCRL(crl))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, id
}
