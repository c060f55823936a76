package rules

import "time"

// RuleSet is everything that decides which campaign may bid where. A RuleSet
// is plain data; it is not safe to modify while another goroutine reads it.
type RuleSet struct {
	Campaigns    []Campaign   `json:"campaigns,omitempty"`
	ContentRules ContentRules `json:"content_rules,omitzero"`
}

// Campaign is one advertiser's campaign and its creatives.
type Campaign struct {
	ID           string       `json:"id"`
	Advertiser   string       `json:"advertiser,omitempty"`
	Adomain      []string     `json:"adomain,omitempty"`
	Status       string       `json:"status,omitempty"` // active (default) | paused
	Start        string       `json:"start,omitempty"`  // RFC 3339, inclusive
	End          string       `json:"end,omitempty"`    // RFC 3339, exclusive
	Priority     *int32       `json:"priority,omitempty"`
	BidCPM       float64      `json:"bid_cpm"`
	Currency     string       `json:"currency,omitempty"`
	Budget       Budget       `json:"budget,omitzero"`
	Pacing       string       `json:"pacing,omitempty"` // even (default) | asap
	FrequencyCap FrequencyCap `json:"frequency_cap,omitzero"`
	Cat          []string     `json:"cat,omitempty"`
	Targeting    Targeting    `json:"targeting,omitzero"`
	Creatives    []Creative   `json:"creatives,omitempty"`
}

// Budget is in the campaign's currency; 0 means no limit.
type Budget struct {
	Daily float64 `json:"daily,omitempty"`
	Total float64 `json:"total,omitempty"`
}

// FrequencyCap limits impressions per user and campaign within Window.
type FrequencyCap struct {
	Max    int32  `json:"max,omitempty"`
	Window string `json:"window,omitempty"` // Go duration, e.g. "24h"
}

// Targeting decides which personas and channels a campaign reaches.
type Targeting struct {
	All      []Clause `json:"all,omitempty"`
	None     []Clause `json:"none,omitempty"`
	Channels []string `json:"channels,omitempty"`
}

// Clause holds when a user has at least one of Any in Facet.
type Clause struct {
	Facet string   `json:"facet"`
	Any   []string `json:"any"`
}

// Creative is one ad of a campaign.
type Creative struct {
	ID       string   `json:"id"`
	W        int32    `json:"w"`
	H        int32    `json:"h"`
	Channels []string `json:"channels,omitempty"`
	Cat      []string `json:"cat,omitempty"`
	Persona  []Clause `json:"persona,omitempty"`
	Adm      string   `json:"adm"`
}

// ContentRules are the house rules of what may run where.
type ContentRules struct {
	BlockedCat     []string         `json:"blocked_cat,omitempty"`
	BlockedAdomain []string         `json:"blocked_adomain,omitempty"`
	ChannelMap     []ChannelMapping `json:"channel_map,omitempty"`
}

// ChannelMapping maps site domains and app bundles to one channel.
type ChannelMapping struct {
	Channel string   `json:"channel"`
	Domains []string `json:"domains,omitempty"`
	Bundles []string `json:"bundles,omitempty"`
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
