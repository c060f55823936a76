package reload

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestFileWrittenInPlaceSlowly: a rules file rewritten in place by a
// writer that pauses longer than the debounce after a first part that is
// itself a valid rule set (here, the first of two campaigns) is not
// applied half: the reload waits until the writer has closed it, then
// applies the whole file.
func TestFileWrittenInPlaceSlowly(t *testing.T) {
	f := newFixture(t)
	replace(t, f.path, doc("a", 1))
	m := f.start(t)
	v1 := versionOf(t, doc("a", 1))

	first := doc("b", 1)
	whole := first + strings.TrimPrefix(doc("c", 1), "\ncampaigns:")
	w, err := os.OpenFile(f.path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteString(first); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * m.cfg.Debounce) // the writer pauses
	if st := m.Status(); st.Version != v1 || st.LastRejected != nil {
		t.Errorf("while the file is open for writing: version %s (the first part is %s), rejected %+v; want %s, nothing rejected",
			st.Version, versionOf(t, first), st.LastRejected, v1)
	}
	if _, err := w.WriteString(whole[len(first):]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	v := versionOf(t, whole)
	st := waitFor(t, m, "the whole file", func(st Status) bool { return st.Version == v })
	if st.Campaigns != 2 {
		t.Errorf("%d campaigns, want 2", st.Campaigns)
	}
}
