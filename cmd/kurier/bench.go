package main

import (
	"errors"
	"fmt"

	"kurier.dev/kurier/loadgen"
	"kurier.dev/kurier/pki"
)

// bench drives the node with many messages and prints what it sustained.
func (e *env) bench(args []string) error {
	c := newCommand("bench", e.stderr)
	mf := c.mailboxFlags()
	recipientID := c.String("recipient-id", "", "the recipient's identity `folder`, which fetches and acknowledges (lifecycle)")
	to := c.String("to", "", "the recipient's address")
	messages := c.Int("messages", 100, "how many messages")
	size := c.Int("size", 1024, "bytes of the one document each message carries")
	concurrency := c.Int("concurrency", 4, "how many workers at once")
	mode := c.String("mode", string(loadgen.Submit), "submit (time durable submissions) or lifecycle (submit, fetch, acknowledge)")
	open := c.Bool("open", false, "lifecycle: decrypt and verify each message as a recipient does before acknowledging (without it: check the payload digest only, as a system that opens elsewhere)")
	nodePID := c.Int("node-pid", 0, "the node's process `id` on this machine, to report its CPU time and peak memory")
	timeout := c.Duration("timeout", loadgen.DefaultTimeout, "bound of the whole run; at its end what was done is reported")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("bench: unexpected arguments %q", pos)
	}
	if mf.id == "" {
		return errors.New("bench: no sender identity: give --id DIR or set KURIER_ID")
	}
	cfg := loadgen.Config{
		Node: mf.node, To: *to, Messages: *messages, Size: *size, Concurrency: *concurrency,
		Mode: loadgen.Mode(*mode), Open: *open, CRL: mf.crl, NodePID: *nodePID, Timeout: *timeout,
	}
	if cfg.Sender, err = pki.LoadIdentity(mf.id); err != nil {
		return fmt.Errorf("bench: sender: %w", err)
	}
	if *recipientID != "" {
		if cfg.Recipient, err = pki.LoadIdentity(*recipientID); err != nil {
			return fmt.Errorf("bench: recipient: %w", err)
		}
	}
	r, err := loadgen.Run(e.ctx, cfg)
	if err != nil {
		return err
	}
	if c.json {
		return e.printJSON(r)
	}
	return e.printBench(r)
}

// printBench prints the short summary of a run.
func (e *env) printBench(r *loadgen.Result) error {
	w := e.stdout
	fmt.Fprintf(w, "%s of %d messages of %d bytes, %d at once", r.Mode, r.Messages, r.Size, r.Concurrency)
	if r.Open {
		fmt.Fprint(w, ", opened")
	}
	fmt.Fprintf(w, ": %.1f s", r.ElapsedS)
	if r.TimedOut {
		fmt.Fprint(w, " (timed out)")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  submitted   %d, %.1f/s, p50 %.1f ms, p99 %.1f ms\n", r.Submitted, r.SubmitPerS, r.SubmitP50Ms, r.SubmitP99Ms)
	if r.Mode == loadgen.Lifecycle {
		fmt.Fprintf(w, "  lifecycles  %d, %.1f/s, p50 %.1f ms, p99 %.1f ms\n", r.Lifecycles, r.LifecyclePerS, r.LifecycleP50Ms, r.LifecycleP99Ms)
	}
	fmt.Fprintf(w, "  errors      %d", r.Errors)
	if r.FirstError != "" {
		fmt.Fprintf(w, ", the first: %s", printable(r.FirstError))
	}
	fmt.Fprintln(w)
	if r.NodeCPUUsPerMsg != nil {
		fmt.Fprintf(w, "  node        %.0f µs CPU per message", *r.NodeCPUUsPerMsg)
		if r.NodePeakRSSBytes != nil {
			fmt.Fprintf(w, ", peak RSS %.1f MiB", float64(*r.NodePeakRSSBytes)/(1<<20))
		}
		fmt.Fprintln(w)
	}
	if r.SelfCPUUsPerMsg != nil {
		fmt.Fprintf(w, "  bench       %.0f µs CPU per message, peak RSS %.1f MiB\n", *r.SelfCPUUsPerMsg, float64(*r.SelfPeakRSSBytes)/(1<<20))
	}
	o := r.OpsPerMsg
	_, err := fmt.Fprintf(w, "  bound       %.0f/s on %d cores, per message: signatures %d × %.0f µs (%s), verifications %d × %.0f µs, RSA private-key operations %d × %.0f µs (%s)\n",
		r.BoundPerS, r.Cores, o.Sign, r.SignUs, r.SignKey, o.Verify, r.VerifyUs, o.RSA, r.RSAUs, r.RSAKey)
	return err
}
