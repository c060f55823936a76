package bench

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

func newTestWorkload(t testing.TB, mod func(*WorkloadConfig)) *Workload {
	t.Helper()
	cfg := DefaultWorkloadConfig()
	if mod != nil {
		mod(&cfg)
	}
	w, err := NewWorkload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWorkloadDeterministic(t *testing.T) {
	a := newTestWorkload(t, nil).Pool(2000)
	b := newTestWorkload(t, nil).Pool(2000)
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			t.Fatalf("same seed, request %d differs (-a +b):\n%s", i, cmp.Diff(a[i], b[i], protocmp.Transform()))
		}
	}
	c := newTestWorkload(t, func(c *WorkloadConfig) { c.Seed = 2 }).Pool(2000)
	same := 0
	for i := range a {
		a[i].Id, c[i].Id = "", ""
		if proto.Equal(a[i], c[i]) {
			same++
		}
	}
	if same > 20 {
		t.Errorf("seeds 1 and 2 agree on %d of 2000 requests", same)
	}
}

// The mix is what the config says, within sampling error, and every
// request is well formed.
func TestWorkloadMix(t *testing.T) {
	const n = 20000
	w := newTestWorkload(t, func(c *WorkloadConfig) { c.Users = 1000 })
	var unknown, segs, blocked, floors, imps, extChannel, domainOnly int
	channels := map[string]int{}
	sizes := map[string]int{}
	users := map[string]int{}
	for _, r := range w.Pool(n) {
		if r.Id == "" || len(r.Imp) == 0 || r.Tmax <= 0 || (r.Site == nil) == (r.App == nil) {
			t.Fatalf("malformed request %v", r)
		}
		u := r.User
		id := u.Buyeruid
		if id == "" {
			id = u.Id
		}
		switch {
		case strings.HasPrefix(id, "anon-"):
			unknown++
		case len(id) == 9 && id[0] == 'u' && id < "u00001000":
			users[id]++
		default:
			t.Fatalf("user id %q neither u%%08d below 1000 nor anon-", id)
		}
		if len(u.Data) > 0 {
			segs++
			for _, s := range u.Data[0].Segment {
				if (s.Name == "" || s.Value == "") && !strings.Contains(s.Id, ":") {
					t.Fatalf("segment %v is neither name/value nor facet:value", s)
				}
			}
		}
		if len(r.Bcat)+len(r.Badv) > 0 {
			blocked++
		}
		ext := r.GetSite().GetExt()
		if r.App != nil {
			ext = r.App.Ext
		}
		if ch := ext.GetChannel(); ch != "" {
			extChannel++
			channels[ch]++
		} else {
			domainOnly++
		}
		for _, imp := range r.Imp {
			imps++
			if imp.Bidfloor > 0 {
				floors++
			}
			b := imp.Banner
			if len(b.Format) == 0 {
				if b.W <= 0 || b.H <= 0 {
					t.Fatalf("impression without a size: %v", imp)
				}
				sizes[sizeKey(b.W, b.H)]++
			}
			for _, f := range b.Format {
				sizes[sizeKey(f.W, f.H)]++
			}
		}
	}
	near := func(name string, got int, total int, want float64) {
		t.Helper()
		if f := float64(got) / float64(total); f < want*0.8 || f > want*1.2 {
			t.Errorf("%s: fraction %.3f, want %.3f ± 20%%", name, f, want)
		}
	}
	near("unknown users", unknown, n, 0.05)
	near("segments", segs, n, 0.15)
	near("blocks", blocked, n, 0.10)
	near("channel by domain", domainOnly, n, 0.25)
	near("floors", floors, imps, 0.6)
	near("social", channels["social"], extChannel, 0.30)
	near("email", channels["email"], extChannel, 0.10)
	if len(sizes) != 5 {
		t.Errorf("sizes %v, want the 5 of the mix", sizes)
	}
	// Zipf: the most popular user gets far more than a uniform share.
	top := 0
	for _, c := range users {
		top = max(top, c)
	}
	if uniform := n / 1000; top < 10*uniform {
		t.Errorf("most frequent user seen %d times, want ≥ %d (skewed)", top, 10*uniform)
	}
}

func sizeKey(w, h int32) string { return fmt.Sprintf("%dx%d", w, h) }

func TestUserIndexIsBijection(t *testing.T) {
	for _, n := range []int{1, 7, 1000, 1 << 10, 999_983} {
		w := newTestWorkload(t, func(c *WorkloadConfig) { c.Users = n })
		seen := make([]bool, n)
		for r := range uint64(n) {
			i := w.UserIndex(r)
			if i >= uint64(n) || seen[i] {
				t.Fatalf("users %d: rank %d → %d repeats or overflows", n, r, i)
			}
			seen[i] = true
		}
	}
}

func TestWorkloadValidation(t *testing.T) {
	for name, mod := range map[string]func(*WorkloadConfig){
		"users":    func(c *WorkloadConfig) { c.Users = 0 },
		"zipf":     func(c *WorkloadConfig) { c.ZipfS = 1 },
		"fraction": func(c *WorkloadConfig) { c.UnknownUsers = 1.5 },
		"size":     func(c *WorkloadConfig) { c.Sizes = []Weighted{{"300by250", 1}} },
		"weights":  func(c *WorkloadConfig) { c.Channels = []Weighted{{"web", 0}} },
		"NaN":      func(c *WorkloadConfig) { c.Channels = []Weighted{{"web", math.NaN()}} },
		"Inf":      func(c *WorkloadConfig) { c.Sizes = []Weighted{{"300x250", math.Inf(1)}, {"728x90", 1}} },
		"floor":    func(c *WorkloadConfig) { c.MaxFloor = 0 },
		"tmax":     func(c *WorkloadConfig) { c.Tmax = -1 },
	} {
		cfg := DefaultWorkloadConfig()
		mod(&cfg)
		if _, err := NewWorkload(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParseWeights(t *testing.T) {
	got, err := ParseWeights("social=3, web ,email=0.5")
	if err != nil {
		t.Fatal(err)
	}
	want := []Weighted{{"social", 3}, {"web", 1}, {"email", 0.5}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if FormatWeights(want) != "social=3,web=1,email=0.5" {
		t.Errorf("format %q", FormatWeights(want))
	}
	// NaN and ±Inf parse as floats: a NaN weight panicked the picker
	// (index out of range) and an infinite one made every pick the last.
	for _, bad := range []string{"", "a=x", "a=-1", "a=NaN", "a=Inf,b=1", "a=1,b=+Inf"} {
		if _, err := ParseWeights(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// A zero-weight choice is never picked.
func TestPickerSkipsZeroWeights(t *testing.T) {
	w := newTestWorkload(t, func(c *WorkloadConfig) {
		c.Channels = []Weighted{{"social", 0}, {"web", 1}, {"email", 0}}
		c.ChannelByDomain = 0
	})
	for _, r := range w.Pool(500) {
		if ch := r.GetSite().GetExt().GetChannel(); ch != "web" {
			t.Fatalf("channel %q picked with weight 0", ch)
		}
	}
}

func BenchmarkWorkloadNext(b *testing.B) {
	w := newTestWorkload(b, nil)
	b.ReportAllocs()
	var sink *personadpb.BidRequest
	for b.Loop() {
		sink = w.Next()
	}
	_ = sink
}

// NaN passes a check written as "v < 0 || v > 1": rand.NewZipf returns
// nil for a NaN exponent, and drawing from it never returns.
func TestNewWorkloadRefusesNaN(t *testing.T) {
	for name, mod := range map[string]func(*WorkloadConfig){
		"zipf NaN":      func(c *WorkloadConfig) { c.ZipfS = math.NaN() },
		"zipf +Inf":     func(c *WorkloadConfig) { c.ZipfS = math.Inf(1) },
		"blocks NaN":    func(c *WorkloadConfig) { c.BlockFrac = math.NaN() },
		"unknown NaN":   func(c *WorkloadConfig) { c.UnknownUsers = math.NaN() },
		"size 300x250x": func(c *WorkloadConfig) { c.Sizes = []Weighted{{"300x250x5", 1}} },
		"size 300x":     func(c *WorkloadConfig) { c.Sizes = []Weighted{{"300x", 1}} },
		"size 300x250 ": func(c *WorkloadConfig) { c.Sizes = []Weighted{{"300x250 px", 1}} },
	} {
		cfg := DefaultWorkloadConfig()
		mod(&cfg)
		if _, err := NewWorkload(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, s := range []string{"300x250", "1x1", "10000x10000"} {
		if _, _, err := ParseSize(s); err != nil {
			t.Errorf("ParseSize(%q): %v", s, err)
		}
	}
}
