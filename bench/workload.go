package bench

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"

	"github.com/personad/personad/bench/world"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

// Weighted is one choice of a weighted mix.
type Weighted struct {
	Value  string
	Weight float64
}

// WorkloadConfig describes the traffic a [Workload] generates. The zero value
// is not useful; start from [DefaultWorkloadConfig].
type WorkloadConfig struct {
	// Seed makes the sequence reproducible: the same config and seed give
	// the same requests.
	Seed uint64
	// Users is the number of known users; ids are u%08d by index, the demo
	// world's scheme.
	Users int
	// ZipfS is the Zipf exponent (> 1) of user popularity by rank.
	ZipfS float64
	// UnknownUsers is the fraction of requests whose user is not in the
	// world (ids with an "anon-" prefix).
	UnknownUsers float64
	// ExchangeIDOnly is the fraction of known users sent in user.id with no
	// buyeruid (the rest carry buyeruid plus an exchange user.id).
	ExchangeIDOnly float64
	// Channels is the channel mix; Sizes the banner size mix ("WxH").
	Channels []Weighted
	Sizes    []Weighted
	// ChannelByDomain is the fraction of requests that name no ext.channel
	// and leave the channel to the rules' domain/bundle map.
	ChannelByDomain float64
	// MultiSize is the fraction of impressions offering a second size;
	// MultiImp the fraction of requests with two impressions.
	MultiSize float64
	MultiImp  float64
	// FloorFrac is the fraction of impressions with a bidfloor, drawn
	// uniformly from [0.10, MaxFloor] CPM in cents.
	FloorFrac float64
	MaxFloor  float64
	// BlockFrac is the fraction of requests carrying bcat and/or badv.
	BlockFrac float64
	// SegmentFrac is the fraction of requests carrying user.data segments.
	SegmentFrac float64
	// Facets are the facet values request-carried segments are drawn from.
	Facets map[string][]string
	// Tmax is a fixed tmax in ms; 0 draws from a realistic mix.
	Tmax int32
}

// DefaultFacets are the demo world's facets and values, so that
// request-carried segments name values its campaigns target.
func DefaultFacets() map[string][]string {
	return world.Facets(world.DemoConfig())
}

// DefaultWorkloadConfig is the standard persona traffic.
func DefaultWorkloadConfig() WorkloadConfig {
	return WorkloadConfig{
		Seed:            1,
		Users:           1_000_000,
		ZipfS:           1.1,
		UnknownUsers:    0.05,
		ExchangeIDOnly:  0.15,
		Channels:        []Weighted{{"social", 30}, {"web", 30}, {"email", 10}, {"mobile", 15}, {"video", 15}},
		Sizes:           []Weighted{{"300x250", 35}, {"728x90", 20}, {"320x50", 20}, {"160x600", 10}, {"1200x627", 15}},
		ChannelByDomain: 0.25,
		MultiSize:       0.3,
		MultiImp:        0.1,
		FloorFrac:       0.6,
		MaxFloor:        5,
		BlockFrac:       0.1,
		SegmentFrac:     0.15,
		Facets:          DefaultFacets(),
	}
}

// ParseWeights parses "a=3,b=1" (a bare "a" weighs 1) into a mix.
func ParseWeights(s string) ([]Weighted, error) {
	var out []Weighted
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, w, ok := strings.Cut(part, "=")
		weight := 1.0
		if ok {
			var err error
			weight, err = strconv.ParseFloat(w, 64)
			if err != nil || !(weight >= 0) || math.IsInf(weight, 0) { // NaN fails >= 0
				return nil, fmt.Errorf("bench: weight of %q: %q is not a finite number >= 0", name, w)
			}
		}
		out = append(out, Weighted{Value: name, Weight: weight})
	}
	if len(out) == 0 {
		return nil, errors.New("bench: empty mix")
	}
	return out, nil
}

// ParseSize parses a banner size "WxH", both positive integers (at most
// 10000, the rules' limit), and nothing after them.
func ParseSize(s string) (w, h int32, err error) {
	ws, hs, ok := strings.Cut(s, "x")
	wi, errW := strconv.ParseInt(ws, 10, 32)
	hi, errH := strconv.ParseInt(hs, 10, 32)
	if !ok || errW != nil || errH != nil || wi <= 0 || hi <= 0 || wi > 10000 || hi > 10000 {
		return 0, 0, fmt.Errorf("size %q is not WxH (two whole numbers of pixels, 1 to 10000, e.g. 300x250)", s)
	}
	return int32(wi), int32(hi), nil
}

// FormatWeights is the inverse of [ParseWeights].
func FormatWeights(ws []Weighted) string {
	parts := make([]string, len(ws))
	for i, w := range ws {
		parts[i] = w.Value + "=" + strconv.FormatFloat(w.Weight, 'g', -1, 64)
	}
	return strings.Join(parts, ",")
}

// Workload generates bid requests. It is not safe for concurrent use; build
// a [Workload.Pool] and share that instead.
type Workload struct {
	cfg      WorkloadConfig
	rng      *rand.Rand
	zipf     *rand.Zipf
	perm     uint64 // multiplier of the rank → index bijection
	channels picker
	sizes    picker
	sizeWH   [][2]int32
	facets   []string // sorted facet names, for determinism
	n        uint64
}

// NewWorkload validates cfg and returns a generator at the start of its
// sequence. It does not modify cfg.
func NewWorkload(cfg WorkloadConfig) (*Workload, error) {
	if cfg.Users <= 0 {
		return nil, errors.New("bench: workload: users must be positive")
	}
	// NaN fails every comparison: rand.NewZipf returns nil for it, and
	// drawing from that never returns.
	if !(cfg.ZipfS > 1) || math.IsInf(cfg.ZipfS, 0) {
		return nil, fmt.Errorf("bench: workload: zipf exponent %v must be finite and > 1", cfg.ZipfS)
	}
	for name, f := range map[string]float64{"unknown-users": cfg.UnknownUsers, "exchange-id-only": cfg.ExchangeIDOnly,
		"channel-by-domain": cfg.ChannelByDomain, "multi-size": cfg.MultiSize, "multi-imp": cfg.MultiImp,
		"floor": cfg.FloorFrac, "blocks": cfg.BlockFrac, "segments": cfg.SegmentFrac} {
		if !(f >= 0 && f <= 1) { // NaN too
			return nil, fmt.Errorf("bench: workload: %s fraction %v outside [0,1]", name, f)
		}
	}
	if cfg.FloorFrac > 0 && cfg.MaxFloor < 0.10 {
		return nil, fmt.Errorf("bench: workload: max floor %v must be at least 0.10", cfg.MaxFloor)
	}
	if cfg.Tmax < 0 {
		return nil, errors.New("bench: workload: tmax must not be negative")
	}
	channels, err := newPicker(cfg.Channels)
	if err != nil {
		return nil, fmt.Errorf("bench: workload: channels: %w", err)
	}
	sizes, err := newPicker(cfg.Sizes)
	if err != nil {
		return nil, fmt.Errorf("bench: workload: sizes: %w", err)
	}
	wh := make([][2]int32, len(cfg.Sizes))
	for i, s := range cfg.Sizes {
		w, h, err := ParseSize(s.Value)
		if err != nil {
			return nil, fmt.Errorf("bench: workload: %w", err)
		}
		wh[i] = [2]int32{w, h}
	}
	facets := make([]string, 0, len(cfg.Facets))
	for f, vs := range cfg.Facets {
		if len(vs) > 0 {
			facets = append(facets, f)
		}
	}
	sort.Strings(facets)
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15))
	w := &Workload{
		cfg:      cfg,
		rng:      rng,
		zipf:     rand.NewZipf(rng, cfg.ZipfS, 1, uint64(cfg.Users-1)),
		perm:     coprimeMultiplier(uint64(cfg.Users)),
		channels: channels,
		sizes:    sizes,
		sizeWH:   wh,
		facets:   facets,
	}
	return w, nil
}

// coprimeMultiplier returns a large multiplier coprime to n, so that
// rank*m mod n is a bijection scattering popular ranks across the id space:
// the popular users of the traffic are not simply the lowest ids, which the
// world generator may have favoured with segment memberships.
func coprimeMultiplier(n uint64) uint64 {
	m := uint64(2654435761) % n
	if m == 0 {
		m = 1
	}
	for gcd(m, n) != 1 {
		m++
	}
	return m
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// UserIndex returns the world index of the user at popularity rank r.
func (w *Workload) UserIndex(rank uint64) uint64 {
	return rank * w.perm % uint64(w.cfg.Users)
}

// Domains and bundles as the demo world's channel map knows them (some
// unknown to it, which resolve to the default channel), and blocks that
// hit its house rules and advertisers.
var (
	socialDomains  = []string{"linkedin.com", "x.com", "twitter.com", "reddit.com", "facebook.com"}
	webDomains     = []string{"techcrunch.com", "hbr.org", "forbes.com", "medium.com", "news.example.com"}
	emailDomains   = []string{"mail.google.com", "outlook.live.com", "mail.yahoo.com", "proton.me"}
	videoDomains   = []string{"youtube.com", "vimeo.com", "twitch.tv"}
	mobileBundles  = []string{"com.slack", "com.microsoft.teams", "com.salesforce.chatter", "com.hubspot.android", "com.example.news"}
	blockedCats    = []string{"IAB25", "IAB26", "IAB3", "IAB7", "IAB13", "IAB19-18"}
	blockedDomains = []string{"badco.example", "acme.com", "globex.com", "hooli.com", "competitor.example"}
	tmaxMix        = []int32{50, 80, 100, 100, 120, 150, 200, 300}
	deviceTypes    = []int32{1, 2, 4, 5}
)

func (w *Workload) pick(xs []string) string { return xs[w.rng.IntN(len(xs))] }

// Next returns the next request of the sequence.
func (w *Workload) Next() *personadpb.BidRequest {
	r := w.rng
	n := w.n
	w.n++
	req := &personadpb.BidRequest{
		Id:     fmt.Sprintf("%x-%d", w.cfg.Seed, n),
		Cur:    []string{"USD"},
		Device: &personadpb.Device{Devicetype: deviceTypes[r.IntN(len(deviceTypes))], Ua: "Mozilla/5.0", Ip: fmt.Sprintf("192.0.2.%d", r.IntN(254)+1)},
	}
	if w.cfg.Tmax > 0 {
		req.Tmax = w.cfg.Tmax
	} else {
		req.Tmax = tmaxMix[r.IntN(len(tmaxMix))]
	}

	// User: Zipf-popular known users, or an unknown one.
	user := &personadpb.User{}
	if r.Float64() < w.cfg.UnknownUsers {
		user.Id = fmt.Sprintf("anon-%016x", r.Uint64())
	} else {
		id := fmt.Sprintf("u%08d", w.UserIndex(w.zipf.Uint64()))
		if r.Float64() < w.cfg.ExchangeIDOnly {
			user.Id = id
		} else {
			user.Buyeruid = id
			user.Id = fmt.Sprintf("x%012x", r.Uint64()>>16)
		}
	}
	if len(w.facets) > 0 && r.Float64() < w.cfg.SegmentFrac {
		d := &personadpb.Data{Id: "dp1", Name: "persona-provider"}
		for k := r.IntN(3) + 1; k > 0; k-- {
			f := w.facets[r.IntN(len(w.facets))]
			v := w.pick(w.cfg.Facets[f])
			if r.IntN(2) == 0 {
				d.Segment = append(d.Segment, &personadpb.Segment{Name: f, Value: v})
			} else {
				d.Segment = append(d.Segment, &personadpb.Segment{Id: f + ":" + v})
			}
		}
		user.Data = []*personadpb.Data{d}
	}
	req.User = user

	// Channel, either stated in ext.channel or left to the domain map.
	channel := w.cfg.Channels[w.channels.pick(r)].Value
	byDomain := r.Float64() < w.cfg.ChannelByDomain
	if channel == "mobile" {
		app := &personadpb.App{Id: "app1", Bundle: w.pick(mobileBundles), Publisher: &personadpb.Publisher{Id: "pub-app"}}
		if !byDomain {
			app.Ext = &personadpb.DistributionExt{Channel: channel}
		}
		req.App = app
	} else {
		var domain string
		switch channel {
		case "social":
			domain = w.pick(socialDomains)
		case "email":
			domain = w.pick(emailDomains)
		case "video":
			domain = w.pick(videoDomains)
		default:
			domain = w.pick(webDomains)
		}
		site := &personadpb.Site{Id: "site-" + domain, Domain: domain, Page: "https://" + domain + "/",
			Publisher: &personadpb.Publisher{Id: "pub-" + domain}}
		if !byDomain {
			site.Ext = &personadpb.DistributionExt{Channel: channel}
		}
		req.Site = site
	}

	// Impressions.
	nimp := 1
	if r.Float64() < w.cfg.MultiImp {
		nimp = 2
	}
	for i := range nimp {
		imp := &personadpb.Imp{Id: strconv.Itoa(i + 1), Tagid: fmt.Sprintf("tag-%d", r.IntN(100)), Bidfloorcur: "USD"}
		wh := w.sizeWH[w.sizes.pick(r)]
		b := &personadpb.Banner{}
		switch {
		case r.Float64() < w.cfg.MultiSize:
			wh2 := w.sizeWH[w.sizes.pick(r)]
			b.Format = []*personadpb.Format{{W: wh[0], H: wh[1]}}
			if wh2 != wh {
				b.Format = append(b.Format, &personadpb.Format{W: wh2[0], H: wh2[1]})
			}
		case r.IntN(4) == 0:
			b.W, b.H = wh[0], wh[1]
		default:
			b.Format = []*personadpb.Format{{W: wh[0], H: wh[1]}}
		}
		imp.Banner = b
		if r.Float64() < w.cfg.FloorFrac {
			cents := 10 + r.IntN(int(w.cfg.MaxFloor*100)-9)
			imp.Bidfloor = float64(cents) / 100
		}
		req.Imp = append(req.Imp, imp)
	}

	if r.Float64() < w.cfg.BlockFrac {
		switch r.IntN(3) {
		case 0:
			req.Bcat = []string{w.pick(blockedCats), w.pick(blockedCats)}
		case 1:
			req.Badv = []string{w.pick(blockedDomains)}
		default:
			req.Bcat = []string{w.pick(blockedCats)}
			req.Badv = []string{w.pick(blockedDomains)}
		}
	}
	return req
}

// Pool generates the next n requests. The returned slice and its messages
// are read-only from then on and safe to share between goroutines (gRPC only
// reads them when marshalling).
func (w *Workload) Pool(n int) []*personadpb.BidRequest {
	out := make([]*personadpb.BidRequest, n)
	for i := range out {
		out[i] = w.Next()
	}
	return out
}

// picker draws an index by weight.
type picker struct{ cum []float64 }

func newPicker(ws []Weighted) (picker, error) {
	if len(ws) == 0 {
		return picker{}, errors.New("empty mix")
	}
	cum := make([]float64, len(ws))
	total := 0.0
	for i, w := range ws {
		if !(w.Weight >= 0) || math.IsInf(w.Weight, 0) { // NaN fails >= 0
			return picker{}, fmt.Errorf("weight %v for %q: want a finite number >= 0", w.Weight, w.Value)
		}
		total += w.Weight
		cum[i] = total
	}
	if total <= 0 {
		return picker{}, errors.New("weights sum to zero")
	}
	return picker{cum: cum}, nil
}

func (p picker) pick(r *rand.Rand) int {
	x := r.Float64() * p.cum[len(p.cum)-1]
	// The first cumulative weight above x; a zero-weight entry never is.
	return sort.Search(len(p.cum), func(i int) bool { return p.cum[i] > x })
}
