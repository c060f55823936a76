// Package engine makes the bid decision: persona resolution, the targeting
// index, filters, scoring and creative choice. It is pure computation: no
// I/O, no wire types, no locks held across a decision. The wire (package
// bidder) translates a bid request into a [Query]; [Engine.Decide] answers
// it into a caller-owned [Decision].
//
// # Compiled rules
//
// [Compile] turns a validated rules.RuleSet into immutable [Rules]:
//
//   - Campaigns get ordinals in rank order — priority tier ascending, bid
//     descending, targeting.all clause count descending, id ascending —
//     which is DESIGN.md's choice rule. Because every input to that order is
//     fixed per campaign, the winner for an impression is simply the lowest
//     eligible ordinal.
//   - Every (facet, value) any campaign or creative names becomes a term id,
//     numbered grouped by facet.
//   - The targeting index holds roaring bitmaps over campaign ordinals: per
//     term, the campaigns whose targeting.all accepts it and those whose
//     targeting.none excludes it; per constrained facet, the campaigns that
//     place no constraint on it; per channel; per creative size; and the
//     live set (active, not blocked by house content rules). For the
//     decision each is also kept as a dense bitset of one fixed length, so
//     AND/OR/ANDNOT run in place on pooled scratch without allocating.
//
// [Engine.SetRules] publishes compiled rules with one atomic pointer store;
// a decision loads the pointer once and uses only that version.
//
// # A decision
//
//  1. Channel: the request's own, else the rules' domain/bundle map, else
//     "web" or "app".
//  2. Persona: the user's uploaded segments (looked up by buyeruid, then
//     user id, in the current segments.Snapshot) restricted to the terms the
//     rules use, cached per user in ristretto and invalidated by rules and
//     segment versions, merged with the request's own facts. Results are
//     identical with the cache off (tests run both ways).
//  3. Candidates: live ∧ ⋀facet(unconstrained ∨ ⋁accept[persona terms])
//     ∧ ¬⋁exclude[persona terms] ∧ channel ∧ ⋁size[impression sizes].
//     An empty set after the persona step is an unmatched user.
//  4. For each impression, scan candidates in ordinal order; the first that
//     passes flight, currency, blocks (request bcat/badv; house rules were
//     applied at compile time), creative size/channel/persona and floor
//     wins, and is removed so it bids on at most one impression. Within a
//     campaign a creative written for the persona beats a generic one.
//  5. The deadline (ctx) is checked between stages and every 64 candidates;
//     past it the answer is a no-bid with ReasonDeadline.
//
// A debug query also gets a trace: every campaign with the stage that
// rejected it, evaluated exactly without the index, which doubles as the
// oracle the invariant tests compare the index against.
package engine
