package reload

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/personad/personad/rules"
)

// watcher reloads the rules files when the directory holding them changes.
type watcher struct {
	fs   *fsnotify.Watcher
	done chan struct{}
	wg   sync.WaitGroup
}

// startWatcher watches Path's directory: Path itself when it is a
// directory, else the directory holding the file. Watching the directory
// sees a file replaced by rename (editors, mv, ConfigMap symlink swaps),
// which a watch on the file itself would lose with the old inode.
func startWatcher(m *Manager) (*watcher, error) {
	dir := m.cfg.Path
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("reload: %w", err)
	} else if !fi.IsDir() {
		dir = filepath.Dir(dir)
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("reload: watching %s: %w", dir, err)
	}
	if err := fw.Add(dir); err != nil {
		fw.Close()
		return nil, fmt.Errorf("reload: watching %s: %w", dir, err)
	}
	w := &watcher{fs: fw, done: make(chan struct{})}
	w.wg.Add(1)
	go w.run(m, dir)
	m.log.Info("watching rules", zap.String("path", m.cfg.Path), zap.String("dir", dir), zap.Duration("debounce", m.cfg.Debounce))
	return w, nil
}

func (w *watcher) run(m *Manager, dir string) {
	defer w.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	// The rules files written to in place since the last reload, and the
	// one a reload last waited for.
	written := map[string]bool{}
	waitingFor := ""
	for {
		select {
		case <-w.done:
			return
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			// Any change in the directory may be the rules: a new file, a
			// rename over one, a symlink swap. ReloadFiles skips bytes it
			// has seen (and writes it has acted on), so unrelated events
			// cost one read.
			m.log.Debug("rules directory event", zap.String("event", ev.String()))
			if ev.Has(fsnotify.Write) && rules.IsFileName(filepath.Base(ev.Name)) {
				written[ev.Name] = true
			}
			timer.Reset(m.cfg.Debounce)
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			// An overflow loses events: reload to be sure.
			m.log.Warn("watching rules", zap.String("dir", dir), zap.Error(err))
			timer.Reset(m.cfg.Debounce)
		case <-timer.C:
			// A file written in place is read only once its writer has
			// closed it: a writer that pauses longer than the debounce
			// (a slow copy, a generator writing campaign by campaign)
			// would otherwise have its first part, often a valid rule
			// set of fewer campaigns, applied.
			if name := firstOpenForWriting(written); name != "" {
				if name != waitingFor {
					m.log.Info("rules file open for writing; reloading once it is closed", zap.String("file", name))
					waitingFor = name
				}
				timer.Reset(m.cfg.Debounce)
				continue
			}
			clear(written)
			waitingFor = ""
			m.ReloadFiles()
		}
	}
}

// firstOpenForWriting returns the first of names (in sorted order) that
// some process has open for writing, or "".
func firstOpenForWriting(names map[string]bool) string {
	for _, name := range slices.Sorted(maps.Keys(names)) {
		if openForWriting(name) {
			return name
		}
	}
	return ""
}

func (w *watcher) close() error {
	close(w.done)
	err := w.fs.Close()
	w.wg.Wait()
	return err
}
