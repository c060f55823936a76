package engine

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

// TestInvariantMatrix compares the engine with an oracle written straight
// from DESIGN.md's choice rule over random worlds built to collide: few
// facet values, tied prices and tiers, shared sizes, overlapping blocks.
// The oracle scans every campaign with no index, so any disagreement is a
// bug in compilation, the index, the filters or the ranking.
func TestInvariantMatrix(t *testing.T) {
	seeds := 20
	if testing.Short() {
		seeds = 4
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			w := randomWorld(rng)
			if err := w.rules.Validate(); err != nil {
				t.Fatalf("generated rules invalid: %v", err)
			}
			compiled, err := Compile(w.rules, "")
			if err != nil {
				t.Fatal(err)
			}
			for _, cache := range []int64{0, 4096} {
				e := newTestEngine(t, compiled, w.snap, cache)
				var d Decision
				for i := range 1500 {
					q := w.query(rng)
					e.Decide(context.Background(), q, &d)
					got := bidsOf(q, &d)
					want := w.oracle(q)
					if diff := gocmp.Diff(want, got); diff != "" {
						t.Fatalf("query %d (cache %d) %+v: engine disagrees with oracle (-oracle +engine):\n%s", i, cache, q, diff)
					}
					if len(got) == 0 && d.NoBid == ReasonNone {
						t.Fatalf("query %d: no bid without a reason", i)
					}
				}
			}
		})
	}
}

type chosen struct{ Imp, Campaign, Creative string }

func bidsOf(q *Query, d *Decision) []chosen {
	var out []chosen
	for _, b := range d.Bids {
		out = append(out, chosen{q.Imps[b.Imp].ID, b.Campaign.ID, b.Creative.ID})
	}
	return out
}

type rworld struct {
	rules   *rules.RuleSet
	snap    *segments.Snapshot
	members map[string][]Fact // user -> uploaded facts
	users   []string
	facets  map[string][]string
}

var (
	rwSizes    = []Size{{300, 250}, {728, 90}, {160, 600}}
	rwChannels = []string{"social", "web", "email"}
	rwCats     = []string{"IAB1", "IAB1-2", "IAB3", "IAB9-7", "IAB19"}
	rwDomains  = []string{"a.com", "b.com", "x.a.com", "c.org"}
)

func pick[T any](rng *rand.Rand, s []T) T { return s[rng.IntN(len(s))] }

func pickSome[T any](rng *rand.Rand, s []T, max int) []T {
	n := rng.IntN(max + 1)
	out := make([]T, 0, n)
	for range n {
		out = append(out, pick(rng, s))
	}
	return out
}

func randomWorld(rng *rand.Rand) *rworld {
	w := &rworld{
		members: map[string][]Fact{},
		facets: map[string][]string{
			"title":     {"cmo", "cfo", "cto", "intern"},
			"industry":  {"fintech", "health", "retail"},
			"seniority": {"vp", "director", "manager"},
		},
	}
	facetNames := []string{"title", "industry", "seniority"}
	clause := func() rules.Clause {
		f := pick(rng, facetNames)
		return rules.Clause{Facet: f, Any: pickSome(rng, w.facets[f], 2)}
	}
	clauses := func(max int) []rules.Clause {
		var cs []rules.Clause
		for range rng.IntN(max + 1) {
			c := clause()
			if len(c.Any) > 0 {
				cs = append(cs, c)
			}
		}
		return cs
	}
	base := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	rs := &rules.RuleSet{}
	crid := 0
	for i := range 40 {
		c := rules.Campaign{
			ID:      fmt.Sprintf("c%02d", i),
			Adomain: pickSome(rng, rwDomains, 1),
			BidCPM:  float64(1 + rng.IntN(4)),
			Cat:     pickSome(rng, rwCats, 1),
		}
		if rng.IntN(3) == 0 {
			p := int32(rng.IntN(3))
			c.Priority = &p
		}
		if rng.IntN(10) == 0 {
			c.Status = rules.StatusPaused
		}
		if rng.IntN(8) == 0 {
			c.Currency = "EUR"
		}
		if rng.IntN(6) == 0 {
			c.Start = base.Add(time.Duration(rng.IntN(48)-24) * time.Hour).Format(time.RFC3339)
			c.End = base.Add(time.Duration(rng.IntN(48)+25) * time.Hour).Format(time.RFC3339)
		}
		c.Targeting.All = clauses(3)
		c.Targeting.None = clauses(1)
		c.Targeting.Channels = pickSome(rng, rwChannels, 2)
		for range 1 + rng.IntN(4) {
			sz := pick(rng, rwSizes)
			cr := rules.Creative{
				ID: fmt.Sprintf("cr%03d", crid), W: sz.W, H: sz.H, Adm: "<b>ad ${AUCTION_PRICE}</b>",
				Channels: pickSome(rng, rwChannels, 1),
				Persona:  clauses(1),
			}
			if rng.IntN(5) == 0 {
				cr.Cat = pickSome(rng, rwCats, 1)
			}
			crid++
			c.Creatives = append(c.Creatives, cr)
		}
		rs.Campaigns = append(rs.Campaigns, c)
	}
	rs.ContentRules.BlockedCat = pickSome(rng, rwCats, 1)
	rs.ContentRules.BlockedAdomain = pickSome(rng, rwDomains, 1)
	rs.ContentRules.ChannelMap = []rules.ChannelMapping{{Channel: "social", Domains: []string{"linkedin.com"}}, {Channel: "email", Bundles: []string{"com.mail"}}}
	w.rules = rs

	b := segments.NewBuilder()
	for u := range 30 {
		id := fmt.Sprintf("u%d", u)
		w.users = append(w.users, id)
		for _, f := range facetNames {
			for _, v := range w.facets[f] {
				if rng.IntN(3) == 0 {
					b.Add(f, v, id)
					w.members[id] = append(w.members[id], Fact{f, v})
				}
			}
		}
	}
	w.snap = b.Build(1)
	return w
}

func (w *rworld) query(rng *rand.Rand) *Query {
	q := &Query{Now: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.IntN(96)-48) * time.Hour)}
	switch rng.IntN(4) {
	case 0:
		q.BuyerUID = pick(rng, w.users)
	case 1:
		q.BuyerUID, q.UserID = "unknown", pick(rng, w.users)
	case 2:
		q.UserID = "nobody"
	}
	for range rng.IntN(3) {
		f := pick(rng, []string{"title", "industry", "seniority", "region"})
		vals := append(w.facets[f], "other")
		q.Facts = append(q.Facts, Fact{f, pick(rng, vals)})
	}
	switch rng.IntN(5) {
	case 0:
		q.Channel = pick(rng, rwChannels)
	case 1:
		q.Channel = "video"
	case 2:
		q.Domain = "www.linkedin.com"
	case 3:
		q.App, q.Bundle = true, pick(rng, []string{"com.mail", "com.game"})
	}
	for i := range 1 + rng.IntN(3) {
		imp := Imp{ID: fmt.Sprint(i + 1), Sizes: pickSome(rng, rwSizes, 2)}
		if rng.IntN(3) == 0 {
			imp.FloorMicros = int64(rng.IntN(4)) * 1e6
		}
		if rng.IntN(10) == 0 {
			imp.FloorCur = "EUR"
		}
		q.Imps = append(q.Imps, imp)
	}
	q.BCat = pickSome(rng, []string{"IAB1", "IAB9", "IAB19-1", "IAB3"}, 1)
	q.BAdv = pickSome(rng, append(rwDomains, "a.com"), 1)
	if rng.IntN(6) == 0 {
		q.Currencies = pick(rng, [][]string{{"USD"}, {"EUR"}, {"EUR", "USD"}})
	}
	return q
}

// oracle decides q by DESIGN.md's words, scanning every campaign.
func (w *rworld) oracle(q *Query) []chosen {
	persona := map[Fact]bool{}
	user := ""
	if _, ok := w.members[q.BuyerUID]; ok {
		user = q.BuyerUID
	} else if _, ok := w.members[q.UserID]; ok {
		user = q.UserID
	}
	for _, f := range w.members[user] {
		persona[f] = true
	}
	for _, f := range q.Facts {
		persona[f] = true
	}
	holdsAll := func(cs []rules.Clause) bool {
		for _, c := range cs {
			ok := false
			for _, v := range c.Any {
				ok = ok || persona[Fact{c.Facet, v}]
			}
			if !ok {
				return false
			}
		}
		return true
	}
	matchesAny := func(cs []rules.Clause) bool {
		for _, c := range cs {
			for _, v := range c.Any {
				if persona[Fact{c.Facet, v}] {
					return true
				}
			}
		}
		return false
	}
	channel := q.Channel
	if channel == "" {
		channel = "web"
		if q.App {
			channel = "app"
		}
		for _, m := range w.rules.ContentRules.ChannelMap {
			if (!q.App && slices.Contains(m.Domains, strings.TrimPrefix(q.Domain, "www."))) ||
				(q.App && slices.Contains(m.Bundles, q.Bundle)) {
				channel = m.Channel
			}
		}
	}
	allows := func(chs []string) bool { return len(chs) == 0 || slices.Contains(chs, channel) }
	blocked := func(cats, adomain []string) bool {
		for _, b := range append(slices.Clone(w.rules.ContentRules.BlockedCat), q.BCat...) {
			for _, c := range cats {
				if c == b || len(c) > len(b) && c[:len(b)+1] == b+"-" {
					return true
				}
			}
		}
		for _, b := range append(slices.Clone(w.rules.ContentRules.BlockedAdomain), q.BAdv...) {
			for _, d := range adomain {
				if d == b || len(d) > len(b) && d[len(d)-len(b)-1:] == "."+b {
					return true
				}
			}
		}
		return false
	}
	camps := slices.Clone(w.rules.Campaigns)
	slices.SortStableFunc(camps, func(a, b rules.Campaign) int {
		return cmp.Or(cmp.Compare(a.EffectivePriority(), b.EffectivePriority()),
			cmp.Compare(b.BidCPM, a.BidCPM),
			cmp.Compare(len(b.Targeting.All), len(a.Targeting.All)),
			cmp.Compare(a.ID, b.ID))
	})
	accepted := q.Currencies
	if len(accepted) == 0 {
		accepted = []string{"USD"}
	}
	used := map[string]bool{}
	var out []chosen
	var respCur string
	for _, imp := range q.Imps {
		for _, c := range camps {
			start, end := c.Flight()
			if len(out) > 0 && c.EffectiveCurrency() != respCur {
				continue // one response, one currency: the first bid's
			}
			if used[c.ID] || !c.Active() ||
				(!start.IsZero() && q.Now.Before(start)) || (!end.IsZero() && !q.Now.Before(end)) ||
				!holdsAll(c.Targeting.All) || matchesAny(c.Targeting.None) || !allows(c.Targeting.Channels) ||
				!slices.Contains(accepted, c.EffectiveCurrency()) {
				continue
			}
			if imp.FloorMicros > 0 && (cmp.Or(imp.FloorCur, "USD") != c.EffectiveCurrency() || rules.Micros(c.BidCPM) < imp.FloorMicros) {
				continue
			}
			var pickCr *rules.Creative
			for _, personaFirst := range []bool{true, false} {
				for i := range c.Creatives {
					cr := &c.Creatives[i]
					cat := cr.Cat
					if len(cat) == 0 {
						cat = c.Cat
					}
					if (len(cr.Persona) > 0) != personaFirst || !slices.Contains(imp.Sizes, Size{cr.W, cr.H}) ||
						!allows(cr.Channels) || !holdsAll(cr.Persona) || blocked(cat, c.Adomain) {
						continue
					}
					pickCr = cr
					break
				}
				if pickCr != nil {
					break
				}
			}
			if pickCr != nil {
				if len(out) == 0 {
					respCur = c.EffectiveCurrency()
				}
				used[c.ID] = true
				out = append(out, chosen{imp.ID, c.ID, pickCr.ID})
				break
			}
		}
	}
	return out
}
