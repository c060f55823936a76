package rules

import "time"

// ParseViaJSON exports the generic parse route for the equivalence tests
// of package rules_test.
var ParseViaJSON = parseViaJSON

// ParseSplit exports the piecewise parse of a large document.
func ParseSplit(data []byte) (*RuleSet, bool) { return parseSplit(data, nil) }

// SetRacy sets how recent a change may be for p.ReadFiles to trust a
// file's stat next time; a negative window trusts every stat at once.
func (p *Parser) SetRacy(d time.Duration) { p.racy = d }
