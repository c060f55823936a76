package world

import (
	"math/rand/v2"
	"slices"

	"github.com/personad/personad/segments"
)

// GenerateSegments makes the world's users and their segments. Each user
// has one title (and the seniority it implies; some individual
// contributors are interns), one industry, company size and region, one
// sub-industry of their industry when the config has them, and one to
// three pain points; every value is drawn with a Zipf skew, so a few
// values hold most users.
//
// Users are generated in blocks of 65,536 (one roaring container), each
// from its own seeded random stream, so the result depends only on cfg.
func GenerateSegments(cfg Config) (*segments.Snapshot, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	facets := Facets(cfg)
	type ref struct{ facet, value string }
	var refs []ref
	first := map[string]int{} // facet → ordinal of its first value in refs
	for _, f := range []string{FacetTitle, FacetSeniority, FacetPainPoint, FacetIndustry, FacetCompanySize, FacetRegion, FacetSubIndustry} {
		first[f] = len(refs)
		for _, v := range facets[f] {
			refs = append(refs, ref{f, v})
		}
	}
	seniorityOf := make([]int, len(titles)) // title → seniority ordinal
	for i, t := range titles {
		seniorityOf[i] = first[FacetSeniority] + slices.Index(seniorities, t.seniority)
	}
	intern := first[FacetSeniority] + slices.Index(seniorities, "intern")
	ic := first[FacetSeniority] + slices.Index(seniorities, "individual-contributor")
	subs := subIndustries(cfg)
	var (
		zTitle    = newZipf(len(titles), skewTitle)
		zPain     = newZipf(len(painPoints), skewPain)
		zIndustry = newZipf(len(industries), skewIndustry)
		zSize     = newZipf(len(companySizes), skewSize)
		zRegion   = newZipf(len(regions), skewRegion)
		zSub      zipf
	)
	if subs > 0 {
		zSub = newZipf(subs, skewSub)
	}

	b := segments.NewBuilder()
	b.Grow(cfg.Users)
	id := make([]byte, 0, 16)
	for i := range cfg.Users {
		id = AppendUserID(id[:0], i)
		if _, err := b.InternBytes(id); err != nil {
			return nil, err
		}
	}
	// Every segment exists, even one no user drew.
	for _, r := range refs {
		b.AddIDs(r.facet, r.value)
	}

	lists := make([][]uint32, len(refs))
	for start := 0; start < cfg.Users; start += blockUsers {
		r := rand.New(rand.NewPCG(uint64(cfg.Seed), streamUsers<<32|uint64(start/blockUsers)))
		for u := start; u < min(start+blockUsers, cfg.Users); u++ {
			add := func(ord int) { lists[ord] = append(lists[ord], uint32(u)) }
			t := zTitle.draw(r)
			add(first[FacetTitle] + t)
			// senioritiesOf tells GenerateRules the same.
			if s := seniorityOf[t]; s == ic && r.Float64() < internShare {
				add(intern)
			} else {
				add(s)
			}
			ind := zIndustry.draw(r)
			add(first[FacetIndustry] + ind)
			if subs > 0 {
				add(first[FacetSubIndustry] + zSub.draw(r)*len(industries) + ind)
			}
			add(first[FacetCompanySize] + zSize.draw(r))
			add(first[FacetRegion] + zRegion.draw(r))
			var pains [painPointsMax]int
			n := 1
			switch x := r.IntN(100); {
			case x >= 85:
				n = 3
			case x >= 50:
				n = 2
			}
			for k := 0; k < n; {
				p := zPain.draw(r)
				if !slices.Contains(pains[:k], p) {
					pains[k] = p
					k++
				}
			}
			for _, p := range pains[:n] {
				add(first[FacetPainPoint] + p)
			}
		}
		for ord, l := range lists {
			if len(l) > 0 {
				b.AddIDs(refs[ord].facet, refs[ord].value, l...)
				lists[ord] = l[:0]
			}
		}
	}
	if err := b.Err(); err != nil {
		return nil, err
	}
	return b.BuildAt(SnapshotVersion, Epoch), nil
}
