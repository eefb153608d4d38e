package loadgen

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"time"

	"kurier.dev/kurier/pki"
)

// Calibration bounds: each operation is timed over up to calibrateIters
// iterations, and at most calibrateFor, whichever ends first.
const (
	calibrateIters = 300
	calibrateFor   = 500 * time.Millisecond
)

// Ops is how many public-key operations one message costs in a mode,
// counted on the node and the recipient together (the sealing is done
// before the timed phase and not counted):
//
//	submit:           the node verifies the envelope signature (1 verify)
//	                  and signs two evidence statements (2 signs)
//	lifecycle:        submit, plus the node signs the retrieval evidence
//	                  (1 sign), the recipient signs its acknowledgement
//	                  (1 sign) and the node verifies it (1 verify)
//	lifecycle --open: lifecycle, plus the recipient decrypts the content
//	                  key (1 RSA private-key operation) and verifies the
//	                  sender's signature on the documents (1 verify)
//
// TLS handshakes are left out: a run keeps its connections.
type Ops struct {
	Sign   int `json:"sign"`
	Verify int `json:"verify"`
	RSA    int `json:"rsa_private"`
}

// OpsFor returns the per-message operations of mode (with open).
func OpsFor(mode Mode, open bool) Ops {
	ops := Ops{Sign: 2, Verify: 1}
	if mode == Lifecycle {
		ops.Sign += 2
		ops.Verify++
		if open {
			ops.RSA++
			ops.Verify++
		}
	}
	return ops
}

// Costs are this machine's measured costs of one operation each and the
// rate they allow.
type Costs struct {
	SignKey   string  `json:"sign_key"`       // the signing key measured, e.g. ECDSA P-256
	SignUs    float64 `json:"sign_us"`        // one signature
	VerifyUs  float64 `json:"verify_us"`      // one verification
	RSAKey    string  `json:"rsa_key"`        // the decryption key measured, e.g. RSA-3072; empty if none
	RSAUs     float64 `json:"rsa_private_us"` // one RSA private-key operation
	Cores     int     `json:"cores"`          // runtime.NumCPU
	OpsPerMsg Ops     `json:"ops_per_msg"`    // set by For
	BoundPerS float64 `json:"bound_per_s"`    // messages per second the operations allow on all cores; set by For
}

// For returns c with the operation counts of mode and the bound they set:
// the cores' time divided by the time one message's operations take.
func (c Costs) For(mode Mode, open bool) Costs {
	c.OpsPerMsg = OpsFor(mode, open)
	us := float64(c.OpsPerMsg.Sign)*c.SignUs + float64(c.OpsPerMsg.Verify)*c.VerifyUs + float64(c.OpsPerMsg.RSA)*c.RSAUs
	if us > 0 {
		c.BoundPerS = float64(c.Cores) * 1e6 / us
	}
	return c
}

// Measure times a signature and its verification with sender's signing
// key, and an RSA private-key operation with recipient's decryption key
// (sender's if recipient is nil or has none).
func Measure(sender, recipient *pki.Identity) (Costs, error) {
	c := Costs{Cores: runtime.NumCPU()}
	digest := sha256.Sum256([]byte("kurier bench"))
	var sig []byte
	var err error
	if c.SignUs, err = timeOp(func() error {
		sig, err = sender.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
		return err
	}); err != nil {
		return c, fmt.Errorf("bench: measure signing: %w", err)
	}
	var verify func() error
	switch pub := sender.Cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		c.SignKey = "ECDSA " + pub.Curve.Params().Name
		verify = func() error {
			if !ecdsa.VerifyASN1(pub, digest[:], sig) {
				return errors.New("signature does not verify")
			}
			return nil
		}
	case *rsa.PublicKey:
		c.SignKey = fmt.Sprintf("RSA-%d", pub.N.BitLen())
		verify = func() error { return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) }
	default:
		return c, fmt.Errorf("bench: measure verifying: cannot time a %T key", pub)
	}
	if c.VerifyUs, err = timeOp(verify); err != nil {
		return c, fmt.Errorf("bench: measure verifying: %w", err)
	}
	dec := sender
	if recipient != nil && recipient.EncKey != nil {
		dec = recipient
	}
	if dec.EncKey == nil || dec.EncCert == nil {
		return c, nil // no decryption key to time; RSAUs stays 0
	}
	pub, ok := dec.EncCert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return c, fmt.Errorf("bench: measure decryption: the encryption key is %s, not RSA", dec.EncCert.PublicKeyAlgorithm)
	}
	c.RSAKey = fmt.Sprintf("RSA-%d", pub.N.BitLen())
	ct, err := rsa.EncryptPKCS1v15(rand.Reader, pub, digest[:])
	if err != nil {
		return c, fmt.Errorf("bench: measure decryption: %w", err)
	}
	if c.RSAUs, err = timeOp(func() error {
		_, err := dec.EncKey.Decrypt(rand.Reader, ct, nil)
		return err
	}); err != nil {
		return c, fmt.Errorf("bench: measure decryption: %w", err)
	}
	return c, nil
}

// timeOp returns the mean time of op in microseconds, over the
// calibration bounds.
func timeOp(op func() error) (float64, error) {
	start := time.Now()
	n := 0
	for n < calibrateIters && (n == 0 || time.Since(start) < calibrateFor) {
		if err := op(); err != nil {
			return 0, err
		}
		n++
	}
	return time.Since(start).Seconds() * 1e6 / float64(n), nil
}
