package engine

import (
	"testing"

	"github.com/personad/personad/bench/world"
)

// BenchmarkResolvePersona measures persona resolution alone on the small
// world: hit (cached persona), miss (every referenced segment tested, the
// cost a first-seen user pays) and facts (request-carried segments only).
func BenchmarkResolvePersona(b *testing.B) {
	w, err := world.Generate(world.SmallConfig())
	if err != nil {
		b.Fatal(err)
	}
	r, err := Compile(w.Rules, "")
	if err != nil {
		b.Fatal(err)
	}
	e := newTestEngine(b, r, w.Segments, 1<<16)
	bd := e.bind(r, w.Segments)
	s := getScratch(r)
	users := min(w.Config.Users, 1<<12)
	ids := make([]string, users)
	for i := range ids {
		ids[i] = world.UserID(i)
	}
	var facts []Fact
	for f, vals := range w.Facets {
		facts = append(facts, Fact{f, vals[0]})
	}
	b.Run("hit", func(b *testing.B) {
		q := &Query{BuyerUID: ids[0]}
		e.resolvePersona(bd, q, s)
		e.cache.Wait()
		b.ReportAllocs()
		for b.Loop() {
			e.resolvePersona(bd, q, s)
		}
	})
	b.Run("miss", func(b *testing.B) {
		nocache := newTestEngine(b, r, w.Segments, 0)
		q := &Query{}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			q.BuyerUID = ids[i%users]
			nocache.resolvePersona(bd, q, s)
		}
		b.ReportMetric(float64(len(r.terms)), "terms")
	})
	b.Run("facts", func(b *testing.B) {
		q := &Query{UserID: "nobody", Facts: facts}
		b.ReportAllocs()
		for b.Loop() {
			e.resolvePersona(bd, q, s)
		}
	})
}
