package ca_test

import (
	"testing"

	"kurier.dev/kurier/pki/pkitest"
)

// fx is the test federation, made once for the package: its RSA-3072
// encryption keys take a second each. Tests must not revoke its
// identities; they issue their own to revoke.
var fx *pkitest.PKI

func TestMain(m *testing.M) { pkitest.Main(m, &fx) }
