package engine

import (
	"github.com/personad/personad/rules"
)

// Rules is a compiled, immutable rule set: campaigns in rank order and the
// targeting index over their ordinals. It is safe for concurrent use.
type Rules struct {
	version   string
	campaigns []Campaign
}

// Campaign is a compiled campaign. Its exported fields are read-only.
type Campaign struct {
	ID         string
	Advertiser string
	Adomain    []string
	Currency   string
	// BidMicros is the bid, CPM, in micro-units of Currency.
	BidMicros int64
	Priority  int32

	Creatives []Creative
}

// Creative is a compiled creative. Its exported fields are read-only.
type Creative struct {
	ID  string
	W   int32
	H   int32
	Adm string
	// Cat is the creative's categories (the campaign's when it sets none).
	Cat []string
}

// Compile validates rs and compiles it into Rules. version names the rule
// set in decisions and logs; empty means rs's content hash.
func Compile(rs *rules.RuleSet, version string) (*Rules, error) {
	panic("engine: Compile: not yet implemented")
}

// Version is the rule set's version.
func (r *Rules) Version() string { return r.version }

// Campaigns returns the compiled campaigns in rank order.
func (r *Rules) Campaigns() []Campaign { return r.campaigns }
