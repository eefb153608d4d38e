package node_test

import (
	"context"
	"io"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"kurier.dev/kurier/broker/node"
	"kurier.dev/kurier/envelope"
	"kurier.dev/kurier/evidence"
	"kurier.dev/kurier/pki/cms"
)

// BenchmarkLifecycle is the node's part of one message's life, over a
// real store: submit (verify the sender's signature, sign acceptance and
// delivery, commit), fetch and Retrieval, and the recipient's
// Acknowledgement (verify it, commit). The sender's and recipient's own
// signing is not timed. Besides the time (mostly three fsyncs in a row),
// it reports the CPU the process spent in the timed parts, cpu-µs/op,
// which is what the node's work costs.
func BenchmarkLifecycle(b *testing.B) {
	ctx := context.Background()
	h := newHarness(b, nodeLimitsForBench)
	var cpu time.Duration
	start := func() { cpu -= processCPU(b); b.StartTimer() }
	stop := func() { b.StopTimer(); cpu += processCPU(b) }
	for b.Loop() {
		b.StopTimer()
		m := newMessage(b, fx.IDs[agency], agency, court)
		start()
		if _, err := h.submit(agency, m); err != nil {
			b.Fatal(err)
		}
		_, _, payload, err := h.node.Fetch(ctx, participant(court), m.env.ID)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, payload)
		payload.Close()
		ret, err := h.node.Retrieved(ctx, participant(court), m.env.ID)
		if err != nil {
			b.Fatal(err)
		}
		stop()
		st := &evidence.Statement{
			Version: evidence.StatementVersion, Type: evidence.Acknowledgement, MessageID: m.env.ID,
			EnvelopeSHA256: envelope.Digest(m.bytes), PayloadSHA256: m.env.PayloadSHA256,
			Sender: agency, Recipient: court, Issuer: court, Time: time.Now().UTC(), PreviousSHA256: evidence.Digest(ret.DER),
		}
		raw, err := st.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		der, err := cms.Sign(raw, signer(fx.IDs[court]))
		if err != nil {
			b.Fatal(err)
		}
		start()
		if _, err := h.node.Acknowledge(ctx, participant(court), der); err != nil {
			b.Fatal(err)
		}
		stop()
		b.StartTimer() // b.Loop expects the timer running at the end of an iteration
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
}

// processCPU is the user and system CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// nodeLimitsForBench lifts the per-participant rate limit, which a
// benchmark's one sender would otherwise meet at once.
var nodeLimitsForBench = node.Limits{MessagesPerSecond: 1e6, MessageBurst: 1 << 20}

// BenchmarkSubmit is the node's part of a submission, from 16 goroutines
// (kurier bench's default senders) over a real store: verify the
// envelope's signature, store the payload, sign acceptance and delivery,
// commit. The messages are sealed before the timer starts. cpu-µs/op is
// the process's CPU per submission: the node's cost without gRPC and TLS,
// to set against kurier bench's node_cpu_us_per_msg.
func BenchmarkSubmit(b *testing.B) {
	h := newHarness(b, nodeLimitsForBench)
	msgs := make([]*message, b.N)
	for i := range msgs {
		msgs[i] = newMessage(b, fx.IDs[agency], agency, court)
	}
	var next atomic.Int64
	cpu := processCPU(b)
	b.ResetTimer()
	b.SetParallelism(8) // × GOMAXPROCS 2 on the machines the figures come from
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.submit(agency, msgs[next.Add(1)-1]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((processCPU(b)-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
}
