package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/personad/personad/bench/world"
)

// seedDemo seeds the world cfg generates (world.DemoConfig for --demo)
// into dataDir when it is empty or missing. A data dir that already holds anything is left alone: it is a
// world from an earlier run (perhaps with uploaded segments), served as is.
func seedDemo(dataDir string, cfg world.Config, log *zap.Logger) error {
	ents, err := os.ReadDir(dataDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("--demo: %w", err)
	}
	// A data dir holding only the lock file (run takes it first) is empty.
	ents = slices.DeleteFunc(ents, func(e fs.DirEntry) bool { return e.Name() == lockFile })
	if len(ents) > 0 {
		log.Info("demo: data dir already holds a world; serving it as is", zap.String("data_dir", dataDir))
		return nil
	}
	t0 := time.Now()
	if err := world.Seed(dataDir, cfg); err != nil {
		return fmt.Errorf("--demo: seeding %s: %w", dataDir, err)
	}
	log.Info("demo: seeded a generated world", zap.String("data_dir", dataDir), zap.Duration("took", time.Since(t0)))
	return nil
}
