package rules

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
)

// ValidationError is one problem in a rule set, at a field path such as
// "campaigns[3].creatives[1].w".
type ValidationError struct {
	Path string
	Msg  string
}

func (e *ValidationError) Error() string { return e.Path + ": " + e.Msg }

// ValidationErrors lists every problem found in a rule set.
type ValidationErrors []*ValidationError

func (es ValidationErrors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rules: %d error", len(es))
	if len(es) != 1 {
		b.WriteByte('s')
	}
	for _, e := range es {
		b.WriteString("\n  ")
		b.WriteString(e.Error())
	}
	return b.String()
}

// Limits of a rule set, checked by Validate.
const (
	MaxCampaigns         = 1_000_000
	MaxCreativesPerCamp  = 64
	MaxClauseValues      = 1024
	MaxBidCPM            = 10_000
	MaxCreativeDimension = 10_000
)

var (
	idRe      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
	facetRe   = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)
	valueRe   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	channelRe = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
	catRe     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$`)
	curRe     = regexp.MustCompile(`^[A-Z]{3}$`)
	macroRe   = regexp.MustCompile(`\$\{([^}]*)\}`)
)

// KnownMacros are the OpenRTB substitution macros an adm may carry; the
// exchange substitutes them, personad leaves them as written.
var KnownMacros = map[string]bool{
	"AUCTION_ID": true, "AUCTION_BID_ID": true, "AUCTION_IMP_ID": true,
	"AUCTION_SEAT_ID": true, "AUCTION_AD_ID": true, "AUCTION_PRICE": true,
	"AUCTION_CURRENCY": true, "AUCTION_MBR": true, "AUCTION_LOSS": true,
	"AUCTION_MIN_TO_WIN": true, "AUCTION_MULTIPLIER": true,
	"AUCTION_IMP_TS": true,
}

// IsFacet reports whether s is a valid facet name.
func IsFacet(s string) bool { return facetRe.MatchString(s) }

// IsValue reports whether s is a valid facet value.
func IsValue(s string) bool { return valueRe.MatchString(s) }

// Validate checks the whole rule set and returns ValidationErrors listing
// every problem, or nil.
func (rs *RuleSet) Validate() error {
	v := validator{}
	if len(rs.Campaigns) > MaxCampaigns {
		v.add("campaigns", "%d campaigns exceeds the limit of %d", len(rs.Campaigns), MaxCampaigns)
	}
	campIDs := make(map[string]int, len(rs.Campaigns))
	crIDs := make(map[string]string)
	for i := range rs.Campaigns {
		c := &rs.Campaigns[i]
		p := fmt.Sprintf("campaigns[%d]", i)
		v.campaign(p, c)
		if c.ID != "" {
			if j, dup := campIDs[c.ID]; dup {
				v.add(p+".id", "duplicate campaign id %q (also campaigns[%d])", c.ID, j)
			} else {
				campIDs[c.ID] = i
			}
		}
		for j := range c.Creatives {
			id := c.Creatives[j].ID
			cp := fmt.Sprintf("%s.creatives[%d]", p, j)
			if id == "" {
				continue
			}
			if other, dup := crIDs[id]; dup {
				v.add(cp+".id", "duplicate creative id %q (also %s)", id, other)
			} else {
				crIDs[id] = cp
			}
		}
	}
	v.content("content_rules", &rs.ContentRules)
	if len(v.errs) == 0 {
		return nil
	}
	return v.errs
}

type validator struct{ errs ValidationErrors }

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, &ValidationError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) campaign(p string, c *Campaign) {
	switch {
	case c.ID == "":
		v.add(p+".id", "required")
	case !idRe.MatchString(c.ID):
		v.add(p+".id", "%q must match %s", c.ID, idRe)
	}
	switch c.Status {
	case "", StatusActive, StatusPaused:
	default:
		v.add(p+".status", "unknown status %q, want active or paused", c.Status)
	}
	var start, end time.Time
	var err error
	if c.Start != "" {
		if start, err = time.Parse(time.RFC3339, c.Start); err != nil {
			v.add(p+".start", "%q is not an RFC 3339 time", c.Start)
		}
	}
	if c.End != "" {
		if end, err = time.Parse(time.RFC3339, c.End); err != nil {
			v.add(p+".end", "%q is not an RFC 3339 time", c.End)
		}
	}
	if !start.IsZero() && !end.IsZero() && !end.After(start) {
		v.add(p+".end", "%s must be after start %s", c.End, c.Start)
	}
	if c.Priority != nil && (*c.Priority < 0 || *c.Priority > 1000) {
		v.add(p+".priority", "%d must be in [0, 1000]", *c.Priority)
	}
	if !(c.BidCPM > 0) || math.IsInf(c.BidCPM, 0) || c.BidCPM > MaxBidCPM {
		v.add(p+".bid_cpm", "%v must be > 0 and <= %d", c.BidCPM, MaxBidCPM)
	}
	if c.Currency != "" && !curRe.MatchString(c.Currency) {
		v.add(p+".currency", "%q is not an ISO-4217 code such as USD", c.Currency)
	}
	if c.Budget.Daily < 0 || math.IsNaN(c.Budget.Daily) || math.IsInf(c.Budget.Daily, 0) {
		v.add(p+".budget.daily", "%v must be >= 0 (0: no daily limit)", c.Budget.Daily)
	}
	if c.Budget.Total < 0 || math.IsNaN(c.Budget.Total) || math.IsInf(c.Budget.Total, 0) {
		v.add(p+".budget.total", "%v must be >= 0 (0: no total limit)", c.Budget.Total)
	}
	switch c.Pacing {
	case "", PacingEven, PacingASAP:
	default:
		v.add(p+".pacing", "unknown pacing mode %q, want even or asap", c.Pacing)
	}
	if fc := c.FrequencyCap; fc.Max < 0 {
		v.add(p+".frequency_cap.max", "%d must be >= 0", fc.Max)
	} else if fc.Max > 0 || fc.Window != "" {
		d, err := time.ParseDuration(fc.Window)
		switch {
		case err != nil:
			v.add(p+".frequency_cap.window", "%q is not a duration such as 24h", fc.Window)
		case d <= 0:
			v.add(p+".frequency_cap.window", "%q must be > 0", fc.Window)
		}
	}
	v.cats(p+".cat", c.Cat)
	for i, d := range c.Adomain {
		if d == "" || strings.ContainsAny(d, " /") {
			v.add(fmt.Sprintf("%s.adomain[%d]", p, i), "%q is not a domain", d)
		}
	}
	v.clauses(p+".targeting.all", c.Targeting.All)
	v.clauses(p+".targeting.none", c.Targeting.None)
	v.channels(p+".targeting.channels", c.Targeting.Channels)
	switch {
	case len(c.Creatives) == 0:
		v.add(p+".creatives", "a campaign needs at least one creative")
	case len(c.Creatives) > MaxCreativesPerCamp:
		v.add(p+".creatives", "%d creatives exceeds the limit of %d", len(c.Creatives), MaxCreativesPerCamp)
	}
	for j := range c.Creatives {
		v.creative(fmt.Sprintf("%s.creatives[%d]", p, j), &c.Creatives[j])
	}
}

func (v *validator) creative(p string, cr *Creative) {
	switch {
	case cr.ID == "":
		v.add(p+".id", "required")
	case !idRe.MatchString(cr.ID):
		v.add(p+".id", "%q must match %s", cr.ID, idRe)
	}
	if cr.W <= 0 || cr.W > MaxCreativeDimension {
		v.add(p+".w", "%d must be > 0 and <= %d", cr.W, MaxCreativeDimension)
	}
	if cr.H <= 0 || cr.H > MaxCreativeDimension {
		v.add(p+".h", "%d must be > 0 and <= %d", cr.H, MaxCreativeDimension)
	}
	v.channels(p+".channels", cr.Channels)
	v.cats(p+".cat", cr.Cat)
	v.clauses(p+".persona", cr.Persona)
	if strings.TrimSpace(cr.Adm) == "" {
		v.add(p+".adm", "required")
	}
	for _, m := range macroRe.FindAllStringSubmatch(cr.Adm, -1) {
		if !KnownMacros[m[1]] {
			v.add(p+".adm", "unknown macro ${%s}", m[1])
		}
	}
	if strings.Count(cr.Adm, "${") != len(macroRe.FindAllStringIndex(cr.Adm, -1)) {
		v.add(p+".adm", "unterminated macro: \"${\" without \"}\"")
	}
}

func (v *validator) clauses(p string, cs []Clause) {
	for i, c := range cs {
		cp := fmt.Sprintf("%s[%d]", p, i)
		if !facetRe.MatchString(c.Facet) {
			v.add(cp+".facet", "%q must match %s", c.Facet, facetRe)
		}
		switch {
		case len(c.Any) == 0:
			v.add(cp+".any", "a clause needs at least one value")
		case len(c.Any) > MaxClauseValues:
			v.add(cp+".any", "%d values exceeds the limit of %d", len(c.Any), MaxClauseValues)
		}
		for j, val := range c.Any {
			if !valueRe.MatchString(val) {
				v.add(fmt.Sprintf("%s.any[%d]", cp, j), "%q must match %s", val, valueRe)
			}
		}
	}
}

func (v *validator) channels(p string, chs []string) {
	for i, ch := range chs {
		if !channelRe.MatchString(ch) {
			v.add(fmt.Sprintf("%s[%d]", p, i), "%q must match %s", ch, channelRe)
		}
	}
}

func (v *validator) cats(p string, cats []string) {
	for i, c := range cats {
		if !catRe.MatchString(c) {
			v.add(fmt.Sprintf("%s[%d]", p, i), "%q is not an IAB category such as IAB19", c)
		}
	}
}

func (v *validator) content(p string, cr *ContentRules) {
	v.cats(p+".blocked_cat", cr.BlockedCat)
	for i, d := range cr.BlockedAdomain {
		if d == "" {
			v.add(fmt.Sprintf("%s.blocked_adomain[%d]", p, i), "empty domain")
		}
	}
	seen := map[string]string{}
	for i, m := range cr.ChannelMap {
		mp := fmt.Sprintf("%s.channel_map[%d]", p, i)
		if !channelRe.MatchString(m.Channel) {
			v.add(mp+".channel", "%q must match %s", m.Channel, channelRe)
		}
		for j, d := range m.Domains {
			key := "domain " + d
			if prev, dup := seen[key]; dup && prev != m.Channel {
				v.add(fmt.Sprintf("%s.domains[%d]", mp, j), "%q is already mapped to channel %q", d, prev)
			}
			seen[key] = m.Channel
		}
		for j, b := range m.Bundles {
			key := "bundle " + b
			if prev, dup := seen[key]; dup && prev != m.Channel {
				v.add(fmt.Sprintf("%s.bundles[%d]", mp, j), "%q is already mapped to channel %q", b, prev)
			}
			seen[key] = m.Channel
		}
	}
}
