package rules

import (
	"time"

	"go.yaml.in/yaml/v3"
)

// ParseViaJSON exports the generic parse route for the equivalence tests
// of package rules_test.
var ParseViaJSON = parseViaJSON

// ParseSplit exports the piecewise parse of a large document.
func ParseSplit(data []byte) (*RuleSet, bool) { return parseSplit(data, nil) }

// SetRacy sets how recent a change may be for p.ReadFiles to trust a
// file's stat next time; a negative window trusts every stat at once.
func (p *Parser) SetRacy(d time.Duration) { p.racy = d }

// FastParser exports the fast YAML front end for FuzzFastYAML.
type FastParser = fastParser

// Parse is fastParser.parse, copying data.
func (p *fastParser) Parse(data []byte) (*yaml.Node, bool) { return p.parse(data, false) }

// CutCampaigns exports the cut of a large document into its pieces.
func CutCampaigns(data []byte) (entries [][]byte, rest []byte, ok bool) {
	s, _, _, ok := cutCampaigns(data, nil)
	return s.entries, s.rest, ok
}

// ParseSplitChunked is ParseSplit with the entries' lines read in chunks
// of at least chunk bytes, to test the chunked read on small documents.
func ParseSplitChunked(data []byte, chunk int) (*RuleSet, bool) {
	defer func(old int) { cutChunk = old }(cutChunk)
	cutChunk = chunk
	return parseSplit(data, nil)
}

// A bug in the fast front end panics in tests instead of falling back.
func init() { fastStrict = true }

// DesignExample is DESIGN.md's rules file, verbatim (testdata/design.yaml).
var DesignExample = example

// DecodeEntries decodes n campaign entries, text cut from a document,
// both straight from the text (fast, ok false when it leaves them to the
// tree) and by way of the node tree.
func DecodeEntries(text []byte, n int) (fast []Campaign, fastOK bool, tree []Campaign, treeOK bool) {
	var p fastParser
	fast, fastOK = p.decodeEntries(text, n)
	tree, treeOK = parseEntriesByTree(new(fastParser), text, n)
	return fast, fastOK, tree, treeOK
}

// DecodeEntriesWith is decodeEntries with p, which keeps its slabs'
// sizes from one parse to the next.
func DecodeEntriesWith(p *FastParser, text []byte, n int) ([]Campaign, bool) {
	return p.decodeEntries(text, n)
}
