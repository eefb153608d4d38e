package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"kurier.dev/kurier/address"
	"kurier.dev/kurier/broker/daemon"
)

func (e *env) dev(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("dev: give federation; %w", errUsage)
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		groupHelp(e.stdout, "dev")
		return nil
	case "federation":
		return e.devFederation(args[1:])
	}
	return fmt.Errorf("dev: unknown command %q; %w", args[0], errUsage)
}

// nodeList is a repeatable flag of DOMAIN=HOST:PORT.
type nodeList []daemon.FederationNode

// String returns the nodes as DOMAIN=HOST:PORT separated by commas.
func (l *nodeList) String() string {
	var s []string
	for _, n := range *l {
		s = append(s, n.Domain+"="+n.Listen)
	}
	return strings.Join(s, ",")
}

// Set adds one node; the federation checks the domain and the address.
func (l *nodeList) Set(v string) error {
	domain, listen, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("%q is not DOMAIN=HOST:PORT", v)
	}
	*l = append(*l, daemon.FederationNode{Domain: domain, Listen: listen})
	return nil
}

type federationJSON struct {
	CA         string            `json:"ca"`
	CRL        string            `json:"crl"`
	Nodes      []fedNodeJSON     `json:"nodes"`
	Identities []identityDirJSON `json:"identities"`
}

type fedNodeJSON struct {
	Domain string `json:"domain"`
	Listen string `json:"listen"`
	Config string `json:"config"`
}

type identityDirJSON struct {
	Address string `json:"address"`
	Dir     string `json:"dir"`
}

func (e *env) devFederation(args []string) error {
	c := newCommand("dev federation", e.stderr)
	out := c.String("o", "", "the federation's directory (required); a second run reuses its CA and identities")
	var nodes nodeList
	c.Var(&nodes, "node", "a node as DOMAIN=HOST:PORT, serving DOMAIN and listening there (repeat for each node)")
	var mailboxes addressList
	c.Var(&mailboxes, "mailbox", "a participant's address, at one of the nodes' domains (repeat, or separate by commas, for several)")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs("dev federation", pos); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("dev federation: -o DIR is required")
	}
	setup, err := daemon.Federation(*out, nodes, mailboxes)
	if err != nil {
		return err
	}
	res := federationJSON{CA: setup.CA, CRL: setup.CRL, Nodes: []fedNodeJSON{}, Identities: []identityDirJSON{}}
	for _, n := range nodes {
		res.Nodes = append(res.Nodes, fedNodeJSON{Domain: n.Domain, Listen: n.Listen, Config: setup.Configs[n.Domain]})
	}
	for _, m := range mailboxes {
		res.Identities = append(res.Identities, identityDirJSON{Address: m, Dir: setup.Identities[m]})
	}
	if c.json {
		return e.printJSON(res)
	}
	return printFederation(e.stdout, res)
}

// printFederation tells a person how to start the nodes and whom to send
// as.
func printFederation(w io.Writer, res federationJSON) error {
	listen := map[string]string{}
	fmt.Fprintf(w, "development federation of %d nodes, CA %s\nstart each node, e.g. in its own terminal:\n", len(res.Nodes), res.CA)
	for _, n := range res.Nodes {
		listen[n.Domain] = n.Listen
		fmt.Fprintf(w, "  kurierd -config %s\n", n.Config)
	}
	if len(res.Identities) > 0 {
		fmt.Fprintf(w, "send and receive as (kurier --id DIR --node HOST:PORT --crl %s …):\n", res.CRL)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, id := range res.Identities {
			fmt.Fprintf(tw, "  %s\t--id %s\t--node %s\n", id.Address, id.Dir, listen[address.DomainOf(id.Address)])
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}
