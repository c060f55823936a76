package main

import "context"

// runSegments is `personactl segments ...`.
func runSegments(ctx context.Context, g *globals, e env, args []string) error {
	return usagef("segments: not implemented yet")
}
