package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/personad/personad/segments"
)

// TestPersonaCacheAcrossUploads: after every commit — adding, removing or
// replacing users, in segments the rules refer to or not — the personas
// an engine with a cache resolves are those of an engine without one, and
// a commit to a segment no rule refers to keeps the binding's epoch (its
// cached personas stay current).
func TestPersonaCacheAcrossUploads(t *testing.T) {
	rs := mustParse(t, `
campaigns:
  - id: cmo-fintech
    bid_cpm: 4
    targeting:
      all: [{facet: title, any: [cmo, cfo]}, {facet: industry, any: [fintech]}]
    creatives:
      - {id: a, w: 300, h: 250, adm: "<b>a</b>"}
  - id: saas
    bid_cpm: 3
    targeting:
      all: [{facet: industry, any: [saas]}]
      none: [{facet: title, any: [intern]}]
    creatives:
      - {id: b, w: 300, h: 250, adm: "<b>b</b>"}
`)
	r, err := Compile(rs, "")
	if err != nil {
		t.Fatal(err)
	}
	const users = 60
	user := func(i int) string { return fmt.Sprintf("u%d", i) }
	b := segments.NewBuilder()
	for i := range users / 2 { // half the users known at first
		b.Add("title", []string{"cmo", "cfo", "intern", "ceo"}[i%4], user(i))
		if i%3 == 0 {
			b.Add("industry", "fintech", user(i))
		}
	}
	store := segments.NewStore(b.Build(1))
	engine := func(cache int64) *Engine {
		cfg := DefaultConfig()
		cfg.PersonaCacheSize = cache
		e, err := New(cfg, store)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		e.SetRules(r)
		return e
	}
	cached, fresh := engine(1<<10), engine(0)

	segs := []struct {
		facet, value string
		targeted     bool
	}{
		{"title", "cmo", true}, {"title", "cfo", true}, {"title", "intern", true},
		{"industry", "fintech", true}, {"industry", "saas", true},
		{"title", "ceo", false}, {"hobby", "golf", false},
	}
	rng := rand.New(rand.NewPCG(7, 7))
	var d1, d2 Decision
	revalidated := 0
	for round := range 300 {
		for i := range users {
			q := &Query{Now: time.Now(), BuyerUID: user(i), Imps: []Imp{{ID: "1", Sizes: []Size{{300, 250}}}}, Debug: true}
			cached.Decide(context.Background(), q, &d1)
			fresh.Decide(context.Background(), q, &d2)
			if !slices.Equal(d1.Persona, d2.Persona) {
				t.Fatalf("round %d, %s: cached persona %v, fresh %v", round, user(i), d1.Persona, d2.Persona)
			}
		}
		cached.cache.Wait()
		before := cached.binding.Load()

		sg := segs[rng.IntN(len(segs))]
		mode := []segments.Mode{segments.Add, segments.Add, segments.Remove, segments.Replace}[rng.IntN(4)]
		u, err := store.NewUpload(sg.facet, sg.value, mode, "")
		if err != nil {
			t.Fatal(err)
		}
		for range 1 + rng.IntN(8) {
			if err := u.Add(user(rng.IntN(users))); err != nil {
				t.Fatal(err)
			}
		}
		res, err := store.Commit(u)
		if err != nil {
			u.Discard()
			continue // removing from a segment that does not exist yet
		}
		if res.Added+res.Removed == 0 && res.NewUsers == 0 {
			continue // nothing changed: no new snapshot
		}
		q := &Query{Now: time.Now(), BuyerUID: user(0), Imps: []Imp{{ID: "1", Sizes: []Size{{300, 250}}}}}
		cached.Decide(context.Background(), q, &d1) // binds the new snapshot
		after := cached.binding.Load()
		switch {
		case !sg.targeted && after.epoch != before.epoch:
			t.Fatalf("round %d: an upload to %s:%s, which no rule refers to, changed the epoch", round, sg.facet, sg.value)
		case sg.targeted && res.Added+res.Removed > 0 && (after.epoch == before.epoch || after.prev != before.epoch):
			t.Fatalf("round %d: an upload to %s:%s kept the epoch (%d, prev %d; was %d)", round, sg.facet, sg.value, after.epoch, after.prev, before.epoch)
		case sg.targeted && res.Added+res.Removed > 0:
			revalidated++
		}
	}
	if revalidated < 50 {
		t.Errorf("only %d commits changed a referred segment: the test exercised too little", revalidated)
	}
}
