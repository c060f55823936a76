package rules

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/text/currency"

	"github.com/personad/personad/internal/par"
)

// ValidationError is one problem in a rule set, at a field path such as
// "campaigns[3].creatives[1].w". Warnings (see [RuleSet.SegmentWarnings])
// use the same shape.
type ValidationError struct {
	Path string
	Msg  string
}

func (e *ValidationError) Error() string { return e.Path + ": " + e.Msg }

// ValidationErrors lists every problem found in a rule set.
type ValidationErrors []*ValidationError

// Problems returns err's validation errors, or err as one problem without
// a path when it holds none (a parse error, say).
func Problems(err error) ValidationErrors {
	var es ValidationErrors
	if errors.As(err, &es) {
		return es
	}
	return ValidationErrors{{Msg: err.Error()}}
}

func (es ValidationErrors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rules: %d error", len(es))
	if len(es) != 1 {
		b.WriteByte('s')
	}
	for _, e := range es {
		b.WriteString("\n  ")
		b.WriteString(e.Error())
	}
	return b.String()
}

// Limits of a rule set, checked by Validate.
const (
	MaxCampaigns         = 1_000_000
	MaxCreativesPerCamp  = 64
	MaxClauseValues      = 1024
	MaxBidCPM            = 10_000
	MaxCreativeDimension = 10_000
	// Budgets in currency units: the ledger counts a day's spend in 48 bits
	// of micro-units (about 281 million units).
	MaxDailyBudget = 100_000_000
	MaxTotalBudget = 1_000_000_000_000
	// MaxFrequencyWindow is the longest frequency-cap window (a leap year).
	MaxFrequencyWindow = 366 * 24 * time.Hour
)

// The shapes of names, checked by hand-written matchers (a rule set of
// 100,000 campaigns holds millions of names: regexp would dominate
// validation). The patterns name them in error messages.
var (
	idShape      = shape{pattern: `^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`, first: alnum, rest: alnum + "._:-", max: 128}
	facetShape   = shape{pattern: `^[a-z][a-z0-9_]{0,31}$`, first: lower, rest: lower + digits + "_", max: 32}
	valueShape   = shape{pattern: `^[a-z0-9][a-z0-9._-]{0,63}$`, first: lower + digits, rest: lower + digits + "._-", max: 64}
	channelShape = shape{pattern: `^[a-z][a-z0-9_-]{0,31}$`, first: lower, rest: lower + digits + "_-", max: 32}
	catShape     = shape{pattern: `^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$`, first: alnum, rest: alnum + "_-", max: 32}
	curShape     = shape{pattern: `^[A-Z]{3}$`, first: upper, rest: upper, max: 3}
)

const (
	lower  = "abcdefghijklmnopqrstuvwxyz"
	upper  = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	digits = "0123456789"
	alnum  = lower + upper + digits
)

// shape is a name pattern of the form ^[first][rest]{0,max-1}$.
type shape struct {
	pattern     string
	first, rest string
	max         int
	table       *[256]uint8 // bit 0: allowed first, bit 1: allowed after
}

func (s *shape) String() string { return s.pattern }

func init() {
	for _, s := range []*shape{&idShape, &facetShape, &valueShape, &channelShape, &catShape, &curShape} {
		s.table = new([256]uint8)
		for i := 0; i < len(s.first); i++ {
			s.table[s.first[i]] |= 1
		}
		for i := 0; i < len(s.rest); i++ {
			s.table[s.rest[i]] |= 2
		}
	}
}

func (s *shape) match(v string) bool {
	if len(v) == 0 || len(v) > s.max || s.table[v[0]]&1 == 0 {
		return false
	}
	for i := 1; i < len(v); i++ {
		if s.table[v[i]]&2 == 0 {
			return false
		}
	}
	return true
}

// KnownMacros are the OpenRTB substitution macros an adm may carry; the
// exchange substitutes them, personad leaves them as written.
var KnownMacros = map[string]bool{
	"AUCTION_ID": true, "AUCTION_BID_ID": true, "AUCTION_IMP_ID": true,
	"AUCTION_SEAT_ID": true, "AUCTION_AD_ID": true, "AUCTION_PRICE": true,
	"AUCTION_CURRENCY": true, "AUCTION_MBR": true, "AUCTION_LOSS": true,
	"AUCTION_MIN_TO_WIN": true, "AUCTION_MULTIPLIER": true,
	"AUCTION_IMP_TS": true,
}

// IsFacet reports whether s is a valid facet name.
func IsFacet(s string) bool { return facetShape.match(s) }

// IsValue reports whether s is a valid facet value.
func IsValue(s string) bool { return valueShape.match(s) }

// Validate checks the whole rule set and returns ValidationErrors listing
// every problem, or nil.
func (rs *RuleSet) Validate() error { return rs.ValidateExcept(nil) }

// ValidateExcept is Validate for a caller that already knows some
// campaigns are valid — typically because a campaign with identical
// content passed before: known(i) true skips the checks of campaign i on
// its own. The checks across campaigns (duplicate campaign and creative
// ids) and of the content rules always run. known may be nil; it is
// called once per campaign, concurrently for different campaigns.
func (rs *RuleSet) ValidateExcept(known func(i int) bool) error {
	return rs.ValidateThen(known, nil)
}

// ValidateThen is ValidateExcept that also calls then(i) for every
// campaign i not known whose own checks pass, right after them and on the
// same goroutine — concurrently for different campaigns, and whether or
// not the set as a whole turns out valid — so that a caller's work on
// each campaign (compiling it) shares the pass over the set and finds the
// campaign's memory in cache. It returns once every call has. then may
// be nil.
func (rs *RuleSet) ValidateThen(known func(i int) bool, then func(i int)) error {
	v := validator{}
	if len(rs.Campaigns) > MaxCampaigns {
		v.add("campaigns", "%d campaigns exceeds the limit of %d", len(rs.Campaigns), MaxCampaigns)
	}
	// crBase[i] is the number of creatives before campaign i.
	crBase := make([]int, len(rs.Campaigns)+1)
	for i := range rs.Campaigns {
		crBase[i+1] = crBase[i] + len(rs.Campaigns[i].Creatives)
	}
	ncr := crBase[len(rs.Campaigns)]
	// Each campaign's own checks run in parallel; their errors are merged
	// in order with those of the checks across campaigns. The same pass
	// hashes every id, while the campaign is in cache, for the check of
	// duplicates.
	own := make([]ValidationErrors, len(rs.Campaigns))
	campHash, crHash := make([]uint64, len(rs.Campaigns)), make([]uint64, ncr)
	par.For(len(rs.Campaigns), 1024, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			c := &rs.Campaigns[i]
			if known == nil || !known(i) {
				cv := validator{}
				cv.campaign(i, c)
				own[i] = cv.errs
				if then != nil && cv.errs == nil {
					then(i)
				}
			}
			campHash[i] = idHash(c.ID)
			for j := range c.Creatives {
				crHash[crBase[i]+j] = idHash(c.Creatives[j].ID)
			}
		}
	})
	// The exact duplicate check runs only when two ids hash alike: their
	// maps cost more than every campaign's own checks together (a cache
	// miss or two per id), and distinct hashes prove distinct ids.
	checkIDs := mayRepeat(campHash) || mayRepeat(crHash)
	var (
		campIDs map[string]int
		crIDs   map[string][2]int // creative id -> (campaign, creative) index
	)
	if checkIDs {
		campIDs = make(map[string]int, len(rs.Campaigns))
		crIDs = make(map[string][2]int, ncr)
	}
	for i := range rs.Campaigns {
		c := &rs.Campaigns[i]
		v.errs = append(v.errs, own[i]...)
		if !checkIDs {
			continue
		}
		if c.ID != "" {
			if j, dup := campIDs[c.ID]; dup {
				v.add(campaignPath(i)+".id", "duplicate campaign id %q (also campaigns[%d])", c.ID, j)
			} else {
				campIDs[c.ID] = i
			}
		}
		for j := range c.Creatives {
			id := c.Creatives[j].ID
			if id == "" {
				continue
			}
			if other, dup := crIDs[id]; dup {
				v.add(creativePath(i, j)+".id", "duplicate creative id %q (also %s)", id, creativePath(other[0], other[1]))
			} else {
				crIDs[id] = [2]int{i, j}
			}
		}
	}
	v.content("content_rules", &rs.ContentRules)
	if len(v.errs) == 0 {
		return nil
	}
	return v.errs
}

// idHash is the hash of a campaign or creative id for mayRepeat: 0 for
// the empty id (which the duplicate check skips), never 0 otherwise.
func idHash(id string) uint64 {
	if id == "" {
		return 0
	}
	return max(xxhash.Sum64String(id), 1)
}

// mayRepeat reports whether two of hashes, ignoring zeros, are equal. When
// it reports false no two of the ids hashed are equal; true means some
// may be (with 64-bit hashes, all but certainly are), and only an exact
// check can tell which.
func mayRepeat(hashes []uint64) bool {
	// An open-addressing set: a power of two at least twice the hashes,
	// 0 marking an empty slot.
	table := make([]uint64, 1<<bits.Len(uint(2*len(hashes))))
	mask := uint64(len(table) - 1)
	for _, h := range hashes {
		if h == 0 {
			continue
		}
		for j := h & mask; ; j = (j + 1) & mask {
			if table[j] == h {
				return true
			}
			if table[j] == 0 {
				table[j] = h
				break
			}
		}
	}
	return false
}

// ValidateCampaigns checks each campaign at the indexes listed on its own,
// as Validate does, but not the checks across campaigns (duplicate ids)
// nor the content rules: it is for a caller that knows those hold, such
// as a compiler patching a valid rule set in which only these campaigns
// changed and no id did. It returns ValidationErrors, or nil.
func (rs *RuleSet) ValidateCampaigns(idx []int) error {
	v := validator{}
	for _, i := range idx {
		v.campaign(i, &rs.Campaigns[i])
	}
	if len(v.errs) == 0 {
		return nil
	}
	return v.errs
}

func campaignPath(i int) string { return "campaigns[" + strconv.Itoa(i) + "]" }

func creativePath(i, j int) string {
	return campaignPath(i) + ".creatives[" + strconv.Itoa(j) + "]"
}

// at is p[i].
func at(p string, i int) string { return p + "[" + strconv.Itoa(i) + "]" }

type validator struct{ errs ValidationErrors }

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, &ValidationError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// campaign checks campaign i on its own. Like every check, it builds a
// field path only for an error: most campaigns have none.
func (v *validator) campaign(i int, c *Campaign) {
	p := func() string { return campaignPath(i) }
	switch {
	case c.ID == "":
		v.add(p()+".id", "required")
	case !idShape.match(c.ID):
		v.add(p()+".id", "%q must match %s", c.ID, &idShape)
	}
	switch c.Status {
	case "", StatusActive, StatusPaused:
	default:
		v.add(p()+".status", "unknown status %q, want active or paused", c.Status)
	}
	var start, end time.Time
	var err error
	if c.Start != "" {
		if start, err = time.Parse(time.RFC3339, c.Start); err != nil {
			v.add(p()+".start", "%q is not an RFC 3339 time", c.Start)
		}
	}
	if c.End != "" {
		if end, err = time.Parse(time.RFC3339, c.End); err != nil {
			v.add(p()+".end", "%q is not an RFC 3339 time", c.End)
		}
	}
	if !start.IsZero() && !end.IsZero() && !end.After(start) {
		v.add(p()+".end", "%s must be after start %s", c.End, c.Start)
	}
	if c.Priority != nil && (*c.Priority < 0 || *c.Priority > 1000) {
		v.add(p()+".priority", "%d must be in [0, 1000]", *c.Priority)
	}
	if !(c.BidCPM > 0) || math.IsInf(c.BidCPM, 0) || c.BidCPM > MaxBidCPM {
		v.add(p()+".bid_cpm", "%v must be > 0 and <= %d", c.BidCPM, MaxBidCPM)
	} else if Micros(c.BidCPM) == 0 {
		// It would bid nothing: the ledger refuses a price of 0.
		v.add(p()+".bid_cpm", "%s rounds to 0 (amounts count in millionths): the least is 0.000001", plain(c.BidCPM))
	}
	// curShape matches 1 to 3 letters, as every shape matches up to its
	// max: a code is exactly 3 (a request's cur, which the bidder checks
	// so, could never name "US").
	if c.Currency != "" && (len(c.Currency) != 3 || !curShape.match(c.Currency)) {
		v.add(p()+".currency", "%q is not an ISO-4217 code such as USD", c.Currency)
	}
	if !(c.Budget.Daily >= 0 && c.Budget.Daily <= MaxDailyBudget) {
		v.add(p()+".budget.daily", "%v must be >= 0 and <= %d (0: no daily limit)", c.Budget.Daily, MaxDailyBudget)
	} else if c.Budget.Daily > 0 && Micros(c.Budget.Daily) == 0 {
		// 0 micro-units is no limit at all: the opposite of a tiny one.
		v.add(p()+".budget.daily", "%s rounds to 0, which means no daily limit (amounts count in millionths): the least limit is 0.000001", plain(c.Budget.Daily))
	}
	if !(c.Budget.Total >= 0 && c.Budget.Total <= MaxTotalBudget) {
		v.add(p()+".budget.total", "%v must be >= 0 and <= %d (0: no total limit)", c.Budget.Total, MaxTotalBudget)
	} else if c.Budget.Total > 0 && Micros(c.Budget.Total) == 0 {
		v.add(p()+".budget.total", "%s rounds to 0, which means no total limit (amounts count in millionths): the least limit is 0.000001", plain(c.Budget.Total))
	}
	switch c.Pacing {
	case "", PacingEven, PacingASAP:
	default:
		v.add(p()+".pacing", "unknown pacing mode %q, want even or asap", c.Pacing)
	}
	// max and window are checked apart, so that both errors are listed.
	if fc := c.FrequencyCap; fc.Max < 0 {
		v.add(p()+".frequency_cap.max", "%d must be >= 0", fc.Max)
	}
	if fc := c.FrequencyCap; fc.Max > 0 || fc.Window != "" {
		d, err := time.ParseDuration(fc.Window)
		switch {
		case err != nil:
			v.add(p()+".frequency_cap.window", "%q is not a duration such as 24h", fc.Window)
		case d <= 0:
			v.add(p()+".frequency_cap.window", "%q must be > 0", fc.Window)
		case d > MaxFrequencyWindow:
			v.add(p()+".frequency_cap.window", "%q must be at most %v", fc.Window, MaxFrequencyWindow)
		}
	}
	v.cats(p, ".cat", c.Cat)
	for i, d := range c.Adomain {
		if d == "" || strings.ContainsAny(d, " /") {
			v.add(at(p()+".adomain", i), "%q is not a domain", d)
		}
	}
	v.clauses(p, ".targeting.all", c.Targeting.All)
	v.clauses(p, ".targeting.none", c.Targeting.None)
	v.channels(p, ".targeting.channels", c.Targeting.Channels)
	switch {
	case len(c.Creatives) == 0:
		v.add(p()+".creatives", "a campaign needs at least one creative")
	case len(c.Creatives) > MaxCreativesPerCamp:
		v.add(p()+".creatives", "%d creatives exceeds the limit of %d", len(c.Creatives), MaxCreativesPerCamp)
	}
	for j := range c.Creatives {
		v.creative(p, j, &c.Creatives[j])
	}
}

// creative checks campaign cp's creative j.
func (v *validator) creative(cp func() string, j int, cr *Creative) {
	p := func() string { return at(cp()+".creatives", j) }
	switch {
	case cr.ID == "":
		v.add(p()+".id", "required")
	case !idShape.match(cr.ID):
		v.add(p()+".id", "%q must match %s", cr.ID, &idShape)
	}
	if cr.W <= 0 || cr.W > MaxCreativeDimension {
		v.add(p()+".w", "%d must be > 0 and <= %d", cr.W, MaxCreativeDimension)
	}
	if cr.H <= 0 || cr.H > MaxCreativeDimension {
		v.add(p()+".h", "%d must be > 0 and <= %d", cr.H, MaxCreativeDimension)
	}
	if len(cr.Channels) > 0 {
		v.channels(p, ".channels", cr.Channels)
	}
	if len(cr.Cat) > 0 {
		v.cats(p, ".cat", cr.Cat)
	}
	if len(cr.Persona) > 0 {
		v.clauses(p, ".persona", cr.Persona)
	}
	if strings.TrimSpace(cr.Adm) == "" {
		v.add(p()+".adm", "required")
	}
	if unknown, unterminated := checkMacros(cr.Adm); len(unknown) > 0 || unterminated {
		for _, m := range unknown {
			v.add(p()+".adm", "unknown macro ${%s}", m)
		}
		if unterminated {
			v.add(p()+".adm", "unterminated macro: \"${\" without \"}\"")
		}
	}
}

// checkMacros scans adm for ${NAME} macros, leftmost first: it returns the
// names that are not KnownMacros, and whether some "${" has no "}" after
// it. (It matches what the regexp \$\{([^}]*)\} finds, without one.)
func checkMacros(adm string) (unknown []string, unterminated bool) {
	for rest := adm; ; {
		i := strings.Index(rest, "${")
		if i < 0 {
			return unknown, false
		}
		rest = rest[i+2:]
		j := strings.IndexByte(rest, '}')
		if j < 0 {
			return unknown, true
		}
		if name := rest[:j]; !KnownMacros[name] {
			unknown = append(unknown, name)
		}
		rest = rest[j+1:]
	}
}

// clauses checks the clauses at p+field.
func (v *validator) clauses(p func() string, field string, cs []Clause) {
	for i, c := range cs {
		cp := func() string { return at(p()+field, i) }
		if !facetShape.match(c.Facet) {
			v.add(cp()+".facet", "%q must match %s", c.Facet, &facetShape)
		}
		switch {
		case len(c.Any) == 0:
			v.add(cp()+".any", "a clause needs at least one value")
		case len(c.Any) > MaxClauseValues:
			v.add(cp()+".any", "%d values exceeds the limit of %d", len(c.Any), MaxClauseValues)
		}
		for j, val := range c.Any {
			if !valueShape.match(val) {
				v.add(at(cp()+".any", j), "%q must match %s", val, &valueShape)
			}
		}
	}
}

func (v *validator) channels(p func() string, field string, chs []string) {
	for i, ch := range chs {
		if !channelShape.match(ch) {
			v.add(at(p()+field, i), "%q must match %s", ch, &channelShape)
		}
	}
}

func (v *validator) cats(p func() string, field string, cats []string) {
	for i, c := range cats {
		if !catShape.match(c) {
			v.add(at(p()+field, i), "%q is not an IAB category such as IAB19", c)
		}
	}
}

func (v *validator) content(p string, cr *ContentRules) {
	v.cats(func() string { return p }, ".blocked_cat", cr.BlockedCat)
	for i, d := range cr.BlockedAdomain {
		if d == "" {
			v.add(at(p+".blocked_adomain", i), "empty domain")
		}
	}
	seen := map[string]string{}
	for i, m := range cr.ChannelMap {
		mp := at(p+".channel_map", i)
		if !channelShape.match(m.Channel) {
			v.add(mp+".channel", "%q must match %s", m.Channel, &channelShape)
		}
		for j, d := range m.Domains {
			// The engine matches domains in any case and with or
			// without a leading "www.": so does the duplicate check.
			key := "domain " + strings.TrimPrefix(strings.ToLower(d), "www.")
			if prev, dup := seen[key]; dup && prev != m.Channel {
				v.add(at(mp+".domains", j), "%q is already mapped to channel %q", d, prev)
			}
			seen[key] = m.Channel
		}
		for j, b := range m.Bundles {
			key := "bundle " + b
			if prev, dup := seen[key]; dup && prev != m.Channel {
				v.add(at(mp+".bundles", j), "%q is already mapped to channel %q", b, prev)
			}
			seen[key] = m.Channel
		}
	}
}

// CurrencyWarnings lists each campaign currency that is not an ISO 4217
// code (a typo such as UDS), once, at the first campaign bidding in it.
// Validation checks only a code's shape: such a campaign is valid, but
// it bids only on requests whose cur lists its code, which no exchange's
// will.
func (rs *RuleSet) CurrencyWarnings() ValidationErrors {
	var out ValidationErrors
	first := map[string]*ValidationError{}
	n := map[string]int{}
	for i := range rs.Campaigns {
		cur := rs.Campaigns[i].Currency
		if cur == "" {
			continue
		}
		if _, seen := n[cur]; !seen {
			if _, err := currency.ParseISO(cur); err != nil {
				first[cur] = &ValidationError{Path: at("campaigns", i) + ".currency"}
				out = append(out, first[cur])
			}
		}
		n[cur]++
	}
	for cur, w := range first {
		w.Msg = fmt.Sprintf("%q is not an ISO 4217 currency (%d %s in it): only bid requests whose cur lists it can match", cur, n[cur], plural(n[cur], "campaign bids", "campaigns bid"))
	}
	return out
}

// SegmentWarnings lists what targeting clauses and creative personas name
// that no uploaded segment carries, as facetInUse and segmentInUse tell:
// once per facet no segment has, else once per value of a facet in use
// that no segment has (a typo, or a segment deleted). Such a clause can
// still match facts a bid request carries, so it is a warning, not an
// error. Each warning's path is the first clause naming the facet, or the
// first value.
func (rs *RuleSet) SegmentWarnings(facetInUse func(facet string) bool, segmentInUse func(facet, value string) bool) ValidationErrors {
	type use struct {
		path string
		n    int
		ok   bool // in use: counted, never reported
	}
	type key struct{ facet, value string } // value "": the facet
	var order []key
	uses := map[key]*use{}
	count := func(k key, path func() string, inUse func() bool) bool {
		if u := uses[k]; u != nil {
			u.n++
			return u.ok
		}
		u := &use{n: 1, ok: inUse()}
		uses[k] = u
		if !u.ok {
			u.path = path()
			order = append(order, k)
		}
		return u.ok
	}
	note := func(path func() string, cs []Clause) {
		for i := range cs {
			f := cs[i].Facet
			if !count(key{facet: f}, func() string { return at(path(), i) + ".facet" }, func() bool { return facetInUse(f) }) {
				continue
			}
			for j, v := range cs[i].Any {
				count(key{f, v}, func() string { return at(at(path(), i)+".any", j) }, func() bool { return segmentInUse(f, v) })
			}
		}
	}
	for i := range rs.Campaigns {
		c := &rs.Campaigns[i]
		note(func() string { return campaignPath(i) + ".targeting.all" }, c.Targeting.All)
		note(func() string { return campaignPath(i) + ".targeting.none" }, c.Targeting.None)
		for j := range c.Creatives {
			note(func() string { return creativePath(i, j) + ".persona" }, c.Creatives[j].Persona)
		}
	}
	var ws ValidationErrors
	for _, k := range order {
		u := uses[k]
		names := plural(u.n, "clause names", "clauses name")
		if k.value == "" {
			ws = append(ws, &ValidationError{Path: u.path, Msg: fmt.Sprintf(
				"no uploaded segment uses facet %q (%d %s it): only bid requests carrying it can match", k.facet, u.n, names)})
			continue
		}
		ws = append(ws, &ValidationError{Path: u.path, Msg: fmt.Sprintf(
			"no uploaded segment is %s:%s (%d %s it): only bid requests carrying it can match", k.facet, k.value, u.n, names)})
	}
	return ws
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// plain writes an amount as planners write it: 0.0000004, not 4e-07.
func plain(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// DeliveryWarnings lists what a valid set holds that can never deliver as
// written — each most likely a planner's slip that validation cannot call
// an error, since the set means something:
//   - a campaign whose flight has ended by now (a copied campaign whose
//     dates were not moved; a campaign kept for its reports): one
//     warning, at the first such campaign, counting and naming them;
//   - a frequency cap with a window but no max: max 0 is no cap, so the
//     window caps nothing;
//   - a creative whose channels are none of its campaign's
//     targeting.channels: it never serves;
//   - a campaign whose advertiser domain the house rules block
//     (content_rules.blocked_adomain, subdomains too), or every one of
//     whose creatives has a category they block (blocked_cat,
//     subcategories too): it never bids; else each creative they block:
//     it never serves;
//   - a targeting.all clause every value of which the campaign's
//     targeting.none excludes (all: [{facet: title, any: [cmo]}] with
//     none: [{facet: title, any: [cmo, cfo]}]): a user who holds one
//     is kept out, so no user can match and the campaign never bids;
//     likewise a creative's persona clause: the creative never serves.
//     Clauses that only look contrary are not warned of: a user may be
//     in several segments of one facet, so all: [{facet: title, any:
//     [cmo]}, {facet: title, any: [cfo]}] matches a user who is both,
//     and none: [{facet: title, any: [cmo]}] beside all: [{facet:
//     title, any: [cmo, cfo]}] leaves the CFOs who are not CMOs.
//
// A paused campaign is left out: it is meant not to bid.
func (rs *RuleSet) DeliveryWarnings(now time.Time) ValidationErrors {
	var out ValidationErrors
	var ended []int
	house := &rs.ContentRules
	// The year of now as RFC 3339 writes it: an end in a later year has
	// not passed whatever its offset, and is not parsed (most ends).
	year := now.UTC().AddDate(0, 0, 1).Format("2006")
	for i := range rs.Campaigns {
		c := &rs.Campaigns[i]
		if !c.Active() {
			continue
		}
		if len(c.End) >= 4 && len(year) == 4 && c.End[:4] <= year {
			if end, err := time.Parse(time.RFC3339, c.End); err == nil && !end.After(now) {
				ended = append(ended, i)
			}
		}
		if fc := c.FrequencyCap; fc.Max == 0 && fc.Window != "" {
			out = append(out, &ValidationError{Path: campaignPath(i) + ".frequency_cap.max",
				Msg: fmt.Sprintf("not set, so the window %s caps nothing (max 0 is no cap): set the impressions a user may see per window, or remove frequency_cap", fc.Window)})
		}
		out = houseBlocked(out, house, i, c)
		if chs := c.Targeting.Channels; len(chs) > 0 {
			for j := range c.Creatives {
				cr := &c.Creatives[j]
				if len(cr.Channels) > 0 && !slices.ContainsFunc(cr.Channels, func(ch string) bool { return slices.Contains(chs, ch) }) {
					out = append(out, &ValidationError{Path: creativePath(i, j) + ".channels",
						Msg: fmt.Sprintf("none of [%s] is a channel of the campaign (targeting.channels [%s]): the creative never serves", strings.Join(cr.Channels, ", "), strings.Join(chs, ", "))})
				}
			}
		}
		if len(c.Targeting.None) > 0 {
			none := noneIndex(c)
			for j := range c.Targeting.All {
				out = excluded(out, none, at(campaignPath(i)+".targeting.all", j), &c.Targeting.All[j], "", "no user can match it, so the campaign never bids")
			}
			for j := range c.Creatives {
				for k := range c.Creatives[j].Persona {
					out = excluded(out, none, at(creativePath(i, j)+".persona", k), &c.Creatives[j].Persona[k], "the campaign's ", "the creative never serves")
				}
			}
		}
	}
	if len(ended) > 0 {
		c := &rs.Campaigns[ended[0]]
		const named = 5
		ids := make([]string, 0, named)
		for _, i := range ended[:min(named, len(ended))] {
			ids = append(ids, rs.Campaigns[i].ID)
		}
		list := strings.Join(ids, ", ")
		if len(ended) > named {
			list += fmt.Sprintf(" and %d more", len(ended)-named)
		}
		w := &ValidationError{Path: campaignPath(ended[0]) + ".end",
			Msg: fmt.Sprintf("flight ended %s: the campaign never bids; move end, or pause it (%d active %s ended: %s)", c.End, len(ended), plural(len(ended), "campaign's flight has", "campaigns' flights have"), list)}
		out = append([]*ValidationError{w}, out...)
	}
	return out
}

// facetValue is a value of a facet, a key of noneIndex.
type facetValue struct{ facet, value string }

// noneIndex maps each value of campaign c's targeting.none, with its
// facet, to the first none clause that holds it. excluded looked each
// value up clause by clause, a scan of every none value per value of
// each clause it checked: 40,000 titles in targeting.all and the same in
// targeting.none (an 800 KB file) took 1.7 s, with a reload's lock held.
func noneIndex(c *Campaign) map[facetValue]int {
	size := 0
	for n := range c.Targeting.None {
		size += len(c.Targeting.None[n].Any)
	}
	idx := make(map[facetValue]int, size)
	for n := range c.Targeting.None {
		nc := &c.Targeting.None[n]
		for _, v := range nc.Any {
			if _, ok := idx[facetValue{nc.Facet, v}]; !ok {
				idx[facetValue{nc.Facet, v}] = n
			}
		}
	}
	return idx
}

// excluded appends to out the warning of DeliveryWarnings for clause cl,
// at path, of a campaign's targeting.all or of a creative's persona,
// when the campaign's targeting.none, none (noneIndex), excludes every
// value of it: a user holds one of cl.Any to match cl, and holding any
// value of a none clause keeps the user out. whose names the none
// clauses ("the campaign's "), and outcome says what follows.
func excluded(out ValidationErrors, none map[facetValue]int, path string, cl *Clause, whose, outcome string) ValidationErrors {
	var by []int // the none clauses of cl.Facet that exclude a value of it
	for _, v := range cl.Any {
		n, ok := none[facetValue{cl.Facet, v}]
		if !ok {
			return out // a user holding v alone matches
		}
		by = append(by, n)
	}
	if len(by) == 0 {
		return out // no values (an invalid clause)
	}
	slices.Sort(by)
	by = slices.Compact(by)
	clauses := make([]string, len(by))
	for i, n := range by {
		clauses[i] = at("targeting.none", n)
	}
	const named = 5
	values := strings.Join(cl.Any[:min(named, len(cl.Any))], ", ")
	if len(cl.Any) > named {
		values += fmt.Sprintf(" and %d more", len(cl.Any)-named)
	}
	return append(out, &ValidationError{Path: path,
		Msg: fmt.Sprintf("every %s it takes (%s) is excluded by %s%s: %s", cl.Facet, values, whose, strings.Join(clauses, " and "), outcome)})
}

// houseBlocked appends to out the warnings of DeliveryWarnings for
// campaign i, c, that the house rules block, whole or creative by
// creative, as the engine blocks it ([ContentRules.Blocks]).
func houseBlocked(out ValidationErrors, house *ContentRules, i int, c *Campaign) ValidationErrors {
	if len(house.BlockedAdomain) == 0 && len(house.BlockedCat) == 0 {
		return out
	}
	// The categories of creative j, and the field they are read from.
	cats := func(j int) ([]string, string) {
		if cr := &c.Creatives[j]; len(cr.Cat) > 0 {
			return cr.Cat, creativePath(i, j) + ".cat"
		}
		return c.Cat, campaignPath(i) + ".cat"
	}
	type hit struct {
		j, k int // creative j's category k
		by   string
	}
	var hits []hit
	dom, domBy, every := house.Blocks(c.Adomain, len(c.Creatives), func(j int) []string {
		cs, _ := cats(j)
		return cs
	}, func(j, k int, by string) { hits = append(hits, hit{j, k, by}) })
	if dom >= 0 {
		return append(out, &ValidationError{Path: at(campaignPath(i)+".adomain", dom),
			Msg: fmt.Sprintf("%q is blocked by content_rules.blocked_adomain %q: the campaign never bids", c.Adomain[dom], domBy)})
	}
	for _, h := range hits {
		cs, field := cats(h.j)
		outcome := "creative " + c.Creatives[h.j].ID + " never serves"
		if every {
			outcome = "the campaign never bids (content_rules.blocked_cat blocks a category of each of its creatives)"
		}
		out = append(out, &ValidationError{Path: at(field, h.k),
			Msg: fmt.Sprintf("%q is blocked by content_rules.blocked_cat %q: %s", cs[h.k], h.by, outcome)})
		if every {
			break // one warning for the campaign, at its first creative
		}
	}
	return out
}
