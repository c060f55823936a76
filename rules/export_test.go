package rules

// ParseViaJSON exports the generic parse route for the equivalence tests
// of package rules_test.
var ParseViaJSON = parseViaJSON
