package reload

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/engine"
	"github.com/personad/personad/rules"
)

// counted is d with its Counts set from its lists.
func counted(d Diff) Diff {
	d.Counts = DiffCounts{
		CampaignsAdded: len(d.CampaignsAdded), CampaignsChanged: len(d.CampaignsChanged), CampaignsRemoved: len(d.CampaignsRemoved),
		CreativesAdded: len(d.CreativesAdded), CreativesChanged: len(d.CreativesChanged), CreativesRemoved: len(d.CreativesRemoved),
	}
	return d
}

// lists are d's six lists.
func lists(d *Diff) []*[]string {
	return []*[]string{
		&d.CampaignsAdded, &d.CampaignsChanged, &d.CampaignsRemoved,
		&d.CreativesAdded, &d.CreativesChanged, &d.CreativesRemoved,
	}
}

// TestDiffCounts: a diff without lists (a file reload's) counts what the
// diff with lists lists, and a diff whose lists are capped lists the
// first ids of the full lists and counts them all, for edits of every
// kind: campaigns added, removed and changed, creatives added, removed
// and changed, with and without campaigns moving.
func TestDiffCounts(t *testing.T) {
	gen := func(seed int64) *rules.RuleSet {
		cfg := world.SmallConfig()
		cfg.Seed = seed
		rs, err := world.GenerateRules(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	base, other := gen(1), gen(2)
	edit := func(f func(rs *rules.RuleSet)) *rules.RuleSet {
		rs := &rules.RuleSet{ContentRules: base.ContentRules}
		for _, c := range base.Campaigns {
			c.Creatives = slices.Clone(c.Creatives)
			rs.Campaigns = append(rs.Campaigns, c)
		}
		f(rs)
		return rs
	}
	changeInPlace := func(rs *rules.RuleSet) {
		rs.Campaigns[1].BidCPM++
		rs.Campaigns[2].Creatives[0].W++
		c := &rs.Campaigns[3]
		c.Creatives = append(c.Creatives[1:], rules.Creative{ID: "new-creative", W: 1, H: 1, Adm: "x"})
	}
	cases := map[string][2]*rules.RuleSet{
		"start":     {nil, base},
		"unchanged": {base, base},
		"in place":  {base, edit(changeInPlace)},
		"replaced":  {base, other},
		"everything": {base, edit(func(rs *rules.RuleSet) {
			changeInPlace(rs)
			rs.Campaigns = slices.Delete(rs.Campaigns, 5, 7)
			rs.Campaigns = append(rs.Campaigns, other.Campaigns[:3]...)
			rs.Campaigns[0], rs.Campaigns[8] = rs.Campaigns[8], rs.Campaigns[0]
			rs.ContentRules.BlockedCat = append(rs.ContentRules.BlockedCat, "IAB25")
		})},
	}
	compile := func(rs *rules.RuleSet) *engine.Rules {
		if rs == nil {
			return nil
		}
		r, err := engine.Compile(rs, "test")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for name, c := range cases {
		oldR, newR := compile(c[0]), compile(c[1])
		listed := diff(c[0], oldR, c[1], newR, 1<<30)
		if got := counted(listed); !cmp.Equal(got, listed) {
			t.Errorf("%s: counts %+v, lists %+v", name, listed.Counts, got.Counts)
		}
		for _, l := range lists(&listed) {
			if !slices.IsSorted(*l) {
				t.Errorf("%s: not sorted: %q", name, *l)
			}
		}
		want := Diff{Counts: listed.Counts, ContentRulesChanged: listed.ContentRulesChanged}
		if d := cmp.Diff(want, diff(c[0], oldR, c[1], newR, 0)); d != "" {
			t.Errorf("%s: without lists (-want +got):\n%s", name, d)
		}
		const limit = 2
		want = listed
		for _, l := range lists(&want) {
			*l = (*l)[:min(limit, len(*l))]
		}
		if d := cmp.Diff(want, diff(c[0], oldR, c[1], newR, limit), cmpopts.EquateEmpty()); d != "" {
			t.Errorf("%s: lists capped at %d (-want +got):\n%s", name, limit, d)
		}
		if name == "everything" && (listed.Counts.CampaignsAdded == 0 || listed.Counts.CampaignsRemoved == 0 || listed.Counts.CampaignsChanged == 0 ||
			listed.Counts.CreativesAdded == 0 || listed.Counts.CreativesRemoved == 0 || listed.Counts.CreativesChanged == 0 || !listed.ContentRulesChanged) {
			t.Errorf("%s: the edit should touch every list: %+v", name, listed)
		}
	}
}
