package rules

// ParseViaJSON exports the generic parse route for the equivalence tests
// of package rules_test.
var ParseViaJSON = parseViaJSON

// ParseSplit exports the piecewise parse of a large document.
func ParseSplit(data []byte) (*RuleSet, bool) { return parseSplit(data, nil) }
