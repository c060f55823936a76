package world

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

// Epoch is the world's fixed "now": every segment's Updated time, and the
// date the flight windows are laid out around (a few campaigns ended
// before it, a few start years after it). Output never depends on the
// clock.
var Epoch = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// SnapshotVersion is the store version of a generated segment snapshot.
const SnapshotVersion = 1

// Config sizes a world. Start from DemoConfig, ReferenceConfig or
// SmallConfig.
type Config struct {
	// Seed makes the world: equal configs give identical worlds.
	Seed int64
	// Users is the number of users, ids UserID(0) … UserID(Users-1).
	Users int
	// Campaigns is the number of campaigns.
	Campaigns int
	// SegmentsTarget is the approximate number of (facet, value) segments.
	// 0 keeps the natural facets (about 80 values); more adds numbered
	// sub-industries (facet sub_industry) to reach it.
	SegmentsTarget int
}

// DemoConfig is the world personad --demo seeds: a million users, a
// thousand campaigns.
func DemoConfig() Config {
	return Config{Seed: 1, Users: 1_000_000, Campaigns: 1_000}
}

// ReferenceConfig is the world the performance targets are measured on:
// ten million users, ten thousand campaigns, about a thousand segments.
func ReferenceConfig() Config {
	return Config{Seed: 1, Users: 10_000_000, Campaigns: 10_000, SegmentsTarget: 1_000}
}

// SmallConfig is a world for fast tests: ten thousand users, fifty
// campaigns.
func SmallConfig() Config {
	return Config{Seed: 1, Users: 10_000, Campaigns: 50}
}

// Limits of a Config.
const (
	MaxUsers          = 1_000_000_000
	MaxSegmentsTarget = 100_000
)

func (c Config) validate() error {
	var errs []error
	if c.Users < 0 || c.Users > MaxUsers {
		errs = append(errs, fmt.Errorf("world: Users %d must be in [0, %d]", c.Users, MaxUsers))
	}
	if c.Campaigns < 0 || c.Campaigns > rules.MaxCampaigns {
		errs = append(errs, fmt.Errorf("world: Campaigns %d must be in [0, %d]", c.Campaigns, rules.MaxCampaigns))
	}
	if c.SegmentsTarget < 0 || c.SegmentsTarget > MaxSegmentsTarget {
		errs = append(errs, fmt.Errorf("world: SegmentsTarget %d must be in [0, %d]", c.SegmentsTarget, MaxSegmentsTarget))
	}
	return errors.Join(errs...)
}

// World is a generated world: the rule set, the segment snapshot and the
// facets both are written over.
type World struct {
	Config Config
	// Rules passes rules.(*RuleSet).Validate.
	Rules *rules.RuleSet
	// Segments holds every user, interned in index order (UserID(i) has
	// internal id i), in one value of each single-valued facet and one to
	// three pain points.
	Segments *segments.Snapshot
	// Facets lists each facet's values, most popular first.
	Facets map[string][]string
}

// Generate makes the world cfg describes.
func Generate(cfg Config) (*World, error) {
	rs, err := GenerateRules(cfg)
	if err != nil {
		return nil, err
	}
	snap, err := GenerateSegments(cfg)
	if err != nil {
		return nil, err
	}
	return &World{Config: cfg, Rules: rs, Segments: snap, Facets: Facets(cfg)}, nil
}

// UserID is the external id of user i: "u" and i in at least 8 decimal
// digits, zero-padded ("u00000042"). Load generators draw users by index
// with it.
func UserID(i int) string { return string(AppendUserID(make([]byte, 0, 16), i)) }

// AppendUserID appends UserID(i) to dst, without allocating when dst has
// room.
func AppendUserID(dst []byte, i int) []byte {
	var digits [20]byte
	n := len(digits)
	for v := uint64(i); v > 0 || n > len(digits)-8; v /= 10 {
		n--
		digits[n] = byte('0' + v%10)
	}
	dst = append(dst, 'u')
	return append(dst, digits[n:]...)
}

// Facets returns each facet's values, most popular first, as cfg's world
// uses them.
func Facets(cfg Config) map[string][]string {
	f := map[string][]string{
		FacetTitle:       valuesOf(titles, func(t titleInfo) string { return t.value }),
		FacetSeniority:   slices.Clone(seniorities),
		FacetPainPoint:   valuesOf(painPoints, func(p painInfo) string { return p.value }),
		FacetIndustry:    valuesOf(industries, func(i industryInfo) string { return i.value }),
		FacetCompanySize: slices.Clone(companySizes),
		FacetRegion:      slices.Clone(regions),
	}
	if per := subIndustries(cfg); per > 0 {
		var subs []string
		// Popularity order: the first sub-industry of every industry, then
		// the second, and so on, roughly.
		for j := range per {
			for _, ind := range industries {
				subs = append(subs, subIndustry(ind.value, j))
			}
		}
		f[FacetSubIndustry] = subs
	}
	return f
}

// naturalSegments is the number of values of the natural facets.
var naturalSegments = len(titles) + len(seniorities) + len(painPoints) + len(industries) + len(companySizes) + len(regions)

// subIndustries is the number of sub-industries per industry that brings
// the world to about cfg.SegmentsTarget segments.
func subIndustries(cfg Config) int {
	if cfg.SegmentsTarget <= naturalSegments {
		return 0
	}
	return (cfg.SegmentsTarget - naturalSegments + len(industries) - 1) / len(industries)
}

func subIndustry(industry string, j int) string {
	return industry + "-" + strconv.Itoa(100 + j + 1)[1:]
}

// industryOf returns the industry of sub-industry s.
func industryOf(s string) string { return s[:len(s)-len("-01")] }

func valuesOf[T any](list []T, f func(T) string) []string {
	out := make([]string, len(list))
	for i, v := range list {
		out[i] = f(v)
	}
	return out
}

// zipf draws indexes 0…n-1 with probability proportional to 1/(i+1)^s,
// by binary search over the cumulative distribution: cheaper than
// rand.Zipf's rejection sampling, and exact for any s > 0.
type zipf struct{ cdf []uint64 }

func newZipf(n int, s float64) zipf {
	w := make([]float64, n)
	var total float64
	for i := range w {
		w[i] = 1 / math.Pow(float64(i+1), s)
		total += w[i]
	}
	z := zipf{cdf: make([]uint64, n)}
	var cum float64
	for i := range w {
		cum += w[i]
		z.cdf[i] = uint64(cum / total * (1 << 63))
	}
	z.cdf[n-1] = math.MaxUint64
	return z
}

func (z zipf) draw(r *rand.Rand) int {
	x := r.Uint64() >> 1
	i, _ := slices.BinarySearch(z.cdf, x+1)
	return min(i, len(z.cdf)-1)
}

// The exponents of the facets' skews.
const (
	skewTitle     = 1.1
	skewPain      = 0.9
	skewIndustry  = 1.0
	skewSize      = 0.8
	skewRegion    = 1.0
	skewSub       = 1.0
	internShare   = 0.08 // of individual contributors
	streamUsers   = 0x5E65
	streamRules   = 0xCA3B
	blockUsers    = 1 << 16 // users per generation block: one roaring container
	painPointsMax = 3
)
