package rules

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestReadPieces: a file large enough to be read in pieces at once is
// read whole and exactly, into new memory and into a reused buffer; and
// readPieces reports a file that is longer or shorter than the size it
// was given (one that grew or shrank after its stat) rather than
// returning part of it.
func TestReadPieces(t *testing.T) {
	want := make([]byte, 2*readPiece+readPiece/3+7)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range want {
		want[i] = byte(r.Uint32())
	}
	name := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(name, want, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := readFileInto(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.Data, want) {
		t.Fatalf("read %d bytes, not the file's %d", len(f.Data), len(want))
	}
	buf := f.Data
	clear(buf)
	if f, err = readFileInto(name, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.Data, want) || &f.Data[0] != &buf[0] {
		t.Fatal("read into the buffer given: not the file, or not that memory")
	}

	fd, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	for _, tc := range []struct {
		size int
		ok   bool
	}{
		{len(want), true},
		{len(want) - 1, false}, // the file grew
		{len(want) + 1, false}, // the file shrank
		{len(want) - readPiece, false},
	} {
		got, ok := readPieces(fd, make([]byte, tc.size))
		if ok != tc.ok || (ok && !bytes.Equal(got, want)) {
			t.Errorf("size %d of %d: ok %v, want %v", tc.size, len(want), ok, tc.ok)
		}
	}
}
