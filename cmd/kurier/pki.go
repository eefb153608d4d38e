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
)

func (e *env) pki(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("pki: give init, issue, revoke or crl; %w", errUsage)
	}
	switch args[0] {
	case "init":
		return e.pkiInit(args[1:])
	case "issue":
		return e.pkiIssue(args[1:])
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
	CA          string `json:"ca"`
	Certificate string `json:"certificate"`
	Subject     string `json:"subject"`
	Serial      string `json:"serial"`
	NotAfter    string `json:"not_after"`
}

func (e *env) pkiInit(args []string) error {
	c := newCommand("pki init", e.stderr)
	dir := caFlag(c)
	name := c.String("name", "Kurier CA", "the CA's common name")
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
	ca, err := pki.InitCA(*dir, *name)
	if err != nil {
		return err
	}
	cert := ca.Certificate()
	out := caJSON{
		CA: *dir, Certificate: filepath.Join(*dir, "ca.pem"), Subject: cert.Subject.String(),
		Serial: hexSerial(cert.SerialNumber), NotAfter: cert.NotAfter.UTC().Format(time.RFC3339),
	}
	if c.json {
		return e.printJSON(out)
	}
	_, err = fmt.Fprintf(e.stdout, "created CA %q in %s, valid until %s\ndistribute %s to every node and participant as ca.pem\n",
		out.Subject, out.CA, out.NotAfter, out.Certificate)
	return err
}

type issuedJSON struct {
	Dir              string   `json:"dir"`
	Kind             string   `json:"kind"`
	Address          string   `json:"address,omitempty"`
	Domains          []string `json:"domains,omitempty"`
	Serial           string   `json:"serial"`
	EncryptionSerial string   `json:"encryption_serial,omitempty"`
	NotAfter         string   `json:"not_after"`
}

func (e *env) pkiIssue(args []string) error {
	c := newCommand("pki issue", e.stderr)
	dir := caFlag(c)
	node := c.String("node", "", "issue a node identity for these domains (comma-separated)")
	participant := c.String("participant", "", "issue a participant identity for this address")
	out := c.String("o", "", "the new identity's folder (required)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs("pki issue", pos); err != nil {
		return err
	}
	switch {
	case *dir == "":
		return errors.New("pki issue: --ca DIR is required")
	case *out == "":
		return errors.New("pki issue: -o DIR is required")
	case (*node == "") == (*participant == ""):
		return errors.New("pki issue: give exactly one of --node DOMAIN[,DOMAIN…] and --participant ADDR")
	}
	ca, err := pki.OpenCA(*dir)
	if err != nil {
		return err
	}
	var res issuedJSON
	if *node != "" {
		var domains []string
		for _, d := range strings.Split(*node, ",") {
			if d = strings.TrimSpace(d); d != "" {
				domains = append(domains, d)
			}
		}
		id, err := ca.IssueNode(*out, domains)
		if err != nil {
			return err
		}
		res = issuedJSON{Dir: *out, Kind: "node", Domains: domains, Serial: hexSerial(id.Cert.SerialNumber), NotAfter: id.Cert.NotAfter.UTC().Format(time.RFC3339)}
	} else {
		id, err := ca.IssueParticipant(*out, *participant)
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
	who := res.Address
	if res.Kind == "node" {
		who = strings.Join(res.Domains, ",")
	}
	fmt.Fprintf(e.stdout, "issued %s %s in %s, valid until %s\n  certificate serial %s\n", res.Kind, who, res.Dir, res.NotAfter, res.Serial)
	if res.EncryptionSerial != "" {
		fmt.Fprintf(e.stdout, "  encryption certificate serial %s\n", res.EncryptionSerial)
	}
	return nil
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
	ca, err := pki.OpenCA(*dir)
	if err != nil {
		return err
	}
	if err := ca.Revoke(serial, *reason); err != nil {
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
	validity := c.Duration("validity", 168*time.Hour, "how long the CRL stays valid; write the next one before then")
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
	ca, err := pki.OpenCA(*dir)
	if err != nil {
		return err
	}
	path, err := ca.WriteCRL(*validity)
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
