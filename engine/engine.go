package engine

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/personad/personad/segments"
)

// Segments is where the engine reads uploaded audience segments: the
// current immutable snapshot. *segments.Store implements it.
type Segments interface {
	Current() *segments.Snapshot
}

// Config configures an Engine. Start from DefaultConfig.
type Config struct {
	// PersonaCacheSize is the number of resolved personas kept in memory;
	// 0 turns the cache off (decisions are identical either way).
	PersonaCacheSize int64
}

// DefaultConfig returns the defaults: a persona cache of one million users.
func DefaultConfig() Config {
	return Config{PersonaCacheSize: 1 << 20}
}

// Engine decides bids. It holds the compiled rules and reads the segment
// store; both are immutable snapshots swapped atomically, so Decide takes
// no lock and a decision sees exactly one version of each.
// An Engine is safe for concurrent use.
type Engine struct {
	cfg   Config
	segs  Segments
	rules atomic.Pointer[Rules]
}

// New returns an Engine reading segments from segs, with no rules loaded
// (every decision is a no-bid until SetRules).
func New(cfg Config, segs Segments) (*Engine, error) {
	if cfg.PersonaCacheSize < 0 {
		return nil, errors.New("engine: PersonaCacheSize must be >= 0")
	}
	if segs == nil {
		return nil, errors.New("engine: nil segment source")
	}
	return &Engine{cfg: cfg, segs: segs}, nil
}

// SetRules publishes compiled rules; decisions started after it returns use
// them. It returns the rules it replaced (nil at first).
func (e *Engine) SetRules(r *Rules) *Rules { return e.rules.Swap(r) }

// Rules returns the rules currently deciding, or nil.
func (e *Engine) Rules() *Rules { return e.rules.Load() }

// Close releases the engine's caches.
func (e *Engine) Close() {}

// Decide answers q into d (reset first). It never blocks and never fails:
// when ctx's deadline passes mid-decision it stops with ReasonDeadline
// rather than answer late.
func (e *Engine) Decide(ctx context.Context, q *Query, d *Decision) {
	panic("engine: Decide: not yet implemented")
}
