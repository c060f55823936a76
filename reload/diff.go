package reload

import (
	"container/heap"
	"slices"

	"go.uber.org/zap/zapcore"

	"github.com/personad/personad/engine"
	"github.com/personad/personad/rules"
)

// Diff lists, by id, what a rule set changes against the active one. In
// the Result of Apply each list holds at most MaxListed ids, the first
// in sorted order, and Counts counts them all: replacing a set of 10,000
// campaigns adds and removes ~80,000 ids, over 4 MB in a response (gRPC
// clients refuse larger ones by default), and sorting the ~1.6 million
// ids of a replaced set of 100,000 took ~0.3 s of CPU. A reload of the
// rules files, whose Result is only logged, has the Counts and no lists.
type Diff struct {
	CampaignsAdded, CampaignsChanged, CampaignsRemoved []string
	CreativesAdded, CreativesChanged, CreativesRemoved []string
	ContentRulesChanged                                bool
	Counts                                             DiffCounts
}

// MaxListed is how many ids each list of Apply's Diff holds at most.
const MaxListed = 1000

// DiffCounts are how many ids each list of a Diff has, or would have
// uncapped.
type DiffCounts struct {
	CampaignsAdded, CampaignsChanged, CampaignsRemoved int
	CreativesAdded, CreativesChanged, CreativesRemoved int
}

// MarshalLogObject logs the counts (the lists may be long).
func (d Diff) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddInt("campaigns_added", d.Counts.CampaignsAdded)
	enc.AddInt("campaigns_changed", d.Counts.CampaignsChanged)
	enc.AddInt("campaigns_removed", d.Counts.CampaignsRemoved)
	enc.AddInt("creatives_added", d.Counts.CreativesAdded)
	enc.AddInt("creatives_changed", d.Counts.CreativesChanged)
	enc.AddInt("creatives_removed", d.Counts.CreativesRemoved)
	enc.AddBool("content_rules_changed", d.ContentRulesChanged)
	return nil
}

// diff compares the new set (rs, compiled as r) with the old one (nil at
// start: everything is added), counting the ids of each list and
// listing, sorted, the first limit of them (none with limit 0).
// Campaigns compare by digest; the creatives of a changed campaign
// compare one by one.
func diff(oldRS *rules.RuleSet, oldR *engine.Rules, rs *rules.RuleSet, r *engine.Rules, limit int) Diff {
	l := lister{limit: limit}
	if oldRS == nil {
		oldRS = &rules.RuleSet{}
	}
	contentChanged := oldRS.ContentRules.Digest() != rs.ContentRules.Digest()
	var oldDigests []rules.Digest
	if oldR != nil {
		oldDigests = oldR.Digests()
	}
	newDigests := r.Digests()
	changed := func(old, c *rules.Campaign) {
		l.add(campaignsChanged, c.ID)
		l.creatives(old, c)
	}
	if sameIDs(oldRS, rs) && len(oldDigests) == len(newDigests) {
		// The common edit: no campaign added, removed or moved.
		for i := range rs.Campaigns {
			if oldDigests[i] != newDigests[i] {
				changed(&oldRS.Campaigns[i], &rs.Campaigns[i])
			}
		}
		return l.diff(contentChanged)
	}
	old := make(map[string]int, len(oldRS.Campaigns))
	for i := range oldRS.Campaigns {
		old[oldRS.Campaigns[i].ID] = i
	}
	// kept[j] is whether old campaign j is in the new set (ids are unique
	// in both), which spares a second map, over the new ids.
	kept := make([]bool, len(oldRS.Campaigns))
	for i := range rs.Campaigns {
		c := &rs.Campaigns[i]
		j, ok := old[c.ID]
		if !ok {
			l.add(campaignsAdded, c.ID)
			l.addCreatives(creativesAdded, c)
			continue
		}
		kept[j] = true
		if j >= len(oldDigests) || oldDigests[j] != newDigests[i] {
			changed(&oldRS.Campaigns[j], c)
		}
	}
	for j := range oldRS.Campaigns {
		if c := &oldRS.Campaigns[j]; !kept[j] {
			l.add(campaignsRemoved, c.ID)
			l.addCreatives(creativesRemoved, c)
		}
	}
	return l.diff(contentChanged)
}

// sameIDs reports whether a and b hold the same campaign ids in the same
// order.
func sameIDs(a, b *rules.RuleSet) bool {
	if len(a.Campaigns) != len(b.Campaigns) {
		return false
	}
	for i := range a.Campaigns {
		if a.Campaigns[i].ID != b.Campaigns[i].ID {
			return false
		}
	}
	return true
}

// The lists of a Diff, as lister numbers them.
const (
	campaignsAdded = iota
	campaignsChanged
	campaignsRemoved
	creativesAdded
	creativesChanged
	creativesRemoved
	nLists
)

// lister counts the ids of each list of a Diff and keeps the first
// limit of each in sorted order.
type lister struct {
	limit int
	n     [nLists]int
	first [nLists]maxHeap
}

func (l *lister) add(list int, id string) {
	l.n[list]++
	if l.limit == 0 {
		return
	}
	h := &l.first[list]
	switch {
	case len(*h) < l.limit:
		*h = append(*h, id)
		if len(*h) == l.limit {
			heap.Init(h)
		}
	case id < (*h)[0]:
		(*h)[0] = id
		heap.Fix(h, 0)
	}
}

// addCreatives adds the ids of c's creatives to list.
func (l *lister) addCreatives(list int, c *rules.Campaign) {
	if l.limit == 0 {
		l.n[list] += len(c.Creatives)
		return
	}
	for k := range c.Creatives {
		l.add(list, c.Creatives[k].ID)
	}
}

// creatives adds what changed between two versions of one campaign.
func (l *lister) creatives(old, c *rules.Campaign) {
	before := make(map[string]rules.Digest, len(old.Creatives))
	for k := range old.Creatives {
		before[old.Creatives[k].ID] = old.Creatives[k].Digest()
	}
	for k := range c.Creatives {
		cr := &c.Creatives[k]
		dg, ok := before[cr.ID]
		switch {
		case !ok:
			l.add(creativesAdded, cr.ID)
		case dg != cr.Digest():
			l.add(creativesChanged, cr.ID)
		}
		delete(before, cr.ID)
	}
	for id := range before {
		l.add(creativesRemoved, id)
	}
}

// diff returns the Diff: counts, and sorted lists.
func (l *lister) diff(contentChanged bool) Diff {
	list := func(i int) []string {
		ids := []string(l.first[i])
		slices.Sort(ids)
		return ids
	}
	return Diff{
		CampaignsAdded: list(campaignsAdded), CampaignsChanged: list(campaignsChanged), CampaignsRemoved: list(campaignsRemoved),
		CreativesAdded: list(creativesAdded), CreativesChanged: list(creativesChanged), CreativesRemoved: list(creativesRemoved),
		ContentRulesChanged: contentChanged,
		Counts: DiffCounts{
			CampaignsAdded: l.n[campaignsAdded], CampaignsChanged: l.n[campaignsChanged], CampaignsRemoved: l.n[campaignsRemoved],
			CreativesAdded: l.n[creativesAdded], CreativesChanged: l.n[creativesChanged], CreativesRemoved: l.n[creativesRemoved],
		},
	}
}

// maxHeap is a max-heap of ids (container/heap): while it holds a
// list's first ids, its top is the one the next smaller id replaces.
type maxHeap []string

func (h maxHeap) Len() int           { return len(h) }
func (h maxHeap) Less(i, j int) bool { return h[i] > h[j] }
func (h maxHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *maxHeap) Push(x any)        { *h = append(*h, x.(string)) }
func (h *maxHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
