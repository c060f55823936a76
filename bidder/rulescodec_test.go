package bidder

import (
	"bytes"
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/internal/rulespb"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

// TestRulesRequestFields: the field numbers rulescodec.go cuts by hand are
// the descriptors'.
func TestRulesRequestFields(t *testing.T) {
	for _, m := range []proto.Message{&personadpb.RulesApplyRequest{}, &personadpb.RulesValidateRequest{}} {
		f := m.ProtoReflect().Descriptor().Fields().ByName("rule_set")
		if f == nil || int(f.Number()) != requestRuleSetField || f.Message().FullName() != "personad.v1.RuleSet" {
			t.Errorf("%T: rule_set is %v, want field %d of type RuleSet", m, f, requestRuleSetField)
		}
	}
	f := (&personadpb.RuleSet{}).ProtoReflect().Descriptor().Fields().ByName("campaigns")
	if f == nil || int(f.Number()) != ruleSetCampaignsField || !f.IsList() {
		t.Errorf("RuleSet.campaigns is %v, want repeated field %d", f, ruleSetCampaignsField)
	}
	f = (&personadpb.RulesGetResponse{}).ProtoReflect().Descriptor().Fields().ByName("rule_set")
	if f == nil || int(f.Number()) != getRuleSetField || f.IsList() || f.Message().FullName() != "personad.v1.RuleSet" {
		t.Errorf("RulesGetResponse.rule_set is %v, want field %d of type RuleSet", f, getRuleSetField)
	}
}

// worldRequest is an Apply request for n generated campaigns.
func worldRequest(t testing.TB, n int) []byte {
	t.Helper()
	cfg := world.ReferenceConfig()
	cfg.Campaigns = n
	rs, err := world.GenerateRules(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(&personadpb.RulesApplyRequest{RuleSet: rulespb.ToProto(rs), DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzUnmarshalRulesRequest: the parallel decode of a Rules request is
// proto.Unmarshal's, for any bytes: the same error or none, and the same
// message.
func FuzzUnmarshalRulesRequest(f *testing.F) {
	small, _ := proto.Marshal(&personadpb.RulesApplyRequest{RuleSet: rulespb.ToProto(generation(1))})
	world := worldRequest(f, 5)
	f.Add(small)
	f.Add(world)
	f.Add(append(append([]byte{}, small...), world...)) // rule_set twice: merged
	f.Add(append([]byte{0x10, 0x01}, small...))         // dry_run first
	f.Add([]byte{0x08, 0x01})                           // field 1 as a varint: unknown
	f.Add([]byte{0x0a, 0x02, 0x08, 0x01})               // campaigns as a varint inside
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x03, 0x0a, 0x01})   // a campaign cut short
	f.Add([]byte{0x0a, 0x00, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, pair := range [][2]rulesRequest{
			{&personadpb.RulesApplyRequest{}, &personadpb.RulesApplyRequest{}},
			{&personadpb.RulesValidateRequest{}, &personadpb.RulesValidateRequest{}},
		} {
			want, got := pair[0], pair[1]
			werr := proto.Unmarshal(data, want)
			gerr := unmarshalRulesRequest(data, got)
			if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
				t.Fatalf("%T: error %v, proto.Unmarshal's %v", got, gerr, werr)
			}
			if werr != nil {
				continue
			}
			// Compared as deterministic wire bytes: proto.Equal calls a NaN
			// unequal to itself.
			opts := proto.MarshalOptions{Deterministic: true}
			wb, err1 := opts.Marshal(want)
			gb, err2 := opts.Marshal(got)
			if err1 != nil || err2 != nil || !bytes.Equal(wb, gb) || (want.GetRuleSet() == nil) != (got.GetRuleSet() == nil) {
				t.Fatalf("%T: decoded differently:\n got  %v\n want %v", got, got, want)
			}
		}
	})
}

// TestRulesApplyLargeOverGRPC: an Apply large enough for the parallel
// decode, through the server's codec, applies the set that was sent.
func TestRulesApplyLargeOverGRPC(t *testing.T) {
	h := newRulesHarness(t)
	cfg := world.ReferenceConfig()
	cfg.Campaigns = 200
	rs, err := world.GenerateRules(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req := &personadpb.RulesApplyRequest{RuleSet: rulespb.ToProto(rs)}
	if n := proto.Size(req); n < parallelDecodeMin {
		t.Fatalf("request of %d bytes, want at least %d to take the parallel decode", n, parallelDecodeMin)
	}
	res, err := h.rules.Apply(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != rs.Version() || int(res.Campaigns) != len(rs.Campaigns) {
		t.Errorf("applied version %s with %d campaigns, want %s with %d", res.Version, res.Campaigns, rs.Version(), len(rs.Campaigns))
	}
}
