package engine

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/rules"
)

// TestCompileCacheIdentical compiles a sequence of edited rule sets with a
// cache and without one: the compiled rules must be identical, whatever
// the cache reused.
func TestCompileCacheIdentical(t *testing.T) {
	rs, err := world.GenerateRules(world.SmallConfig())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewCompiler(DefaultCompilerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	edits := []struct {
		name string
		edit func(rs *rules.RuleSet)
	}{
		{"unchanged", func(*rules.RuleSet) {}},
		{"bid", func(rs *rules.RuleSet) { rs.Campaigns[3].BidCPM += 10 }},
		{"new facet value", func(rs *rules.RuleSet) {
			rs.Campaigns[5].Targeting.All = append(rs.Campaigns[5].Targeting.All, rules.Clause{Facet: "zz_new", Any: []string{"v1", "v2"}})
		}},
		{"paused", func(rs *rules.RuleSet) { rs.Campaigns[7].Status = rules.StatusPaused }},
		{"removed", func(rs *rules.RuleSet) { rs.Campaigns = append(rs.Campaigns[:2:2], rs.Campaigns[3:]...) }},
		{"added", func(rs *rules.RuleSet) {
			c := rs.Campaigns[0]
			c.ID = "added"
			c.Creatives = []rules.Creative{{ID: "added-1", W: 300, H: 250, Channels: []string{"brand_new"}, Adm: "<b>x</b>"}}
			rs.Campaigns = append(rs.Campaigns, c)
		}},
		{"content rules", func(rs *rules.RuleSet) {
			rs.ContentRules.BlockedCat = append(rs.ContentRules.BlockedCat, "IAB19")
		}},
	}
	for _, e := range edits {
		e.edit(rs)
		cached, err := cc.Compile(rs, "")
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		plain, err := Compile(rs, "")
		if err != nil {
			t.Fatal(err)
		}
		if e.name != "unchanged" && cached.stats.Reused == 0 {
			t.Errorf("%s: nothing reused (%+v)", e.name, cached.stats)
		}
		if e.name == "unchanged" && cached.stats.Reused != 0 {
			t.Errorf("first compile reused %d campaigns", cached.stats.Reused)
		}
		cached.compiled, cached.stats = time.Time{}, CompileStats{}
		plain.compiled, plain.stats = time.Time{}, CompileStats{}
		if !reflect.DeepEqual(cached, plain) {
			t.Errorf("%s: rules compiled with the cache differ from rules compiled without", e.name)
		}
	}
}

// TestCompileParallelIdentical compiles a set large enough to be cut in
// many chunks (hashed, validated, compiled, linked and indexed on every
// CPU) on four CPUs and on one: the rules must be identical.
func TestCompileParallelIdentical(t *testing.T) {
	rs := smallRules(t, 5000)
	compile := func(procs int) *Rules {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		r, err := Compile(rs, "")
		if err != nil {
			t.Fatal(err)
		}
		r.compiled, r.stats = time.Time{}, CompileStats{}
		return r
	}
	if !reflect.DeepEqual(compile(4), compile(1)) {
		t.Error("rules compiled on four CPUs differ from rules compiled on one")
	}

	// Through a Compiler on four CPUs (its hashing pass, cache and patch
	// in play): the set, then a one-bid edit (patched), then a set
	// missing a campaign (compiled again, cached units reused).
	cc, err := NewCompiler(DefaultCompilerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	edited := *rs
	edited.Campaigns = slices.Clone(rs.Campaigns)
	edited.Campaigns[2500].BidCPM += 0.5
	shorter := edited
	shorter.Campaigns = slices.Delete(slices.Clone(edited.Campaigns), 100, 101)
	for _, set := range []*rules.RuleSet{rs, &edited, &shorter} {
		prev := runtime.GOMAXPROCS(4)
		got, err := cc.Compile(set, "")
		runtime.GOMAXPROCS(prev)
		if err != nil {
			t.Fatal(err)
		}
		want, err := Compile(set, "")
		if err != nil {
			t.Fatal(err)
		}
		if got.Version() != want.Version() || !reflect.DeepEqual(got.campaigns, want.campaigns) {
			t.Errorf("%d campaigns: a Compiler's rules differ from a cold compile's", len(set.Campaigns))
		}
		if set == &edited && !got.Stats().Patched {
			t.Errorf("the one-bid edit was not patched: %+v", got.Stats())
		}
	}
}

// TestCompileRemembersAcrossResize: a compilation of a set with more or
// fewer campaigns than the last one (the Compiler's seen is then a new
// slice) remembers every campaign, those it found unchanged too, so that
// the next compilation reuses their digests rather than hash them again.
func TestCompileRemembersAcrossResize(t *testing.T) {
	all := smallRules(t, 41)
	cc, err := NewCompiler(CompilerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for _, n := range []int{40, 41, 39} {
		rs := *all
		rs.Campaigns = all.Campaigns[:n]
		if _, err := cc.Compile(&rs, ""); err != nil {
			t.Fatal(err)
		}
		cc.seenMu.Lock()
		seen := cc.seen.camps
		cc.seenMu.Unlock()
		if len(seen) != n {
			t.Fatalf("%d campaigns: %d remembered", n, len(seen))
		}
		for i := range seen {
			if !sameCampaign(&seen[i], &rs.Campaigns[i]) {
				t.Errorf("%d campaigns: campaign %d remembered as %q, want %q", n, i, seen[i].ID, rs.Campaigns[i].ID)
			}
		}
	}
}

// TestCompileRejectsInvalidCached: a campaign known valid from the cache
// still takes part in the checks across campaigns.
func TestCompileRejectsInvalidCached(t *testing.T) {
	rs, err := world.GenerateRules(world.SmallConfig())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewCompiler(DefaultCompilerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := cc.Compile(rs, ""); err != nil {
		t.Fatal(err)
	}
	rs.Campaigns = append(rs.Campaigns, rs.Campaigns[0])
	_, err = cc.Compile(rs, "")
	want := fmt.Sprintf("campaigns[%d].id: duplicate campaign id %q (also campaigns[0])", len(rs.Campaigns)-1, rs.Campaigns[0].ID)
	if es, ok := err.(rules.ValidationErrors); !ok || es[0].Error() != want {
		t.Errorf("duplicate of a cached campaign: %v, want %s first", err, want)
	}
}

// TestCompilePatchIdentical applies a seeded sequence of edits, each a
// reload through one Compiler, and wants every result equal to a fresh
// compilation; it also wants the edits a patch can make patched, so that
// the fast path is what is being compared.
func TestCompilePatchIdentical(t *testing.T) {
	rs := smallRules(t, 300) // several words per index set
	cc, err := NewCompiler(DefaultCompilerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := cc.Compile(rs, ""); err != nil {
		t.Fatal(err)
	}
	n := len(rs.Campaigns)
	prio := func(p int32) *int32 { return &p }
	// Each edit returns whether a patch can apply it.
	edits := []struct {
		name string
		edit func(rng *rand.Rand) bool
	}{
		{"nothing", func(*rand.Rand) bool { return true }},
		{"bid", func(rng *rand.Rand) bool {
			rs.Campaigns[rng.IntN(n)].BidCPM = 0.5 + float64(rng.IntN(4000))/100
			return true
		}},
		{"bid to the top", func(rng *rand.Rand) bool {
			rs.Campaigns[rng.IntN(n)].BidCPM = rules.MaxBidCPM
			return true
		}},
		{"priority", func(rng *rand.Rand) bool {
			rs.Campaigns[rng.IntN(n)].Priority = prio(int32(rng.IntN(20)))
			return true
		}},
		{"pause", func(rng *rand.Rand) bool {
			c := &rs.Campaigns[rng.IntN(n)]
			c.Status = map[string]string{"": rules.StatusPaused, rules.StatusActive: rules.StatusPaused, rules.StatusPaused: rules.StatusActive}[c.Status]
			return true
		}},
		{"adm", func(rng *rand.Rand) bool {
			c := &rs.Campaigns[rng.IntN(n)]
			c.Creatives[0].Adm += "<i>edited</i>"
			return true
		}},
		{"creative size", func(rng *rand.Rand) bool {
			c := &rs.Campaigns[rng.IntN(n)]
			c.Creatives[rng.IntN(len(c.Creatives))].W = int32(100 + rng.IntN(3))
			return true
		}},
		{"blocked category", func(rng *rand.Rand) bool {
			c := &rs.Campaigns[rng.IntN(n)]
			c.Creatives[0].Cat = []string{"IAB25"}
			return true
		}},
		{"swap targeting", func(rng *rand.Rand) bool {
			// Another campaign's clauses: terms that exist already.
			c, o := &rs.Campaigns[rng.IntN(n)], &rs.Campaigns[rng.IntN(n)]
			c.Targeting = rules.Targeting{
				All:      slices.Clone(o.Targeting.All),
				None:     slices.Clone(o.Targeting.None),
				Channels: slices.Clone(c.Targeting.Channels),
			}
			return false // may or may not patch (a facet or term may vanish)
		}},
		{"drop targeting", func(rng *rand.Rand) bool {
			rs.Campaigns[rng.IntN(n)].Targeting.All = nil
			return false
		}},
		{"new term", func(rng *rand.Rand) bool {
			c := &rs.Campaigns[rng.IntN(n)]
			c.Targeting.All = append(slices.Clone(c.Targeting.All), rules.Clause{Facet: "zz_new", Any: []string{fmt.Sprint("v", rng.IntN(1000))}})
			return false
		}},
		{"renamed creative", func(rng *rand.Rand) bool {
			c := &rs.Campaigns[rng.IntN(n)]
			c.Creatives = slices.Clone(c.Creatives)
			c.Creatives[0].ID = fmt.Sprint("renamed-", rng.IntN(1<<30))
			return false
		}},
		{"several", func(rng *rand.Rand) bool {
			for range 5 {
				c := &rs.Campaigns[rng.IntN(n)]
				c.BidCPM = 0.5 + float64(rng.IntN(4000))/100
				c.Creatives[0].H = int32(50 + rng.IntN(3))
			}
			return true
		}},
		{"content rules", func(rng *rand.Rand) bool {
			rs.ContentRules.BlockedAdomain = append(rs.ContentRules.BlockedAdomain, fmt.Sprint("x", rng.IntN(100), ".example"))
			return false
		}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	patched := map[string]int{}
	for step := range 400 {
		e := edits[rng.IntN(len(edits))]
		// Edits write into shared slices: give the set its own campaigns.
		rs.Campaigns = slices.Clone(rs.Campaigns)
		wantPatch := e.edit(rng)
		got, err := cc.Compile(rs, "")
		if err != nil {
			t.Fatalf("step %d %s: %v", step, e.name, err)
		}
		if got.stats.Patched {
			patched[e.name]++
		} else if wantPatch {
			t.Errorf("step %d %s: linked afresh, want patched", step, e.name)
		}
		sameAsFresh(t, fmt.Sprintf("step %d %s", step, e.name), rs, got, nil)
	}
	for _, e := range edits {
		if patched[e.name] == 0 && e.name != "new term" && e.name != "renamed creative" && e.name != "content rules" {
			t.Errorf("%s: never patched", e.name)
		}
	}
	t.Logf("patched: %v", patched)
}

// TestCompileInPlaceEdits edits one campaign of the rule set in place, one
// leaf at a time — every string, number, pointer and slice length, written
// through the backing arrays the Compiler saw last time — then undoes the
// edit, compiling after each step through one Compiler: the digests it
// reuses for campaigns it deems unchanged must never hide an edit, so each
// result must equal a fresh compilation (or fail alike).
func TestCompileInPlaceEdits(t *testing.T) {
	rs := smallRules(t, 40)
	cc, err := NewCompiler(DefaultCompilerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	check := func(what string) {
		t.Helper()
		got, err := cc.Compile(rs, "")
		sameAsFresh(t, what, rs, got, err)
	}
	check("first")
	c := &rs.Campaigns[3]
	fillLeaves(c)
	check("filled")
	check("unchanged")
	walkLeaves(t, reflect.ValueOf(c).Elem(), "campaigns[3]", func(leaf reflect.Value, path string, _ []leafStep, edit func(reflect.Value)) {
		old := reflect.New(leaf.Type()).Elem()
		old.Set(leaf)
		edit(leaf)
		check(path + " edited")
		leaf.Set(old)
		check(path + " restored")
	})
}

// TestCompileImmutableShared builds each rule set from the previous one
// the way a rules.Parser does — the campaigns copied, every slice and
// Priority shared — and compiles it with CompileImmutable, one leaf of a
// campaign changed copy-on-write each time: every slice and pointer on
// the way to the leaf is new, everything else is the previous set's
// memory (a slice shortened keeps its array). The Compiler must see each
// change although the unchanged parts are the very memory it hashed, and
// see the change undone; each result must equal a fresh compilation (or
// fail alike). Afterwards, a copy of the set edited in place through
// Compile must still be seen to change, with the Compiler holding the
// immutable set's memory.
func TestCompileImmutableShared(t *testing.T) {
	base := smallRules(t, 40)
	c := &base.Campaigns[3]
	fillLeaves(c)

	cc, err := NewCompiler(DefaultCompilerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	check := func(what string, rs *rules.RuleSet, compile func(*rules.RuleSet, string) (*Rules, error)) {
		t.Helper()
		got, err := compile(rs, "")
		sameAsFresh(t, what, rs, got, err)
	}
	check("first", base, cc.CompileImmutable)
	// A set as the Parser's next one: new campaigns, the same memory.
	reparsed := func() *rules.RuleSet {
		rs := *base
		rs.Campaigns = slices.Clone(base.Campaigns)
		return &rs
	}
	check("unchanged", reparsed(), cc.CompileImmutable)

	// own makes the parts along steps of v (a campaign of the new set)
	// new, and returns the leaf.
	own := func(v reflect.Value, steps []leafStep) reflect.Value {
		for _, s := range steps {
			switch s.kind {
			case reflect.Struct:
				v = v.Field(s.index)
			case reflect.Pointer:
				p := reflect.New(v.Type().Elem())
				p.Elem().Set(v.Elem())
				v.Set(p)
				v = p.Elem()
			case reflect.Slice:
				clone := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
				reflect.Copy(clone, v)
				v.Set(clone)
				v = clone.Index(s.index)
			}
		}
		return v
	}
	walkLeaves(t, reflect.ValueOf(&base.Campaigns[3]).Elem(), "campaigns[3]", func(_ reflect.Value, path string, steps []leafStep, edit func(reflect.Value)) {
		rs := reparsed()
		edit(own(reflect.ValueOf(&rs.Campaigns[3]).Elem(), steps))
		check(path+" edited", rs, cc.CompileImmutable)
		check(path+" restored", reparsed(), cc.CompileImmutable)
	})

	// A copy that Compile sees and its caller then edits in place.
	cp := *base
	cp.Campaigns = make([]rules.Campaign, len(base.Campaigns))
	var a copyArena
	for i := range cp.Campaigns {
		cp.Campaigns[i] = a.copy(&base.Campaigns[i])
	}
	check("copy", &cp, cc.Compile)
	c = &cp.Campaigns[3]
	for _, e := range []struct {
		what string
		at   *string
	}{
		{"adomain", &c.Adomain[0]},
		{"clause value", &c.Targeting.All[0].Any[0]},
		{"creative adm", &c.Creatives[0].Adm},
	} {
		old := *e.at
		*e.at += "x"
		check("copy "+e.what+" edited in place", &cp, cc.Compile)
		*e.at = old
		check("copy "+e.what+" restored", &cp, cc.Compile)
	}
	*c.Priority++
	check("copy priority edited in place", &cp, cc.Compile)
	*c.Priority--
	check("copy priority restored", &cp, cc.Compile)
}

// TestCompileLeavesImmutableSet: the Compiler remembers the campaigns of
// a set given to CompileImmutable by borrowing that set's own array; a
// later Compile of another set must not write its copies into it (the
// Parser reuses those campaigns for its next set, and the engine may
// still serve them).
func TestCompileLeavesImmutableSet(t *testing.T) {
	rs := smallRules(t, 40)
	cc, err := NewCompiler(DefaultCompilerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := cc.CompileImmutable(rs, ""); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(rs.Campaigns)
	cp := *rs
	cp.Campaigns = slices.Clone(rs.Campaigns)
	cp.Campaigns[3].BidCPM++
	got, err := cc.Compile(&cp, "")
	sameAsFresh(t, "edited copy", &cp, got, err)
	for i := range want {
		if !reflect.DeepEqual(rs.Campaigns[i], want[i]) {
			t.Fatalf("campaign %d (%s) of the immutable set changed", i, want[i].ID)
		}
	}
}

// leafStep is one move from a value to a part of it: a struct field, the
// value a pointer points to, or a slice element (index is the field's or
// the element's).
type leafStep struct {
	kind  reflect.Kind
	index int
}

// walkLeaves calls visit for every leaf of v, a campaign with every
// optional part present (fillLeaves): every string, number, pointer and
// slice, a pointer's or slice's own parts after it. visit gets the leaf,
// its path (path is v's), the steps from v to it, and edit, which changes
// a value of the leaf's kind: a string grows a byte, a number grows by
// one, a pointer becomes nil, a slice loses its last element (keeping its
// array). walkLeaves fails t on a kind it cannot edit, on an empty slice
// (whose elements would go unedited), and unless it visited every kind
// and at least 40 leaves.
func walkLeaves(t *testing.T, v reflect.Value, path string, visit func(leaf reflect.Value, path string, steps []leafStep, edit func(reflect.Value))) {
	t.Helper()
	n := 0
	kinds := map[reflect.Kind]int{}
	var walk func(v reflect.Value, path string, steps []leafStep)
	walk = func(v reflect.Value, path string, steps []leafStep) {
		leaf := func(edit func(l reflect.Value)) {
			n++
			kinds[v.Kind()]++
			visit(v, path, steps, edit)
		}
		steps = slices.Clip(steps) // each appended step on its own array
		switch v.Kind() {
		case reflect.String:
			leaf(func(l reflect.Value) { l.SetString(l.String() + "x") })
		case reflect.Int32:
			leaf(func(l reflect.Value) { l.SetInt(l.Int() + 1) })
		case reflect.Float64:
			leaf(func(l reflect.Value) { l.SetFloat(l.Float() + 1) })
		case reflect.Pointer:
			leaf(func(l reflect.Value) { l.Set(reflect.Zero(l.Type())) })
			walk(v.Elem(), path+"*", append(steps, leafStep{kind: reflect.Pointer}))
		case reflect.Struct:
			for i := range v.NumField() {
				walk(v.Field(i), path+"."+v.Type().Field(i).Name, append(steps, leafStep{kind: reflect.Struct, index: i}))
			}
		case reflect.Slice:
			if v.Len() == 0 {
				t.Fatalf("%s: empty, its elements go unedited", path)
			}
			leaf(func(l reflect.Value) { l.Set(l.Slice(0, l.Len()-1)) })
			for i := range v.Len() {
				walk(v.Index(i), fmt.Sprintf("%s[%d]", path, i), append(steps, leafStep{kind: reflect.Slice, index: i}))
			}
		default:
			t.Fatalf("%s: kind %v not edited", path, v.Kind())
		}
	}
	walk(v, path, nil)
	if len(kinds) != 5 || n < 40 {
		t.Errorf("edited %d leaves of kinds %v, want every kind", n, kinds)
	}
}

// smallRules generates the rules of the small world with n campaigns.
func smallRules(t *testing.T, n int) *rules.RuleSet {
	t.Helper()
	cfg := world.SmallConfig()
	cfg.Campaigns = n
	rs, err := world.GenerateRules(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// fillLeaves gives c one of every optional part, so that every leaf of a
// campaign exists to be edited.
func fillLeaves(c *rules.Campaign) {
	p := int32(2)
	c.Priority = &p
	c.Targeting.None = append(c.Targeting.None, rules.Clause{Facet: "zz", Any: []string{"a"}})
	for i := range c.Creatives {
		cr := &c.Creatives[i]
		cr.Persona = append(cr.Persona, rules.Clause{Facet: "zz", Any: []string{"b"}})
		cr.Channels = append(cr.Channels, "web")
		cr.Cat = append(cr.Cat, "IAB1")
	}
	c.Adomain = append(c.Adomain, "x.example")
	c.Cat = append(c.Cat, "IAB2")
	c.Targeting.Channels = append(c.Targeting.Channels, "web")
}

// sameAsFresh fails t unless got, compiled from rs with error gerr, equals
// a fresh Compile of rs, or fails alike (the compile time and stats left
// out), naming the fields that differ.
func sameAsFresh(t *testing.T, what string, rs *rules.RuleSet, got *Rules, gerr error) {
	t.Helper()
	want, werr := Compile(rs, "")
	if fmt.Sprint(gerr) != fmt.Sprint(werr) {
		t.Fatalf("%s: Compiler: %v; fresh: %v", what, gerr, werr)
	}
	if gerr != nil {
		return
	}
	got.compiled, got.stats = time.Time{}, CompileStats{}
	want.compiled, want.stats = time.Time{}, CompileStats{}
	if reflect.DeepEqual(got, want) {
		return
	}
	gv, wv := reflect.ValueOf(got).Elem(), reflect.ValueOf(want).Elem()
	field := func(v reflect.Value, i int) any { // unexported fields too
		return reflect.NewAt(v.Field(i).Type(), v.Field(i).Addr().UnsafePointer()).Elem().Interface()
	}
	for i := range gv.NumField() {
		if !reflect.DeepEqual(field(gv, i), field(wv, i)) {
			t.Logf("%s: field %s differs", what, gv.Type().Field(i).Name)
		}
	}
	t.Fatalf("%s: rules differ from a fresh compilation", what)
}

// TestArenasShared compiles units, and copies campaigns, many to one
// arena: each must equal what it is alone, after all the others were cut
// from the same arrays, and every slice in it must end at its length, so
// that nothing appended to one can write into another.
func TestArenasShared(t *testing.T) {
	rs := smallRules(t, 300)
	var ua unitArena
	var ca copyArena
	units := make([]*unit, len(rs.Campaigns))
	copies := make([]rules.Campaign, len(rs.Campaigns))
	for i := range rs.Campaigns {
		units[i] = compileUnit(&rs.Campaigns[i], rules.Digest{byte(i)}, &ua)
		copies[i] = ca.copy(&rs.Campaigns[i])
	}
	for i := range rs.Campaigns {
		var alone unitArena
		if want := compileUnit(&rs.Campaigns[i], rules.Digest{byte(i)}, &alone); !reflect.DeepEqual(units[i], want) {
			t.Errorf("campaigns[%d]: unit from a shared arena differs from one compiled alone", i)
		}
		if !reflect.DeepEqual(copies[i], rs.Campaigns[i]) {
			t.Errorf("campaigns[%d]: copy from a shared arena differs from the campaign", i)
		}
		slicesEndAtLength(t, fmt.Sprintf("units[%d]", i), reflect.ValueOf(units[i]).Elem())
		slicesEndAtLength(t, fmt.Sprintf("copies[%d]", i), reflect.ValueOf(&copies[i]).Elem())
	}
}

// slicesEndAtLength fails t for every slice reachable from v whose
// capacity is more than its length.
func slicesEndAtLength(t *testing.T, path string, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			slicesEndAtLength(t, path+"."+v.Type().Field(i).Name, v.Field(i))
		}
	case reflect.Slice:
		if v.Cap() != v.Len() {
			t.Errorf("%s: cap %d, len %d", path, v.Cap(), v.Len())
		}
		for i := range v.Len() {
			slicesEndAtLength(t, fmt.Sprintf("%s[%d]", path, i), v.Index(i))
		}
	}
}

// TestCompileSetsEveryField compiles a set in which every field of a
// compiled campaign and creative has a reason to be set: each must be set
// (not zero) in at least one, so that no field is left behind when
// compiling or linking copies them one by one.
func TestCompileSetsEveryField(t *testing.T) {
	rs := smallRules(t, 100)
	for i := range 10 {
		fillLeaves(&rs.Campaigns[i])
	}
	c := &rs.Campaigns[0]
	c.Start, c.End = "2026-01-01T00:00:00Z", "2036-01-01T00:00:00Z"
	c.Targeting.All = append(c.Targeting.All, c.Targeting.All...) // a facet twice: verify
	c.FrequencyCap = rules.FrequencyCap{Max: 3, Window: "24h"}
	rs.ContentRules.BlockedAdomain = append(rs.ContentRules.BlockedAdomain, rs.Campaigns[1].Adomain[0])
	rs.ContentRules.BlockedCat = append(rs.ContentRules.BlockedCat, "IAB1")
	r, err := Compile(rs, "")
	if err != nil {
		t.Fatal(err)
	}
	campaigns := reflect.ValueOf(r.campaigns)
	var creatives []Creative
	for _, c := range r.campaigns {
		creatives = append(creatives, c.Creatives...)
	}
	for _, all := range []reflect.Value{campaigns, reflect.ValueOf(creatives)} {
		typ := all.Type().Elem()
	fields:
		for f := range typ.NumField() {
			for i := range all.Len() {
				if !all.Index(i).Field(f).IsZero() {
					continue fields
				}
			}
			t.Errorf("%s.%s is zero in every one compiled", typ.Name(), typ.Field(f).Name)
		}
	}
}

// TestNaming: Rules.Naming finds, for every segment the rules name and
// one they do not, the campaigns whose targeting.all names it, those
// whose creatives' personas do (and not targeting.all), and those whose
// targeting.none does, in rank order, as a walk of the rule set does.
func TestNaming(t *testing.T) {
	rs, err := world.GenerateRules(world.SmallConfig())
	if err != nil {
		t.Fatal(err)
	}
	// Some exclusions, and a segment only a creative names.
	rs.Campaigns[1].Targeting.None = append(rs.Campaigns[1].Targeting.None, rules.Clause{Facet: "title", Any: []string{"intern", "cmo"}})
	rs.Campaigns[4].Targeting.None = append(rs.Campaigns[4].Targeting.None, rules.Clause{Facet: "industry", Any: []string{"gaming"}})
	rs.Campaigns[6].Creatives[0].Persona = append(rs.Campaigns[6].Creatives[0].Persona, rules.Clause{Facet: "zz_only", Any: []string{"creative"}})
	rs.Campaigns[1].Status = rules.StatusPaused
	r, err := Compile(rs, "")
	if err != nil {
		t.Fatal(err)
	}
	want := map[Fact]*Naming{{"title", "no-such-value"}: {}}
	note := func(cs []rules.Clause, add func(n *Naming)) {
		for _, c := range cs {
			for _, v := range c.Any {
				f := Fact{c.Facet, v}
				if want[f] == nil {
					want[f] = &Naming{}
				}
				add(want[f])
			}
		}
	}
	// In rank order, as Naming lists them.
	cs := r.Campaigns()
	for o := range cs {
		i := slices.IndexFunc(rs.Campaigns, func(c rules.Campaign) bool { return c.ID == cs[o].ID })
		c := &rs.Campaigns[i]
		note(c.Targeting.All, func(n *Naming) {
			if !slices.Contains(n.Targeting, c.ID) {
				n.Targeting = append(n.Targeting, c.ID)
			}
		})
		note(c.Targeting.None, func(n *Naming) {
			if !slices.Contains(n.Excluding, c.ID) {
				n.Excluding = append(n.Excluding, c.ID)
			}
		})
		for _, cr := range c.Creatives {
			note(cr.Persona, func(n *Naming) {
				if !slices.Contains(n.Personalizing, c.ID) {
					n.Personalizing = append(n.Personalizing, c.ID)
				}
			})
		}
	}
	var targeted, personalizing, excluded, paused int
	for f, w := range want {
		// A campaign that targets the segment is not also listed as
		// personalizing by it.
		w.Personalizing = slices.DeleteFunc(w.Personalizing, func(id string) bool { return slices.Contains(w.Targeting, id) })
		for o := range cs {
			id := cs[o].ID
			i := slices.IndexFunc(rs.Campaigns, func(c rules.Campaign) bool { return c.ID == id })
			if !rs.Campaigns[i].Active() && (slices.Contains(w.Targeting, id) || slices.Contains(w.Personalizing, id) || slices.Contains(w.Excluding, id)) {
				w.Paused = append(w.Paused, id)
			}
		}
		got := r.Naming(f)
		if !slices.Equal(got.Targeting, w.Targeting) || !slices.Equal(got.Personalizing, w.Personalizing) || !slices.Equal(got.Excluding, w.Excluding) || !slices.Equal(got.Paused, w.Paused) {
			t.Errorf("Naming(%v) = %+v; want %+v", f, got, *w)
		}
		targeted += len(got.Targeting)
		personalizing += len(got.Personalizing)
		excluded += len(got.Excluding)
		paused += len(got.Paused)
	}
	if targeted == 0 || personalizing == 0 || excluded < 2 || paused == 0 || len(want) < 10 {
		t.Errorf("checked %d segments, %d targeting, %d personalizing, %d excluding and %d paused namings: too few to tell", len(want), targeted, personalizing, excluded, paused)
	}
}

// TestHouseBlockedAsWarned: the campaigns and creatives that compiling
// blocks by the house content rules are those that
// rules.DeliveryWarnings warns never bid or never serve (both through
// rules.ContentRules.Blocks): a planner is warned of exactly what the
// engine does.
func TestHouseBlockedAsWarned(t *testing.T) {
	rs, err := world.GenerateRules(world.SmallConfig())
	if err != nil {
		t.Fatal(err)
	}
	// Block a few advertisers, a category (subcategories too) and one
	// subcategory; give a few campaigns' creatives only blocked ones.
	for i := 0; i < len(rs.Campaigns); i += 37 {
		rs.ContentRules.BlockedAdomain = append(rs.ContentRules.BlockedAdomain, rs.Campaigns[i].Adomain...)
	}
	rs.ContentRules.BlockedCat = []string{"IAB3", "IAB13-7"}
	for i := 5; i < len(rs.Campaigns); i += 41 {
		c := &rs.Campaigns[i]
		c.Cat = []string{"IAB3-1"}
		for j := range c.Creatives {
			c.Creatives[j].Cat = nil
		}
	}
	r, err := Compile(rs, "")
	if err != nil {
		t.Fatal(err)
	}
	compiled := map[string]*Campaign{}
	for i := range r.campaigns {
		compiled[r.campaigns[i].ID] = &r.campaigns[i]
	}
	type key struct{ campaign, creative string } // creative "": the campaign
	warned := map[key]bool{}
	for _, w := range rs.DeliveryWarnings(time.Time{}) {
		var i, j int
		switch {
		case strings.HasSuffix(w.Msg, "the campaign never bids") && strings.Contains(w.Path, ".adomain["),
			strings.Contains(w.Msg, "the campaign never bids (content_rules.blocked_cat"):
			fmt.Sscanf(w.Path, "campaigns[%d]", &i)
			warned[key{rs.Campaigns[i].ID, ""}] = true
			for _, cr := range rs.Campaigns[i].Creatives {
				warned[key{rs.Campaigns[i].ID, cr.ID}] = true
			}
		case strings.HasSuffix(w.Msg, "never serves") && strings.Contains(w.Msg, "blocked_cat"):
			fmt.Sscanf(w.Path, "campaigns[%d].creatives[%d]", &i, &j)
			warned[key{rs.Campaigns[i].ID, rs.Campaigns[i].Creatives[j].ID}] = true
		}
	}
	var blocked, whole int
	for _, c := range rs.Campaigns {
		if !c.Active() {
			continue
		}
		cc := compiled[c.ID]
		if got, want := cc.houseBlocked != "", warned[key{c.ID, ""}]; got != want {
			t.Errorf("campaign %s: compiled blocked %v (%q), warned %v", c.ID, got, cc.houseBlocked, want)
		}
		if cc.houseBlocked != "" {
			whole++
			if strings.Contains(cc.houseBlocked, "adomain") {
				continue // its creatives are never looked at
			}
		}
		for _, cr := range cc.Creatives {
			if got, want := cr.houseBlocked != "", warned[key{c.ID, cr.ID}]; got != want {
				t.Errorf("creative %s of %s: compiled blocked %v (%q), warned %v", cr.ID, c.ID, got, cr.houseBlocked, want)
			}
			if cr.houseBlocked != "" {
				blocked++
			}
		}
	}
	if whole < 10 || blocked < 10 {
		t.Errorf("%d campaigns and %d creatives blocked: the test tests too little", whole, blocked)
	}
}
