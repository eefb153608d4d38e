package pki

import "time"

// SetRecheck sets how long t goes on with its CRL file before it looks at
// it again; 0 looks at every check.
func (t *TrustStore) SetRecheck(d time.Duration) { t.recheck = d }

// CRLRecheck is how long a TrustStore goes on with its CRL file.
const CRLRecheck = crlRecheck

// MaxCSRFile is the largest CSR file LoadRequest reads.
const MaxCSRFile = maxCSRFile
