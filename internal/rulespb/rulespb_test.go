package rulespb

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/personad/personad/bench/world"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/rules"
)

// designExample is DESIGN.md's rules file, as the rules package's tests
// hold it.
func designExample(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "rules", "testdata", "design.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRoundTrip: a rule set survives ToProto then FromProto unchanged.
func TestRoundTrip(t *testing.T) {
	rs, err := rules.Parse("t", designExample(t))
	if err != nil {
		t.Fatal(err)
	}
	back := FromProto(ToProto(rs))
	if back.Version() != rs.Version() {
		t.Errorf("round trip changed the set:\n%+v\n%+v", back, rs)
	}
	if FromProto(nil) == nil || len(FromProto(nil).Campaigns) != 0 {
		t.Error("FromProto(nil) is not an empty set")
	}
}

// FuzzRuleSetConversion checks the direct proto <-> rules conversion
// against the reference route through proto JSON, on any RuleSet message.
func FuzzRuleSetConversion(f *testing.F) {
	cfg := world.ReferenceConfig()
	cfg.Campaigns = 5
	gen, err := world.GenerateRules(cfg)
	if err != nil {
		f.Fatal(err)
	}
	seed, _ := proto.Marshal(ToProto(gen))
	f.Add(seed)
	rs, err := rules.Parse("t", designExample(f))
	if err != nil {
		f.Fatal(err)
	}
	seed, _ = proto.Marshal(ToProto(rs))
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		var pb personadpb.RuleSet
		if proto.Unmarshal(data, &pb) != nil {
			return
		}
		direct := FromProto(&pb)
		js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(&pb)
		if err != nil {
			return // e.g. invalid UTF-8: protojson refuses, so does the wire
		}
		viaJSON, err := rules.Parse("proto", js)
		if err != nil {
			return // NaN and Inf have no JSON form; the direct route keeps them and Validate rejects them
		}
		if direct.Version() != viaJSON.Version() {
			t.Fatalf("direct and JSON conversions differ:\n%+v\n%+v", direct, viaJSON)
		}
		back := ToProto(direct)
		if !proto.Equal(normalize(back), normalize(&pb)) {
			t.Fatalf("rules -> proto changed the message:\n%v\n%v", back, &pb)
		}
	})
}

// normalize drops unknown fields and the empty sub-messages that have no
// rules form.
func normalize(pb *personadpb.RuleSet) *personadpb.RuleSet {
	data, err := proto.Marshal(pb)
	if err != nil {
		panic(err)
	}
	pb = &personadpb.RuleSet{}
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, pb); err != nil {
		panic(err)
	}
	for _, c := range pb.Campaigns {
		if proto.Equal(c.Budget, &personadpb.Budget{}) {
			c.Budget = nil
		}
		if proto.Equal(c.FrequencyCap, &personadpb.FrequencyCap{}) {
			c.FrequencyCap = nil
		}
		if proto.Equal(c.Targeting, &personadpb.Targeting{}) {
			c.Targeting = nil
		}
	}
	if proto.Equal(pb.ContentRules, &personadpb.ContentRules{}) {
		pb.ContentRules = nil
	}
	return pb
}
