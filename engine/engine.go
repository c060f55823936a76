package engine

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/personad/personad/ledger"
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
	// Ledger enforces budgets, pacing and frequency caps and records a
	// reservation for every bid. Nil decides without money (tests, tools).
	Ledger *ledger.Ledger
}

// MaxPersonaCacheSize bounds Config.PersonaCacheSize: a cache holds no
// more personas than the segment store has users. The cache takes about
// 48 bytes per user of its size when it is made.
const MaxPersonaCacheSize = segments.MaxUsers

// DefaultConfig returns the defaults: a persona cache of one million users.
func DefaultConfig() Config {
	return Config{PersonaCacheSize: 1 << 20}
}

// Engine decides bids. It holds the compiled rules and reads the segment
// store; both are immutable snapshots swapped atomically, so Decide takes
// no lock and a decision sees exactly one version of each.
// An Engine is safe for concurrent use.
type Engine struct {
	segs    Segments
	state   atomic.Pointer[published]
	binding atomic.Pointer[binding]
	ledger  *ledger.Ledger
	// cache memoises uploaded personas by internal user id. It is lossy by
	// design, so it only ever holds re-derivable data; nil when disabled.
	cache *ristretto.Cache[uint64, *personaEntry]
	// epochs numbers binding epochs (see binding.epoch), from 1.
	epochs atomic.Uint64

	// analyzing guards starting binding analyses against Close; wg waits
	// for them and done stops them.
	analyzing sync.Mutex
	closed    bool
	done      chan struct{}
	wg        sync.WaitGroup
}

func (e *Engine) closing() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// New returns an Engine reading segments from segs, with no rules loaded
// (every decision is a no-bid until SetRules).
func New(cfg Config, segs Segments) (*Engine, error) {
	if cfg.PersonaCacheSize < 0 {
		return nil, errors.New("engine: PersonaCacheSize must be >= 0")
	}
	if cfg.PersonaCacheSize > MaxPersonaCacheSize {
		return nil, fmt.Errorf("engine: PersonaCacheSize %d exceeds the limit of %d (MaxPersonaCacheSize)", cfg.PersonaCacheSize, int64(MaxPersonaCacheSize))
	}
	if segs == nil {
		return nil, errors.New("engine: nil segment source")
	}
	cache, err := newPersonaCache(cfg.PersonaCacheSize)
	if err != nil {
		return nil, fmt.Errorf("engine: persona cache: %w", err)
	}
	e := &Engine{segs: segs, cache: cache, ledger: cfg.Ledger, done: make(chan struct{})}
	e.state.Store(&published{})
	return e, nil
}

// published is what a decision loads with one atomic read: compiled rules
// and, with a ledger, each campaign's live money state by ordinal.
type published struct {
	rules *Rules
	// money[o] is campaign o's ledger state: the same object for the same
	// campaign id across every version of the rules, so spend, pacing and
	// frequency survive a reload. A nil entry is a campaign whose limits
	// the ledger refused: it cannot spend. Nil without a ledger.
	money []*ledger.Campaign
	// tierEnd[o] is the ordinal after the last campaign of o's priority
	// tier. Within a tier campaigns are in descending bid order, so once a
	// bid is below an impression's floor the rest of the tier is too, and
	// the scan jumps to the next tier.
	tierEnd []uint32
}

// SetRules publishes compiled rules; decisions started after it returns use
// them. With a ledger it first binds every campaign to its live money state
// by id (limits changed by the new rules apply at once; spend is kept). It
// returns the rules it replaced (nil at first) and the number of campaigns
// whose limits the ledger refused, which cannot spend.
func (e *Engine) SetRules(r *Rules) (old *Rules, refused int) {
	p := &published{rules: r}
	if r != nil {
		p.tierEnd = make([]uint32, len(r.campaigns))
		for o := len(r.campaigns) - 1; o >= 0; o-- {
			if o == len(r.campaigns)-1 || r.campaigns[o].Priority != r.campaigns[o+1].Priority {
				p.tierEnd[o] = uint32(o + 1)
			} else {
				p.tierEnd[o] = p.tierEnd[o+1]
			}
		}
	}
	if e.ledger != nil && r != nil {
		p.money = make([]*ledger.Campaign, len(r.campaigns))
		for i := range r.campaigns {
			c := &r.campaigns[i]
			m, err := e.ledger.Campaign(c.ID, c.Limits)
			if err != nil {
				refused++
				continue
			}
			p.money[i] = m
		}
	}
	return e.state.Swap(p).rules, refused
}

// Rules returns the rules currently deciding, or nil.
func (e *Engine) Rules() *Rules { return e.state.Load().rules }

// Close stops the engine's goroutines (binding analyses, the persona
// cache's) and waits for them. The engine must not be used afterwards.
func (e *Engine) Close() {
	e.analyzing.Lock()
	if !e.closed {
		e.closed = true
		close(e.done)
	}
	e.analyzing.Unlock()
	e.wg.Wait()
	if e.cache != nil {
		e.cache.Close()
	}
}
