package rpc

import (
	"context"
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"kurier.dev/kurier/broker"
)

// Server is a node's gRPC server (NewServer): Serve it on a listener, and
// end it with Shutdown, which lets the calls under way finish, or Stop.
type Server struct {
	grpc     *grpc.Server
	health   *health.Server
	stopping chan struct{}
	stopOnce sync.Once
}

// Serve accepts connections on lis until the server stops. It returns
// grpc.ErrServerStopped if the server stopped before it began.
func (s *Server) Serve(lis net.Listener) error { return s.grpc.Serve(lis) }

// GetServiceInfo returns the services the server serves, by name.
func (s *Server) GetServiceInfo() map[string]grpc.ServiceInfo { return s.grpc.GetServiceInfo() }

// Stop closes every connection and cuts every call at once; it returns
// once their handlers have returned.
func (s *Server) Stop() {
	s.beginStop()
	s.grpc.Stop()
}

// Shutdown stops the server in the order that lets its callers go on
// elsewhere, and loses nothing a caller was told is stored:
//
//  1. health checking reports NOT_SERVING for the server ("") and each of
//     its services; a health Watch sees that, then ends with Unavailable;
//  2. the server takes no new connections and no new calls;
//  3. subscriptions and reflection streams, which would wait for ever,
//     end with Unavailable: "the node is shutting down";
//  4. uploads (Submit, Relay) and downloads under way go on until ctx
//     ends; an upload whose next chunk does not come within
//     Options.StopIdle is given up with Unavailable, so that a stalled
//     sender does not hold the node (it submits the same message again,
//     which is safe);
//  5. when ctx ends, the calls still running are cut, as by Stop.
//
// Shutdown returns once every handler has returned: nil if all ended on
// their own, ctx's error if some were cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginStop()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		return fmt.Errorf("shut down: calls still running were cut: %w", ctx.Err())
	}
}

// Serving reports whether the server serves, as its health checking
// says: true until it begins to stop. The node's /readyz answers by it.
func (s *Server) Serving() bool {
	select {
	case <-s.stopping:
		return false
	default:
		return true
	}
}

// beginStop reports NOT_SERVING to health checking, then tells the
// handlers that the server stops.
func (s *Server) beginStop() {
	s.stopOnce.Do(func() {
		s.health.Shutdown()
		close(s.stopping)
	})
}

// errStopping ends the streams a stopping server does not wait for.
var errStopping = fmt.Errorf("%w: the node is shutting down; connect again once it is back (or to another node of the domain)", broker.ErrUnavailable)

// errStopIdle gives up an upload that stalls while the server stops.
var errStopIdle = fmt.Errorf("%w: the node is shutting down and the upload stalled; submit the same message again once the node is back", broker.ErrUnavailable)

// endsAtStop lists the streams that end with errStopping as soon as the
// server stops: they wait on their caller for as long as it likes, and a
// stopping server must not wait for them. Health Watch ends too, once it
// has reported NOT_SERVING (healthService).
var endsAtStop = map[string]bool{
	"/kurier.v1.MailboxService/Subscribe":                            true,
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      true,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": true,
}

// healthService is gRPC health checking whose Watch streams end once the
// server stops, right after they have told their caller NOT_SERVING.
type healthService struct {
	*health.Server
	stopping <-chan struct{}
}

// Watch is health.Server's Watch until the server stops; then it ends with
// Unavailable as soon as the caller has been sent a status other than
// SERVING (Shutdown has set every status to NOT_SERVING first).
func (h *healthService) Watch(in *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	w := &watchStream{Health_WatchServer: stream, ctx: ctx}
	go func() {
		select {
		case <-h.stopping:
			w.endOnceNotServing(cancel)
		case <-ctx.Done():
		}
	}()
	err := h.Server.Watch(in, w)
	select {
	case <-h.stopping:
		if stream.Context().Err() == nil {
			return toStatus(errStopping)
		}
	default:
	}
	return err
}

// watchStream remembers the last status a Watch sent, so that a stopping
// server ends the watch only once its caller knows.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context

	mu   sync.Mutex
	sent bool
	last healthpb.HealthCheckResponse_ServingStatus
	end  context.CancelFunc // set once the server stops
}

func (w *watchStream) Context() context.Context { return w.ctx }

func (w *watchStream) Send(r *healthpb.HealthCheckResponse) error {
	err := w.Health_WatchServer.Send(r)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sent, w.last = true, r.GetStatus()
	if w.end != nil && w.last != healthpb.HealthCheckResponse_SERVING {
		w.end()
	}
	return err
}

// endOnceNotServing ends the watch now if its caller was last told a
// status other than SERVING, else right after the next such status is
// sent. A watch that has sent nothing yet sends its first status, read
// after Shutdown set it, soon.
func (w *watchStream) endOnceNotServing(end context.CancelFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sent && w.last != healthpb.HealthCheckResponse_SERVING {
		end()
		return
	}
	w.end = end
}
