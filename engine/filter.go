package engine

import (
	"cmp"
	"slices"
	"strings"

	"github.com/personad/personad/rules"
)

const (
	channelWeb = "web"
	channelApp = "app"
)

// Blocking a category blocks its subcategories (blocking IAB19 blocks
// IAB19-3), and blocking a domain blocks its subdomains: the rules
// package says so (rules.CategoryBlocker, rules.DomainBlocker), for the
// warnings of campaigns that house rules block too.
//
// A request may carry 1,024 bcat and 4,096 badv entries (bidder.Limits),
// each checked against every candidate's categories and domains. Only an
// entry exactly as long as the name, or as one of its parents (a prefix
// ending before a '-', a suffix starting after a '.'), can block it, so
// rules.CategoryBlocker and rules.DomainBlocker test that with a length
// and one byte before comparing text: most entries cost under a
// nanosecond.
// An index of the request's lists (sorted, or hashed) would make each
// check logarithmic or constant, but building it costs more than the
// checks a decision makes: sorting 4,096 domains takes 0.67 ms, 25 to 90
// times a whole decision with them; a hash index built after four scans
// made demo-world decisions twice as slow (BENCHMARKS.md §1).

// blockedCat reports the first of cats blocked by block.
func blockedCat(block, cats []string) (string, bool) {
	for _, c := range cats {
		if _, ok := rules.CategoryBlocker(block, c); ok {
			return c, true
		}
	}
	return "", false
}

// blockedDomain reports the first of adomain blocked by block; a blocked
// domain also blocks its subdomains.
func blockedDomain(block, adomain []string) (string, bool) {
	for _, d := range adomain {
		if _, ok := rules.DomainBlocker(block, d); ok {
			return d, true
		}
	}
	return "", false
}

// resolveChannel returns the request's channel id (-1 for a channel no rule
// names) and its name.
func (r *Rules) resolveChannel(q *Query) (int, string) {
	name := q.Channel
	if name == "" {
		if q.App {
			if id, ok := r.channelByApp[q.Bundle]; ok {
				return id, r.channelNames[id]
			}
			name = channelApp
		} else {
			// ToLower returns a lower-case domain as it is, without
			// allocating.
			host := mapHost(strings.ToLower(q.Domain))
			if id, ok := r.channelByHost[host]; ok {
				return id, r.channelNames[id]
			}
			name = channelWeb
		}
	}
	if id, ok := r.channels[name]; ok {
		return id, name
	}
	return -1, name
}

// mapHost is the channel map's key of a lower-case site domain: the
// domain without a leading "www.", so that a map entry and a request each
// with or without it meet.
func mapHost(domain string) string { return strings.TrimPrefix(domain, "www.") }

// hasAny reports whether the persona bitset holds one of terms.
func hasAny(persona []uint64, terms []uint32) bool {
	for _, t := range terms {
		if persona[t>>6]&(1<<(t&63)) != 0 {
			return true
		}
	}
	return false
}

// holds reports whether every clause holds for the persona.
func holds(persona []uint64, clauses [][]uint32) bool {
	for _, cl := range clauses {
		if !hasAny(persona, cl) {
			return false
		}
	}
	return true
}

// currencyOK reports whether the request accepts cur.
func currencyOK(accepted []string, cur string) bool {
	if len(accepted) == 0 {
		return cur == rules.DefaultCurrency
	}
	return slices.Contains(accepted, cur)
}

// campaignStage is the first campaign-level filter c fails, in decision
// order, or StageChosen when it passes them all: status, flight, channel,
// targeting, currency, blocked advertiser. With exact false the targeting
// test is skipped: the caller took c from the targeting index, which is
// exact unless c.verify.
func (c *Campaign) campaignStage(s *scratch, q *Query, nowNanos int64, exact bool) (Stage, string) {
	switch {
	case !c.active:
		return StageStatus, "paused"
	case c.houseBlocked != "":
		return StageBlocked, c.houseBlocked
	case nowNanos < c.start:
		return StageFlight, "flight has not started"
	case nowNanos >= c.end:
		return StageFlight, "flight has ended"
	case len(c.channels) > 0 && (s.channel < 0 || !slices.Contains(c.channels, s.channel)):
		return StageChannel, "channel not targeted"
	case exact && !holds(s.persona, c.all):
		return StageTargeting, "persona fails targeting.all"
	case exact && hasAnyClause(s.persona, c.none):
		return StageTargeting, "persona matches targeting.none"
	case !currencyOK(q.Currencies, c.Currency):
		return StageCurrency, "request does not accept the campaign's currency"
	}
	if _, ok := blockedDomain(q.BAdv, c.Adomain); ok {
		return StageBlocked, "request badv blocks the advertiser"
	}
	return StageChosen, ""
}

func hasAnyClause(persona []uint64, clauses [][]uint32) bool {
	for _, cl := range clauses {
		if hasAny(persona, cl) {
			return true
		}
	}
	return false
}

// impStage decides whether c, which passed campaignStage, can bid on imp:
// it returns the creative it would serve, or the stage that stops it. A
// creative written for this persona beats a generic one; within each kind
// the first in file order wins.
func (c *Campaign) impStage(s *scratch, q *Query, imp *Imp) (*Creative, Stage) {
	var generic, matched *Creative
	var sized, unblocked bool // some creative had the size; some was not blocked
	for i := range c.Creatives {
		cr := &c.Creatives[i]
		if !slices.Contains(imp.Sizes, Size{cr.W, cr.H}) {
			continue
		}
		sized = true
		if cr.houseBlocked != "" || q.BCatForeign {
			continue
		}
		if _, ok := blockedCat(q.BCat, cr.Cat); ok {
			continue
		}
		unblocked = true
		if len(cr.channels) > 0 && (s.channel < 0 || !slices.Contains(cr.channels, s.channel)) {
			continue
		}
		if len(cr.persona) > 0 {
			if !holds(s.persona, cr.persona) {
				continue
			}
			matched = cr
			break
		}
		if generic == nil {
			generic = cr
		}
	}
	cr := matched
	if cr == nil {
		cr = generic
	}
	switch {
	case cr != nil:
	case !sized:
		return nil, StageSize
	case !unblocked:
		return nil, StageBlocked
	default:
		return nil, StageCreative
	}
	if imp.FloorMicros > 0 {
		if cmp.Or(imp.FloorCur, rules.DefaultCurrency) != c.Currency {
			return nil, StageCurrency
		}
		if c.BidMicros < imp.FloorMicros {
			return nil, StageFloor
		}
	}
	return cr, StageChosen
}
