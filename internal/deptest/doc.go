// Package deptest holds the architecture guard tests that make check and
// make test run: the allowed import direction between personad's packages
// (cmd → bidder → engine → segments, rules), that only tests import the
// test helper internal/tcpproxy, the packages no one may create
// (util, common, types, models), and a doc comment on every package.
//
// The rules are checked on the real package graph, as `go list -deps`
// reports it, in the style of tailscale's tstest/deptest: the picture in
// ARCHITECTURE.md cannot rot, because breaking it fails a test that names
// the offending edge. Only production (non-test) imports count; tests may
// reach further, e.g. a bidder test may start a cmd binary.
//
// The package has no non-test code beyond this file.
package deptest
