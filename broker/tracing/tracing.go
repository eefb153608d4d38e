// Package tracing sends a node's gRPC calls as OpenTelemetry spans to an
// OTLP collector, configured only by the standard OTEL_* environment
// variables, and off unless they ask for it. It is the only package of
// the node that links the OpenTelemetry SDK.
//
// Tracing is on when OTEL_TRACES_EXPORTER is "otlp", or when it is unset
// and OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
// names a collector; OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none
// turn it off. OTEL_EXPORTER_OTLP_PROTOCOL (or its _TRACES_ form) picks
// "grpc" or "http/protobuf" (the default); the exporters read the
// endpoint, headers, certificates and timeouts from the environment as
// the OpenTelemetry specification says, and the SDK reads
// OTEL_SERVICE_NAME (default kurierd), OTEL_RESOURCE_ATTRIBUTES and
// OTEL_TRACES_SAMPLER.
//
// Spans carry the method, the status code and the peer's network address;
// never a message's content, which the node cannot read anyway, nor the
// caller's certificate.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"google.golang.org/grpc/stats"
)

// Tracer is the node's tracing, set up from the environment.
type Tracer struct {
	provider *sdktrace.TracerProvider
}

// FromEnv sets tracing up as the environment says; a nil *Tracer (with a
// nil error) if it says nothing, or says off.
func FromEnv(ctx context.Context, version string) (*Tracer, error) {
	on, err := enabled(os.Getenv)
	if err != nil || !on {
		return nil, err
	}
	exp, err := exporter(ctx, os.Getenv)
	if err != nil {
		return nil, err
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("kurierd"), semconv.ServiceVersion(version)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	return &Tracer{provider: sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))}, nil
}

// ServerHandler is the gRPC stats handler that makes a span of every call
// the node serves, continuing a trace its caller propagated.
func (t *Tracer) ServerHandler() stats.Handler {
	// Callers are outside the node's trust: only their trace context is
	// taken up (to join their traces), never baggage. A parent-based
	// sampler (the SDK's default) follows a caller's sampled flag; set
	// OTEL_TRACES_SAMPLER=traceidratio to decide by the node alone.
	return otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(t.provider),
		otelgrpc.WithPropagators(propagation.TraceContext{}))
}

// Shutdown sends the spans still buffered and stops; ctx bounds how long
// it waits for the collector.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: shut down: %w", err)
	}
	return nil
}

// enabled reads whether the environment asks for traces.
func enabled(env func(string) string) (bool, error) {
	if strings.EqualFold(strings.TrimSpace(env("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	switch e := strings.TrimSpace(env("OTEL_TRACES_EXPORTER")); e {
	case "otlp":
		return true, nil
	case "none":
		return false, nil
	case "":
		return env("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
	default:
		return false, fmt.Errorf("tracing: OTEL_TRACES_EXPORTER %q is not supported: kurierd sends traces with otlp, or none", e)
	}
}

// exporter makes the OTLP exporter of the protocol the environment names.
func exporter(ctx context.Context, env func(string) string) (sdktrace.SpanExporter, error) {
	proto := strings.TrimSpace(env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	if proto == "" {
		proto = strings.TrimSpace(env("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	var exp sdktrace.SpanExporter
	var err error
	switch proto {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_PROTOCOL %q is not supported: use grpc or http/protobuf", proto)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: exporter: %w", err)
	}
	return exp, nil
}
