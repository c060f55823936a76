package rules

import (
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"

	"go.yaml.in/yaml/v3"
)

// A fast front end for the YAML that rules files are written in.
//
// yaml.v3's scanner and parser read about 30 MB/s per core, nine tenths
// of a large rules file's parse. fastParser reads a subset of YAML an
// order of magnitude faster and builds the very yaml.Node tree yaml.v3
// would build for it (Kind, Style, Tag, Value, Line, Column, Content; not
// the comments, which the walker ignores), so that decode.go reads both
// alike. For anything outside the subset it says so (ok=false) and the
// caller parses the document with yaml.v3, as before: errors, and every
// construct the subset leaves out, stay yaml.v3's own. FuzzFastYAML checks
// that whatever it accepts, yaml.v3 accepts too and parses to an equal tree.
//
// The subset:
//
//   - The text is printable ASCII and line feeds, plus UTF-8 characters
//     from U+00A0 up (not U+2028, U+2029 or U+FEFF): no tabs, no carriage
//     returns, no byte order mark, no control characters. No line starts
//     with "---" or "..." (no document markers), and there are no
//     directives: one implicit document.
//   - The root is a block mapping, a block sequence or a flow collection.
//   - Block mappings have plain one-line keys (at most 1000 bytes) followed
//     by ": " or ":" at the end of the line. A key's value is on its line
//     (a flow collection or a one-line scalar), or is a block mapping or
//     sequence more indented on the next lines, or a block sequence at
//     the key's own indentation, or nothing (null).
//   - Block sequence entries are "- " followed, on the same line, by a
//     flow collection, a one-line scalar or the first key of a block
//     mapping (whose indentation is that key's column). An empty entry or
//     one whose content starts on the next line, and "- - x", are not.
//   - Flow sequences and mappings may span lines (more indented than the
//     enclosing block); a flow mapping's keys are one-line scalars with
//     ":" on their line and a value after it (JSON is in the subset).
//     Flow pairs in sequences ([a: b]) and keys without values are not.
//   - Scalars are plain, single-quoted or double-quoted, each on one line.
//     Plain scalars are not multi-line; double-quoted ones may use the
//     escapes yaml.v3 knows except an escaped line break.
//   - Comments: whole lines, and "#" after a space at the end of a line or
//     between flow items.
//   - Not: anchors, aliases, tags, block scalars (| >), explicit keys (?),
//     quoted or complex keys in block mappings, empty flow values, and
//     whatever else the grammar above does not name.
//
// It is fast because it does little: one pass to check the characters
// (a word at a time), at most one copy of the text into a string whose
// substrings are the Values (none for text that is already the parse's
// own copy, such as a cut document's rest: see parse; only an escaped
// quoted scalar allocates its own), nodes and Content
// slices carved from slabs that the next parse reuses, long values
// scanned with IndexByte, and the common plain scalars' tags (words,
// plain numbers) resolved without yaml.v3's resolver.
//
// When a line does not continue the structure exactly as expected — a
// line more indented than the enclosing block after a complete value, say,
// which yaml.v3 would read as a continuation of a plain scalar or reject —
// the front end gives up rather than guess.

// errNotMine unwinds fastParser when the text leaves the subset.
var errNotMine = errors.New("rules: not in the fast YAML subset")

// fastStrict makes a panic in the front end other than errNotMine (a bug)
// crash rather than fall back to yaml.v3: the tests set it, so that the
// fuzzer sees such a bug; in production it costs only speed.
var fastStrict = false

// maxFastDepth bounds the nesting the front end follows.
const maxFastDepth = 256

// maxFastKey bounds a key's length in bytes (yaml.v3 gives up on a simple
// key after 1024 characters).
const maxFastKey = 1000

// fastParsers keep parsers, with their node storage, for the next
// documents or pieces to parse: the workers of a piecewise parse
// (split.go) last one file, and
// a directory of a hundred files would otherwise allocate node storage a
// few hundred times over (85 MB per cold reload of 10,000 campaigns). A
// pooled parser's node storage still points into the pieces it parsed
// (~100 KB each) until its next parse overwrites it, or the collector
// empties the pool. Parsers are taken per batch of entries, so at most
// one per running worker is in use.
var fastParsers = sync.Pool{New: func() any { return new(fastParser) }}

// fastParser parses documents in the subset into yaml.Node trees. Its node
// storage is reused by the next parse: a tree is valid only until then.
// A fastParser is not safe for concurrent use.
type fastParser struct {
	s         string // the document
	pos       int    // the next byte to read
	line      int    // the 1-based line of pos
	lineStart int    // the offset of that line's first byte
	ind       int    // the indentation of the line nextContent found; -1 at the end
	ascii     bool   // s has no multi-byte characters: columns are byte offsets
	// colPos and colN cache a column count on the line starting at
	// colLine: the character at colPos is in column colN.
	colLine, colPos, colN int
	depth                 int

	nodes  [][]yaml.Node  // node slabs
	nNode  int            // slabs in use (the last one partly)
	free   []yaml.Node    // the unused tail of the slab in use
	ptrs   [][]*yaml.Node // Content slabs
	nPtr   int
	freeP  []*yaml.Node
	stack  []*yaml.Node // the children of the collections being parsed
	escBuf []byte
	dec    decodeState // decodeEntries' (fastdecode.go)
}

// parse parses data, or reports false when it is not in the subset or
// is not valid YAML. The tree is valid until the next call. Its Values
// are substrings of a copy of data, or with alias of data itself, which
// then must never change while anything refers to them (such as the
// cut's own copy of a document's rest: see parseRest).
func (p *fastParser) parse(data []byte, alias bool) (doc *yaml.Node, ok bool) {
	if !p.start(data, alias) {
		return nil, false
	}
	p.nNode, p.free, p.nPtr, p.freeP = 0, nil, 0, nil
	p.stack = p.stack[:0]
	defer p.recover(&ok)
	p.nextContent()
	if p.ind < 0 {
		return nil, false // empty: yaml.v3 says what an empty document is
	}
	var root *yaml.Node
	switch p.s[p.pos] {
	case '[', '{':
		root = p.flowNode(-1)
		p.endLine()
	default:
		root = p.blockNode(p.ind)
	}
	if p.ind >= 0 {
		p.fail()
	}
	doc = p.node(yaml.DocumentNode, 0, "", "", root.Line, root.Column)
	doc.Content = p.content([]*yaml.Node{root})
	return doc, true
}

// start checks data's characters and makes it the text to read, a copy
// or with alias data itself; false when data is not in the subset.
func (p *fastParser) start(data []byte, alias bool) bool {
	ascii, clean := checkText(data)
	if !clean {
		return false
	}
	if alias {
		p.s = unsafe.String(unsafe.SliceData(data), len(data))
	} else {
		p.s = string(data)
	}
	p.pos, p.line, p.lineStart, p.ascii = 0, 1, 0, ascii
	p.colLine, p.colPos, p.colN = -1, 0, 0
	p.depth = 0
	return true
}

// recover, deferred, ends a parse that failed (p.fail) by setting *ok
// to false.
func (p *fastParser) recover(ok *bool) {
	if r := recover(); r != nil {
		if r != errNotMine && fastStrict {
			panic(r)
		}
		*ok = false
	}
}

func (p *fastParser) fail() { panic(errNotMine) }

// node returns a new node from the slab.
func (p *fastParser) node(kind yaml.Kind, style yaml.Style, tag, value string, line, col int) *yaml.Node {
	if len(p.free) == 0 {
		if p.nNode == len(p.nodes) {
			p.nodes = append(p.nodes, make([]yaml.Node, 1024))
		}
		p.free = p.nodes[p.nNode]
		p.nNode++
	}
	n := &p.free[0]
	p.free = p.free[1:]
	// Field by field, not a struct copy (which takes a bulk write
	// barrier): a reused node's other fields are still zero, as nothing
	// but Content is ever set.
	n.Kind, n.Style, n.Tag, n.Value, n.Line, n.Column = kind, style, tag, value, line, col
	n.Content = nil
	return n
}

// content copies children into the Content slab.
func (p *fastParser) content(children []*yaml.Node) []*yaml.Node {
	k := len(children)
	if k == 0 {
		return nil
	}
	if len(p.freeP) < k {
		if p.nPtr == len(p.ptrs) || len(p.ptrs[p.nPtr]) < k {
			p.ptrs = append(p.ptrs[:p.nPtr], make([]*yaml.Node, max(k, 4096)))
		}
		p.freeP = p.ptrs[p.nPtr]
		p.nPtr++
	}
	c := p.freeP[:k:k]
	p.freeP = p.freeP[k:]
	copy(c, children)
	return c
}

// collection sets n's Content to the children pushed since mark.
func (p *fastParser) collection(n *yaml.Node, mark int) {
	n.Content = p.content(p.stack[mark:])
	p.stack = p.stack[:mark]
}

// col returns the 1-based column of offset i on the current line, in
// characters as yaml.v3 counts them.
func (p *fastParser) col(i int) int {
	if p.ascii {
		return i - p.lineStart + 1
	}
	if p.colLine != p.lineStart || i < p.colPos {
		p.colLine, p.colPos, p.colN = p.lineStart, p.lineStart, 1
	}
	p.colN += utf8.RuneCountInString(p.s[p.colPos:i])
	p.colPos = i
	return p.colN
}

func (p *fastParser) newline(next int) {
	p.line++
	p.lineStart = next
	p.pos = next
}

// nextContent moves from the start of a line (or the end of a value on
// it, at a line feed) past blank and comment lines to the first character
// of the next line with content, and sets p.ind to that line's
// indentation, or -1 at the end of the text.
func (p *fastParser) nextContent() {
	s := p.s
	for {
		i := p.pos
		for i < len(s) && s[i] == ' ' {
			i++
		}
		if i == len(s) {
			p.pos, p.ind = i, -1
			return
		}
		switch s[i] {
		case '\n':
			p.newline(i + 1)
			continue
		case '#':
			e := strings.IndexByte(s[i:], '\n')
			if e < 0 {
				p.pos, p.ind = len(s), -1
				return
			}
			p.newline(i + e + 1)
			continue
		}
		p.pos = i
		p.ind = i - p.lineStart
		if p.ind == 0 && (strings.HasPrefix(s[i:], "---") || strings.HasPrefix(s[i:], "...")) {
			p.fail()
		}
		return
	}
}

// endLine checks that the rest of the line after a value is blank or a
// comment, and moves to the next content line (nextContent).
func (p *fastParser) endLine() {
	s := p.s
	i := p.pos
	for i < len(s) && s[i] == ' ' {
		i++
	}
	if i < len(s) {
		switch s[i] {
		case '\n':
		case '#':
			if i == p.pos {
				p.fail() // "#" right after a value
			}
			e := strings.IndexByte(s[i:], '\n')
			if e < 0 {
				p.pos, p.ind = len(s), -1
				return
			}
			i += e
		default:
			p.fail()
		}
		p.newline(i + 1)
	} else {
		p.pos = i
	}
	p.nextContent()
}

// isEntry reports whether a block sequence entry ("- ") starts at i.
func (p *fastParser) isEntry(i int) bool {
	s := p.s
	return s[i] == '-' && (i+1 == len(s) || s[i+1] == ' ' || s[i+1] == '\n')
}

// blockNode parses the block mapping or sequence starting at p.pos, in
// column ind (0-based).
func (p *fastParser) blockNode(ind int) *yaml.Node {
	if p.isEntry(p.pos) {
		return p.blockSequence(ind)
	}
	return p.blockMapping(ind)
}

func (p *fastParser) enter() {
	p.depth++
	if p.depth > maxFastDepth {
		p.fail()
	}
}

// blockMapping parses a block mapping whose first key is at p.pos, in
// column ind (0-based). It returns at the first content line indented
// less than ind, or at the end.
func (p *fastParser) blockMapping(ind int) *yaml.Node {
	p.enter()
	m := p.node(yaml.MappingNode, 0, "!!map", "", p.line, ind+1)
	mark := len(p.stack)
	for {
		// A plain key in column ind.
		start := p.pos
		if !p.canStartPlain(start) {
			p.fail()
		}
		end, stop := p.scanPlain(start, false)
		if stop >= len(p.s) || p.s[stop] != ':' || end-start > maxFastKey {
			p.fail()
		}
		k := p.node(yaml.ScalarNode, 0, plainTag(p.s[start:end]), p.s[start:end], p.line, ind+1)
		p.pos = stop + 1
		v := p.mappingValue(ind)
		p.stack = append(p.stack, k, v)
		if p.ind < ind {
			break
		}
		if p.ind > ind || p.isEntry(p.pos) {
			p.fail()
		}
	}
	p.collection(m, mark)
	p.depth--
	return m
}

// mappingValue parses the value after a key's ":" (at p.pos-1) in a
// block mapping in column ind.
func (p *fastParser) mappingValue(ind int) *yaml.Node {
	s := p.s
	colon := p.pos
	i := p.pos
	for i < len(s) && s[i] == ' ' {
		i++
	}
	if i == len(s) || s[i] == '\n' || (s[i] == '#' && i > colon) {
		// The value is on the next lines, or null.
		line, col := p.line, p.col(colon)
		p.endLine()
		switch {
		case p.ind > ind:
			return p.blockNode(p.ind)
		case p.ind == ind && p.isEntry(p.pos):
			return p.blockSequence(ind)
		}
		return p.node(yaml.ScalarNode, 0, "!!null", "", line, col)
	}
	p.pos = i
	return p.inlineValue(ind)
}

// blockSequence parses a block sequence whose first entry's "-" is at
// p.pos, in column ind. It returns at the first content line that is not
// an entry in column ind and is indented no more than ind.
func (p *fastParser) blockSequence(ind int) *yaml.Node {
	p.enter()
	q := p.node(yaml.SequenceNode, 0, "!!seq", "", p.line, ind+1)
	mark := len(p.stack)
	s := p.s
	for {
		i := p.pos + 1
		for i < len(s) && s[i] == ' ' {
			i++
		}
		if i == p.pos+1 || i == len(s) || s[i] == '\n' || s[i] == '#' || p.isEntry(i) {
			p.fail() // an empty entry, one on the next lines, or "- - x"
		}
		p.pos = i
		var item *yaml.Node
		if p.isKey(i) {
			item = p.blockMapping(p.col(i) - 1)
		} else {
			item = p.inlineValue(ind)
		}
		p.stack = append(p.stack, item)
		if p.ind == ind && p.isEntry(p.pos) {
			continue
		}
		if p.ind > ind {
			p.fail()
		}
		break
	}
	p.collection(q, mark)
	p.depth--
	return q
}

// isKey reports whether a plain mapping key starts at i.
func (p *fastParser) isKey(i int) bool {
	if !p.canStartPlain(i) {
		return false
	}
	_, stop := p.scanPlain(i, false)
	return stop < len(p.s) && p.s[stop] == ':'
}

// inlineValue parses a value that starts at p.pos and ends on its line
// (a flow collection may span lines), then moves to the next content
// line. ind is the column of the innermost block collection.
func (p *fastParser) inlineValue(ind int) *yaml.Node {
	var n *yaml.Node
	switch p.s[p.pos] {
	case '[', '{', '"', '\'':
		n = p.flowNode(ind)
	default:
		start := p.pos
		if !p.canStartPlain(start) {
			p.fail()
		}
		end, stop := p.scanPlain(start, false)
		if stop < len(p.s) && p.s[stop] == ':' {
			p.fail() // "a: b: c", or a mapping after "- " we did not expect
		}
		v := p.s[start:end]
		n = p.node(yaml.ScalarNode, 0, plainTag(v), v, p.line, p.col(start))
		p.pos = end
	}
	p.endLine()
	return n
}

// canStartPlain reports whether a plain scalar may start at i (yaml.v3's
// rule, narrowed: "-" only before a letter, digit or ".").
func (p *fastParser) canStartPlain(i int) bool {
	s := p.s
	switch s[i] {
	case ' ', '\n', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`':
		return false
	case '-':
		if i+1 == len(s) {
			return false
		}
		c := s[i+1]
		return c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	return true
}

// scanPlain scans the one-line plain scalar starting at i. It returns
// the end of its text (trailing spaces excluded) and where it stopped:
// at a line feed, the end of the text, a comment's "#", a ":" followed by
// a space or line end, or (in flow context) one of ",?[]{}".
func (p *fastParser) scanPlain(i int, flow bool) (end, stop int) {
	s := p.s
	if !flow {
		return p.scanPlainBlock(i)
	}
	end = i
	for ; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ':
			continue
		case '\n', ',', '?', '[', ']', '{', '}':
			return end, i
		case '#':
			if s[i-1] == ' ' {
				return end, i
			}
		case ':':
			if i+1 == len(s) || s[i+1] == ' ' || s[i+1] == '\n' {
				return end, i
			}
		}
		end = i + 1
	}
	return end, i
}

// scanPlainBlock is scanPlain in block context, where only ": ", " #"
// and the line's end stop a plain scalar: it looks for them with
// IndexByte, as long values (markup) have few of them.
func (p *fastParser) scanPlainBlock(i int) (end, stop int) {
	s := p.s
	// A short value (an id, a number) is quicker to read byte by byte.
	n := min(len(s), i+32)
	for j := i; j < n; j++ {
		if !plainStops[s[j]] {
			continue
		}
		switch s[j] {
		case '\n':
			return trimSpaces(s, i, j), j
		case ':':
			if j+1 == len(s) || s[j+1] == ' ' || s[j+1] == '\n' {
				return trimSpaces(s, i, j), j
			}
		case '#':
			if j > i && s[j-1] == ' ' {
				return trimSpaces(s, i, j), j
			}
		}
	}
	if n == len(s) {
		return trimSpaces(s, i, n), n
	}
	eol := len(s)
	if e := strings.IndexByte(s[i:], '\n'); e >= 0 {
		eol = i + e
	}
	stop = eol
	for j := i; ; {
		c := strings.IndexByte(s[j:eol], ':')
		if c < 0 {
			break
		}
		j += c
		if j+1 == eol || s[j+1] == ' ' {
			stop = j
			break
		}
		j++
	}
	for j := i; ; {
		h := strings.IndexByte(s[j:stop], '#')
		if h < 0 {
			break
		}
		j += h
		if j > i && s[j-1] == ' ' {
			stop = j
			break
		}
		j++
	}
	return trimSpaces(s, i, stop), stop
}

// plainStops holds the bytes that may end a plain scalar in block context.
var plainStops = [256]bool{'\n': true, ':': true, '#': true}

// trimSpaces returns the end of s[i:j] without its trailing spaces.
func trimSpaces(s string, i, j int) int {
	for j > i && s[j-1] == ' ' {
		j--
	}
	return j
}

// flowItemEnd reads what follows an item of a flow collection closed by
// end: spaces, then a comma (and the spaces after it) or end, which is
// left for the caller's loop to see.
func (p *fastParser) flowItemEnd(ind int, end byte) {
	p.flowSpace(ind)
	switch p.peek() {
	case ',':
		p.pos++
		p.flowSpace(ind)
	case end:
	default:
		p.fail()
	}
}

// flowSpace skips spaces, line breaks and comments between flow tokens.
// A continuation line must be indented more than ind, the column of the
// enclosing block collection.
func (p *fastParser) flowSpace(ind int) {
	s := p.s
	i := p.pos
	for i < len(s) {
		switch s[i] {
		case ' ':
			i++
			continue
		case '#':
			if i == p.pos && i > p.lineStart {
				p.fail() // "#" right after a token
			}
			e := strings.IndexByte(s[i:], '\n')
			if e < 0 {
				i = len(s)
				continue
			}
			i += e
			fallthrough
		case '\n':
			p.newline(i + 1)
			i = p.pos
			for i < len(s) && s[i] == ' ' {
				i++
			}
			if i < len(s) && s[i] != '\n' && s[i] != '#' && i-p.lineStart <= ind {
				p.fail()
			}
			if i == p.lineStart && (strings.HasPrefix(s[i:], "---") || strings.HasPrefix(s[i:], "...")) {
				p.fail()
			}
			continue
		}
		break
	}
	p.pos = i
}

// flowNode parses a flow collection or a one-line scalar at p.pos.
func (p *fastParser) flowNode(ind int) *yaml.Node {
	s := p.s
	start := p.pos
	switch s[start] {
	case '[':
		return p.flowSequence(ind)
	case '{':
		return p.flowMapping(ind)
	case '"':
		return p.doubleQuoted()
	case '\'':
		return p.singleQuoted()
	}
	if !p.canStartPlain(start) {
		p.fail()
	}
	end, _ := p.scanPlain(start, true)
	v := s[start:end]
	p.pos = end
	return p.node(yaml.ScalarNode, 0, plainTag(v), v, p.line, p.col(start))
}

func (p *fastParser) flowSequence(ind int) *yaml.Node {
	p.enter()
	q := p.node(yaml.SequenceNode, yaml.FlowStyle, "!!seq", "", p.line, p.col(p.pos))
	mark := len(p.stack)
	p.pos++
	p.flowSpace(ind)
	for p.peek() != ']' {
		item := p.flowNode(ind)
		p.stack = append(p.stack, item)
		p.flowItemEnd(ind, ']')
	}
	p.pos++
	p.collection(q, mark)
	p.depth--
	return q
}

func (p *fastParser) flowMapping(ind int) *yaml.Node {
	p.enter()
	m := p.node(yaml.MappingNode, yaml.FlowStyle, "!!map", "", p.line, p.col(p.pos))
	mark := len(p.stack)
	p.pos++
	p.flowSpace(ind)
	s := p.s
	for p.peek() != '}' {
		if c := p.peek(); c == '[' || c == '{' {
			p.fail() // a complex key
		}
		start := p.pos
		k := p.flowNode(ind)
		if p.pos-start > maxFastKey {
			p.fail()
		}
		for p.pos < len(s) && s[p.pos] == ' ' {
			p.pos++
		}
		if p.peek() != ':' {
			p.fail()
		}
		p.pos++
		p.flowSpace(ind)
		if c := p.peek(); c == ',' || c == '}' {
			p.fail() // an empty value
		}
		v := p.flowNode(ind)
		p.stack = append(p.stack, k, v)
		p.flowItemEnd(ind, '}')
	}
	p.pos++
	p.collection(m, mark)
	p.depth--
	return m
}

// peek returns the byte at p.pos, failing at the end of the text.
func (p *fastParser) peek() byte {
	if p.pos >= len(p.s) {
		p.fail()
	}
	return p.s[p.pos]
}

func (p *fastParser) singleQuoted() *yaml.Node {
	start := p.pos
	v := p.singleQuotedValue()
	return p.node(yaml.ScalarNode, yaml.SingleQuotedStyle, "!!str", v, p.line, p.col(start))
}

// singleQuotedValue reads the single-quoted scalar at p.pos and returns
// its value.
func (p *fastParser) singleQuotedValue() string {
	s := p.s
	start := p.pos
	i := start + 1
	var buf []byte
	for {
		q := strings.IndexByte(s[i:], '\'')
		if q < 0 {
			p.fail()
		}
		q += i
		if strings.IndexByte(s[i:q], '\n') >= 0 {
			p.fail()
		}
		if q+1 < len(s) && s[q+1] == '\'' {
			buf = append(buf, s[i:q+1]...)
			i = q + 2
			continue
		}
		var v string
		if buf == nil {
			v = s[start+1 : q]
		} else {
			v = string(append(buf, s[i:q]...))
		}
		p.pos = q + 1
		return v
	}
}

func (p *fastParser) doubleQuoted() *yaml.Node {
	start := p.pos
	v := p.doubleQuotedValue()
	return p.node(yaml.ScalarNode, yaml.DoubleQuotedStyle, "!!str", v, p.line, p.col(start))
}

// doubleQuotedValue reads the double-quoted scalar at p.pos and returns
// its value, its escapes resolved.
func (p *fastParser) doubleQuotedValue() string {
	s := p.s
	start := p.pos
	i := start + 1
	buf := p.escBuf[:0]
	escaped := false
	for {
		q := strings.IndexByte(s[i:], '"')
		if q < 0 {
			p.fail()
		}
		q += i
		b := strings.IndexByte(s[i:q], '\\')
		if b < 0 {
			if strings.IndexByte(s[i:q], '\n') >= 0 {
				p.fail()
			}
			var v string
			if !escaped {
				v = s[start+1 : q]
			} else {
				buf = append(buf, s[i:q]...)
				v = string(buf)
				p.escBuf = buf
			}
			p.pos = q + 1
			return v
		}
		b += i
		if strings.IndexByte(s[i:b], '\n') >= 0 || b+1 >= len(s) {
			p.fail()
		}
		escaped = true
		buf = append(buf, s[i:b]...)
		i = b + 2
		switch s[b+1] {
		case '0':
			buf = append(buf, 0)
		case 'a':
			buf = append(buf, '\a')
		case 'b':
			buf = append(buf, '\b')
		case 't':
			buf = append(buf, '\t')
		case 'n':
			buf = append(buf, '\n')
		case 'v':
			buf = append(buf, '\v')
		case 'f':
			buf = append(buf, '\f')
		case 'r':
			buf = append(buf, '\r')
		case 'e':
			buf = append(buf, 0x1b)
		case ' ', '"', '\'', '\\':
			buf = append(buf, s[b+1])
		case 'N':
			buf = append(buf, "\u0085"...)
		case '_':
			buf = append(buf, "\u00a0"...)
		case 'L':
			buf = append(buf, "\u2028"...)
		case 'P':
			buf = append(buf, "\u2029"...)
		case 'x', 'u', 'U':
			n := 2
			switch s[b+1] {
			case 'u':
				n = 4
			case 'U':
				n = 8
			}
			if i+n > len(s) {
				p.fail()
			}
			r := 0
			for _, c := range []byte(s[i : i+n]) {
				var d byte
				switch {
				case c >= '0' && c <= '9':
					d = c - '0'
				case c >= 'a' && c <= 'f':
					d = c - 'a' + 10
				case c >= 'A' && c <= 'F':
					d = c - 'A' + 10
				default:
					p.fail()
				}
				r = r<<4 | int(d)
			}
			if r >= 0xD800 && r <= 0xDFFF || r > 0x10FFFF {
				p.fail()
			}
			buf = utf8.AppendRune(buf, rune(r))
			i += n
		default:
			p.fail() // an unknown escape, or an escaped line break
		}
	}
}

// plainTag resolves a plain scalar's tag as yaml.v3 does: the common
// cases here, the rest by yaml.v3's own resolver.
func plainTag(v string) string {
	if v == "" {
		return "!!null"
	}
	switch c := v[0]; {
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		switch c {
		case 'y', 'Y', 'n', 'N', 't', 'T', 'f', 'F', 'o', 'O':
			// Words yaml.v3 looks up in its table of special values.
			switch v {
			case "true", "True", "TRUE", "false", "False", "FALSE":
				return "!!bool"
			case "null", "Null", "NULL":
				return "!!null"
			}
		}
		return "!!str"
	case c >= '0' && c <= '9' || c == '-' || c == '+':
		if t := numberTag(v); t != "" {
			return t
		}
		// yaml.v3 reads a value starting with a digit or sign as an
		// int (0x1F, 0o17, 0b1, 1_000), a float (1e3) or a timestamp
		// (2026-01-01 10:00:00.5 +02:00), or else as a string: one with
		// a byte none of those has, such as "24h", is a string.
		for i := 1; i < len(v); i++ {
			if !numberish[v[i]] {
				return "!!str"
			}
		}
	case c == '~':
		if v == "~" {
			return "!!null"
		}
		return "!!str"
	case c == '<':
		if v == "<<" {
			return "!!merge"
		}
		return "!!str" // markup
	case c == '.':
	default:
		return "!!str"
	}
	return (&yaml.Node{Kind: yaml.ScalarNode, Value: v}).ShortTag()
}

// numberish holds the bytes of yaml.v3's ints, floats, timestamps and
// ±.inf.
var numberish = func() (t [256]bool) {
	for _, c := range []byte("0123456789abcdefABCDEF+-_.:xXoObBtTzZ iInN") {
		t[c] = true
	}
	return t
}()

// numberTag resolves [-]digits and [-]digits.digits, or returns "".
func numberTag(v string) string {
	if v[0] == '-' {
		v = v[1:]
	} else if v[0] == '+' {
		return ""
	}
	digits := 0
	for digits < len(v) && v[digits] >= '0' && v[digits] <= '9' {
		digits++
	}
	if digits == 0 || digits > 18 {
		return ""
	}
	if digits == len(v) {
		if v[0] == '0' && len(v) > 1 {
			return "" // octal, or not a number
		}
		return "!!int"
	}
	if v[digits] != '.' || digits == 4 {
		return "" // a date, or something else
	}
	frac := v[digits+1:]
	if frac == "" || len(frac) > 18 {
		return ""
	}
	for i := 0; i < len(frac); i++ {
		if frac[i] < '0' || frac[i] > '9' {
			return ""
		}
	}
	return "!!float"
}

// bad returns a word's bytes outside 0x20–0x7E other than line feeds,
// as their high bits. Each byte is tested on its low seven bits, with no
// carry between bytes (a byte with its high bit set is bad anyway).
func bad(w uint64) uint64 {
	const (
		lo = 0x0101010101010101
		hi = 0x8080808080808080
	)
	x := w &^ hi
	ge20 := (x + 0x60*lo) & hi              // >= 0x20
	is7f := (x + 0x01*lo) & hi              // == 0x7f
	isNL := hi &^ ((x ^ 0x0a*lo) + 0x7f*lo) // == '\n'
	return (w & hi) | is7f | (hi &^ (ge20 | isNL))
}

// checkText reports whether data holds only what the subset allows
// (printable ASCII, line feeds, and multi-byte characters from U+00A0 up
// other than U+2028, U+2029 and U+FEFF), and whether it is all ASCII.
// Sixteen bytes at a time: two words whose bytes are all in 0x20–0x7E or are
// line feeds pass at once.
func checkText(data []byte) (ascii, ok bool) {
	ascii = true
	i := 0
	for i < len(data) {
		if i+16 <= len(data) {
			if bad(binary.LittleEndian.Uint64(data[i:]))|bad(binary.LittleEndian.Uint64(data[i+8:])) == 0 {
				i += 16
				continue
			}
		}
		c := data[i]
		if c >= 0x20 && c < 0x7f || c == '\n' {
			i++
			continue
		}
		if c < 0x80 {
			return false, false
		}
		ascii = false
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size == 1 || r < 0xa0 || r == 0x2028 || r == 0x2029 || r == 0xfeff || r >= 0xfffe && r <= 0xffff {
			return false, false
		}
		i += size
	}
	return ascii, true
}
