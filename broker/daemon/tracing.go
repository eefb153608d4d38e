package daemon

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"

	"kurier.dev/kurier/broker"
	"kurier.dev/kurier/broker/tracing"
)

// tracingFlush bounds how long a stopping node waits for the collector
// to take the last spans.
const tracingFlush = 5 * time.Second

// shutdownTracing sends the last spans, if tracing is on.
func shutdownTracing(t *tracing.Tracer, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), tracingFlush)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		logger.Warn("tracing: the last spans may be lost", slog.Any(broker.LogErr, err))
	}
}

// moduleVersion is the version of the kurier module this binary was
// built from, as the Go toolchain recorded it.
func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.Main.Version
	}
	return ""
}
