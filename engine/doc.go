// Package engine makes the bid decision: persona resolution, the targeting
// index, filters, scoring and creative choice. It is pure computation: no
// I/O, no wire types, no locks held across a decision.
package engine
