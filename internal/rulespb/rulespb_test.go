package rulespb

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/personad/personad/bench/world"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/rules"
)

// designExample is DESIGN.md's rules file, with a channel map.
const designExample = `
campaigns:
  - id: acme-cmo-fintech
    advertiser: acme
    adomain: [acme.com]
    status: active
    start: "2026-01-01T00:00:00Z"
    end: "2027-01-01T00:00:00Z"
    priority: 5
    bid_cpm: 4.50
    currency: USD
    budget: {daily: 500, total: 10000}
    pacing: even
    frequency_cap: {max: 3, window: 24h}
    cat: [IAB19]
    targeting:
      all:
        - {facet: title, any: [cmo, vp-marketing]}
        - {facet: industry, any: [fintech]}
      none:
        - {facet: pain_point, any: [churn]}
      channels: [social, web]
    creatives:
      - id: cr-cmo-300x250
        w: 300
        h: 250
        channels: [social]
        cat: [IAB19]
        persona:
          - {facet: title, any: [cmo]}
        adm: "<div>${AUCTION_PRICE}</div>"
content_rules:
  blocked_cat: [IAB25, IAB26]
  blocked_adomain: [badco.example]
  channel_map:
    - {channel: social, domains: [linkedin.com, x.com], bundles: [com.linkedin.android]}
`

// TestRoundTrip: a rule set survives ToProto then FromProto unchanged.
func TestRoundTrip(t *testing.T) {
	rs, err := rules.Parse("t", []byte(designExample))
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
	rs, err := rules.Parse("t", []byte(designExample))
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
