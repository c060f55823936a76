package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/reload"
)

// seedDemo seeds the world cfg generates (world.DemoConfig for --demo)
// into dataDir unless it already holds one of the entries personad keeps
// there (worldEntries): that is a world from an earlier run (perhaps
// with uploaded segments), served as is. Anything else in it — a log file
// the shell writes there, the lock file, a notice key — does not make a
// world, and is left where it is. It reports whether it seeded.
func seedDemo(dataDir string, cfg world.Config, log *zap.Logger) (bool, error) {
	ents, err := os.ReadDir(dataDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("--demo: %w", err)
	}
	for _, e := range ents {
		if slices.Contains(worldEntries, e.Name()) {
			log.Info("demo: data dir already holds a world; serving it as is", zap.String("data_dir", dataDir), zap.String("found", e.Name()))
			return false, nil
		}
	}
	t0 := time.Now()
	if err := seedWorld(dataDir, cfg); err != nil {
		// A seed cut short (a full disk) leaves part of a world, which the
		// next --demo would serve as is (and find no rules in): take back
		// the entries it made. None was there before it began.
		for _, name := range worldEntries {
			if rerr := os.RemoveAll(filepath.Join(dataDir, name)); rerr != nil {
				err = fmt.Errorf("%w; removing the partly seeded %s: %w", err, name, rerr)
			}
		}
		return false, fmt.Errorf("--demo: seeding %s: %w", dataDir, err)
	}
	log.Info("demo: seeded a generated world", zap.String("data_dir", dataDir), zap.Duration("took", time.Since(t0)))
	return true, nil
}

// seedWorld is world.Seed; tests make it fail part way.
var seedWorld = world.Seed

// worldEntries are the entries of a data dir that hold a world: rules,
// segments, applied rule sets and the ledger.
var worldEntries = []string{filepath.Dir(world.RulesFile), world.SegmentsDir, reload.AppliedDir, ledgerDir}
