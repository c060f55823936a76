package main

import "context"

// runReport is `personactl report`.
func runReport(ctx context.Context, g *globals, e env, args []string) error {
	return usagef("report: not implemented yet")
}
