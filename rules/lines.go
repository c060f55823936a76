package rules

import (
	"bytes"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// lineFinder finds the lines of validation errors' field paths in one
// rules file's text, for Origins.Locate. It works only when an error
// needs it (a valid set never builds one), and does as little as it can:
// a campaign's line is found by cutting the file at its campaign entries
// (split.go) and parsing that entry alone, so that an error in a 10 MB
// file costs a scan of its lines, not a parse of the whole file (over a
// second on a loaded 2-CPU machine); the whole document is parsed only
// for a path the cut cannot serve (the content rules, or a file in
// another shape, such as JSON). A lineFinder is not safe for concurrent
// use.
type lineFinder struct {
	name string // the file, read from disk when data is nil
	data []byte
	read bool // data was read from name (or that failed)

	cutTried bool
	cut      split
	cutOK    bool
	first    []int // the 1-based line of each entry of cut

	docTried bool
	doc      *yaml.Node // the whole document's root value, or nil
}

// line returns the 1-based line of the field at path ("campaigns[3].
// creatives[1].w", an index of this file), or of the innermost field of
// path the file holds (its campaign entry's, for a field left out): the
// line to look at. It returns 0 when it cannot tell.
func (l *lineFinder) line(path string) int {
	if l.data == nil && !l.read {
		// A Parser leaves the data of a file it knew unchanged unread:
		// read it now, for its errors only.
		l.read = true
		l.data, _ = os.ReadFile(l.name)
	}
	if len(l.data) == 0 {
		return 0
	}
	if rest, ok := strings.CutPrefix(path, "campaigns["); ok {
		if n := l.entryLine(rest); n > 0 {
			return n
		}
	}
	if !l.docTried {
		l.docTried = true
		if len(l.data) <= maxWholeParse {
			l.doc = parseNodes(l.data)
		}
	}
	if l.doc == nil {
		return 0
	}
	return walkLine(l.doc, path)
}

// entryLine is line for the path "campaigns[" + rest, through the cut;
// 0 when the cut cannot tell.
func (l *lineFinder) entryLine(rest string) int {
	idx, rest, ok := strings.Cut(rest, "]")
	i, err := strconv.Atoi(idx)
	if !ok || err != nil || i < 0 {
		return 0
	}
	if !l.cutTried {
		l.cutTried = true
		l.cut, _, _, l.cutOK = cutCampaigns(l.data, nil)
		if l.cutOK {
			l.first = make([]int, len(l.cut.entries))
			line := 1 + bytes.Count(l.data[:l.cut.head], []byte("\n"))
			for j, e := range l.cut.entries {
				l.first[j] = line
				line += bytes.Count(e, []byte("\n"))
			}
		}
	}
	if !l.cutOK || i >= len(l.cut.entries) {
		return 0
	}
	// The entry alone is a document holding a one-item sequence; one
	// that needs the rest of the file (an alias) does not parse alone.
	doc := parseNodes(l.cut.entries[i])
	if doc == nil || doc.Kind != yaml.SequenceNode || len(doc.Content) != 1 {
		return 0
	}
	return l.first[i] + walkLine(doc.Content[0], rest) - 1
}

// maxWholeParse is the largest file whose whole document is parsed to
// find a line the cut cannot: a 9 MB file takes over a second on a
// loaded 2-CPU machine, with the reload's lock held. A larger file's
// error then names the file and path, without the line.
const maxWholeParse = 4 << 20

// parseNodes parses a rules document into its root value's node tree, by
// the fast front end where it can, or nil when it does not parse.
func parseNodes(data []byte) *yaml.Node {
	var p fastParser // not the pool's: the tree outlives this call
	doc, ok := p.parse(data, false)
	if !ok {
		doc = new(yaml.Node)
		if err := yaml.Unmarshal(data, doc); err != nil {
			return nil
		}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	return doc.Content[0]
}

// walkLine follows path (".budget.daily", "[2].any[0]", or a path from
// the root, "content_rules.blocked_cat[1]") down from n and returns the
// line of the last step it could take: a mapping's key, or a sequence's
// item; n's own line when it could take none.
func walkLine(n *yaml.Node, path string) int {
	line := n.Line
	for path != "" {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		var next *yaml.Node
		if path[0] == '[' {
			idx, rest, _ := strings.Cut(path[1:], "]")
			path = rest
			i, err := strconv.Atoi(idx)
			if err == nil && n.Kind == yaml.SequenceNode && i >= 0 && i < len(n.Content) {
				next = n.Content[i]
				line = next.Line
			}
		} else {
			path = strings.TrimPrefix(path, ".")
			end := strings.IndexAny(path, ".[")
			if end < 0 {
				end = len(path)
			}
			var key *yaml.Node
			key, next = field(n, path[:end])
			path = path[end:]
			if key != nil {
				line = key.Line
			}
		}
		if next == nil {
			break
		}
		n = next
	}
	return line
}

// field returns the key and value of the field name of mapping n, also
// one a merge key (<<) brings in; nils when n has none.
func field(n *yaml.Node, name string) (key, value *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == name {
			return n.Content[i], n.Content[i+1]
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != "<<" {
			continue
		}
		merged := []*yaml.Node{n.Content[i+1]}
		if v := n.Content[i+1]; v.Kind == yaml.SequenceNode {
			merged = v.Content
		}
		for _, m := range merged {
			for m.Kind == yaml.AliasNode && m.Alias != nil {
				m = m.Alias
			}
			if k, v := field(m, name); k != nil {
				return k, v
			}
		}
	}
	return nil, nil
}
