package main

import "context"

// runRules is `personactl rules ...`.
func runRules(ctx context.Context, g *globals, e env, args []string) error {
	return usagef("rules: not implemented yet")
}
