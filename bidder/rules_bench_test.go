package bidder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/engine"
	"github.com/personad/personad/internal/rulespb"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/reload"
)

// BenchmarkRulesApply measures the Rules service's Apply path for 10,000
// generated campaigns, from the request's wire bytes: decode is
// proto.Unmarshal of the request (grpc-go's codec), decode-parallel the
// server's codec (campaigns decoded on every CPU, rulescodec.go), convert is
// the proto -> rules.RuleSet conversion, and apply is both plus
// reload.Manager.Apply — validate, compile, diff, warnings, swap — with
// the compile cache off and two different rule sets applied in turn, so
// every campaign is compiled every time (cold); apply+persist also writes
// each set to the data dir, as a server does.
func BenchmarkRulesApply(b *testing.B) {
	const n = 10_000
	var reqs [2][]byte
	for i := range reqs {
		cfg := world.ReferenceConfig()
		cfg.Campaigns, cfg.Seed = n, int64(i+1)
		rs, err := world.GenerateRules(cfg)
		if err != nil {
			b.Fatal(err)
		}
		if reqs[i], err = proto.Marshal(&personadpb.RulesApplyRequest{RuleSet: rulespb.ToProto(rs)}); err != nil {
			b.Fatal(err)
		}
	}
	decode := func(b *testing.B, data []byte) *personadpb.RulesApplyRequest {
		var req personadpb.RulesApplyRequest
		if err := unmarshalRulesRequest(data, &req); err != nil {
			b.Fatal(err)
		}
		return &req
	}
	b.Run(fmt.Sprintf("campaigns=%d/decode", n), func(b *testing.B) {
		b.SetBytes(int64(len(reqs[0])))
		b.ReportAllocs()
		for b.Loop() {
			var req personadpb.RulesApplyRequest
			if err := proto.Unmarshal(reqs[0], &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(fmt.Sprintf("campaigns=%d/decode-parallel", n), func(b *testing.B) {
		b.SetBytes(int64(len(reqs[0])))
		b.ReportAllocs()
		for b.Loop() {
			decode(b, reqs[0])
		}
	})
	b.Run(fmt.Sprintf("campaigns=%d/convert", n), func(b *testing.B) {
		req := decode(b, reqs[0])
		b.ReportAllocs()
		for b.Loop() {
			if rs := rulespb.FromProto(req.RuleSet); len(rs.Campaigns) != n {
				b.Fatalf("%d campaigns", len(rs.Campaigns))
			}
		}
	})
	for _, persist := range []bool{false, true} {
		name := "apply"
		if persist {
			name = "apply+persist"
		}
		b.Run(fmt.Sprintf("campaigns=%d/%s", n, name), func(b *testing.B) {
			benchApply(b, persist, n, reqs, decode)
		})
	}
}

// benchApply is BenchmarkRulesApply's apply: with persist, the manager has
// a data dir, so each apply also writes the set there durably (what a
// server with --data-dir does) before it swaps.
func benchApply(b *testing.B, persist bool, n int, reqs [2][]byte, decode func(*testing.B, []byte) *personadpb.RulesApplyRequest) {
	eng, err := engine.New(engine.Config{}, testSegments())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(eng.Close)
	comp, err := engine.NewCompiler(engine.CompilerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(comp.Close)
	// Started from an empty rules file, not watched.
	path := filepath.Join(b.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	rcfg := reload.DefaultConfig()
	rcfg.Engine, rcfg.Compiler, rcfg.Path, rcfg.NoWatch, rcfg.Segments = eng, comp, path, true, testSegments()
	if persist {
		rcfg.DataDir = b.TempDir()
	}
	mgr, err := reload.New(rcfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { mgr.Close() })
	svc := NewRulesService(mgr, nil)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req := decode(b, reqs[i%2])
		req.DryRun = false
		i++
		res, err := svc.Apply(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if res.Unchanged || int(res.Campaigns) != n {
			b.Fatalf("apply: %v", res)
		}
	}
}
