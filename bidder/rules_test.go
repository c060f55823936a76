package bidder

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zaptest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/personad/personad/engine"
	"github.com/personad/personad/internal/rulespb"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/reload"
	"github.com/personad/personad/rules"
)

// generation is rule set number g: campaigns whose ids name g, so that a
// response tells which complete set decided it. Each bids on the CMO.
func generation(g int) *rules.RuleSet {
	rs := &rules.RuleSet{}
	for i := range 3 {
		id := fmt.Sprintf("gen%d-c%d", g, i)
		rs.Campaigns = append(rs.Campaigns, rules.Campaign{
			ID:        id,
			BidCPM:    float64(1 + i),
			Targeting: rules.Targeting{All: []rules.Clause{{Facet: "title", Any: []string{"cmo"}}}},
			Creatives: []rules.Creative{{ID: id + "-cr", W: 300, H: 250, Adm: "<b>" + id + "</b>"}},
		})
	}
	return rs
}

type rulesHarness struct {
	eng    *engine.Engine
	mgr    *reload.Manager
	path   string
	conn   *grpc.ClientConn
	bid    personadpb.BidderClient
	rules  personadpb.RulesClient
	server *Server
}

func newRulesHarness(t *testing.T) *rulesHarness {
	t.Helper()
	return newRulesHarnessOpts(t)
}

// newRulesHarnessOpts is newRulesHarness, its gRPC server made with the
// extra options (personad raises the receive limit for rule sets).
func newRulesHarnessOpts(t *testing.T, opts ...grpc.ServerOption) *rulesHarness {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "rules", "rules.yaml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	writeRules(t, path, generation(0))
	eng, err := engine.New(engine.Config{}, testSegments())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	rcfg := reload.DefaultConfig()
	rcfg.Engine, rcfg.Path, rcfg.DataDir, rcfg.Segments = eng, path, dir, testSegments()
	rcfg.Debounce = 10 * time.Millisecond
	rcfg.Logger = zaptest.NewLogger(t)
	mgr, err := reload.New(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mgr.Close() })
	cfg := DefaultConfig()
	cfg.Engine = eng
	cfg.Logger = zaptest.NewLogger(t)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gs := s.GRPCServer(opts...)
	RegisterRules(gs, NewRulesService(mgr, cfg.Logger))
	conn, stop := serveBufconn(t, gs, 1<<20)
	t.Cleanup(stop)
	return &rulesHarness{eng: eng, mgr: mgr, path: path, server: s, conn: conn,
		bid: personadpb.NewBidderClient(conn), rules: personadpb.NewRulesClient(conn)}
}

// writeRules replaces path by rename, as an editor does.
func writeRules(t *testing.T, path string, rs *rules.RuleSet) {
	t.Helper()
	data, err := rules.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestReloadUnderLoad applies rule sets through the API and the file
// alternately, with invalid attempts between them, while clients bid with
// debug on: no request may fail, and every response must be decided by
// one complete version — its chosen campaign and every campaign its trace
// names belong to the version it reports.
func TestReloadUnderLoad(t *testing.T) {
	h := newRulesHarness(t)
	var mu sync.Mutex
	campaigns := map[string][]string{} // version -> campaign ids
	register := func(rs *rules.RuleSet) {
		mu.Lock()
		defer mu.Unlock()
		var ids []string
		for _, c := range rs.Campaigns {
			ids = append(ids, c.ID)
		}
		campaigns[rs.Version()] = ids
	}
	register(generation(0))
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	for g := 1; g <= rounds; g++ {
		register(generation(g))
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var requests, failures, deadlines atomic.Int64
	errs := make(chan error, 16)
	report := func(err error) {
		failures.Add(1)
		select {
		case errs <- err:
		default:
		}
	}
	for range 4 {
		wg.Go(func() {
			req := request(userCMO)
			req.Ext = &personadpb.BidRequestExt{Debug: true}
			for ctx.Err() == nil {
				resp, err := h.bid.Bid(context.Background(), req)
				requests.Add(1)
				if err != nil {
					report(fmt.Errorf("Bid: %v", err))
					continue
				}
				v := resp.GetExt().GetDebug().GetRulesVersion()
				mu.Lock()
				ids, ok := campaigns[v]
				mu.Unlock()
				if !ok {
					report(fmt.Errorf("response decided by unknown version %q", v))
					continue
				}
				if len(resp.Seatbid) == 0 && resp.Nbr == NbrTechnicalError {
					deadlines.Add(1) // the latency budget ran out (the race detector is slow): a no-bid, not a failure
				} else if len(resp.Seatbid) != 1 || !slices.Contains(ids, resp.Seatbid[0].Bid[0].Cid) {
					report(fmt.Errorf("version %s: chose %v (nbr %d), want one of %v", v, resp.Seatbid, resp.Nbr, ids))
				}
				for _, cd := range resp.GetExt().GetDebug().GetCampaigns() {
					if !slices.Contains(ids, cd.Cid) {
						report(fmt.Errorf("version %s: trace names campaign %s of another version", v, cd.Cid))
					}
				}
			}
		})
	}

	bad := generation(0)
	bad.Campaigns[1].Creatives[0].W = -3
	bad.Campaigns[2].Pacing = "fast"
	badPB := rulespb.ToProto(bad)
	for g := 1; g <= rounds; g++ {
		rs := generation(g)
		want := rs.Version()
		if g%2 == 0 {
			resp, err := h.rules.Apply(ctx, &personadpb.RulesApplyRequest{RuleSet: rulespb.ToProto(rs)})
			if err != nil || resp.Version != want {
				t.Fatalf("Apply generation %d: %v, %v", g, resp, err)
			}
		} else {
			writeRules(t, h.path, rs)
			waitVersion(t, h.mgr, want)
		}
		// An invalid API call and an invalid file leave version g serving.
		_, err := h.rules.Apply(ctx, &personadpb.RulesApplyRequest{RuleSet: badPB})
		checkInvalid(t, err, []string{"campaigns[1].creatives[0].w", "campaigns[2].pacing"})
		if g%5 == 0 {
			n := h.mgr.Status().Outcomes
			if err := os.WriteFile(h.path, []byte("campaigns: [{id: x, bid_cpm: 0}]"), 0o644); err != nil {
				t.Fatal(err)
			}
			waitOutcome(t, h.mgr, n)
		}
		if got := h.eng.Rules().Version(); got != want {
			t.Fatalf("after invalid attempts, generation %d: serving %s, want %s", g, got, want)
		}
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if failures.Load() > 0 || requests.Load() < int64(rounds) {
		t.Errorf("%d of %d requests failed", failures.Load(), requests.Load())
	}
	t.Logf("%d requests over %d reloads, none failed; %d no-bids on the latency budget", requests.Load(), rounds, deadlines.Load())

	got, err := h.rules.Get(context.Background(), &personadpb.RulesGetRequest{IncludeRuleSet: true})
	if err != nil {
		t.Fatal(err)
	}
	if got.LastRejected == nil || len(got.LastRejected.Errors) == 0 || got.Campaigns != 3 {
		t.Errorf("Get: %v", got)
	}
	back := rulespb.FromProto(got.RuleSet)
	if back.Version() != got.Version {
		t.Errorf("Get returned a rule set of version %s, reports %s", back.Version(), got.Version)
	}
}

func waitVersion(t *testing.T, m *reload.Manager, v string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ch := m.Changed()
		if m.Status().Version == v {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for version %s (serving %s)", v, m.Status().Version)
		}
	}
}

func waitOutcome(t *testing.T, m *reload.Manager, after uint64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ch := m.Changed()
		if m.Status().Outcomes > after {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatal("timed out waiting for a reload outcome")
		}
	}
}

// checkInvalid wants INVALID_ARGUMENT with a field violation per path.
func checkInvalid(t *testing.T, err error, paths []string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("invalid Apply: %v, want InvalidArgument", err)
	}
	var got []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				got = append(got, v.Field)
			}
		}
	}
	if !slices.Equal(got, paths) {
		t.Errorf("field violations %v, want %v", got, paths)
	}
}

func TestRulesServiceValidateAndDryRun(t *testing.T) {
	h := newRulesHarness(t)
	ctx := context.Background()
	rs := generation(1)
	rs.Campaigns[0].Targeting.All = append(rs.Campaigns[0].Targeting.All, rules.Clause{Facet: "seniority", Any: []string{"vp"}})
	v, err := h.rules.Validate(ctx, &personadpb.RulesValidateRequest{RuleSet: rulespb.ToProto(rs)})
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Errors) != 0 || len(v.Warnings) != 1 || v.Warnings[0].Path != "campaigns[0].targeting.all[1].facet" || v.Version != rs.Version() {
		t.Errorf("Validate: %v", v)
	}
	rs.Campaigns[0].BidCPM = 0
	v, err = h.rules.Validate(ctx, &personadpb.RulesValidateRequest{RuleSet: rulespb.ToProto(rs)})
	if err != nil || len(v.Errors) != 1 || v.Errors[0].Path != "campaigns[0].bid_cpm" {
		t.Errorf("Validate invalid: %v, %v", v, err)
	}
	if _, err := h.rules.Validate(ctx, &personadpb.RulesValidateRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Validate without rule_set: %v", err)
	}
	before := h.eng.Rules().Version()
	dry, err := h.rules.Apply(ctx, &personadpb.RulesApplyRequest{RuleSet: rulespb.ToProto(generation(1)), DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || len(dry.Diff.CampaignsAdded) != 3 || len(dry.Diff.CampaignsRemoved) != 3 || h.eng.Rules().Version() != before {
		t.Errorf("dry run: %v", dry)
	}
}

// TestRulesApplyLargeDiff: an Apply that replaces a large set answers
// with the first reload.MaxListed ids of each list and counts them all,
// within what a gRPC client accepts by default (4 MB). The active set,
// loaded from the file, has 4,000 campaigns of 10 creatives with long
// ids: listing every removed id would take ~5 MB.
func TestRulesApplyLargeDiff(t *testing.T) {
	h := newRulesHarness(t)
	const campaigns, creatives = 4000, 10
	long := strings.Repeat("x", 100)
	big := &rules.RuleSet{}
	var removed []string
	for i := range campaigns {
		c := rules.Campaign{ID: fmt.Sprintf("c%05d-%s", i, long), BidCPM: 1}
		for k := range creatives {
			id := fmt.Sprintf("%s-%02d", c.ID, k)
			c.Creatives = append(c.Creatives, rules.Creative{ID: id, W: 300, H: 250, Adm: "x"})
			removed = append(removed, id)
		}
		big.Campaigns = append(big.Campaigns, c)
	}
	writeRules(t, h.path, big)
	deadline := time.Now().Add(10 * time.Second)
	for h.mgr.Status().Campaigns != campaigns {
		if time.Now().After(deadline) {
			t.Fatalf("the large set was not loaded: %+v", h.mgr.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	res, err := h.rules.Apply(context.Background(), &personadpb.RulesApplyRequest{RuleSet: rulespb.ToProto(generation(1))})
	if err != nil {
		t.Fatal(err)
	}
	d := res.Diff
	slices.Sort(removed)
	if got, want := d.CreativesRemoved, removed[:reload.MaxListed]; !slices.Equal(got, want) {
		t.Errorf("creatives removed: %d ids from %q, want the first %d from %q", len(got), got[:min(1, len(got))], len(want), want[0])
	}
	if len(d.CampaignsRemoved) != reload.MaxListed || d.CampaignsRemoved[0] != big.Campaigns[0].ID {
		t.Errorf("campaigns removed: %d ids from %q", len(d.CampaignsRemoved), d.CampaignsRemoved[:min(1, len(d.CampaignsRemoved))])
	}
	if d.CampaignsRemovedCount != campaigns || d.CreativesRemovedCount != campaigns*creatives ||
		d.CampaignsAddedCount != 3 || len(d.CampaignsAdded) != 3 || d.CreativesAddedCount != 3 {
		t.Errorf("counts: %d/%d campaigns and %d/%d creatives removed, %d/%d campaigns and %d creatives added",
			d.CampaignsRemovedCount, campaigns, d.CreativesRemovedCount, campaigns*creatives, d.CampaignsAddedCount, len(d.CampaignsAdded), d.CreativesAddedCount)
	}
}

// getEnds signals each call the server has finished: its answer is
// encoded and queued to be sent.
type getEnds struct{ done chan struct{} }

func (*getEnds) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (*getEnds) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (*getEnds) HandleConn(context.Context, stats.ConnStats) {}
func (g *getEnds) HandleRPC(_ context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.End); ok {
		g.done <- struct{}{}
	}
}

// TestRulesGetUnreadShareTheSet: a client that asks Rules/Get for the
// rule set again and again, and never reads the answers, made the server
// hold one encoded copy of the set per request for as long as the
// connection lived (grpc-go holds an answer until the client's flow
// control lets it go): 100 such requests held 2.6 GB for a
// 10,000-campaign set. Now the answers of one version share one
// encoding, and decode as the message Get builds.
func TestRulesGetUnreadShareTheSet(t *testing.T) {
	h := newRulesHarnessOpts(t, grpc.MaxRecvMsgSize(8<<20)) // as personad raises it for rule sets
	rs := generation(1)
	rs.Campaigns[0].Creatives[0].Adm = "<b>" + strings.Repeat("y", 2<<20) + "</b>"
	if _, err := h.rules.Apply(t.Context(), &personadpb.RulesApplyRequest{RuleSet: rulespb.ToProto(rs)}); err != nil {
		t.Fatal(err)
	}
	setSize := proto.Size(rulespb.ToProto(rs))

	// A reading client gets the message Get builds.
	want, err := NewRulesService(h.mgr, nil).Get(t.Context(), &personadpb.RulesGetRequest{IncludeRuleSet: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.rules.Get(t.Context(), &personadpb.RulesGetRequest{IncludeRuleSet: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("Get over gRPC differs from the message Get builds (-want +got):\n%s", diff)
	}

	// A client that never reads: a 64 KiB window per stream, no more.
	const unread = 32
	ends := &getEnds{done: make(chan struct{}, unread)}
	lis := bufconn.Listen(1 << 20)
	gs := h.server.GRPCServer(grpc.StatsHandler(ends))
	RegisterRules(gs, NewRulesService(h.mgr, nil))
	go gs.Serve(lis)
	defer gs.Stop()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(1<<30))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for range unread {
		s, err := conn.NewStream(t.Context(), &grpc.StreamDesc{ServerStreams: true}, personadpb.Rules_Get_FullMethodName)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SendMsg(&personadpb.RulesGetRequest{IncludeRuleSet: true}); err != nil {
			t.Fatal(err)
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
	}
	timeout := time.After(time.Minute)
	for i := range unread {
		select {
		case <-ends.done:
		case <-timeout:
			t.Fatalf("the server finished %d of %d Get calls in a minute", i, unread)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	runtime.KeepAlive(want) // as at m0
	runtime.KeepAlive(got)
	held := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
	if held > int64(8*setSize) {
		t.Errorf("%d unread Get answers of a %d-byte set hold %d bytes, want one copy of the set (at most %d)", unread, setSize, held, 8*setSize)
	}
	t.Logf("%d unread Get answers of a %d-byte set hold %d bytes", unread, setSize, held)
}
