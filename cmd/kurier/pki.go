package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"kurier.dev/kurier/pki"
	"kurier.dev/kurier/pki/ca"
)

func (e *env) pki(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("pki: give init, issue, revoke, crl, log-key or csr; %w", errUsage)
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		groupHelp(e.stdout, "pki")
		return nil
	case "init":
		return e.pkiInit(args[1:])
	case "issue":
		return e.pkiIssue(args[1:])
	case "log-key":
		return e.pkiLogKey(args[1:])
	case "csr":
		return e.pkiCSR(args[1:])
	case "revoke":
		return e.pkiRevoke(args[1:])
	case "crl":
		return e.pkiCRL(args[1:])
	}
	return fmt.Errorf("pki: unknown command %q; %w", args[0], errUsage)
}

func hexSerial(n *big.Int) string { return fmt.Sprintf("0x%x", n) }

func caFlag(c *command) *string {
	return c.String("ca", "", "the CA folder (required)")
}

func noArgs(cmd string, pos []string) error {
	if len(pos) > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", cmd, pos)
	}
	return nil
}

type caJSON struct {
	CA            string `json:"ca"`
	Certificate   string `json:"certificate"`
	Subject       string `json:"subject"`
	Serial        string `json:"serial"`
	NotAfter      string `json:"not_after"`
	CRL           string `json:"crl"`
	CRLNextUpdate string `json:"crl_next_update"`
}

// crlValidity is the flag both init and crl take.
func crlValidity(c *command) *time.Duration {
	return c.Duration("validity", 168*time.Hour, "how long the CRL stays valid; write the next one before then")
}

func (e *env) pkiInit(args []string) error {
	c := newCommand("pki init", e.stderr)
	dir := caFlag(c)
	name := c.String("name", "Kurier CA", "the CA's common name")
	validity := crlValidity(c)
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs("pki init", pos); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("pki init: --ca DIR is required")
	}
	if *validity <= 0 {
		return fmt.Errorf("pki init: --validity %v must be positive", *validity)
	}
	authority, err := ca.Init(*dir, *name)
	if err != nil {
		return err
	}
	// Nodes refuse to start without a CRL: the CA's first one, empty,
	// comes with it.
	crlPath, err := authority.WriteCRL(*validity)
	if err != nil {
		return fmt.Errorf("pki init: the CA is made, its first CRL is not (run kurier pki crl --ca %s): %w", *dir, err)
	}
	crl, err := readCRL(crlPath)
	if err != nil {
		return err
	}
	cert := authority.Certificate()
	out := caJSON{
		CA: *dir, Certificate: filepath.Join(*dir, "ca.pem"), Subject: cert.Subject.String(),
		Serial: hexSerial(cert.SerialNumber), NotAfter: cert.NotAfter.UTC().Format(time.RFC3339),
		CRL: crlPath, CRLNextUpdate: crl.NextUpdate.UTC().Format(time.RFC3339),
	}
	if c.json {
		return e.printJSON(out)
	}
	_, err = fmt.Fprintf(e.stdout, "created CA %q in %s, valid until %s\ndistribute %s to every node and participant as ca.pem\n"+
		"wrote its first CRL to %s, valid until %s: give it to every node (crl: in kurierd.yaml), and write the next with kurier pki crl --ca %s before then\n",
		out.Subject, out.CA, out.NotAfter, out.Certificate, out.CRL, out.CRLNextUpdate, out.CA)
	return err
}

type issuedJSON struct {
	Dir              string   `json:"dir"`
	Kind             string   `json:"kind"`
	Address          string   `json:"address,omitempty"`
	Domains          []string `json:"domains,omitempty"`
	Serial           string   `json:"serial,omitempty"`
	EncryptionSerial string   `json:"encryption_serial,omitempty"`
	NotAfter         string   `json:"not_after"`
	// Certificates are the files written from CSRs (--csr).
	Certificates []string `json:"certificates,omitempty"`
}

func (e *env) pkiIssue(args []string) error {
	c := newCommand("pki issue", e.stderr)
	dir := caFlag(c)
	node := c.String("node", "", "issue a node identity for these domains (comma-separated)")
	participant := c.String("participant", "", "issue a participant identity for this address, keys made here (development)")
	var csrs fileList
	c.Var(&csrs, "csr", "sign this participant's certificate request (kurier pki csr); repeatable, and further files may follow")
	out := c.String("o", "", "the new identity's folder (required, except with --csr: default the CSRs' folder)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(csrs) == 0 {
		if err := noArgs("pki issue", pos); err != nil {
			return err
		}
	}
	csrs = append(csrs, pos...)
	given := 0
	for _, g := range []bool{*node != "", *participant != "", len(csrs) > 0} {
		if g {
			given++
		}
	}
	switch {
	case *dir == "":
		return errors.New("pki issue: --ca DIR is required")
	case given != 1:
		return errors.New("pki issue: give exactly one of --node DOMAIN[,DOMAIN…], --participant ADDR and --csr FILE…")
	case *out == "" && len(csrs) == 0:
		return errors.New("pki issue: -o DIR is required")
	}
	authority, err := ca.Open(*dir)
	if err != nil {
		return err
	}
	var res issuedJSON
	switch {
	case len(csrs) > 0:
		if res, err = issueRequests(authority, csrs, *out); err != nil {
			return err
		}
	case *node != "":
		var domains []string
		for _, d := range strings.Split(*node, ",") {
			if d = strings.TrimSpace(d); d != "" {
				domains = append(domains, d)
			}
		}
		id, err := authority.IssueNode(*out, domains)
		if err != nil {
			return err
		}
		res = issuedJSON{Dir: *out, Kind: "node", Domains: domains, Serial: hexSerial(id.Cert.SerialNumber), NotAfter: id.Cert.NotAfter.UTC().Format(time.RFC3339)}
	default:
		id, err := authority.IssueParticipant(*out, *participant)
		if err != nil {
			return err
		}
		res = issuedJSON{
			Dir: *out, Kind: "participant", Address: *participant, Serial: hexSerial(id.Cert.SerialNumber),
			EncryptionSerial: hexSerial(id.EncCert.SerialNumber), NotAfter: id.Cert.NotAfter.UTC().Format(time.RFC3339),
		}
	}
	if c.json {
		return e.printJSON(res)
	}
	e.printIssued(res)
	return nil
}

// printIssued tells the operator what pki issue made and what to do next.
func (e *env) printIssued(res issuedJSON) {
	who := res.Address
	if res.Kind == "node" {
		who = strings.Join(res.Domains, ",")
	}
	fmt.Fprintf(e.stdout, "issued %s %s in %s, valid until %s\n", res.Kind, who, res.Dir, res.NotAfter)
	if res.Serial != "" {
		fmt.Fprintf(e.stdout, "  certificate serial %s\n", res.Serial)
	}
	if res.EncryptionSerial != "" {
		fmt.Fprintf(e.stdout, "  encryption certificate serial %s\n", res.EncryptionSerial)
	}
	if len(res.Certificates) > 0 {
		fmt.Fprintf(e.stdout, "hand %s back to %s, to put beside its keys\n", strings.Join(res.Certificates, ", "), res.Address)
	}
}

// issueRequests signs one participant's CSR files into out, or, without
// -o, into the folder that holds them.
func issueRequests(authority *ca.CA, files []string, out string) (issuedJSON, error) {
	var reqs []*pki.Request
	for i, f := range files {
		r, err := pki.LoadRequest(f)
		if err != nil {
			return issuedJSON{}, fmt.Errorf("pki issue: %w", err)
		}
		reqs = append(reqs, r)
		if d := filepath.Dir(files[0]); out == "" && filepath.Dir(f) != d {
			return issuedJSON{}, fmt.Errorf("pki issue: %s and %s are in different folders; give -o DIR for the certificates", files[0], files[i])
		}
	}
	if out == "" {
		out = filepath.Dir(files[0])
	}
	issued, err := authority.IssueRequests(out, reqs...)
	if err != nil {
		return issuedJSON{}, err
	}
	res := issuedJSON{Dir: out, Kind: "participant", Address: reqs[0].Address}
	for _, c := range issued {
		if c.Encryption {
			res.EncryptionSerial = hexSerial(c.Cert.SerialNumber)
		} else {
			res.Serial = hexSerial(c.Cert.SerialNumber)
		}
		res.NotAfter = c.Cert.NotAfter.UTC().Format(time.RFC3339)
		res.Certificates = append(res.Certificates, c.Path)
	}
	res.Certificates = append(res.Certificates, filepath.Join(out, "ca.pem"))
	return res, nil
}

type revokedJSON struct {
	Serial        string `json:"serial"`
	SerialDecimal string `json:"serial_decimal"`
	Reason        int    `json:"reason"`
}

// parseSerial reads a certificate serial as 0x-prefixed hex or decimal.
func parseSerial(s string) (*big.Int, error) {
	n := new(big.Int)
	ok := false
	if h, isHex := strings.CutPrefix(strings.ToLower(s), "0x"); isHex {
		_, ok = n.SetString(h, 16)
	} else {
		_, ok = n.SetString(s, 10)
	}
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("serial %q is neither 0x-prefixed hex nor decimal", s)
	}
	return n, nil
}

func (e *env) pkiRevoke(args []string) error {
	c := newCommand("pki revoke", e.stderr)
	dir := caFlag(c)
	reason := c.Int("reason", 0, "RFC 5280 reason code: 0 unspecified, 1 keyCompromise, 3 affiliationChanged, 4 superseded, 5 cessationOfOperation")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("pki revoke: --ca DIR is required")
	}
	if len(pos) != 1 {
		return errors.New("pki revoke: give exactly one serial (0x… hex or decimal)")
	}
	serial, err := parseSerial(pos[0])
	if err != nil {
		return fmt.Errorf("pki revoke: %w", err)
	}
	authority, err := ca.Open(*dir)
	if err != nil {
		return err
	}
	if err := authority.Revoke(serial, *reason); err != nil {
		return err
	}
	res := revokedJSON{Serial: hexSerial(serial), SerialDecimal: serial.String(), Reason: *reason}
	if c.json {
		return e.printJSON(res)
	}
	_, err = fmt.Fprintf(e.stdout, "revoked serial %s (decimal %s), reason %d\nit takes effect with the next CRL: kurier pki crl --ca %s, then publish it\n",
		res.Serial, res.SerialDecimal, res.Reason, *dir)
	return err
}

type crlJSON struct {
	CRL        string `json:"crl"`
	Number     string `json:"number"`
	ThisUpdate string `json:"this_update"`
	NextUpdate string `json:"next_update"`
	Revoked    int    `json:"revoked"`
}

func (e *env) pkiCRL(args []string) error {
	c := newCommand("pki crl", e.stderr)
	dir := caFlag(c)
	validity := crlValidity(c)
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs("pki crl", pos); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("pki crl: --ca DIR is required")
	}
	authority, err := ca.Open(*dir)
	if err != nil {
		return err
	}
	path, err := authority.WriteCRL(*validity)
	if err != nil {
		return err
	}
	if !c.json {
		_, err = fmt.Fprintln(e.stdout, path)
		return err
	}
	crl, err := readCRL(path)
	if err != nil {
		return err
	}
	return e.printJSON(crlJSON{
		CRL: path, Number: crl.Number.String(), Revoked: len(crl.RevokedCertificateEntries),
		ThisUpdate: crl.ThisUpdate.UTC().Format(time.RFC3339), NextUpdate: crl.NextUpdate.UTC().Format(time.RFC3339),
	})
}

// readCRL reads the CRL just written, for display.
func readCRL(path string) (*x509.RevocationList, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	return x509.ParseRevocationList(block.Bytes)
}

type logKeyJSON struct {
	Key          string `json:"key"`
	VerifierKey  string `json:"verifier_key"`
	VerifierFile string `json:"verifier_file"`
	Origin       string `json:"origin"`
}

func (e *env) pkiLogKey(args []string) error {
	c := newCommand("pki log-key", e.stderr)
	out := c.String("o", "", "the node's identity folder, where log.key and log.vkey go (required)")
	domain := c.String("domain", "", "the node's first domain (default: the first domain of DIR/cert.pem)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs("pki log-key", pos); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("pki log-key: -o DIR is required")
	}
	k, err := pki.WriteLogKey(*out, *domain)
	if err != nil {
		return err
	}
	res := logKeyJSON{Key: k.Path, VerifierKey: k.VerifierKey, VerifierFile: k.VerifierPath, Origin: k.Origin}
	if c.json {
		return e.printJSON(res)
	}
	_, err = fmt.Fprintf(e.stdout, "wrote the log key for %s to %s (keep it secret; log_key: in kurierd.yaml)\n"+
		"publish its verifier key %s, for kurier verify --log-key:\n  %s\n", res.Origin, res.Key, res.VerifierFile, res.VerifierKey)
	return err
}

type csrJSON struct {
	Dir     string `json:"dir"`
	Address string `json:"address"`
	CSR     string `json:"csr"`
	EncCSR  string `json:"enc_csr"`
}

func (e *env) pkiCSR(args []string) error {
	c := newCommand("pki csr", e.stderr)
	participant := c.String("participant", "", "the participant's address (required)")
	out := c.String("o", "", "the participant's identity folder, where its keys stay (required)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs("pki csr", pos); err != nil {
		return err
	}
	switch {
	case *participant == "":
		return errors.New("pki csr: --participant ADDR is required")
	case *out == "":
		return errors.New("pki csr: -o DIR is required")
	}
	r, err := pki.NewParticipantRequest(*out, *participant)
	if err != nil {
		return err
	}
	res := csrJSON{Dir: *out, Address: *participant, CSR: r.CSR, EncCSR: r.EncCSR}
	if c.json {
		return e.printJSON(res)
	}
	_, err = fmt.Fprintf(e.stdout, "made the keys of %s in %s; they stay here\n"+
		"send %s and %s (never the keys) to the CA, which runs kurier pki issue --ca CA --csr csr.pem enc-csr.pem,\n"+
		"and put the cert.pem, enc-cert.pem and ca.pem it returns into %s\n", res.Address, res.Dir, res.CSR, res.EncCSR, res.Dir)
	return err
}
