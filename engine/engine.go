package engine

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"

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
	cfg     Config
	segs    Segments
	rules   atomic.Pointer[Rules]
	binding atomic.Pointer[binding]
	// cache memoises uploaded personas by internal user id. It is lossy by
	// design, so it only ever holds re-derivable data; nil when disabled.
	cache *ristretto.Cache[uint64, *personaEntry]
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
	cache, err := newPersonaCache(cfg.PersonaCacheSize)
	if err != nil {
		return nil, fmt.Errorf("engine: persona cache: %w", err)
	}
	return &Engine{cfg: cfg, segs: segs, cache: cache}, nil
}

// SetRules publishes compiled rules; decisions started after it returns use
// them. It returns the rules it replaced (nil at first).
func (e *Engine) SetRules(r *Rules) *Rules { return e.rules.Swap(r) }

// Rules returns the rules currently deciding, or nil.
func (e *Engine) Rules() *Rules { return e.rules.Load() }

// Close stops the persona cache's goroutines. The engine must not be used
// afterwards.
func (e *Engine) Close() {
	if e.cache != nil {
		e.cache.Close()
	}
}
