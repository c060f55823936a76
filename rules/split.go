package rules

import (
	"bytes"
	"runtime"
	"slices"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/personad/personad/internal/par"
)

// A large rules file is parsed in pieces: the block sequence under the
// top-level "campaigns:" key is cut into its entries, which are parsed on
// every CPU (and, through a Parser, reused when their text has not
// changed), and the rest of the document is parsed on its own. The cut is
// made by text — lines that start at the sequence's indentation with
// "- " — and trusted only when every piece parses and the rest of the
// document holds "campaigns:" as a root key with no value; any failure
// parses the whole document instead, so errors and results are Parse's
// own (FuzzParseEquivalence checks them against the generic route).
// Through a Parser, the next version of a file is cut by the entries of
// the previous one, reading only the lines of entries whose text changed
// (walkEntries; FuzzCutWalk checks that it cuts as reading every line
// does).

// splitMin is the smallest document worth cutting.
const splitMin = 64 << 10

// entryBatch is how many consecutive entries one worker parses as one
// document.
const entryBatch = 32

// split is a document cut at its campaign entries.
type split struct {
	rest    []byte   // the document without the entries
	head    int      // the length of the part of rest before them
	keyLine int      // the 1-based line of "campaigns:" in rest
	entries [][]byte // each entry's lines, in order
	indent  int      // the entries' indentation
}

// cutCampaigns cuts data, or reports false when it does not have the
// shape cutting needs. With prev, the entries of the document's previous
// version, it reads the entries as walkEntries does and returns what
// that finds too: the entries' digests, and for each entry the index of
// prev's entry of the same text, or -1 (both nil when it did not walk:
// then no entry is known to be prev's).
func cutCampaigns(data []byte, prev *entryTexts) (s split, digests []Digest, matches []int, ok bool) {
	// A byte order mark, line breaks other than \n, directives and
	// document markers (looked for below): leave them to the whole parse.
	if bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		return split{}, nil, nil, false
	}
	// markers finds them in the parts of data outside the entries;
	// scanEntryLines, in the entries.
	markers := func(b []byte) bool {
		for off := 0; off < len(b); off = lineEnd(b, off) {
			if isMarkerLine(b[off:]) {
				return true
			}
		}
		return false
	}
	const key = "campaigns:\n"
	at := 0
	if !bytes.HasPrefix(data, []byte(key)) {
		if at = bytes.Index(data, []byte("\n"+key)); at < 0 {
			return split{}, nil, nil, false
		}
		at++
	}
	start := at + len(key) // offset of the line after "campaigns:"
	s.keyLine = 1 + bytes.Count(data[:at], []byte("\n"))
	// The first line with content after "campaigns:" starts the first
	// entry, at the entries' indentation.
	first, indent := -1, -1
	for off := start; off < len(data); {
		end := lineEnd(data, off)
		sp, blank, entry := classifyLine(data[off:end])
		if !blank {
			if !entry {
				return split{}, nil, nil, false
			}
			first, indent = off, sp
			break
		}
		off = end
	}
	if first < 0 {
		return split{}, nil, nil, false
	}
	// The entries run to the first line that begins at column 0 with
	// anything but "- " (at indentation 0), a space, "#" or a line break.
	var sc lineScan
	walk := prev != nil && prev.indent == indent
	if walk {
		sc, digests, matches, walk = walkEntries(data, first, indent, prev)
	}
	if !walk {
		if bytes.IndexByte(data, '\r') >= 0 {
			return split{}, nil, nil, false
		}
		sc = scanChunks(data, first, indent)
	}
	if sc.fail {
		return split{}, nil, nil, false
	}
	s.indent = indent
	starts, off := sc.starts, len(data)
	if sc.stop >= 0 {
		off = sc.stop
	}
	if markers(data[:start]) || markers(data[off:]) {
		return split{}, nil, nil, false
	}
	// The walk looked for \r in the entries it read.
	if walk && (bytes.IndexByte(data[:first], '\r') >= 0 || bytes.IndexByte(data[off:], '\r') >= 0) {
		return split{}, nil, nil, false
	}
	s.entries = make([][]byte, len(starts))
	for e, at := range starts {
		end := off
		if e+1 < len(starts) {
			end = starts[e+1]
		}
		s.entries[e] = data[at:end]
	}
	// Every byte is in one piece: the blank lines and comments before the
	// first entry stay in the rest (a control character in a comment is
	// an error there as in the whole document).
	s.rest = make([]byte, 0, len(data)-(off-first))
	s.head = first
	s.rest = append(s.rest, data[:first]...)
	s.rest = append(s.rest, data[off:]...)
	return s, digests, matches, true
}

// scanChunks is scanEntryLines over the entries from data[first:], a
// large document's lines read in chunks, on every CPU.
func scanChunks(data []byte, first, indent int) lineScan {
	chunks := []int{first, len(data)}
	if n := min(runtime.GOMAXPROCS(0), (len(data)-first)/cutChunk); n > 1 {
		chunks = chunks[:1]
		for c := 1; c < n; c++ {
			at := first + c*(len(data)-first)/n
			chunks = append(chunks, lineEnd(data, at))
		}
		chunks = append(chunks, len(data))
	}
	scans := make([]lineScan, len(chunks)-1)
	var wg sync.WaitGroup
	for c := range scans {
		wg.Go(func() { scans[c] = scanEntryLines(data, chunks[c], chunks[c+1], indent, nil, false) })
	}
	wg.Wait()
	r := lineScan{stop: -1}
	for _, sc := range scans {
		if sc.fail {
			return sc
		}
		r.starts = append(r.starts, sc.starts...)
		if sc.stop >= 0 {
			r.stop = sc.stop
			break
		}
	}
	return r
}

// walkEntries is scanChunks for a document whose previous version's
// entries, at the same indentation, were prev, and returns the entries'
// digests too, and for each entry the index of prev's entry of the same
// text, or -1. It goes from entry to entry: where the text of an entry
// is that of the previous version's entry at the same index (counting
// from the last one found there), its lines are not read again — the
// previous cut read them, and what a line is to the cut depends only on
// its text and the indentation — only the line after it, to see where
// the entry ends. It also fails on a \r in the entries it reads (those
// it does not read had none).
//
// It gives up (walked false) when none of the first walkGiveUp entries
// is one of prev's: the file was rewritten, and reading it on one CPU
// entry by entry, hashing each, would only delay the parse that every
// entry needs (at 10,000 campaigns, ~10 ms of a cold reload's ~100).
// The caller then cuts it on every CPU and parses every entry, also any
// further down that prev had.
func walkEntries(data []byte, at, indent int, prev *entryTexts) (_ lineScan, digests []Digest, matches []int, walked bool) {
	r := lineScan{starts: append(make([]int, 0, len(prev.lens)+1), at), stop: -1}
	digests = make([]Digest, 0, len(prev.lens))
	matches = make([]int, 0, len(prev.lens))
	index := digestIndex{list: prev.digests}
	var ah ahead
	found := 0 // entries matched
	for j := 0; ; {
		// data[at:] starts an entry; the previous version's entry j is
		// the one it likely is.
		e, same := -1, false
		if j < len(prev.lens) {
			e = at + prev.lens[j]
			// The line break first: where it is not, nothing is hashed
			// (a rewritten file would otherwise hash a new window at
			// every entry the walk reads before it gives up).
			if e <= len(data) && data[e-1] == '\n' {
				d, next := ah.sum(data, at, j, prev)
				if same = d == prev.digests[j]; same && next {
					// The next entry starts where this one ends: what
					// scanEntryLines would find there, the window found.
					r.starts = append(r.starts, e)
					digests = append(digests, d)
					matches = append(matches, j)
					found++
					j++
					at = e
					continue
				}
			}
		}
		from := lineEnd(data, at)
		if same {
			from = e
		}
		n := len(r.starts)
		sc := scanEntryLines(data, from, len(data), indent, r.starts, true)
		if sc.fail {
			return sc, nil, nil, true
		}
		r.starts = sc.starts
		end := len(data)
		switch {
		case len(r.starts) > n:
			end = r.starts[n]
		case sc.stop >= 0:
			end = sc.stop
		}
		var d Digest
		m := -1 // the index of prev's entry of the same text
		if same && end == e {
			d, m = prev.digests[j], j
			j++
		} else {
			if bytes.IndexByte(data[at:end], '\r') >= 0 {
				return lineScan{fail: true}, nil, nil, true
			}
			d = sum(data[at:end])
			if m = index.find(d); m >= 0 {
				j = m + 1 // moved: the next entry is likely the one after it
			} else {
				j++ // edited in place, or new
			}
		}
		digests = append(digests, d)
		matches = append(matches, m)
		if m >= 0 {
			found++
		}
		if len(r.starts) == n {
			r.stop = sc.stop
			return r, digests, matches, true
		}
		if found == 0 && len(matches) == walkGiveUp {
			return lineScan{}, nil, nil, false
		}
		at = end
	}
}

// walkGiveUp is how many entries walkEntries reads before it gives up
// when none is one of the previous version's.
var walkGiveUp = 64

// ahead hashes, on every CPU, the text that the previous version's
// entries would have if they followed one another unchanged from where
// the walk is, a window of them at a time: the walk then finds most of
// them there, each hashed already, rather than hashing the file on one
// CPU. A window begins at 64 entries and doubles each time the walk
// reaches its end as foreseen; when the walk finds an entry elsewhere
// (one was edited to another length, inserted or removed), the next
// window, from there, begins at 64 again. So the hashing wasted on
// windows the walk left is at most about what it used.
type ahead struct {
	j0      int      // the previous version's entry the window begins with
	offs    []int    // where each of its entries would begin
	digests []Digest // and the digest of the text there (zero past the end)
	// next tells, for each, whether the line after it starts an entry at
	// the entries' indentation (the walk then reads no line there).
	next []bool
	size int // the next window's size
}

// aheadMin is the size of a window after a miss.
const aheadMin = 64

// aheadMax bounds a window's size.
const aheadMax = 4096

// sum returns the digest of data[at:at+prev.lens[j]] (at+prev.lens[j]
// within data), and whether the line after it starts an entry at
// prev.indent, hashing a new window when the current one does not
// foresee entry j at at.
func (a *ahead) sum(data []byte, at, j int, prev *entryTexts) (Digest, bool) {
	k := j - a.j0
	if k < 0 || k >= len(a.offs) || a.offs[k] != at {
		reached := k == len(a.offs) && a.size > 0 && len(a.offs) > 0 && a.offs[k-1]+prev.lens[j-1] == at
		if !reached {
			a.size = aheadMin
		}
		a.fill(data, at, j, prev)
		k = 0
	}
	return a.digests[k], a.next[k]
}

// fill hashes the window of a.size entries from entry j at at, and
// doubles a.size for the next one.
func (a *ahead) fill(data []byte, at, j int, prev *entryTexts) {
	n := min(a.size, len(prev.lens)-j)
	a.j0 = j
	a.offs = a.offs[:0]
	for off, i := at, j; i < j+n && off+prev.lens[i] <= len(data); i++ {
		a.offs = append(a.offs, off)
		off += prev.lens[i]
	}
	a.digests = slices.Grow(a.digests[:0], len(a.offs))[:len(a.offs)]
	a.next = slices.Grow(a.next[:0], len(a.offs))[:len(a.offs)]
	par.For(len(a.offs), hashChunk, func(lo, hi int) {
		for k := lo; k < hi; k++ {
			e := a.offs[k] + prev.lens[j+k]
			a.digests[k] = sum(data[a.offs[k]:e])
			a.next[k] = e < len(data) && entryAt(data, e, prev.indent)
		}
	})
	a.size = min(2*a.size, aheadMax)
}

// digestIndex finds digests in a list: the first few one by one, then
// through a map of the list.
type digestIndex struct {
	list   []Digest
	looked int // lookups one by one
	m      map[Digest]int
}

// scanMax is how many digests a digestIndex looks for one by one before
// it indexes its list.
const scanMax = 16

// find returns an index of d in the list, or -1.
func (x *digestIndex) find(d Digest) int {
	if x.m == nil && x.looked < scanMax {
		x.looked++
		return slices.Index(x.list, d)
	}
	if x.m == nil {
		x.m = make(map[Digest]int, len(x.list))
		for j, d := range x.list {
			x.m[d] = j // of equal digests any one will do: their text is the same
		}
	}
	if j, ok := x.m[d]; ok {
		return j
	}
	return -1
}

// cutChunk is the least that scanChunks gives a CPU to read.
var cutChunk = 1 << 20

// lineScan is what scanEntryLines found in its lines.
type lineScan struct {
	starts []int // the offsets of the entries' lines
	stop   int   // the offset of the line after the entries, or -1
	fail   bool  // a line rules the cut out
}

// scanEntryLines reads the lines of data[from:to] (which starts at a
// line's start and ends at one's end) as lines of the entries at
// indentation indent, up to the first line that ends them or rules the
// cut out, or with one, up to the first entry's start. It appends the
// starts it finds to starts.
func scanEntryLines(data []byte, from, to, indent int, starts []int, one bool) lineScan {
	r := lineScan{starts: starts, stop: -1}
	for off := from; off < to; {
		end := lineEnd(data, off)
		l := data[off:end]
		if deeper(l, indent) {
			// Inside an entry, as most lines are: no marker, no entry,
			// not the end.
			off = end
			continue
		}
		sp, blank, entry := classifyLine(l)
		if isMarkerLine(l) {
			r.fail = true // a document marker or directive
			return r
		}
		if sp == 0 && !blank && !(entry && indent == 0) {
			r.stop = off // the next top-level key
			return r
		}
		if !blank && sp <= indent && !(entry && sp == indent) {
			// Less indented than the entries' content, yet not an entry:
			// yaml.v3 reads such a line differently on its own and in
			// the whole document.
			r.fail = true
			return r
		}
		if entry && sp == indent {
			r.starts = append(r.starts, off)
			if one {
				return r
			}
		}
		off = end
	}
	return r
}

// entryAt reports whether the line at off starts an entry at indentation
// indent: scanEntryLines(data, off, len(data), indent, starts, true)
// would append off and return.
func entryAt(data []byte, off, indent int) bool {
	sp, _, entry := classifyLine(data[off:lineEnd(data, off)])
	return entry && sp == indent
}

// deeper reports whether line is indented by more than indent spaces.
func deeper(line []byte, indent int) bool {
	if len(line) <= indent {
		return false
	}
	for _, c := range line[:indent+1] {
		if c != ' ' {
			return false
		}
	}
	return true
}

// classifyLine returns a line's indentation, whether it is blank or a
// comment, and whether it is a block sequence entry ("- ").
func classifyLine(l []byte) (sp int, blank, entry bool) {
	for sp < len(l) && l[sp] == ' ' {
		sp++
	}
	rest := l[sp:]
	blank = len(rest) == 0 || rest[0] == '\n' || rest[0] == '#'
	entry = len(rest) > 0 && rest[0] == '-' && (len(rest) == 1 || rest[1] == ' ' || rest[1] == '\n')
	return sp, blank, entry
}

func lineEnd(data []byte, off int) int {
	if i := bytes.IndexByte(data[off:], '\n'); i >= 0 {
		return off + i + 1
	}
	return len(data)
}

// entryTexts are a document's campaign entries as cut: their
// indentation, and each one's length and text digest, in order.
type entryTexts struct {
	indent  int
	lens    []int
	digests []Digest
}

// entryCache is what parseSplit reuses of a file's previous version,
// and what it leaves for the next one.
type entryCache struct {
	// old are the previous version's entries, and campaigns the
	// campaigns parsed from them, in the same order.
	old       *entryTexts
	campaigns []Campaign
	// next are this version's, set when it was parsed piecewise.
	next *entryTexts
	// prevSum is the previous version's file digest. sum is this
	// version's, set when it was parsed piecewise (piecesSum); same, that
	// it is the previous version's: parseSplit then returns no rule set,
	// the previous one stands (and counts no entries).
	prevSum, sum Digest
	same         bool
	// seen and parsed count the entries looked up and those parsed (not
	// found in the previous version).
	seen, parsed int
}

// reuse sets campaigns[i] to old[matches[i]], the previous version's
// campaign of entry i's text, and returns the indexes of the entries
// that have none: those matched to -1, or every entry when matches is
// nil (the cut did not walk the previous version's entries).
func reuse(campaigns, old []Campaign, matches []int) []int {
	if matches == nil {
		missing := make([]int, len(campaigns))
		for i := range missing {
			missing[i] = i
		}
		return missing
	}
	// On every CPU: for a file of 10,000 campaigns, the copies are 3 MB,
	// waiting on memory.
	par.For(len(matches), reuseChunk, func(lo, hi int) {
		for i, j := range matches[lo:hi] {
			if j >= 0 {
				campaigns[lo+i] = old[j]
			}
		}
	})
	var missing []int
	for i, j := range matches {
		if j < 0 {
			missing = append(missing, i)
		}
	}
	return missing
}

// reuseChunk is how many campaigns one CPU reuses at a time.
const reuseChunk = 2048

// parseSplit parses data by its pieces, or reports false when it cannot
// (the caller then parses the whole document). With a cache, the entries
// whose text the file's previous version had are not parsed again.
func parseSplit(data []byte, cache *entryCache) (*RuleSet, bool) {
	var prev *entryTexts
	if cache != nil {
		prev = cache.old
	}
	s, digests, matches, ok := cutCampaigns(data, prev)
	if !ok {
		return nil, false
	}
	var fileDigest Digest
	if cache != nil && digests != nil {
		// The walk read every entry: the file's digest is known, and
		// an unchanged file needs nothing more.
		fileDigest = piecesSum(len(data), s, digests)
		if fileDigest == cache.prevSum {
			cache.sum, cache.same = fileDigest, true
			return nil, true
		}
	}
	rs, ok := parseRest(s)
	if !ok {
		return nil, false
	}
	campaigns := make([]Campaign, len(s.entries))
	var old []Campaign
	// hash is set when every entry is parsed and needs its digest for
	// the next version: the cut did not walk the previous version's
	// entries (there were none, or they were at another indentation —
	// then none has the text of an entry here: an entry's text starts
	// with its indentation — or the walk gave up, finding none among the
	// first entries). Each worker hashes the entries it parses, just
	// before it parses them (their text is then in its CPU's cache).
	hash := false
	if cache != nil {
		if digests == nil {
			digests, hash = make([]Digest, len(s.entries)), true
		}
		cache.seen += len(s.entries)
		old = cache.campaigns
	}
	missing := reuse(campaigns, old, matches)
	// Parse the missing entries in batches of consecutive ones, on every
	// CPU.
	var batches [][]int
	for i := 0; i < len(missing); {
		j := i + 1
		for j < len(missing) && j-i < entryBatch && missing[j] == missing[j-1]+1 {
			j++
		}
		batches = append(batches, missing[i:j])
		i = j
	}
	var (
		wg     sync.WaitGroup
		failed bool
		parsed int
		mu     sync.Mutex
		next   = make(chan []int)
	)
	for range min(runtime.GOMAXPROCS(0), len(batches)) {
		wg.Go(func() {
			for b := range next {
				// Consecutive entries are consecutive in data: the
				// batch's text is the first entry's slice extended
				// over the others.
				n := 0
				for _, i := range b {
					n += len(s.entries[i])
					if hash {
						digests[i] = sum(s.entries[i])
					}
				}
				// A parser per batch, not per worker: a directory's files
				// are parsed at once, each by up to GOMAXPROCS workers.
				fp := fastParsers.Get().(*fastParser)
				got, ok := parseEntries(fp, s.entries[b[0]][:n], len(b))
				fastParsers.Put(fp)
				if ok {
					for k, i := range b {
						campaigns[i] = got[k]
					}
				}
				mu.Lock()
				if ok {
					parsed += len(b)
				} else {
					failed = true
				}
				mu.Unlock()
			}
		})
	}
	for _, b := range batches {
		next <- b
	}
	close(next)
	wg.Wait()
	if cache != nil {
		cache.parsed += parsed
	}
	if failed {
		return nil, false
	}
	if cache != nil {
		lens := make([]int, len(s.entries))
		for i, e := range s.entries {
			lens[i] = len(e)
		}
		cache.next = &entryTexts{indent: s.indent, lens: lens, digests: digests}
		if hash {
			fileDigest = piecesSum(len(data), s, digests)
		}
		cache.sum = fileDigest
	}
	rs.Campaigns = campaigns
	return rs, true
}

// hashChunk is how many entries one CPU hashes at a time.
const hashChunk = 256

// parseRest parses the document without its entries, checking that
// "campaigns:" is a root key there with no value. The rule set points
// into s.rest, which is the cut's own copy.
func parseRest(s split) (*RuleSet, bool) {
	fp := fastParsers.Get().(*fastParser)
	defer fastParsers.Put(fp)
	doc, ok := parseYAML(fp, s.rest, true)
	if !ok {
		return nil, false
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode || root.Style&yaml.TaggedStyle != 0 {
		return nil, false
	}
	found := false
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value == "campaigns" && k.Line == s.keyLine && k.Column == 1 && k.Style == 0 {
			found = v.Kind == yaml.ScalarNode && v.Style == 0 && v.Value == "" && v.Tag == "!!null"
		}
	}
	if !found {
		return nil, false
	}
	var rs RuleSet
	if err := decodeRuleSet(root, &rs); err != nil || rs.Campaigns != nil {
		return nil, false
	}
	return &rs, true
}

// parseEntries parses n consecutive entries as one block sequence, with
// fp: straight into the campaigns when it can (fastdecode.go), else by
// way of a node tree.
func parseEntries(fp *fastParser, text []byte, n int) ([]Campaign, bool) {
	if out, ok := fp.decodeEntries(text, n); ok {
		return out, true
	}
	return parseEntriesByTree(fp, text, n)
}

// parseEntriesByTree is parseEntries by way of a node tree, with fp's
// node storage.
func parseEntriesByTree(fp *fastParser, text []byte, n int) ([]Campaign, bool) {
	doc, ok := parseYAML(fp, text, false)
	if !ok {
		return nil, false
	}
	seq := doc.Content[0]
	if seq.Kind != yaml.SequenceNode || seq.Style&yaml.TaggedStyle != 0 || len(seq.Content) != n {
		return nil, false
	}
	out := make([]Campaign, n)
	for i, it := range seq.Content {
		if decodeCampaign(it, &path{field: "campaigns"}, &out[i]) != nil {
			return nil, false
		}
	}
	return out, true
}

// parseYAML parses one piece of a document into a node tree holding one
// node: with fp when the piece is in its subset, else with yaml.v3. A tree
// from fp is valid until fp's next parse; with alias, its values may
// point into text (fastParser.parse).
func parseYAML(fp *fastParser, text []byte, alias bool) (*yaml.Node, bool) {
	if doc, ok := fp.parse(text, alias); ok {
		return doc, true
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(text, &doc); err != nil || doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, false
	}
	return &doc, true
}

// isMarkerLine reports whether line starts with a document marker (---,
// ...) or a directive (%).
func isMarkerLine(line []byte) bool {
	return bytes.HasPrefix(line, []byte("---")) || bytes.HasPrefix(line, []byte("...")) || bytes.HasPrefix(line, []byte("%"))
}
