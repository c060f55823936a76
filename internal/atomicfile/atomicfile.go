// Package atomicfile replaces a file durably: a crash leaves either the
// old file or the new one, whole, never a mix.
package atomicfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write makes fill's output the content of path: it creates path's
// directory when missing, writes a temporary file beside path through a
// 1 MiB buffer, gives it perm, fsyncs it, renames it over path and
// fsyncs the directory. On an error before the rename the temporary file
// is removed and path is untouched; an error from the directory's fsync
// comes after the rename and wraps ErrNotDurable: path holds the new
// content, which a machine crash may undo.
func Write(path string, perm os.FileMode, fill func(w io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := fill(bw); err != nil {
		return fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("%w: %w", ErrNotDurable, err)
	}
	return nil
}

// ErrNotDurable is wrapped by Write's error when the new content is in
// place but its directory's fsync failed: readers see it, and a crash of
// the machine (not of the process) may bring the old content back.
var ErrNotDurable = errors.New("written, but the directory's fsync failed")

// syncDir is SyncDir; tests replace it to fail.
var syncDir = SyncDir

// SyncDir fsyncs dir, making a rename or a new file in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
