package main

import (
	"fmt"
	"io"
	"strings"
)

// commandHelp is what `kurier CMD --help` says before the options.
type commandHelp struct {
	synopsis, about, example string
}

// helps holds every command's help, by the name newCommand is given.
var helps = map[string]commandHelp{
	"send": {"kurier send --to ADDR [--to ADDR…] --subject TEXT [--type TYPE] [--reference AZ] FILE…",
		"Seal FILE… for the recipients (signed by you, encrypted to each) and submit them to your node; prints the\n" +
			"message id and the node's signed receipts. Tries again with the same sealed message while the node\n" +
			"cannot be reached (--retry-for); --save keeps the sealed message for kurier resubmit.",
		"kurier send --to eingang@amtsgericht.example --subject Klage --reference '4 C 12/26' klage.pdf"},
	"resubmit": {"kurier resubmit FILE",
		"Submit a message saved with send --save again: the node treats it as the same message and answers\n" +
			"with its first receipt, so this never sends a second one.",
		"kurier resubmit klage.sealed"},
	"inbox": {"kurier inbox", "List the messages in your mailbox, oldest first, with their state.", "kurier inbox --json"},
	"outbox": {"kurier outbox [--limit N]",
		"List the messages you sent through your node, newest first, with where each recipient's copy stands:\n" +
			"relaying, delivered, retrieved, acknowledged, rejected (and why) or undeliverable, and since when, by\n" +
			"the newest evidence your node holds (kurier evidence ID shows it signed).",
		"kurier outbox --limit 20 --json"},
	"watch": {"kurier watch [--existing]",
		"Print each message as it arrives in your mailbox, until interrupted; with --json one JSON object a\n" +
			"line. --existing lists what the mailbox holds first, once watching, so that nothing falls between.",
		"kurier watch --existing --json"},
	"directory": {"kurier directory ADDR",
		"Ask your node's directory for ADDR (your node asks the node of ADDR's domain): its name, kind and\n" +
			"encryption certificate, checked.",
		"kurier directory eingang@amtsgericht.example"},
	"fetch": {"kurier fetch ID [-o DIR] [--per-message] [--keep-sealed] [--ack]",
		"Fetch message ID, check the sender's signature and the node's evidence, and write its documents into\n" +
			"DIR (made if missing; DIR/ID with --per-message); nothing is written unless all of it verifies.\n" +
			"--keep-sealed also keeps payload.p7m (as delivered) and signed.p7m (the sender-signed original) for\n" +
			"the archive; --ack then signs the acknowledgement (Empfangsbekenntnis).",
		"kurier fetch 01a2…-…-… -o eingang/"},
	"ack": {"kurier ack ID",
		"Open and check message ID again (writing nothing), then sign and send the acknowledgement\n" +
			"(Empfangsbekenntnis).",
		"kurier ack 01a2…-…-…"},
	"reject": {"kurier reject ID [--code CODE] [--reason TEXT]",
		"Sign and send the refusal (Zurückweisung) of a fetched message, also one that cannot be opened. CODE is\n" +
			"cannot-open, not-competent or other (the default, which needs --reason).",
		"kurier reject 01a2…-…-… --code not-competent --reason 'Zuständig ist das Landgericht'"},
	"evidence": {"kurier evidence ID [-o DIR]",
		"List the evidence of message ID, per recipient; with -o write each as NN-Type.p7m, which openssl\n" +
			"cms -verify checks.",
		"kurier evidence 01a2…-…-… -o nachweise/"},
	"export": {"kurier export ID [-o FILE] [--since CHECKPOINT…] [--with-content signed.p7m|DIR | --with-document FILE…]",
		"Write the evidence bundle of message ID (a zip: envelope, evidence, proofs, certificates, CRL), checked\n" +
			"as a verifier would; --since proves the node's log consistent with checkpoints you kept.\n" +
			"--with-content adds what was delivered, as fetch --keep-sealed kept it (signed.p7m, or its folder with\n" +
			"payload.p7m), so that the bundle proves the documents too; --with-document (the sender) signs the\n" +
			"message's documents again instead. Content that is not the message's is refused, nothing written.",
		"kurier export 01a2…-…-… -o nachweis.zip --with-content eingang/01a2…-…-…/"},
	"checkpoint": {"kurier checkpoint [-o FILE]",
		"Save your node's current signed log checkpoint, to prove later (export, verify --since) that its log\n" +
			"only grew.",
		"kurier checkpoint -o 2026-12-02.checkpoint"},
	"bench": {"kurier bench --to ADDR [--recipient-id DIR] [--messages N] [--size BYTES] [--concurrency K] [--mode submit|lifecycle]",
		"Load a node with real messages (sealed first, then timed) and report what it sustained. Point it at a\n" +
			"node of its own, with its sender limits raised. docs/PERFORMANCE.md explains the figures.",
		"kurier bench --to eingang@amtsgericht.example --messages 500 --concurrency 16 --json"},
	"verify": {"kurier verify FILE… [--ca ca.pem] [--crl CRL] [--since CHECKPOINT…] [--log-key log.vkey…] [--report report.html] [--report-pdf report.pdf]\n" +
		"       kurier verify --serve 127.0.0.1:8080 | --write-web DIR",
		"Check evidence bundles or single .p7m evidence offline, with no node: exit 0 only if every check passed,\n" +
			"1 if one failed, 3 if one could not be established. --report writes the Prüfprotokoll as HTML (verdict\n" +
			"and failures in plain words first, German and English), --report-pdf prints it on A4 with a local\n" +
			"Chromium (apt-get install chromium).\n" +
			"--serve runs the same checks in a web page on this computer (drop the bundle and ca.pem on it; nothing\n" +
			"is uploaded, and once loaded the page makes no request of its own); --write-web writes that page as\n" +
			"static files into a new or empty DIR for any web server, which should send the Content-Security-Policy\n" +
			"header it prints (with frame-ancestors, which index.html cannot carry).",
		"kurier verify nachweis.zip --ca ca.pem --report pruefprotokoll.html --report-pdf pruefprotokoll.pdf"},
	"pki init": {"kurier pki init --ca DIR [--name NAME] [--validity 168h]",
		"Create the federation's CA in DIR (ca.pem, ca-key.pem) and its first CRL (crl.pem).",
		"kurier pki init --ca ca"},
	"pki issue": {"kurier pki issue --ca DIR (--node DOMAIN[,DOMAIN…] | --participant ADDR) -o DIR\n       kurier pki issue --ca DIR --csr FILE… [-o DIR]",
		"Issue a node's identity, a participant's (keys made here: for development), or sign a participant's\n" +
			"certificate requests from kurier pki csr, taking only their keys and address.",
		"kurier pki issue --ca ca --csr poststelle/csr.pem poststelle/enc-csr.pem"},
	"pki revoke": {"kurier pki revoke --ca DIR [--reason CODE] SERIAL",
		"Revoke a certificate by its serial (0x… hex or decimal); it takes effect with the next kurier pki crl.",
		"kurier pki revoke --ca ca 0x5f3a…"},
	"pki crl": {"kurier pki crl --ca DIR [--validity 168h]",
		"Write the CA's next CRL (its number one more); copy it to every node before the current one runs out.",
		"kurier pki crl --ca ca --validity 168h"},
	"pki log-key": {"kurier pki log-key -o DIR [--domain DOMAIN]",
		"Write a node's log signing key DIR/log.key (0600) and its verifier key DIR/log.vkey to publish; never\n" +
			"replaces a key.",
		"kurier pki log-key -o /etc/kurier/node"},
	"pki csr": {"kurier pki csr --participant ADDR -o DIR",
		"On the participant's machine: make its signing and encryption keys in DIR and the two certificate\n" +
			"requests for the CA (csr.pem, enc-csr.pem). The keys never leave DIR.",
		"kurier pki csr --participant poststelle@stadt.example -o poststelle"},
	"dev federation": {"kurier dev federation -o DIR --node DOMAIN=HOST:PORT… --mailbox ADDR…",
		"Write a local development federation: a CA, a node per DOMAIN (each with the others as peers), an\n" +
			"identity per mailbox.",
		"kurier dev federation -o fed --node stadt.example=127.0.0.1:7501 --node amtsgericht.example=127.0.0.1:7502 --mailbox poststelle@stadt.example --mailbox eingang@amtsgericht.example"},
}

// printHelp writes a command's help, then its options (printDefaults).
func printHelp(w io.Writer, name string, printDefaults func()) {
	h, ok := helps[name]
	if !ok {
		fmt.Fprintf(w, "Usage of kurier %s:\n", name)
		printDefaults()
		return
	}
	fmt.Fprintf(w, "Usage: %s\n\n%s\n\nExample:\n  %s\n\nOptions:\n", h.synopsis, h.about, h.example)
	printDefaults()
}

// groupHelp is what `kurier pki --help` and `kurier dev --help` say: the
// commands of the group.
func groupHelp(w io.Writer, group string) {
	fmt.Fprintf(w, "kurier %s: commands\n\n", group)
	for _, name := range []string{"init", "issue", "revoke", "crl", "log-key", "csr", "federation"} {
		if h, ok := helps[group+" "+name]; ok {
			first, _, _ := strings.Cut(h.about, "\n")
			for line := range strings.SplitSeq(h.synopsis, "\n") {
				fmt.Fprintf(w, "  %s\n", strings.TrimSpace(line))
			}
			fmt.Fprintf(w, "      %s\n", first)
		}
	}
	fmt.Fprintf(w, "\nkurier %s COMMAND --help says more of each.\n", group)
}
