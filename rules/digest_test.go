package rules

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// TestDigestCoversEveryField changes every leaf field of a fully populated
// campaign and of content rules, one at a time, and wants a new digest
// each time: a field the canonical encoding forgets would let a changed
// campaign reuse a stale compiled one.
func TestDigestCoversEveryField(t *testing.T) {
	rs, err := Parse("design.yaml", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	base := &rs.Campaigns[0]
	want := base.Digest()
	if again := base.Digest(); again != want {
		t.Fatalf("digest not deterministic: %v then %v", want, again)
	}
	n := 0
	forEachLeaf(reflect.ValueOf(base).Elem(), "campaign", func(path string, mutate func()) {
		c := deepCopy(t, base)
		forEachLeaf(reflect.ValueOf(c).Elem(), "campaign", func(p string, m func()) {
			if p == path {
				m()
			}
		})
		n++
		if c.Digest() == want {
			t.Errorf("changing %s leaves the campaign digest unchanged", path)
		}
	})
	rs.ContentRules.ChannelMap[0].Bundles = []string{"com.example"}
	wantCR := rs.ContentRules.Digest()
	forEachLeaf(reflect.ValueOf(&rs.ContentRules).Elem(), "content_rules", func(path string, mutate func()) {
		cp := deepCopyRules(t, rs)
		forEachLeaf(reflect.ValueOf(&cp.ContentRules).Elem(), "content_rules", func(p string, m func()) {
			if p == path {
				m()
			}
		})
		n++
		if cp.ContentRules.Digest() == wantCR {
			t.Errorf("changing %s leaves the content rules digest unchanged", path)
		}
	})
	if n < 32 {
		t.Errorf("visited %d leaves, want every one (>= 32)", n)
	}
	if v1, v2 := rs.Version(), (&RuleSet{Campaigns: rs.Campaigns}).Version(); v1 == v2 || len(v1) != 12 {
		t.Errorf("versions %q and %q: want 12 hex digits, different when content rules differ", v1, v2)
	}
}

func deepCopy(t *testing.T, c *Campaign) *Campaign {
	return &deepCopyRules(t, &RuleSet{Campaigns: []Campaign{*c}}).Campaigns[0]
}

func deepCopyRules(t *testing.T, rs *RuleSet) *RuleSet {
	t.Helper()
	js, err := MarshalJSON(rs)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := Parse("copy", js)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// forEachLeaf calls visit with the path of every leaf of v and a function
// that changes it in place. Slices are visited at element 0 (and changed
// by appending when they hold strings).
func forEachLeaf(v reflect.Value, path string, visit func(path string, mutate func())) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
			forEachLeaf(v.Field(i), path+"."+name, visit)
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.String {
			visit(path, func() { v.Set(reflect.Append(v, reflect.ValueOf("x"))) })
			if v.Len() > 0 {
				forEachLeaf(v.Index(0), path+"[0]", visit)
			}
			return
		}
		if v.Len() > 0 {
			forEachLeaf(v.Index(0), path+"[0]", visit)
		}
	case reflect.Pointer:
		visit(path, func() { v.Set(reflect.Zero(v.Type())) })
		if !v.IsNil() {
			forEachLeaf(v.Elem(), path+"*", visit)
		}
	case reflect.String:
		visit(path, func() { v.SetString(v.String() + "x") })
	case reflect.Float64:
		visit(path, func() { v.SetFloat(v.Float() + 1) })
	case reflect.Int32:
		visit(path, func() { v.SetInt(v.Int() + 1) })
	default:
		panic("forEachLeaf: unhandled kind " + v.Kind().String() + " at " + path)
	}
}

// TestDigestStable pins digests and versions computed by an earlier
// encoder, which built the whole encoding before hashing it: campaign
// digests key compile caches and name rule-set versions, so a faster
// encoder must give the same values. Adms of many lengths cross the
// encoder's buffer and direct-hash paths.
func TestDigestStable(t *testing.T) {
	rs, err := Parse("design.yaml", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	h := xxhash.New()
	c := rs.Campaigns[0]
	for _, n := range []int{0, 1, 31, 32, 63, 64, 65, 200, 255, 256, 257, 1000, 4096} {
		c.Creatives = append(c.Creatives, Creative{ID: "x", W: 1, H: 2, Adm: strings.Repeat("<a>", n/3) + strings.Repeat("z", n%3)})
		c.Advertiser = strings.Repeat("adv", n)
		d := c.Digest()
		h.Write(d[:])
		cr := c.Creatives[len(c.Creatives)-1].Digest()
		h.Write(cr[:])
	}
	for i := range rs.Campaigns {
		d := rs.Campaigns[i].Digest()
		h.Write(d[:])
	}
	d := rs.ContentRules.Digest()
	h.Write(d[:])
	h.WriteString(rs.Version())
	if got, want := h.Sum64(), uint64(0x66b2985051bf136f); got != want {
		t.Errorf("digests hash to %#x, want %#x", got, want)
	}
}
