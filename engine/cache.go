package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/personad/personad/rules"
)

// CompilerConfig configures a Compiler. Start from DefaultCompilerConfig.
type CompilerConfig struct {
	// CacheSize is the number of compiled campaigns kept for reuse; 0
	// turns the cache off (the compiled rules are identical either way).
	CacheSize int64
}

// DefaultCompilerConfig caches 256Ki compiled campaigns: a few rule sets'
// worth of the largest expected ones.
func DefaultCompilerConfig() CompilerConfig {
	return CompilerConfig{CacheSize: 1 << 18}
}

// Compiler compiles rule sets, caching each compiled campaign by its
// content digest so that the next compilation reuses every campaign that
// did not change. The cache is lossy (ristretto may drop or evict an
// entry); a miss only costs a recompilation. A Compiler is safe for
// concurrent use; Close it to stop the cache's goroutines.
type Compiler struct {
	cache *ristretto.Cache[uint64, *unit]
	// last is the last rule set compiled, for the next compilation to
	// patch. Exact, not a cache: any compiled set is a valid base.
	last atomic.Pointer[linked]
}

// NewCompiler returns a Compiler with cfg's cache.
func NewCompiler(cfg CompilerConfig) (*Compiler, error) {
	if cfg.CacheSize < 0 {
		return nil, errors.New("engine: CompilerConfig.CacheSize must be >= 0")
	}
	c := &Compiler{}
	if cfg.CacheSize == 0 {
		return c, nil
	}
	cache, err := ristretto.NewCache(&ristretto.Config[uint64, *unit]{
		NumCounters:        cfg.CacheSize * 10,
		MaxCost:            cfg.CacheSize,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("engine: compile cache: %w", err)
	}
	c.cache = cache
	return c, nil
}

// Close stops the cache's goroutines. The Compiler must not be used
// afterwards.
func (cc *Compiler) Close() {
	if cc != nil && cc.cache != nil {
		cc.cache.Close()
	}
}

// cacheKey is the first half of the digest; an entry is used only when its
// campaign id and whole digest match too.
func cacheKey(d rules.Digest) uint64 { return binary.LittleEndian.Uint64(d[:8]) }

func (cc *Compiler) lookup(id string, d rules.Digest) *unit {
	if cc == nil || cc.cache == nil {
		return nil
	}
	u, ok := cc.cache.Get(cacheKey(d))
	if !ok || u.digest != d || u.id != id {
		return nil
	}
	return u
}

func (cc *Compiler) store(u *unit) {
	if cc != nil && cc.cache != nil {
		cc.cache.Set(cacheKey(u.digest), u, 1)
	}
}

// wait makes the entries stored so far visible to the next lookup.
func (cc *Compiler) wait() {
	if cc != nil && cc.cache != nil {
		cc.cache.Wait()
	}
}

func (cc *Compiler) previous() *linked {
	if cc == nil {
		return nil
	}
	return cc.last.Load()
}

func (cc *Compiler) remember(l *linked) {
	if cc != nil {
		cc.last.Store(l)
	}
}
