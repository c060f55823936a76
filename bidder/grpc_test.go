package bidder

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/personad/personad/engine"
	"github.com/personad/personad/segments"
)

func TestReflectionListsBidder(t *testing.T) {
	h := newHarness(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(h.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	for _, want := range []string{"personad.v1.Bidder", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, want %s among them", names, want)
		}
	}
}

func TestHealthNotServingWithoutRules(t *testing.T) {
	h := newHarness(t, "")
	hc := healthpb.NewHealthClient(h.conn)
	for _, svc := range []string{"", "personad.v1.Bidder"} {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health(%q) = %v, want NOT_SERVING", svc, resp.Status)
		}
	}
	if h.srv.Ready() {
		t.Error("Ready() without rules")
	}
}

func TestRecoverUnary(t *testing.T) {
	s := newTestServer(t, "")
	info := &grpc.UnaryServerInfo{FullMethod: "/personad.v1.Bidder/Bid"}
	_, err := s.recoverUnary(context.Background(), nil, info, func(context.Context, any) (any, error) {
		panic("boom")
	})
	if st := status.Convert(err); st.Code() != codes.Internal || strings.Contains(st.Message(), "boom") {
		t.Errorf("got %v, want Internal without the panic's detail", err)
	}
	err = s.recoverStream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/x/y"}, func(any, grpc.ServerStream) error {
		panic("boom")
	})
	if status.Code(err) != codes.Internal {
		t.Errorf("stream: got %v, want Internal", err)
	}
	if got := testutil.ToFloat64(s.metrics.panics); got != 2 {
		t.Errorf("panics counted = %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.metrics.requests[wireGRPC][outcomeError]); got != 1 {
		t.Errorf("grpc errors counted = %v, want 1", got)
	}
}

func TestBudget(t *testing.T) {
	s := newTestServer(t, "")
	for _, tc := range []struct {
		tmax int32
		want time.Duration
	}{
		{0, 50 * time.Millisecond},   // 0: the server maximum
		{100, 50 * time.Millisecond}, // capped
		{40, 30 * time.Millisecond},  // tmax − margin
		{10, 0},                      // nothing left: no-bid at once
		{5, -5 * time.Millisecond},
	} {
		if got := s.budget(tc.tmax); got != tc.want {
			t.Errorf("budget(tmax %d) = %v, want %v", tc.tmax, got, tc.want)
		}
	}
}

func TestNewConfig(t *testing.T) {
	eng, err := engine.New(engine.DefaultConfig(), segments.NewStore(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	for name, mutate := range map[string]func(*Config){
		"no engine":       func(c *Config) { c.Engine = nil },
		"negative margin": func(c *Config) { c.NetworkMargin = -1 },
		"zero budget":     func(c *Config) { c.MaxBudget = 0 },
		"zero imps":       func(c *Config) { c.Limits.MaxImps = 0 },
		"zero recv":       func(c *Config) { c.MaxRecvMsgSize = 0 },
	} {
		cfg := DefaultConfig()
		cfg.Engine = eng
		mutate(&cfg)
		if _, err := New(cfg); err == nil || !strings.HasPrefix(err.Error(), "bidder: config: ") {
			t.Errorf("%s: New error = %v, want a bidder: config error", name, err)
		}
	}
	cfg := DefaultConfig()
	cfg.Engine = eng
	if _, err := New(cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Logger != nil || cfg.Metrics != nil || cfg.Now != nil {
		t.Error("New wrote into the caller's config")
	}
}

// A grpc.health.v1 Watch (a load balancer's, grpc-health-probe's) hears
// NOT_SERVING on Shutdown and then ends, UNAVAILABLE, so that it does not
// hold grpc.Server.GracefulStop until the shutdown timeout; so does a
// Watch begun after Shutdown, and one of a server that had no rules
// (NOT_SERVING all along). The streams' own deadline only bounds a
// failure.
func TestHealthWatchEndsOnShutdown(t *testing.T) {
	for _, tc := range []struct {
		name, rules string
		first       healthpb.HealthCheckResponse_ServingStatus
	}{
		{"serving", testRules, healthpb.HealthCheckResponse_SERVING},
		{"no rules", "", healthpb.HealthCheckResponse_NOT_SERVING},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.rules)
			hc := healthpb.NewHealthClient(h.conn)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			watch := func(service string) healthpb.Health_WatchClient {
				t.Helper()
				w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
				if err != nil {
					t.Fatal(err)
				}
				return w
			}
			expect := func(w healthpb.Health_WatchClient, want ...healthpb.HealthCheckResponse_ServingStatus) {
				t.Helper()
				for _, st := range want {
					r, err := w.Recv()
					if err != nil || r.GetStatus() != st {
						t.Fatalf("Recv: %v, %v; want %v", r.GetStatus(), err, st)
					}
				}
				r, err := w.Recv()
				if status.Code(err) != codes.Unavailable {
					t.Errorf("after %v: Recv %v, %v; want the stream ended, Unavailable", want, r, err)
				}
			}
			before := watch("")
			if r, err := before.Recv(); err != nil || r.GetStatus() != tc.first {
				t.Fatalf("first status %v, %v; want %v", r.GetStatus(), err, tc.first)
			}
			unknown := watch("no.such.Service")
			if r, err := unknown.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
				t.Fatalf("unknown service: %v, %v", r.GetStatus(), err)
			}
			h.srv.Shutdown()
			if tc.first == healthpb.HealthCheckResponse_SERVING {
				expect(before, healthpb.HealthCheckResponse_NOT_SERVING)
			} else {
				expect(before)
			}
			expect(unknown)
			expect(watch("personad.v1.Bidder"), healthpb.HealthCheckResponse_NOT_SERVING)
		})
	}
}
