package reload

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
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
			// has seen, so unrelated events cost one read.
			m.log.Debug("rules directory event", zap.String("event", ev.String()))
			timer.Reset(m.cfg.Debounce)
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			// An overflow loses events: reload to be sure.
			m.log.Warn("watching rules", zap.String("dir", dir), zap.Error(err))
			timer.Reset(m.cfg.Debounce)
		case <-timer.C:
			m.ReloadFiles()
		}
	}
}

func (w *watcher) close() error {
	close(w.done)
	err := w.fs.Close()
	w.wg.Wait()
	return err
}
