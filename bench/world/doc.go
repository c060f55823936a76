// Package world generates deterministic, realistic B2B worlds: users with
// persona segments, and campaigns with creatives and content rules that
// target them. The same Config always gives the same world, byte for byte.
//
// Three sizes are predefined. DemoConfig is what personad --demo seeds
// (Seed) into an empty data dir: a rules file a planner can read and edit
// (<data-dir>/rules/demo.yaml) and a segments snapshot
// (<data-dir>/segments/segments.snap). ReferenceConfig is the world the
// engine's performance targets are measured on. SmallConfig is for tests.
//
// Users are "u" and their index in 8 or more zero-padded digits
// (UserID(42) is "u00000042") and are interned in index order, so user i
// has internal id i; a load generator draws users by index with UserID.
//
// Facets: title (21 values, from marketing-specialist to founder),
// seniority (implied by the title), pain_point (15), industry (20),
// company_size (6), region (12) and, when Config.SegmentsTarget asks for
// more segments, sub_industry (numbered, e.g. fintech-07). Memberships
// and targeting values follow Zipf distributions: the most popular title
// has many times the members of the least, and popular personas attract
// more campaigns.
package world
