package main

import "context"

// runExplain is `personactl explain REQUEST.json`.
func runExplain(ctx context.Context, g *globals, e env, args []string) error {
	return usagef("explain: not implemented yet")
}
