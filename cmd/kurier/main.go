// Command kurier is the command-line client of Kurier: participants send,
// list, fetch, acknowledge and reject messages and collect evidence with it;
// operators run the federation's CA with it. Run `kurier help` for usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"kurier.dev/kurier/client"
	"kurier.dev/kurier/pki"
)

const defaultNode = "127.0.0.1:7443"

const usage = `kurier — send and receive documents through a Kurier node

Usage:
  kurier send --to ADDR [--to ADDR…] --subject TEXT [--type TYPE] [--reference AZ] [--expires DURATION]
              [--retry-for DURATION] [--save FILE] FILE…
  kurier resubmit FILE             submit a message saved with send --save again (never a second message)
  kurier inbox
  kurier outbox [--limit N]         the messages you sent, newest first, with each recipient's state
                                    (acknowledged, rejected and why, …) and since when
  kurier watch [--existing]        print each message as it arrives, until interrupted (with --json one
                                    JSON object a line); --existing lists the mailbox first, once watching
  kurier directory ADDR             what the directory answers for ADDR, here or at its domain's node
  kurier fetch ID [-o DIR] [--ack]  write the documents of message ID into DIR (default .); with --ack
                                    acknowledge it once opened
  kurier ack ID                     open and check message ID again (writing nothing), then sign and send
                                    the acknowledgement (Empfangsbekenntnis)
  kurier reject ID [--code CODE] [--reason TEXT]
                                    sign and send the refusal (Zurückweisung) of a fetched message, also one
                                    that cannot be opened; CODE cannot-open, not-competent or other (default,
                                    needs --reason)
  kurier evidence ID [-o DIR]       list the evidence of message ID, per recipient; with -o write each as NN-Type.p7m
  kurier export ID [-o FILE] [--since CHECKPOINT…]
                                    write the evidence bundle of message ID (a zip; default ID.zip)
  kurier checkpoint [-o FILE]       save the node's current log checkpoint, for a later --since

  kurier bench --to ADDR [--recipient-id DIR] [--messages N] [--size BYTES] [--concurrency K]
              [--mode submit|lifecycle] [--open] [--node-pid PID] [--timeout 5m]
                                    load the node: seal N messages first, then time their submission
                                    (submit) or submission, fetch and acknowledgement by the recipient
                                    (lifecycle; --open decrypts and verifies, else only the payload digest
                                    is checked); prints rates, p50/p99 latency, errors, CPU
                                    and memory per message and the bound this machine's signature and
                                    RSA costs set. Point it at a node of its own: it sends real messages

  kurier verify FILE… [--ca ca.pem] [--crl CRL] [--since CHECKPOINT…] [--log-key log.vkey…]
              [--report report.html] [--report-pdf report.pdf]
                                    check bundles or .p7m evidence offline; exit 0 only if every
                                    check passed, 1 if one failed, 3 if one was indeterminate;
                                    --report writes the Prüfprotokoll (HTML), --report-pdf prints it on A4 (Chromium)
  kurier verify --serve 127.0.0.1:8080 | --write-web DIR
                                    the same checks in a web page (on this computer, or as static files for
                                    any web server): drop the bundle and ca.pem on it; nothing is uploaded

  kurier pki init --ca DIR [--name NAME] [--validity 168h]
                                    create the CA and its first CRL (DIR/crl.pem)
  kurier pki issue --ca DIR (--node DOMAIN[,DOMAIN…] | --participant ADDR) -o DIR
  kurier pki issue --ca DIR --csr FILE… [-o DIR]
                                    sign a participant's CSRs (from pki csr); the certificates go to -o DIR
                                    or beside the CSRs
  kurier pki revoke --ca DIR [--reason CODE] SERIAL     (0x… hex or decimal)
  kurier pki crl --ca DIR [--validity 168h]
  kurier pki log-key -o DIR [--domain DOMAIN]
                                    write a node's log signing key DIR/log.key and its verifier key DIR/log.vkey,
                                    for the node's first domain (default: that of DIR/cert.pem)
  kurier pki csr --participant ADDR -o DIR
                                    on the participant's machine: make its keys in DIR and the CSRs for the CA

  kurier dev federation -o DIR --node DOMAIN=HOST:PORT… --mailbox ADDR…
                                    write a local development federation: a CA, a node per DOMAIN, an identity per ADDR

  kurier help

Options of the mailbox commands (send, inbox, outbox, watch, directory, fetch, ack, reject, evidence, export, checkpoint, bench):
  --id DIR      identity folder (cert.pem, key.pem, enc-cert.pem, enc-key.pem, ca.pem); env KURIER_ID
  --node ADDR   the home node, host:port, or several processes of it as host1:port,host2:port
                (calls go to those that answer); env KURIER_NODE, default ` + defaultNode + `
  --crl FILE    check the node's and signers' certificates against this CRL; env KURIER_CRL

Every command takes --json and then prints exactly one JSON value on stdout
(watch one a line),
also when it fails: {"error": "…", "code": "NotFound", "reason":
"UNKNOWN_RECIPIENT"} (the node's status code, "usage" or "error"; the reason
where the refusal is one of those docs/PROTOCOL.md lists under "Errors").
Flags may come before or after the other arguments.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kurier:", describe(err))
		os.Exit(exitCode(err))
	}
}

// reported marks an error of a --json command that has printed its JSON
// value already (verify's reports): nothing more goes to stdout.
type reported struct{ error }

func (r reported) Unwrap() error { return r.error }

// jsonError is what a --json command prints on stdout when it fails.
type jsonError struct {
	Error string `json:"error"`
	// Code is the node's gRPC status code where it refused, "usage" for
	// a wrong call, else "error".
	Code string `json:"code"`
	// Reason names a common refusal (docs/PROTOCOL.md, "Errors"), for
	// scripts to branch on: "UNKNOWN_RECIPIENT", "QUOTA_EXCEEDED", ….
	Reason string `json:"reason,omitempty"`
}

// errorJSON returns err as a --json command prints it.
func errorJSON(err error) jsonError {
	code := "error"
	var se interface{ GRPCStatus() *status.Status }
	switch {
	case errors.Is(err, errUsage):
		code = "usage"
	case errors.As(err, &se):
		code = se.GRPCStatus().Code().String()
	}
	return jsonError{Error: describe(err), Code: code, Reason: client.Reason(err)}
}

// wantsJSON reports whether args ask for --json.
func wantsJSON(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "json" {
			continue
		}
		if !hasValue {
			return true
		}
		if on, err := strconv.ParseBool(value); err == nil {
			return on
		}
	}
	return false
}

// errUsage is returned after the usage has been printed for a wrong call.
var errUsage = errors.New("see `kurier help`")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd, rest := splitCommand(args)
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr}
	err := dispatch(e, cmd, rest)
	if errors.Is(err, flag.ErrHelp) {
		return nil // -h: the command's usage is printed
	}
	if err != nil && e.node != "" && unreachable(err) {
		at := "the node at " + e.node
		if strings.Contains(e.node, ",") {
			at = "any of the node's processes at " + e.node
		}
		err = fmt.Errorf("cannot reach %s (is it running, and is --node right?): %w", at, err)
	}
	if err != nil && wantsJSON(args) && !errors.As(err, new(reported)) {
		e.printJSON(errorJSON(err))
	}
	return err
}

// unreachable reports whether err says the node could not be connected
// to at all (as opposed to a node that answered with a refusal).
func unreachable(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return false
	}
	st := se.GRPCStatus()
	return st.Code() == codes.Unavailable && strings.Contains(st.Message(), "connection error")
}

func dispatch(e *env, cmd string, rest []string) error {
	switch cmd {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(e.stdout, usage)
		return nil
	case "send":
		return e.send(rest)
	case "resubmit":
		return e.resubmit(rest)
	case "inbox":
		return e.inbox(rest)
	case "outbox":
		return e.outbox(rest)
	case "watch":
		return e.watch(rest)
	case "directory":
		return e.directory(rest)
	case "fetch":
		return e.fetch(rest)
	case "ack":
		return e.ack(rest)
	case "reject":
		return e.reject(rest)
	case "evidence":
		return e.evidence(rest)
	case "export":
		return e.export(rest)
	case "checkpoint":
		return e.checkpoint(rest)
	case "bench":
		return e.bench(rest)
	case "verify":
		return e.verify(rest)
	case "pki":
		return e.pki(rest)
	case "dev":
		return e.dev(rest)
	}
	if cmd == "" {
		return fmt.Errorf("no command given; %w", errUsage)
	}
	return fmt.Errorf("unknown command %q; %w", cmd, errUsage)
}

// splitCommand finds the command among args, so that the common options
// may also come before it (kurier --id DIR inbox), and returns it with the
// other arguments. Before the command every option takes a value (--id
// DIR, --node=ADDR) except --json and the help flags.
func splitCommand(args []string) (string, []string) {
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "-" {
		name := strings.TrimLeft(args[i], "-")
		switch {
		case name == "h" || name == "help":
			return args[i], nil
		case name == "json" || strings.Contains(name, "="):
			i++
		default:
			i += 2
		}
	}
	if i >= len(args) {
		return "", args
	}
	rest := append(slices.Clip(args[:i]), args[i+1:]...)
	return args[i], rest
}

// env is what every command runs with.
type env struct {
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
	node   string // the node dialled, once one is
}

// command is one command's flag set with the options all commands share.
type command struct {
	*flag.FlagSet
	name string
	json bool
}

func newCommand(name string, stderr io.Writer) *command {
	c := &command{FlagSet: flag.NewFlagSet("kurier "+name, flag.ContinueOnError), name: name}
	c.SetOutput(stderr)
	c.BoolVar(&c.json, "json", false, "print one JSON value on stdout")
	c.Usage = func() { printHelp(stderr, name, c.PrintDefaults) }
	return c
}

// parse parses flags wherever they stand among the positional arguments,
// which it returns: the flag package stops at the first positional, so
// parsing resumes after each one. Everything after "--" is positional.
func (c *command) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := c.Parse(args); err != nil {
			return nil, err
		}
		rest := c.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// mailboxFlags are the options of the commands that talk to a node.
type mailboxFlags struct {
	id, node, crl string
	// retryFor, if set, is how long to keep trying while the node cannot
	// be reached (send, resubmit).
	retryFor *time.Duration
}

// retryFlag adds --retry-for to the command.
func (c *command) retryFlag(f *mailboxFlags) {
	f.retryFor = c.Duration("retry-for", client.DefaultRetryFor, "how long to keep trying, with the same sealed message, while the node cannot be reached (0: one try)")
}

func (c *command) mailboxFlags() *mailboxFlags {
	f := &mailboxFlags{}
	c.StringVar(&f.id, "id", os.Getenv("KURIER_ID"), "identity folder (env KURIER_ID)")
	node := os.Getenv("KURIER_NODE")
	if node == "" {
		node = defaultNode
	}
	c.StringVar(&f.node, "node", node, "home node host:port, or host1:port,host2:port for several processes of it (env KURIER_NODE)")
	c.StringVar(&f.crl, "crl", os.Getenv("KURIER_CRL"), "CRL file to check certificates against (env KURIER_CRL)")
	return f
}

// dial loads the identity and connects to the node.
func (e *env) dial(f *mailboxFlags) (*client.Client, error) {
	if f.id == "" {
		return nil, errors.New("no identity: give --id DIR or set KURIER_ID")
	}
	if _, err := client.ParseNodes(f.node); err != nil {
		return nil, fmt.Errorf("--node %q: %w", f.node, err)
	}
	id, err := pki.LoadIdentity(f.id)
	if err != nil {
		return nil, err
	}
	e.node = f.node
	var opts []client.Option
	if f.crl != "" {
		opts = append(opts, client.WithCRL(f.crl))
	}
	retryFor := time.Duration(0) // other commands try once; a person retries
	if f.retryFor != nil {
		retryFor = *f.retryFor
	}
	opts = append(opts, client.WithRetry(retryFor))
	return client.Dial(e.ctx, f.node, id, opts...)
}

// printJSON writes v as the one JSON value of a --json command.
func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// describe renders err for a person: a gRPC status inside it reads as
// "Code: message" instead of "rpc error: code = Code desc = message".
func describe(err error) string {
	msg := err.Error()
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return msg
	}
	st := se.GRPCStatus()
	raw := st.Err().Error()
	if strings.Contains(msg, raw) {
		return strings.Replace(msg, raw, fmt.Sprintf("%s: %s", st.Code(), st.Message()), 1)
	}
	return msg
}

// isTerminal reports whether w is a terminal, where progress may be drawn.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
