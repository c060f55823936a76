// Package engine makes the bid decision: persona resolution, the targeting
// index, filters, scoring and creative choice. It is pure computation: no
// I/O, no wire types, no locks held across a decision. The wire (package
// bidder) translates a bid request into a [Query]; [Engine.Decide] answers
// it into a caller-owned [Decision].
//
// # Compiled rules
//
// [Compile] validates a rules.RuleSet and turns it into immutable [Rules]:
//
//   - Campaigns get ordinals in rank order — priority tier ascending, bid
//     descending, targeting.all clause count descending, id ascending —
//     which is DESIGN.md's choice rule. Because every input to that order is
//     fixed per campaign, the winner for an impression is simply the lowest
//     eligible ordinal.
//   - Every (facet, value) any campaign or creative names becomes a term id,
//     numbered grouped by facet.
//   - The targeting index holds one bitset over campaign ordinals per
//     term (the campaigns whose targeting.all accepts it, and those whose
//     targeting.none excludes it), per constrained facet (the campaigns
//     that place no constraint on it), per channel, per creative size, and
//     the live set (active, not blocked by house content rules). The sets
//     are dense bitsets (bits-and-blooms/bitset, the type roaring converts
//     to) of one fixed length, so that AND/OR/ANDNOT run in place on pooled
//     scratch without allocating; at 10,000 campaigns each is 157 words.
//     Segments, which are sparse over millions of users, are roaring
//     bitmaps (package segments).
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
//     rules use, cached per user in ristretto under the term table and the
//     binding epoch, which changes only when a segment the rules use does
//     (a reload that keeps the terms, or an upload to a segment no rule
//     uses, keeps the cache; after an upload to one that is, a cached
//     persona is brought up to date by testing the changed segments
//     alone), merged with the request's own facts. Results are identical
//     with the cache off (tests run both ways, and
//     TestPersonaCacheAcrossUploads across random uploads).
//  3. Candidates: live ∧ ⋀facet(unconstrained ∨ ⋁accept[persona terms])
//     ∧ ¬⋁exclude[persona terms] ∧ channel ∧ ⋁size[impression sizes].
//     An empty set after the persona step is an unmatched user.
//  4. For each impression, scan candidates in ordinal order; the first that
//     passes flight, currency, blocks (request bcat/badv; house rules were
//     applied at compile time), creative size/channel/persona and floor —
//     a bid below the floor skips the rest of its priority tier, which
//     bids no more — and then the ledger (budget, even pacing, frequency
//     cap, reservation), wins, and is removed so it bids on at most one
//     impression. Within a campaign a creative written for the persona
//     beats a generic one. A response has one currency, its first bid's.
//  5. The deadline (the earlier of ctx's and Query.Deadline) is checked
//     after the candidates are found and every 64 candidates; past it the scan stops: bids already reserved
//     go out, and with none the answer is a no-bid with ReasonDeadline.
//
// A debug query also gets a trace: every campaign with the stage that
// rejected it, evaluated exactly without the index, which doubles as the
// oracle the invariant tests compare the index against.
package engine
