// Command jetstream measures NATS JetStream's synchronous publish rate with
// every write fsynced before its PubAck (sync_interval: always), the
// baseline kurier bench --mode submit is compared with on the same
// machine. It runs nats-server in a child process of its own binary, and
// prints the figures as a short table or, with -json, one JSON object
// whose keys follow kurier bench's.
//
//	jetstream -messages 2000 -size 1024 -concurrency 16 [-tls] [-store DIR] [-json]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"kurier.dev/kurier/bench/jsload"
)

func main() {
	jsload.MaybeServeChild()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("jetstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg jsload.Config
	fs.IntVar(&cfg.Messages, "messages", 2000, "how many messages")
	fs.IntVar(&cfg.Size, "size", 1024, "bytes of each message's payload")
	fs.IntVar(&cfg.Concurrency, "concurrency", 16, "publishers at once, each waiting for its PubAck")
	fs.BoolVar(&cfg.TLS, "tls", false, "mutual TLS 1.3 (ECDSA P-256 certificates made for the run), as a Kurier node always uses")
	fs.StringVar(&cfg.StoreDir, "store", "", "`directory` in which to make (and at the end remove) the run's JetStream store, to put it on the disk of the Kurier node's store (default: the system's temporary directory)")
	fs.DurationVar(&cfg.Timeout, "timeout", jsload.DefaultTimeout, "bound of the whole run; at its end what was done is reported")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("jetstream: unexpected arguments %q", fs.Args())
	}
	r, err := jsload.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	return printText(stdout, r)
}

// printText prints the short summary of a run.
func printText(w io.Writer, r *jsload.Result) error {
	transport := "plain TCP"
	if r.TLS {
		transport = "mutual TLS 1.3"
	}
	fmt.Fprintf(w, "JetStream %s, sync_always %t, %s: %d messages of %d bytes, %d at once: %.1f s", r.ServerVersion, r.SyncAlways, transport, r.Messages, r.Size, r.Concurrency, r.ElapsedS)
	if r.TimedOut {
		fmt.Fprint(w, " (cut off by -timeout or a signal)")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  published  %d", r.Published)
	if r.Stored != nil {
		fmt.Fprintf(w, " (stored %d)", *r.Stored)
	}
	fmt.Fprintf(w, ", %.1f/s, p50 %.1f ms, p99 %.1f ms\n", r.PublishPerS, r.PublishP50Ms, r.PublishP99Ms)
	fmt.Fprintf(w, "  errors     %d", r.Errors)
	if r.FirstError != "" {
		fmt.Fprintf(w, ", the first: %s", r.FirstError)
	}
	fmt.Fprintln(w)
	if r.ServerCPUUsPerMsg != nil {
		fmt.Fprintf(w, "  server     %.0f µs CPU per message", *r.ServerCPUUsPerMsg)
		if r.ServerPeakRSSBytes != nil {
			fmt.Fprintf(w, ", peak RSS %.1f MiB", float64(*r.ServerPeakRSSBytes)/(1<<20))
		}
		fmt.Fprintln(w)
	}
	if r.SelfCPUUsPerMsg != nil && r.SelfPeakRSSBytes != nil {
		fmt.Fprintf(w, "  publishers %.0f µs CPU per message, peak RSS %.1f MiB\n", *r.SelfCPUUsPerMsg, float64(*r.SelfPeakRSSBytes)/(1<<20))
	}
	return nil
}
