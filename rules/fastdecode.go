package rules

import (
	"math"
	"strconv"
	"strings"
	"unsafe"

	"github.com/personad/personad/internal/arena"
)

// Campaign entries decoded straight from the text.
//
// The fast front end (fastyaml.go) builds a yaml.Node tree that decode.go
// then walks: two passes, and a node written and read for every key and
// value. For the campaign entries of a large file — nearly all of its
// text — decodeEntries reads the same subset of YAML straight into the
// structs, in one pass and without nodes. It reads only what the walker
// would accept without an error: the fields of the rule-set types, once
// each, with values of their own types written as the front end reads
// them. Anything else — an unknown or repeated field, a value of another
// type, a flow mapping, a number in any form but [-]digits[.digits], an
// unquoted date — fails it (ok false), and the caller decodes the
// entries by the tree, whose result or error is then Parse's as before.
// So decodeEntries never decides an error, and what it does accept it must
// decode exactly as the tree does: FuzzParseEquivalence and
// FuzzDecodeEntries check that.
//
// It follows the front end's grammar, using its scanners: a line is
// read as fastParser.parse reads it in the same place, and where the
// front end would give up, decodeEntries does too.

// slab cuts the lists of decoded campaigns from shared allocations
// instead of allocating each one (textSlab does the same for their
// strings' bytes). What it cuts is kept by the campaigns, so a slab
// serves one parse only (begin starts the next).
type slab[T any] struct {
	buf []T // the array being cut (arena.Cut), its cut part in len
	slabSize
}

// slabSize is how much a slab allocates. Its first allocation is what
// the previous parse used per byte of text, times this parse's text, and
// a sixteenth more, as entries are much alike; when that falls short, it
// allocates a quarter of what the parse has used so far. Little is left
// unused, and a small parse after a large one (one edited entry after a
// batch) does not allocate, nor keep alive, a large slab.
type slabSize struct {
	used    int     // items cut in this parse
	limit   int     // the most items this parse can cut
	perByte float64 // items cut per byte of text in the previous parse
	want    int     // the first allocation's size
}

// slabMin is the fewest items a slab allocates.
const slabMin = 32

// begin starts a parse of a text of size bytes that cuts at most limit
// items.
func (s *slabSize) begin(size, limit int) {
	s.used, s.limit = 0, limit
	s.want = int(s.perByte*float64(size)*17/16) + 1
}

// end ends a parse of a text of size bytes.
func (s *slabSize) end(size int) {
	if size > 0 {
		s.perByte = float64(s.used) / float64(size)
	}
}

// take counts n more items cut, and returns how many the allocation to
// cut them from should hold should the current one be short of n.
func (s *slabSize) take(n int) int {
	size := max(slabMin, s.used/4)
	if s.used == 0 {
		size = max(size, s.want)
	}
	size = max(n, min(size, s.limit-s.used))
	s.used += n
	return size
}

// begin starts a parse (see slabSize.begin).
func (s *slab[T]) begin(size, limit int) {
	s.buf = nil
	s.slabSize.begin(size, limit)
}

// take returns n items of its own, with no capacity beyond them.
func (s *slab[T]) take(n int) []T {
	arena.Refill(&s.buf, n, s.slabSize.take(n))
	return arena.Cut(&s.buf, n)
}

// cut returns a copy of items (take's): not nil, even when items is
// empty (a "[]" decodes to an empty list, not none).
func (s *slab[T]) cut(items ...T) []T {
	if len(items) == 0 {
		return make([]T, 0) // no allocation
	}
	out := s.take(len(items))
	copy(out, items)
	return out
}

// textSlab is a slab of strings' bytes. It fills strings.Builders, whose
// memory is not zeroed before use as a slice's is: each byte a string
// takes is written once, by the copy, and the slack at the end of an
// allocation is never touched. A Builder only appends, so a string cut
// from it stays as it was while later ones are written after it. (The
// values are three quarters of a rules file's bytes; in a CPU profile of
// reloads of 320 MB of rules, clearing their slab first, page faults
// included, was a sixth of the parse.)
type textSlab struct {
	b strings.Builder
	slabSize
}

// begin starts a parse (see slabSize.begin).
func (s *textSlab) begin(size, limit int) {
	s.b = strings.Builder{}
	s.slabSize.begin(size, limit)
}

// copy returns a copy of v in the slab.
func (s *textSlab) copy(v string) string {
	size := s.slabSize.take(len(v))
	if s.b.Cap()-s.b.Len() < len(v) {
		s.b = strings.Builder{} // the old one's strings keep its memory
		s.b.Grow(size)
	}
	at := s.b.Len()
	s.b.WriteString(v)
	return s.b.String()[at:]
}

// decodeState is fastParser's storage for decodeEntries: the lists being
// read (stacks that the next parse reuses) and the slabs their copies are
// cut from.
type decodeState struct {
	strs      []string
	clauses   []Clause
	creatives []Creative

	text         textSlab // the strings' bytes
	strSlab      slab[string]
	clauseSlab   slab[Clause]
	creativeSlab slab[Creative]
	intSlab      slab[int32] // priorities
}

// decodeEntries decodes the n consecutive campaign entries of text, a
// block sequence, or reports false when it cannot (see above). It reads
// text in place; the campaigns' strings are copies of their values
// (three quarters of a generated file's bytes: keys, indentation and
// quotes are not copied), packed in allocations of their own batch, so
// that nothing retains text or another batch's strings.
func (p *fastParser) decodeEntries(text []byte, n int) (out []Campaign, ok bool) {
	if !p.start(text, true) {
		return nil, false
	}
	defer func() { p.s = "" }() // text is the caller's
	d := &p.dec
	d.strs, d.clauses, d.creatives = d.strs[:0], d.clauses[:0], d.creatives[:0]
	// A value's bytes are the text's (or an escape's, allocated apart),
	// and any item of a list takes at least two bytes of text.
	size := len(text)
	d.text.begin(size, size)
	d.strSlab.begin(size, size/2)
	d.clauseSlab.begin(size, size/2)
	d.creativeSlab.begin(size, size/2)
	d.intSlab.begin(size, size/2)
	defer func() { // after p.recover: ok is the outcome
		if ok {
			d.text.end(size)
			d.strSlab.end(size)
			d.clauseSlab.end(size)
			d.creativeSlab.end(size)
			d.intSlab.end(size)
		}
	}()
	defer p.recover(&ok)
	p.nextContent()
	if p.ind < 0 || !p.isEntry(p.pos) {
		return nil, false
	}
	out = make([]Campaign, n)
	ind, k := p.ind, 0
	for {
		if k == n {
			p.fail()
		}
		p.entry()
		p.campaign(p.pos-p.lineStart, &out[k])
		k++
		if p.ind == ind && p.isEntry(p.pos) {
			continue
		}
		break
	}
	// Only the entries: nothing after them, as parse reads a document.
	if p.ind >= 0 || k != n {
		p.fail()
	}
	return out, true
}

// entry moves past a block sequence entry's "- " and the spaces after it
// to its content, which must be on the line (blockSequence's rule).
func (p *fastParser) entry() {
	s := p.s
	i := p.pos + 1
	for i < len(s) && s[i] == ' ' {
		i++
	}
	if i == p.pos+1 || i == len(s) || s[i] == '\n' || s[i] == '#' || p.isEntry(i) {
		p.fail()
	}
	p.pos = i
}

// key reads the plain key at p.pos in a block mapping and moves past its
// ":" (blockMapping's rule).
func (p *fastParser) key() string {
	start := p.pos
	if !p.canStartPlain(start) {
		p.fail()
	}
	end, stop := p.scanPlainBlock(start)
	if stop >= len(p.s) || p.s[stop] != ':' || end-start > maxFastKey {
		p.fail()
	}
	p.pos = stop + 1
	return p.s[start:end]
}

// more reports whether the block mapping in column ind has another key,
// at p.pos, after a value (blockMapping's rule).
func (p *fastParser) more(ind int) bool {
	if p.ind < ind {
		return false
	}
	if p.ind > ind || p.isEntry(p.pos) {
		p.fail()
	}
	return true
}

// once marks a field as read, failing when it was (a repeated key).
func (p *fastParser) once(seen *uint32, field uint32) {
	if *seen&field != 0 {
		p.fail()
	}
	*seen |= field
}

// valueOnLine skips the spaces after a key's ":" and reports whether a
// value follows on the line; if not, it moves to the next content line,
// where a collection may start (mappingValue's rule).
func (p *fastParser) valueOnLine() bool {
	s := p.s
	i := p.pos
	for i < len(s) && s[i] == ' ' {
		i++
	}
	if i == len(s) || s[i] == '\n' || (s[i] == '#' && i > p.pos) {
		p.endLine()
		return false
	}
	p.pos = i
	return true
}

// below reports whether the content line that follows a key with no
// value on its line holds that key's value, a block collection: one
// indented more than the mapping (column ind), or a sequence in the
// mapping's own column.
func (p *fastParser) below(ind int) bool {
	return p.ind > ind || p.ind == ind && p.isEntry(p.pos)
}

// scalarOnLine reads the one-line scalar at p.pos and ends its line. It
// returns the value, and whether the scalar was plain (then its tag is
// the caller's to resolve; a quoted one is a string). A flow collection
// fails it.
func (p *fastParser) scalarOnLine() (v string, plain bool) {
	switch p.s[p.pos] {
	case '"':
		v = p.doubleQuotedValue()
	case '\'':
		v = p.singleQuotedValue()
	case '[', '{':
		p.fail()
	default:
		start := p.pos
		if !p.canStartPlain(start) {
			p.fail()
		}
		end, stop := p.scanPlainBlock(start)
		if stop < len(p.s) && p.s[stop] == ':' {
			p.fail()
		}
		v, plain = p.s[start:end], true
		p.pos = end
	}
	p.endLine()
	return v, plain
}

// isNullWord reports whether a plain scalar is null.
func isNullWord(v string) bool {
	switch v {
	case "", "~", "null", "Null", "NULL":
		return true
	}
	return false
}

// nullOnLine reads a scalar on the line that must be null, for a field
// that holds a collection: "cat: ~" is no list.
func (p *fastParser) nullOnLine() {
	if v, plain := p.scalarOnLine(); !plain || !isNullWord(v) {
		p.fail()
	}
}

// str decodes a string field's value, after its key, in a mapping in
// column ind: null is "".
func (p *fastParser) str(ind int) string {
	if !p.valueOnLine() {
		if p.below(ind) {
			p.fail()
		}
		return ""
	}
	v, plain := p.scalarOnLine()
	if plain {
		v = p.plainStr(v)
	}
	return p.own(v)
}

// plainStr resolves a plain scalar where a string is wanted.
func (p *fastParser) plainStr(v string) string {
	switch plainTag(v) {
	case "!!str":
		return v
	case "!!null":
		return ""
	}
	p.fail() // a number, a bool or a timestamp
	return ""
}

// own returns a string value that the campaigns may keep: a copy of v
// in the batch's text when v is in the text read, v itself when it is
// not (a quoted scalar with escapes is a string of its own already).
func (p *fastParser) own(v string) string {
	if v == "" {
		return ""
	}
	base := uintptr(unsafe.Pointer(unsafe.StringData(p.s)))
	at := uintptr(unsafe.Pointer(unsafe.StringData(v)))
	if at < base || at >= base+uintptr(len(p.s)) {
		return v
	}
	return p.dec.text.copy(v)
}

// number decodes a number field's value: ok is false for null. Only
// the forms decode.go reads itself ([-]digits and [-]digits.digits, by
// numberTag) are numbers here.
func (p *fastParser) number(ind int) (f float64, ok bool) {
	if !p.valueOnLine() {
		if p.below(ind) {
			p.fail()
		}
		return 0, false
	}
	v, plain := p.scalarOnLine()
	if !plain {
		p.fail()
	}
	switch numberTag(v) {
	case "!!int":
		if x, err := strconv.ParseInt(v, 10, 64); err == nil {
			return float64(x), true
		}
	case "!!float":
		if x, err := strconv.ParseFloat(v, 64); err == nil {
			return x, true
		}
	default:
		if isNullWord(v) {
			return 0, false
		}
	}
	p.fail()
	return 0, false
}

func (p *fastParser) float(ind int) float64 {
	f, _ := p.number(ind)
	return f
}

// int32 decodes a whole number in int32's range (decodeInt32's rule).
func (p *fastParser) int32(ind int) (x int32, ok bool) {
	f, ok := p.number(ind)
	if f != math.Trunc(f) || f < math.MinInt32 || f > math.MaxInt32 {
		p.fail()
	}
	return int32(f), ok
}

// mapping reports whether a field's value is a block mapping, which then
// starts at p.pos in column p.ind; false for null.
func (p *fastParser) mapping(ind int) bool {
	if p.valueOnLine() {
		p.nullOnLine()
		return false
	}
	if p.ind > ind && !p.isEntry(p.pos) {
		return true
	}
	if p.below(ind) {
		p.fail() // a sequence
	}
	return false
}

// sequence reports whether a field's value is a block sequence, which
// then starts at p.pos in column p.ind; false for null. A flow sequence
// on the line is flow's to read, when it is set.
func (p *fastParser) sequence(ind int, flow *bool) bool {
	if p.valueOnLine() {
		if flow != nil && p.s[p.pos] == '[' {
			*flow = true
			return false
		}
		p.nullOnLine()
		return false
	}
	if p.below(ind) {
		if !p.isEntry(p.pos) {
			p.fail() // a mapping
		}
		return true
	}
	return false
}

// nextEntry reports whether the block sequence in column ind has another
// entry after an item (blockSequence's rule).
func (p *fastParser) nextEntry(ind int) bool {
	if p.ind == ind && p.isEntry(p.pos) {
		return true
	}
	if p.ind > ind {
		p.fail()
	}
	return false
}

// strs decodes a list of strings: a block or flow sequence of scalars, or
// null (nil). A null item is "".
func (p *fastParser) strs(ind int) []string {
	d := &p.dec
	mark := len(d.strs)
	var flow bool
	switch {
	case p.sequence(ind, &flow):
		seq := p.ind
		for {
			p.entry()
			v, plain := p.scalarOnLine()
			if plain {
				v = p.plainStr(v)
			}
			d.strs = append(d.strs, p.own(v))
			if !p.nextEntry(seq) {
				break
			}
		}
	case flow:
		p.flowStrs(ind)
		p.endLine()
	default:
		return nil
	}
	out := d.strSlab.cut(d.strs[mark:]...)
	clear(d.strs[mark:]) // no strings of this text kept past the parse
	d.strs = d.strs[:mark]
	return out
}

// flowStrs reads a flow sequence of scalars at p.pos onto the list of
// strings (flowSequence's rule, with flowNode's scalars).
func (p *fastParser) flowStrs(ind int) {
	d := &p.dec
	s := p.s
	p.pos++
	p.flowSpace(ind)
	for p.peek() != ']' {
		var v string
		switch start := p.pos; s[start] {
		case '[', '{':
			p.fail()
		case '"':
			v = p.doubleQuotedValue()
		case '\'':
			v = p.singleQuotedValue()
		default:
			if !p.canStartPlain(start) {
				p.fail()
			}
			end, _ := p.scanPlain(start, true)
			v = p.plainStr(s[start:end])
			p.pos = end
		}
		d.strs = append(d.strs, p.own(v))
		p.flowItemEnd(ind, ']')
	}
	p.pos++
}

// clauses decodes a block sequence of clauses, or null (nil).
func (p *fastParser) clauses(ind int) []Clause {
	if !p.sequence(ind, nil) {
		return nil
	}
	d := &p.dec
	mark := len(d.clauses)
	seq := p.ind
	for {
		p.entry()
		var c Clause
		p.clause(p.pos-p.lineStart, &c)
		d.clauses = append(d.clauses, c)
		if !p.nextEntry(seq) {
			break
		}
	}
	out := d.clauseSlab.cut(d.clauses[mark:]...)
	clear(d.clauses[mark:])
	d.clauses = d.clauses[:mark]
	return out
}

func (p *fastParser) clause(ind int, c *Clause) {
	var seen uint32
	for {
		switch p.key() {
		case "facet":
			p.once(&seen, 1<<0)
			c.Facet = p.str(ind)
		case "any":
			p.once(&seen, 1<<1)
			c.Any = p.strs(ind)
		default:
			p.fail()
		}
		if !p.more(ind) {
			return
		}
	}
}

// creatives decodes a block sequence of creatives, or null (nil).
func (p *fastParser) creatives(ind int) []Creative {
	if !p.sequence(ind, nil) {
		return nil
	}
	d := &p.dec
	mark := len(d.creatives)
	seq := p.ind
	for {
		p.entry()
		d.creatives = append(d.creatives, Creative{})
		p.creative(p.pos-p.lineStart, &d.creatives[len(d.creatives)-1])
		if !p.nextEntry(seq) {
			break
		}
	}
	out := d.creativeSlab.cut(d.creatives[mark:]...)
	clear(d.creatives[mark:])
	d.creatives = d.creatives[:mark]
	return out
}

func (p *fastParser) creative(ind int, c *Creative) {
	var seen uint32
	for {
		switch p.key() {
		case "id":
			p.once(&seen, 1<<0)
			c.ID = p.str(ind)
		case "w":
			p.once(&seen, 1<<1)
			c.W, _ = p.int32(ind)
		case "h":
			p.once(&seen, 1<<2)
			c.H, _ = p.int32(ind)
		case "channels":
			p.once(&seen, 1<<3)
			c.Channels = p.strs(ind)
		case "cat":
			p.once(&seen, 1<<4)
			c.Cat = p.strs(ind)
		case "persona":
			p.once(&seen, 1<<5)
			c.Persona = p.clauses(ind)
		case "adm":
			p.once(&seen, 1<<6)
			c.Adm = p.str(ind)
		default:
			p.fail()
		}
		if !p.more(ind) {
			return
		}
	}
}

// campaign decodes the campaign whose first key is at p.pos, in column
// ind.
func (p *fastParser) campaign(ind int, c *Campaign) {
	var seen uint32
	for {
		switch p.key() {
		case "id":
			p.once(&seen, 1<<0)
			c.ID = p.str(ind)
		case "advertiser":
			p.once(&seen, 1<<1)
			c.Advertiser = p.str(ind)
		case "adomain":
			p.once(&seen, 1<<2)
			c.Adomain = p.strs(ind)
		case "status":
			p.once(&seen, 1<<3)
			c.Status = p.str(ind)
		case "start":
			p.once(&seen, 1<<4)
			c.Start = p.str(ind)
		case "end":
			p.once(&seen, 1<<5)
			c.End = p.str(ind)
		case "priority":
			p.once(&seen, 1<<6)
			if x, ok := p.int32(ind); ok {
				c.Priority = &p.dec.intSlab.cut(x)[0]
			}
		case "bid_cpm":
			p.once(&seen, 1<<7)
			c.BidCPM = p.float(ind)
		case "currency":
			p.once(&seen, 1<<8)
			c.Currency = p.str(ind)
		case "budget":
			p.once(&seen, 1<<9)
			if p.mapping(ind) {
				p.budget(p.ind, &c.Budget)
			}
		case "pacing":
			p.once(&seen, 1<<10)
			c.Pacing = p.str(ind)
		case "frequency_cap":
			p.once(&seen, 1<<11)
			if p.mapping(ind) {
				p.frequencyCap(p.ind, &c.FrequencyCap)
			}
		case "cat":
			p.once(&seen, 1<<12)
			c.Cat = p.strs(ind)
		case "targeting":
			p.once(&seen, 1<<13)
			if p.mapping(ind) {
				p.targeting(p.ind, &c.Targeting)
			}
		case "creatives":
			p.once(&seen, 1<<14)
			c.Creatives = p.creatives(ind)
		default:
			p.fail()
		}
		if !p.more(ind) {
			return
		}
	}
}

func (p *fastParser) budget(ind int, b *Budget) {
	var seen uint32
	for {
		switch p.key() {
		case "daily":
			p.once(&seen, 1<<0)
			b.Daily = p.float(ind)
		case "total":
			p.once(&seen, 1<<1)
			b.Total = p.float(ind)
		default:
			p.fail()
		}
		if !p.more(ind) {
			return
		}
	}
}

func (p *fastParser) frequencyCap(ind int, f *FrequencyCap) {
	var seen uint32
	for {
		switch p.key() {
		case "max":
			p.once(&seen, 1<<0)
			f.Max, _ = p.int32(ind)
		case "window":
			p.once(&seen, 1<<1)
			f.Window = p.str(ind)
		default:
			p.fail()
		}
		if !p.more(ind) {
			return
		}
	}
}

func (p *fastParser) targeting(ind int, t *Targeting) {
	var seen uint32
	for {
		switch p.key() {
		case "all":
			p.once(&seen, 1<<0)
			t.All = p.clauses(ind)
		case "none":
			p.once(&seen, 1<<1)
			t.None = p.clauses(ind)
		case "channels":
			p.once(&seen, 1<<2)
			t.Channels = p.strs(ind)
		default:
			p.fail()
		}
		if !p.more(ind) {
			return
		}
	}
}
