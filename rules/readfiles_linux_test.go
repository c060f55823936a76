package rules_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/personad/personad/rules"
)

// TestReadFilesNamedPipe: a named pipe called *.yaml in the rules
// directory, or given as the rules file, is an error naming it, at once;
// opening it would wait for a writer forever, and the watcher's reload
// (and every Apply, which waits for it) with it.
func TestReadFilesNamedPipe(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.yaml"), []byte("campaigns: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "b.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for _, tc := range []struct {
		name string
		read func() ([]rules.File, error)
	}{
		{"ReadFiles dir", func() ([]rules.File, error) { return rules.ReadFiles(dir) }},
		{"ReadFiles file", func() ([]rules.File, error) { return rules.ReadFiles(fifo) }},
		{"Parser.ReadFiles", func() ([]rules.File, error) { return rules.NewParser().ReadFiles(dir) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := tc.read()
				done <- err
			}()
			select {
			case err := <-done:
				if want := fifo + ": is a named pipe, not a regular file"; err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("err = %v, want it to contain %q", err, want)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("still reading %s after 5s", fifo)
				// A writer's open lets the blocked read end.
				if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
					w.Close()
				}
				<-done
			}
		})
	}
}
