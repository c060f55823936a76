package rules

import (
	"math"
	"strings"
	"time"
)

// RuleSet is everything that decides which campaign may bid where. A RuleSet
// is plain data; it is not safe to modify while another goroutine reads it.
type RuleSet struct {
	Campaigns    []Campaign   `json:"campaigns,omitempty" yaml:"campaigns,omitempty"`
	ContentRules ContentRules `json:"content_rules,omitzero" yaml:"content_rules,omitempty"`
}

// Campaign is one advertiser's campaign and its creatives.
type Campaign struct {
	ID           string       `json:"id" yaml:"id"`
	Advertiser   string       `json:"advertiser,omitempty" yaml:"advertiser,omitempty"`
	Adomain      []string     `json:"adomain,omitempty" yaml:"adomain,omitempty"`
	Status       string       `json:"status,omitempty" yaml:"status,omitempty"` // active (default) | paused
	Start        string       `json:"start,omitempty" yaml:"start,omitempty"`   // RFC 3339, inclusive
	End          string       `json:"end,omitempty" yaml:"end,omitempty"`       // RFC 3339, exclusive
	Priority     *int32       `json:"priority,omitempty" yaml:"priority,omitempty"`
	BidCPM       float64      `json:"bid_cpm" yaml:"bid_cpm"`
	Currency     string       `json:"currency,omitempty" yaml:"currency,omitempty"`
	Budget       Budget       `json:"budget,omitzero" yaml:"budget,omitempty"`
	Pacing       string       `json:"pacing,omitempty" yaml:"pacing,omitempty"` // even (default) | asap
	FrequencyCap FrequencyCap `json:"frequency_cap,omitzero" yaml:"frequency_cap,omitempty"`
	Cat          []string     `json:"cat,omitempty" yaml:"cat,omitempty"`
	Targeting    Targeting    `json:"targeting,omitzero" yaml:"targeting,omitempty"`
	Creatives    []Creative   `json:"creatives,omitempty" yaml:"creatives,omitempty"`
}

// Budget is in the campaign's currency; 0 means no limit.
type Budget struct {
	Daily float64 `json:"daily,omitempty" yaml:"daily,omitempty"`
	Total float64 `json:"total,omitempty" yaml:"total,omitempty"`
}

// FrequencyCap limits impressions per user and campaign within Window.
type FrequencyCap struct {
	Max    int32  `json:"max,omitempty" yaml:"max,omitempty"`
	Window string `json:"window,omitempty" yaml:"window,omitempty"` // Go duration, e.g. "24h"
}

// Targeting decides which personas and channels a campaign reaches.
type Targeting struct {
	All      []Clause `json:"all,omitempty" yaml:"all,omitempty"`
	None     []Clause `json:"none,omitempty" yaml:"none,omitempty"`
	Channels []string `json:"channels,omitempty" yaml:"channels,omitempty"`
}

// Clause holds when a user has at least one of Any in Facet.
type Clause struct {
	Facet string   `json:"facet" yaml:"facet"`
	Any   []string `json:"any" yaml:"any"`
}

// Creative is one ad of a campaign.
type Creative struct {
	ID       string   `json:"id" yaml:"id"`
	W        int32    `json:"w" yaml:"w"`
	H        int32    `json:"h" yaml:"h"`
	Channels []string `json:"channels,omitempty" yaml:"channels,omitempty"`
	Cat      []string `json:"cat,omitempty" yaml:"cat,omitempty"`
	Persona  []Clause `json:"persona,omitempty" yaml:"persona,omitempty"`
	Adm      string   `json:"adm" yaml:"adm"`
}

// ContentRules are the house rules of what may run where.
type ContentRules struct {
	BlockedCat     []string         `json:"blocked_cat,omitempty" yaml:"blocked_cat,omitempty"`
	BlockedAdomain []string         `json:"blocked_adomain,omitempty" yaml:"blocked_adomain,omitempty"`
	ChannelMap     []ChannelMapping `json:"channel_map,omitempty" yaml:"channel_map,omitempty"`
}

// ChannelMapping maps site domains and app bundles to one channel. A
// domain matches in any case and with or without a leading "www."; a
// bundle matches exactly.
type ChannelMapping struct {
	Channel string   `json:"channel" yaml:"channel"`
	Domains []string `json:"domains,omitempty" yaml:"domains,omitempty"`
	Bundles []string `json:"bundles,omitempty" yaml:"bundles,omitempty"`
}

// Defaults applied by the engine to fields left empty.
const (
	DefaultPriority = 10
	DefaultCurrency = "USD"
	StatusActive    = "active"
	StatusPaused    = "paused"
	PacingEven      = "even"
	PacingASAP      = "asap"
)

// Micros converts an amount in currency units (or a CPM) to integer
// micro-units, rounding to the nearest micro. Money is summed in micros,
// never in floats.
func Micros(v float64) int64 { return int64(math.Round(v * 1e6)) }

// EffectivePriority is the campaign's tier, DefaultPriority when unset.
func (c *Campaign) EffectivePriority() int32 {
	if c.Priority == nil {
		return DefaultPriority
	}
	return *c.Priority
}

// EffectiveCurrency is the campaign's currency, DefaultCurrency when unset.
func (c *Campaign) EffectiveCurrency() string {
	if c.Currency == "" {
		return DefaultCurrency
	}
	return c.Currency
}

// Active reports whether the campaign's status lets it bid.
func (c *Campaign) Active() bool { return c.Status == "" || c.Status == StatusActive }

// Flight returns the parsed flight window; a zero time means open-ended.
// It assumes the campaign passed Validate.
func (c *Campaign) Flight() (start, end time.Time) {
	if c.Start != "" {
		start, _ = time.Parse(time.RFC3339, c.Start)
	}
	if c.End != "" {
		end, _ = time.Parse(time.RFC3339, c.End)
	}
	return start, end
}

// CategoryBlocker returns the first entry of block (a request's bcat, a
// house blocked_cat) that blocks category c: c is the entry, or one of
// its subcategories (blocking IAB19 blocks IAB19-3), in any case.
//
// A request's bcat of 1,024 entries is checked against every
// candidate's categories (engine/filter.go), so the loop is here, where
// the test of an entry inlines: only an entry as long as c, or as one of
// its parents (a '-' after it in c), can block c, and most entries fail
// that test before any text is compared, in under a nanosecond
// (BENCHMARKS.md §1; a call per entry doubled a decision with the
// largest lists).
func CategoryBlocker(block []string, c string) (string, bool) {
	for _, b := range block {
		if n := len(b); n > len(c) || n < len(c) && c[n] != '-' {
			continue
		}
		if strings.EqualFold(c[:len(b)], b) {
			return b, true
		}
	}
	return "", false
}

// DomainBlocker returns the first entry of block (a request's badv, a
// house blocked_adomain) that blocks advertiser domain d: d is the entry,
// or one of its subdomains, in any case. As CategoryBlocker, it tests
// lengths first: only an entry as long as d, or as one of its parents (a
// '.' before it in d), can block d.
func DomainBlocker(block []string, d string) (string, bool) {
	for _, b := range block {
		if n := len(b); n > len(d) || n < len(d) && d[len(d)-n-1] != '.' {
			continue
		}
		if strings.EqualFold(d[len(d)-len(b):], b) {
			return b, true
		}
	}
	return "", false
}

// Blocks applies the house rules h to one campaign — its advertiser
// domains adomain, and n creatives whose categories cats(j) gives (a
// creative's own, else the campaign's) — as the engine compiles them and
// [RuleSet.DeliveryWarnings] reports them, the one place that decides
// it. It returns the index in adomain of the first domain that
// h.BlockedAdomain blocks ([DomainBlocker]), with the entry blocking it,
// or -1 and "": a blocked domain keeps the whole campaign from bidding.
// Whatever the domains, it calls blocked(j, k, by) for each creative j
// one of whose categories entry by of h.BlockedCat blocks
// ([CategoryBlocker]), cats(j)[k] the first such: the creative never
// serves; every reports whether it did so for each of n > 0 creatives:
// the campaign then never bids either.
func (h *ContentRules) Blocks(adomain []string, n int, cats func(j int) []string, blocked func(j, k int, by string)) (dom int, domBy string, every bool) {
	dom = -1
	for i, d := range adomain {
		if b, ok := DomainBlocker(h.BlockedAdomain, d); ok {
			dom, domBy = i, b
			break
		}
	}
	if len(h.BlockedCat) == 0 {
		return dom, domBy, false
	}
	count := 0
	for j := range n {
		for k, c := range cats(j) {
			if b, ok := CategoryBlocker(h.BlockedCat, c); ok {
				blocked(j, k, b)
				count++
				break
			}
		}
	}
	return dom, domBy, n > 0 && count == n
}
