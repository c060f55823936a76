// Package rules defines the rule set planners write — campaigns, creatives
// and content rules — and turns a rules file into a validated [RuleSet].
//
// The types here map 1:1 onto the personad.v1.RuleSet proto message: every
// JSON field name is the proto field name, so a rules file is the same
// document whether it is read from disk or sent to the Rules service. The
// package is pure data: it knows nothing of the wire or of the decision;
// the engine compiles a validated RuleSet into its index.
//
// Parse decodes a yaml.v3 node tree straight into the structs — built by
// a fast front end when the file is in the subset of YAML rules files are
// written in (fastyaml.go), by yaml.v3 otherwise — strict
// about unknown fields, duplicate keys and types (field names match
// exactly, as in the proto: `ID` is an unknown field), naming the line and
// field path of an error; a large file's campaign entries are parsed on
// every CPU, and a [Parser] reparses only the files and campaign entries
// whose text changed since its last call.
//
// Validation reports every problem at once, each with the path of the field
// that holds it ("campaigns[3].creatives[1].w: must be > 0"), so a planner
// fixes a file in one pass; a set with any error is rejected whole.
// [Origins.Locate] names the file and line of each problem of a set read
// from files ("b2b.yaml: line 40: campaigns[3].creatives[1].w").
package rules
