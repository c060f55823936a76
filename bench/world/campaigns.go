package world

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/personad/personad/rules"
)

// GenerateRules makes the world's rule set: cfg.Campaigns campaigns of
// the advertisers above, and the house content rules. Targeting values
// are drawn with the users' skew (a little flatter), so popular personas
// attract more campaigns. It passes rules.(*RuleSet).Validate, its
// delivery warnings name no creative that never serves, a title variant
// is for a title that users of its campaign's seniority hold, and no
// campaign's title and seniority clauses, or industry and sub-industry
// clauses, leave out every user.
func GenerateRules(cfg Config) (*rules.RuleSet, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	g := &campaignGen{
		r:      rand.New(rand.NewPCG(uint64(cfg.Seed), streamRules)),
		facets: Facets(cfg),
	}
	g.skews = map[string]zipf{}
	for f, vals := range g.facets {
		g.skews[f] = newZipf(len(vals), 0.8)
	}
	g.targetable = []weighted{
		{FacetTitle, 35}, {FacetIndustry, 25}, {FacetPainPoint, 20},
		{FacetSeniority, 8}, {FacetCompanySize, 7}, {FacetRegion, 5},
	}
	if _, ok := g.facets[FacetSubIndustry]; ok {
		g.targetable = append(g.targetable, weighted{FacetSubIndustry, 10})
	}
	rs := &rules.RuleSet{ContentRules: contentRules()}
	rs.Campaigns = make([]rules.Campaign, cfg.Campaigns)
	for i := range rs.Campaigns {
		g.campaign(&rs.Campaigns[i], i)
	}
	if err := rs.Validate(); err != nil {
		return nil, fmt.Errorf("world: generated rules are invalid (a generator bug): %w", err)
	}
	return rs, nil
}

// contentRules are the house rules: blocked categories (IAB25 non-standard
// content, IAB26 illegal content) and advertisers, and the domains and app
// bundles whose channel is known.
func contentRules() rules.ContentRules {
	return rules.ContentRules{
		BlockedCat:     []string{"IAB25", "IAB26"},
		BlockedAdomain: []string{blockedAdvertiser.domain, "spammy-leads.example"},
		ChannelMap: []rules.ChannelMapping{
			{Channel: "social", Domains: []string{"linkedin.com", "x.com", "twitter.com", "reddit.com", "facebook.com"},
				Bundles: []string{"com.linkedin.android", "com.twitter.android", "com.reddit.frontpage"}},
			{Channel: "email", Domains: []string{"mail.google.com", "outlook.live.com", "mail.yahoo.com", "proton.me"}},
			{Channel: "video", Domains: []string{"youtube.com", "vimeo.com", "twitch.tv"},
				Bundles: []string{"com.google.android.youtube"}},
			{Channel: "mobile", Bundles: []string{"com.slack", "com.microsoft.teams", "com.salesforce.chatter", "com.hubspot.android"}},
			{Channel: "web", Domains: []string{"techcrunch.com", "hbr.org", "forbes.com", "medium.com"}},
		},
	}
}

// blockedAdvertiser has a campaign in every world whose domain the house
// rules block: a decision's debug trace shows it rejected at "blocked".
var blockedAdvertiser = advertiser{"badco", "BadCo", "badco.example", "BadCo Leads", "IAB3"}

type weighted struct {
	facet  string
	weight int
}

type campaignGen struct {
	r          *rand.Rand
	facets     map[string][]string
	skews      map[string]zipf
	targetable []weighted
}

func (g *campaignGen) chance(p float64) bool { return g.r.Float64() < p }

// pickFacet draws a targetable facet by weight, other than those in used.
func (g *campaignGen) pickFacet(used []string) string {
	total := 0
	for _, w := range g.targetable {
		if !slices.Contains(used, w.facet) {
			total += w.weight
		}
	}
	x := g.r.IntN(total)
	for _, w := range g.targetable {
		if slices.Contains(used, w.facet) {
			continue
		}
		if x -= w.weight; x < 0 {
			return w.facet
		}
	}
	panic("unreachable")
}

// values draws n distinct values of facet, popular ones more often.
func (g *campaignGen) values(facet string, n int) []string {
	vals := g.facets[facet]
	n = min(n, len(vals))
	var out []string
	for len(out) < n {
		v := vals[g.skews[facet].draw(g.r)]
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// subset returns a non-empty random subset of from, in from's order.
func (g *campaignGen) subset(from []string, maxN int) []string {
	n := 1 + g.r.IntN(min(maxN, len(from)))
	picked := g.r.Perm(len(from))[:n]
	slices.Sort(picked)
	out := make([]string, n)
	for i, p := range picked {
		out[i] = from[p]
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func (g *campaignGen) campaign(c *rules.Campaign, i int) {
	r := g.r
	adv := advertisers[r.IntN(len(advertisers))]
	if i%500 == 17 {
		adv = blockedAdvertiser
	}

	// Targeting: 1–3 clauses on different facets.
	nClauses := 1
	switch x := r.IntN(100); {
	case x >= 85:
		nClauses = 3
	case x >= 40:
		nClauses = 2
	}
	var used []string
	for range nClauses {
		f := g.pickFacet(used)
		used = append(used, f)
		n := 1
		if f != FacetSeniority && g.chance(0.45) {
			n = 2 + r.IntN(2)
		}
		c.Targeting.All = append(c.Targeting.All, rules.Clause{Facet: f, Any: g.consistent(c, f, g.values(f, n))})
	}
	if g.chance(0.12) {
		switch f := g.pickFacet(used); f {
		case FacetSeniority:
			c.Targeting.None = []rules.Clause{{Facet: f, Any: []string{"intern"}}}
		case FacetCompanySize:
			c.Targeting.None = []rules.Clause{{Facet: f, Any: []string{"1-10"}}}
		default:
			c.Targeting.None = []rules.Clause{{Facet: f, Any: g.values(f, 1)}}
			// A value that keeps out every user of a kin clause (industry
			// saas, of a campaign for saas-02) gives way, without a draw,
			// to the most popular one that does not.
			for _, v := range g.facets[f] {
				if kinHeld(c, g.facets) {
					break
				}
				c.Targeting.None[0].Any[0] = v
			}
		}
	}
	if g.chance(0.65) {
		c.Targeting.Channels = g.subset(channels, 3)
	}

	// Identity: advertiser, then the first two clauses' first values.
	name := []string{adv.id}
	for _, cl := range c.Targeting.All[:min(2, len(c.Targeting.All))] {
		name = append(name, cl.Any[0])
	}
	c.ID = fmt.Sprintf("%s-%04d", strings.Join(name, "-"), i+1)
	c.Advertiser = adv.id
	c.Adomain = []string{adv.domain}
	c.Currency = "USD"
	c.Cat = []string{adv.cat}
	if g.chance(0.25) {
		c.Cat = append(c.Cat, extraCats[r.IntN(len(extraCats))])
	}

	// Status and flight, around the fixed Epoch.
	if g.chance(0.03) {
		c.Status = rules.StatusPaused
	} else {
		c.Status = rules.StatusActive
	}
	day := func(t time.Time) string { return t.Format(time.RFC3339) }
	switch x := r.IntN(100); {
	case x < 4: // ended before the epoch
		end := Epoch.AddDate(0, -1-r.IntN(5), 0)
		c.Start, c.End = day(end.AddDate(0, -3, 0)), day(end)
	case x < 7: // starts years after it
		start := Epoch.AddDate(5, r.IntN(12), 0)
		c.Start, c.End = day(start), day(start.AddDate(1, 0, 0))
	case x < 35: // a long window around it
		c.Start, c.End = day(Epoch.AddDate(0, -5, 0)), day(Epoch.AddDate(4, 7, 0))
	}

	// Money: priority mostly 10, bids 0.50–15.00 skewed low, budgets.
	c.Priority = ptr(int32(rules.DefaultPriority))
	if g.chance(0.15) {
		c.Priority = ptr(int32(1 + r.IntN(9)))
	}
	c.BidCPM = math.Round((0.5+14.5*math.Pow(r.Float64(), 2))*100) / 100
	daily := []float64{100, 250, 500, 1000, 2500, 5000}[r.IntN(6)]
	c.Budget = rules.Budget{Daily: daily, Total: daily * float64(30+30*r.IntN(4))}
	c.Pacing = rules.PacingEven
	if g.chance(0.2) {
		c.Pacing = rules.PacingASAP
	}
	if g.chance(0.7) {
		c.FrequencyCap = rules.FrequencyCap{Max: int32(1 + r.IntN(5)), Window: []string{"24h", "12h", "168h"}[r.IntN(3)]}
	}

	g.creatives(c, adv)
}

// creatives writes 2–6 creatives: the first generic (no persona), later
// ones often a variant for one persona of the campaign's audience, each in
// a real size and written long for web and email, short for social and
// mobile.
func (g *campaignGen) creatives(c *rules.Campaign, adv advertiser) {
	r := g.r
	n := 2 + r.IntN(5)
	seen := map[string]bool{}
	for j := range n {
		cr := rules.Creative{}
		sz := sizes[r.IntN(len(sizes))]
		cr.W, cr.H = sz.w, sz.h
		// Channels: the size's channels the campaign runs on.
		allowed := sz.channels
		if len(c.Targeting.Channels) > 0 {
			allowed = slices.DeleteFunc(slices.Clone(sz.channels), func(ch string) bool {
				return !slices.Contains(c.Targeting.Channels, ch)
			})
		}
		if len(allowed) > 0 && g.chance(0.5) {
			cr.Channels = g.subset(allowed, 2)
		}
		// Persona variant: a title or pain point the campaign cares about.
		if j > 0 && g.chance(0.45) {
			f := FacetTitle
			if g.chance(0.3) {
				f = FacetPainPoint
			}
			v, from := g.values(f, 1)[0], g.facets[f]
			for _, cl := range c.Targeting.All {
				if cl.Facet == f {
					v, from = cl.Any[r.IntN(len(cl.Any))], cl.Any
				}
			}
			v = g.reachable(c, f, v, from)
			cr.Persona = []rules.Clause{{Facet: f, Any: []string{v}}}
		}
		suffix := fmt.Sprintf("%dx%d", cr.W, cr.H)
		if len(cr.Persona) > 0 {
			suffix += "-" + cr.Persona[0].Any[0]
		}
		cr.ID = c.ID + "-" + suffix
		for k := 2; seen[cr.ID]; k++ {
			cr.ID = fmt.Sprintf("%s-%s-%d", c.ID, suffix, k)
		}
		seen[cr.ID] = true
		if g.chance(0.1) {
			cr.Cat = []string{adv.cat, extraCats[r.IntN(len(extraCats))]}
		}
		cr.Adm = g.adm(c, &cr, adv)
		c.Creatives = append(c.Creatives, cr)
	}
}

// kin are the pairs of facets whose values go together in a user: the
// seniority follows from the title, and the sub-industry is one of the
// industry's. parents returns the values of the parent facet a user
// holding value v of the child can hold, the implied one first.
var kin = []struct {
	child, parent string
	parents       func(v string) []string
}{
	{FacetTitle, FacetSeniority, senioritiesOf},
	{FacetSubIndustry, FacetIndustry, func(v string) []string { return []string{industryOf(v)} }},
}

// kinHeld reports whether some user can pass campaign c's clauses on
// each pair of kin facets the world has, facets holding their values.
func kinHeld(c *rules.Campaign, facets map[string][]string) bool {
	for _, k := range kin {
		if len(facets[k.child]) > 0 && !slices.ContainsFunc(facets[k.child], func(v string) bool {
			return admits(c, k.child, v) && slices.ContainsFunc(k.parents(v), func(p string) bool { return admits(c, k.parent, p) })
		}) {
			return false
		}
	}
	return true
}

// consistent returns vals, the values drawn for campaign c's next
// targeting clause, on facet, unless c's earlier clause on its kin facet
// leaves no user holding any of them: a title clause naming no title of
// an earlier seniority clause's seniority, or a seniority clause none of
// an earlier title clause's titles goes with (a campaign for individual
// contributors targeting CMOs, which no user can match); the same of
// industry and sub-industry. Then, without a draw, so that the rest of
// the world stays as it was, it returns as many values as were drawn (as
// many as there are): of a parent facet, those the earlier clause's
// values imply, its first value's first (the one the campaign's id and
// markup name); of a child facet, the most popular of those that go with
// the earlier clause's values. A clause that names at least one value
// users of the earlier clause hold is kept as drawn.
func (g *campaignGen) consistent(c *rules.Campaign, facet string, vals []string) []string {
	for _, k := range kin {
		other := k.parent
		switch facet {
		case k.child:
		case k.parent:
			other = k.child
		default:
			continue
		}
		i := slices.IndexFunc(c.Targeting.All, func(cl rules.Clause) bool { return cl.Facet == other })
		if i < 0 {
			return vals
		}
		earlier := c.Targeting.All[i].Any
		held := func(child, parent string) bool { return slices.Contains(k.parents(child), parent) }
		for _, v := range vals {
			for _, e := range earlier {
				if facet == k.child && held(v, e) || facet == k.parent && held(e, v) {
					return vals
				}
			}
		}
		var out []string
		if facet == k.parent {
			for _, e := range earlier {
				if p := k.parents(e)[0]; !slices.Contains(out, p) && len(out) < len(vals) {
					out = append(out, p)
				}
			}
			return out
		}
		for _, v := range g.facets[facet] {
			if slices.ContainsFunc(earlier, func(e string) bool { return held(v, e) }) && len(out) < len(vals) {
				out = append(out, v)
			}
		}
		return out
	}
	return vals
}

// reachable returns v, a value of facet drawn for a creative's persona,
// unless no user campaign c targets can hold it: a value its
// targeting.none excludes (rules.DeliveryWarnings warns the creative
// never serves), or a title none of the seniorities its targeting admits
// goes with (a marketing-specialist variant of a campaign for c-level
// users, which only a bid request carrying its own segments can reach).
// Then it returns the most popular value of from, the values v was drawn
// from, that users of the targeting can hold, without a draw, so that the
// rest of the world stays as it was. When none can (a campaign whose
// title clause names no title of its seniority clause's, so no user at
// all), v is kept.
func (g *campaignGen) reachable(c *rules.Campaign, facet, v string, from []string) string {
	can := func(v string) bool {
		return admits(c, facet, v) && (facet != FacetTitle || slices.ContainsFunc(senioritiesOf(v), func(s string) bool {
			return admits(c, FacetSeniority, s)
		}))
	}
	if can(v) {
		return v
	}
	// from is the facet's values, or a targeting clause's in the order
	// drawn: go by the facet's, the popularity order.
	for _, p := range g.facets[facet] {
		if slices.Contains(from, p) && can(p) {
			return p
		}
	}
	return v
}

// admits reports whether campaign c's targeting lets a user with value v
// of facet through, as far as that facet's clauses tell.
func admits(c *rules.Campaign, facet, v string) bool {
	for _, cl := range c.Targeting.All {
		if cl.Facet == facet && !slices.Contains(cl.Any, v) {
			return false
		}
	}
	for _, cl := range c.Targeting.None {
		if cl.Facet == facet && slices.Contains(cl.Any, v) {
			return false
		}
	}
	return true
}

type advertiser = struct{ id, name, domain, product, cat string }

// adm writes the creative's markup: a headline for its audience, the
// benefit for its pain point, a call to action, and an impression pixel
// carrying ${AUCTION_PRICE} for the exchange to fill in.
func (g *campaignGen) adm(c *rules.Campaign, cr *rules.Creative, adv advertiser) string {
	audience, benefit, industry := "B2B teams", "", ""
	clauses := append(slices.Clone(cr.Persona), c.Targeting.All...)
	for _, cl := range slices.Backward(clauses) { // the persona last: it wins
		v := cl.Any[0]
		switch cl.Facet {
		case FacetTitle:
			audience = titles[slices.IndexFunc(titles, func(t titleInfo) bool { return t.value == v })].audience
		case FacetPainPoint:
			benefit = painPoints[slices.IndexFunc(painPoints, func(p painInfo) bool { return p.value == v })].benefit
		case FacetIndustry:
			industry = industries[slices.IndexFunc(industries, func(i industryInfo) bool { return i.value == v })].label
		}
	}
	if benefit == "" {
		benefit = painPoints[len(adv.id)%len(painPoints)].benefit
	}
	cta := ctas[g.r.IntN(len(ctas))]
	link := fmt.Sprintf("https://www.%s/demo?utm_source=personad&amp;utm_campaign=%s&amp;utm_content=%s", adv.domain, c.ID, cr.ID)
	pixel := fmt.Sprintf(`<img src="https://t.%s/i?cr=%s&amp;p=${AUCTION_PRICE}" width="1" height="1" alt="">`, adv.domain, cr.ID)
	short := cr.H <= 90 && cr.W <= 320 || cr.W == 300 && slices.ContainsFunc(cr.Channels, func(ch string) bool { return ch == "social" || ch == "mobile" })
	if short {
		return fmt.Sprintf(`<div class="ad ad-short">%s for %s: %s. <a href="%s">%s</a>%s</div>`,
			adv.product, audience, benefit, link, cta, pixel)
	}
	proof := "Trusted by 2,000 B2B teams"
	if industry != "" {
		proof = fmt.Sprintf("Trusted by %s teams from startups to the Fortune 500", industry)
	}
	return fmt.Sprintf(`<div class="ad ad-long" style="width:%dpx;height:%dpx"><h3>%s for %s</h3><p>%s with %s. %s.</p><a class="cta" href="%s">%s</a>%s</div>`,
		cr.W, cr.H, adv.product, audience, upperFirst(benefit), adv.name, proof, link, cta, pixel)
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
