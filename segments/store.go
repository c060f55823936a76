package segments

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
)

// Config configures a Store opened with Open. Start from DefaultConfig.
type Config struct {
	// Dir is the store's own directory, holding the snapshot file
	// (SnapshotFile); personad uses <data-dir>/segments. Open creates it
	// when missing.
	Dir string
}

// DefaultConfig returns the defaults: the directory ./data/segments, that
// is personad's default data dir.
func DefaultConfig() Config {
	return Config{Dir: filepath.Join("data", "segments")}
}

// Store publishes the current Snapshot. It is safe for concurrent use.
type Store struct {
	cfg Config
	cur atomic.Pointer[Snapshot]
}

// NewStore returns an in-memory store serving snap (an empty snapshot when
// snap is nil). It has no directory: nothing it serves is durable.
func NewStore(snap *Snapshot) *Store {
	if snap == nil {
		snap = emptySnapshot()
	}
	s := &Store{}
	s.cur.Store(snap)
	return s
}

// Open opens the store in cfg.Dir, creating the directory when missing, and
// loads its snapshot file; with no snapshot file the store is empty.
// Temporary files left by a write that crashed are removed. A corrupt
// snapshot is an error naming the file and where the damage is; Open never
// serves part of a snapshot.
func Open(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("segments: Config.Dir is empty")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("segments: %w", err)
	}
	if err := removeTemps(cfg.Dir); err != nil {
		return nil, err
	}
	snap, err := ReadSnapshotFile(filepath.Join(cfg.Dir, SnapshotFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		snap = emptySnapshot()
	case err != nil:
		return nil, err
	}
	s := &Store{cfg: cfg}
	s.cur.Store(snap)
	return s, nil
}

// removeTemps deletes snapshot temp files that a crash left behind: they
// were never renamed into place, so they hold nothing acknowledged.
func removeTemps(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("segments: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), SnapshotFile+".tmp") {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("segments: removing stale temp file: %w", err)
			}
		}
	}
	return nil
}

// Current returns the snapshot decisions should use. It is never nil.
func (s *Store) Current() *Snapshot { return s.cur.Load() }

// Publish makes snap current.
func (s *Store) Publish(snap *Snapshot) { s.cur.Store(snap) }

// Dir is the store's directory, empty for a store made by NewStore.
func (s *Store) Dir() string { return s.cfg.Dir }

// Close releases the store. The current snapshot stays readable; Close is
// idempotent. (Today the store holds no file or goroutine between calls;
// the write-ahead log will.)
func (s *Store) Close() error { return nil }
