package reload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/engine"
	"github.com/personad/personad/internal/atomicfile"
	"github.com/personad/personad/ledger"
	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

// doc is a rules file with one campaign bidding bid.
func doc(id string, bid float64) string {
	return fmt.Sprintf(`
campaigns:
  - id: %[1]s
    bid_cpm: %[2]v
    targeting: {all: [{facet: title, any: [cmo]}]}
    creatives:
      - {id: %[1]s-1, w: 300, h: 250, adm: "<b>%[1]s</b>"}
      - {id: %[1]s-2, w: 728, h: 90, adm: "<b>%[1]s</b>"}
`, id, bid)
}

const broken = `
campaigns:
  - id: bad
    bid_cpm: -1
    pacing: fast
    creatives:
      - {id: bad-1, w: 0, h: 250, adm: "${CLICK_URL}"}
`

func versionOf(t *testing.T, text string) string {
	t.Helper()
	rs, err := rules.Parse("t.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return rs.Version()
}

func mustParse(t *testing.T, text string) *rules.RuleSet {
	t.Helper()
	rs, err := rules.Parse("t.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

type fixture struct {
	dir, data, path string
	eng             *engine.Engine
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{dir: filepath.Join(dir, "rules"), data: dir}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f.path = filepath.Join(f.dir, "rules.yaml")
	f.eng = newEngine(t, nil)
	return f
}

// newEngine returns an engine deciding with led (none when nil) over
// segments in which u1 is a cmo.
func newEngine(t *testing.T, led *ledger.Ledger) *engine.Engine {
	t.Helper()
	b := segments.NewBuilder()
	b.Add("title", "cmo", "u1")
	eng, err := engine.New(engine.Config{Ledger: led}, segments.NewStore(b.Build(1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	return eng
}

// write writes text to the file name in the fixture's rules directory.
func (f *fixture) write(t *testing.T, name, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) start(t *testing.T) *Manager {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Engine, cfg.Path, cfg.DataDir = f.eng, f.path, f.data
	cfg.Debounce = 20 * time.Millisecond
	cfg.Logger = zaptest.NewLogger(t)
	cfg.Segments = segStore{}
	return startManager(t, cfg)
}

// manualConfig is the Config of a Manager over f's path (f.path or
// f.dir) and data dir that reads the files only when the test calls
// ReloadFiles (NoWatch).
func (f *fixture) manualConfig(t *testing.T, path string) Config {
	cfg := DefaultConfig()
	cfg.Engine, cfg.Path, cfg.DataDir, cfg.NoWatch = f.eng, path, f.data, true
	cfg.Logger, cfg.Segments = zaptest.NewLogger(t), segStore{}
	return cfg
}

// startManager is New(cfg) for a test or benchmark: it fails tb when New
// fails, and closes the Manager when tb ends (if it was not closed
// before: Close is idempotent).
func startManager(tb testing.TB, cfg Config) *Manager {
	tb.Helper()
	m, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

type segStore struct{}

func (segStore) Current() *segments.Snapshot {
	b := segments.NewBuilder()
	b.Add("title", "cmo", "u1")
	return b.Build(1)
}

// replace writes text to a temporary file and renames it over path, as
// editors and `mv` do.
func replace(t *testing.T, path, text string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// replaceAt replaces path's contents with text, as replace does, and
// sets its modification time to at.
func replaceAt(t *testing.T, path, text string, at time.Time) {
	t.Helper()
	replace(t, path, text)
	touch(t, path, at)
}

// touch sets path's access and modification times to at.
func touch(t *testing.T, path string, at time.Time) {
	t.Helper()
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

// waitFor waits for an outcome after which cond holds.
func waitFor(t *testing.T, m *Manager, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ch := m.Changed()
		if st := m.Status(); cond(st) {
			return st
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; status %+v", what, m.Status())
		}
	}
}

func TestFileRenameOverWriteAndBrokenFile(t *testing.T) {
	f := newFixture(t)
	replace(t, f.path, doc("a", 1))
	m := f.start(t)
	v1 := versionOf(t, doc("a", 1))
	if st := m.Status(); st.Version != v1 || st.Source != SourceFile || f.eng.Rules().Version() != v1 {
		t.Fatalf("start: status %+v, engine %s; want %s from file", st, f.eng.Rules().Version(), v1)
	}

	replace(t, f.path, doc("a", 2))
	v2 := versionOf(t, doc("a", 2))
	waitFor(t, m, "the renamed file", func(st Status) bool { return st.Version == v2 })
	if got := f.eng.Rules().Version(); got != v2 {
		t.Errorf("engine serves %s, want %s", got, v2)
	}

	replace(t, f.path, broken)
	st := waitFor(t, m, "the rejection", func(st Status) bool { return st.LastRejected != nil })
	if st.Version != v2 || f.eng.Rules().Version() != v2 {
		t.Errorf("after a broken file: status %s, engine %s; want %s still", st.Version, f.eng.Rules().Version(), v2)
	}
	var got []string
	for _, e := range st.LastRejected.Errors {
		got = append(got, e.Error())
	}
	// Each names the file and the line, also with the one file.
	want := []string{
		f.path + ": line 4: campaigns[0].bid_cpm: -1 must be > 0 and <= 10000",
		f.path + `: line 5: campaigns[0].pacing: unknown pacing mode "fast", want even or asap`,
		f.path + ": line 7: campaigns[0].creatives[0].w: 0 must be > 0 and <= 10000",
		f.path + ": line 7: campaigns[0].creatives[0].adm: unknown macro ${CLICK_URL}",
	}
	if diff := cmp.Diff(want, got); diff != "" || st.LastRejected.Source != SourceFile {
		t.Errorf("rejection from %s (-want +got):\n%s", st.LastRejected.Source, diff)
	}

	// A YAML syntax error is rejected too, and fixing the file recovers.
	replace(t, f.path, "campaigns: [")
	n := m.Status().Outcomes
	waitFor(t, m, "the syntax error", func(st Status) bool { return st.Outcomes > n })
	if e := m.Status().LastRejected.Errors[0]; e.Path != "" || !strings.Contains(e.Msg, "yaml") {
		t.Errorf("syntax error recorded as %+v", e)
	}
	replace(t, f.path, doc("a", 3))
	v3 := versionOf(t, doc("a", 3))
	waitFor(t, m, "the fixed file", func(st Status) bool { return st.Version == v3 })
}

// TestConfigMapSymlinkSwap swaps the rules as Kubernetes does for a
// mounted ConfigMap: rules.yaml -> ..data/rules.yaml, ..data -> a
// timestamped directory, replaced by renaming a new symlink over ..data.
func TestConfigMapSymlinkSwap(t *testing.T) {
	f := newFixture(t)
	mk := func(name, text string) {
		d := filepath.Join(f.dir, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "rules.yaml"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(name, filepath.Join(f.dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(f.dir, "..data_tmp"), filepath.Join(f.dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	mk("..2026_01", doc("a", 1))
	if err := os.Symlink("..data/rules.yaml", f.path); err != nil {
		t.Fatal(err)
	}
	m := f.start(t)
	if st := m.Status(); st.Version != versionOf(t, doc("a", 1)) {
		t.Fatalf("start: %s", st.Version)
	}
	mk("..2026_02", doc("b", 1))
	v := versionOf(t, doc("b", 1))
	waitFor(t, m, "the swapped ConfigMap", func(st Status) bool { return st.Version == v })
}

func TestDirectoryGainsFile(t *testing.T) {
	f := newFixture(t)
	f.path = f.dir
	replace(t, filepath.Join(f.dir, "a.yaml"), doc("a", 1))
	m := f.start(t)
	replace(t, filepath.Join(f.dir, "b.yaml"), doc("b", 1))
	st := waitFor(t, m, "the new file", func(st Status) bool { return st.Campaigns == 2 })
	if st.Source != SourceFile || st.Origin != f.dir {
		t.Errorf("source %s origin %s", st.Source, st.Origin)
	}
}

// TestApplyDiffSorted: the diff Apply returns lists ids sorted, whatever
// the order of the campaigns and creatives in the sets.
func TestApplyDiffSorted(t *testing.T) {
	docs := func(ids ...string) string {
		text := "campaigns:"
		for _, id := range ids {
			text += strings.TrimPrefix(doc(id, 1), "\ncampaigns:")
		}
		return text
	}
	f := newFixture(t)
	replace(t, f.path, docs("m", "k", "l"))
	m := f.start(t)
	next := mustParse(t, docs("z", "x", "y"))
	slices.Reverse(next.Campaigns[0].Creatives)
	res, err := m.Apply(next, ApplyOptions{DryRun: true, Origin: "test"})
	if err != nil {
		t.Fatal(err)
	}
	want := counted(Diff{
		CampaignsAdded:   []string{"x", "y", "z"},
		CampaignsRemoved: []string{"k", "l", "m"},
		CreativesAdded:   []string{"x-1", "x-2", "y-1", "y-2", "z-1", "z-2"},
		CreativesRemoved: []string{"k-1", "k-2", "l-1", "l-2", "m-1", "m-2"},
	})
	if diff := cmp.Diff(want, res.Diff); diff != "" {
		t.Errorf("diff (-want +got):\n%s", diff)
	}
}

func TestApplyDiffPersistRestart(t *testing.T) {
	f := newFixture(t)
	replace(t, f.path, doc("a", 1)+`
  - id: b
    bid_cpm: 1
    creatives:
      - {id: b-1, w: 300, h: 250, adm: "<b>b</b>"}
`)
	m := f.start(t)
	v0 := m.Status().Version

	next := mustParse(t, doc("a", 2)+`
  - id: c
    bid_cpm: 1
    targeting: {all: [{facet: seniority, any: [vp]}]}
    creatives:
      - {id: c-1, w: 300, h: 250, adm: "<b>c</b>"}
`)
	next.Campaigns[0].Creatives[1].W = 320
	next.Campaigns[0].Creatives = append(next.Campaigns[0].Creatives[:2:2], rules.Creative{ID: "a-3", W: 1, H: 1, Adm: "x"})
	dry, err := m.Apply(next, ApplyOptions{DryRun: true, Origin: "test"})
	if err != nil {
		t.Fatal(err)
	}
	want := counted(Diff{
		CampaignsAdded:   []string{"c"},
		CampaignsChanged: []string{"a"},
		CampaignsRemoved: []string{"b"},
		CreativesAdded:   []string{"a-3", "c-1"},
		CreativesChanged: []string{"a-2"},
		CreativesRemoved: []string{"b-1"},
	})
	if diff := cmp.Diff(want, dry.Diff); diff != "" {
		t.Errorf("dry-run diff (-want +got):\n%s", diff)
	}
	if len(dry.Warnings) != 1 || dry.Warnings[0].Path != "campaigns[1].targeting.all[0].facet" {
		t.Errorf("warnings %v, want one on the seniority facet no segment uses", dry.Warnings)
	}
	if m.Status().Version != v0 || f.eng.Rules().Version() != v0 {
		t.Fatal("dry run changed the active rules")
	}

	res, err := m.Apply(next, ApplyOptions{Origin: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if res.PreviousVersion != v0 || f.eng.Rules().Version() != res.Version || m.Status().Source != SourceAPI {
		t.Fatalf("apply: %+v; engine %s", res, f.eng.Rules().Version())
	}
	again, err := m.Apply(next, ApplyOptions{Origin: "test"})
	if err != nil || !again.Unchanged {
		t.Errorf("re-applying the same set: %+v, %v; want unchanged", again, err)
	}

	// An invalid API call changes nothing and is recorded.
	_, err = m.Apply(mustParse(t, broken), ApplyOptions{Origin: "test"})
	var es rules.ValidationErrors
	if !errors.As(err, &es) || len(es) != 4 {
		t.Fatalf("invalid apply: %v", err)
	}
	if st := m.Status(); st.Version != res.Version || st.LastRejected == nil || st.LastRejected.Source != SourceAPI {
		t.Errorf("after an invalid apply: %+v", st)
	}

	// A restart serves the applied set: it is newer than the files.
	m.Close()
	m2 := f.start(t)
	if st := m2.Status(); st.Version != res.Version || st.Source != SourceAPI || !st.AppliedAt.Equal(res.AppliedAt) {
		t.Errorf("restart serves %s from %s at %v; want %s from api at %v", st.Version, st.Source, st.AppliedAt, res.Version, res.AppliedAt)
	}
	// ... until the files change: the last writer wins, live and at start.
	replace(t, f.path, doc("a", 5))
	v5 := versionOf(t, doc("a", 5))
	waitFor(t, m2, "the file edited after the apply", func(st Status) bool { return st.Version == v5 })
	m2.Close()
	m3 := f.start(t)
	if st := m3.Status(); st.Version != v5 || st.Source != SourceFile {
		t.Errorf("restart after a file edit serves %s from %s; want %s from file", st.Version, st.Source, v5)
	}
}

// TestFilesWrittenAfterApplyWin: rules files written after a set applied
// through the API replace it, even holding the bytes they held before (a
// restart serves them: New compares the same times), once for each such
// write: a broken file is rejected once, and files holding the applied
// set become its source.
func TestFilesWrittenAfterApplyWin(t *testing.T) {
	f := newFixture(t)
	replace(t, f.path, doc("a", 1))
	cfg := f.manualConfig(t, f.path)
	m := startManager(t, cfg)
	v1 := m.Status().Version
	apply := func(text string) *Result {
		t.Helper()
		res, err := m.Apply(mustParse(t, text), ApplyOptions{Origin: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// write replaces the file with text, modified now: after the last
	// apply (file times come from a coarser clock than AppliedAt).
	write := func(text string) {
		t.Helper()
		time.Sleep(10 * time.Millisecond)
		replace(t, f.path, text)
		now := time.Now()
		touch(t, f.path, now)
	}
	// reload reloads twice: the second must change nothing.
	reload := func(what string) Status {
		t.Helper()
		m.ReloadFiles()
		st := m.Status()
		m.ReloadFiles()
		if again := m.Status(); again.Outcomes != st.Outcomes || again.Version != st.Version || again.Source != st.Source {
			t.Errorf("%s: a second reload changed the status: %+v, then %+v", what, st, again)
		}
		return st
	}

	v2 := apply(doc("a", 2)).Version
	if st := reload("files older than the applied set"); st.Version != v2 || st.Source != SourceAPI {
		t.Fatalf("files older than the applied set: serving %s from %s; want %s from api", st.Version, st.Source, v2)
	}
	write(doc("a", 1)) // the bytes the file held
	if st := reload("the same bytes written again"); st.Version != v1 || st.Source != SourceFile {
		t.Errorf("the same bytes written again: serving %s from %s; want %s from file", st.Version, st.Source, v1)
	}

	v3 := apply(doc("a", 3)).Version
	before := m.Status().Outcomes
	write(broken)
	if st := reload("a broken file"); st.Version != v3 || st.Source != SourceAPI || st.LastRejected == nil || st.Outcomes != before+1 {
		t.Errorf("a broken file written after an apply: %+v; want %s from api, rejected once", st, v3)
	}
	write(doc("a", 3)) // the applied set
	if st := reload("the applied set written"); st.Version != v3 || st.Source != SourceFile {
		t.Errorf("the applied set written to the files: serving %s from %s; want %s from file", st.Version, st.Source, v3)
	}
	m.Close()
	if st := startManager(t, cfg).Status(); st.Version != v3 || st.Source != SourceFile {
		t.Errorf("restart serves %s from %s; want %s from file", st.Version, st.Source, v3)
	}
}

// TestFileRemovedAfterApply: removing or renaming a rules file written
// before a set applied through the API does not bring the files back over
// that set (none of them was written after it, and a restart serves it);
// writing one does.
func TestFileRemovedAfterApply(t *testing.T) {
	f := newFixture(t)
	replace(t, filepath.Join(f.dir, "a.yaml"), doc("a", 1))
	replace(t, filepath.Join(f.dir, "b.yaml"), doc("b", 1))
	past := time.Now().Add(-time.Hour)
	for _, name := range []string{"a.yaml", "b.yaml"} {
		touch(t, filepath.Join(f.dir, name), past)
	}
	cfg := f.manualConfig(t, f.dir)
	m := startManager(t, cfg)
	res, err := m.Apply(mustParse(t, doc("a", 2)), ApplyOptions{Origin: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(f.dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	m.ReloadFiles()
	if st := m.Status(); st.Version != res.Version || st.Source != SourceAPI {
		t.Errorf("after a file's removal: serving %s from %s; want %s from api", st.Version, st.Source, res.Version)
	}
	// A rename keeps the file's older time: no write either.
	if err := os.Rename(filepath.Join(f.dir, "a.yaml"), filepath.Join(f.dir, "a2.yaml")); err != nil {
		t.Fatal(err)
	}
	m.ReloadFiles()
	if st := m.Status(); st.Version != res.Version || st.Source != SourceAPI {
		t.Errorf("after a file's rename: serving %s from %s; want %s from api", st.Version, st.Source, res.Version)
	}
	m.Close()
	m = startManager(t, cfg)
	if st := m.Status(); st.Version != res.Version || st.Source != SourceAPI {
		t.Errorf("after a restart: serving %s from %s; want %s from api", st.Version, st.Source, res.Version)
	}
	time.Sleep(10 * time.Millisecond) // file times come from a coarser clock than AppliedAt
	now := time.Now()
	touch(t, filepath.Join(f.dir, "a2.yaml"), now)
	m.ReloadFiles()
	if st := m.Status(); st.Version != versionOf(t, doc("a", 1)) || st.Source != SourceFile {
		t.Errorf("after a file is touched: serving %s from %s; want the files'", st.Version, st.Source)
	}
}

// TestBrokenFileRemovedAfterApply: a file edited after a set applied
// through the API, together with a broken one, is rejected with it; once
// the broken file is removed, the files, one of them written after the
// apply, are served, as a restart serves them (the last writer wins): the
// removal does not leave the older applied set serving.
func TestBrokenFileRemovedAfterApply(t *testing.T) {
	f := newFixture(t)
	replace(t, filepath.Join(f.dir, "a.yaml"), doc("a", 1))
	cfg := f.manualConfig(t, f.dir)
	m := startManager(t, cfg)
	res, err := m.Apply(mustParse(t, doc("a", 2)), ApplyOptions{Origin: "test"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // file times come from a coarser clock than AppliedAt
	replace(t, filepath.Join(f.dir, "a.yaml"), doc("a", 3))
	replace(t, filepath.Join(f.dir, "zz-broken.yaml"), broken)
	now := time.Now()
	for _, name := range []string{"a.yaml", "zz-broken.yaml"} {
		touch(t, filepath.Join(f.dir, name), now)
	}
	m.ReloadFiles()
	if st := m.Status(); st.Version != res.Version || st.LastRejected == nil {
		t.Fatalf("with a broken file: serving %s (rejected %v); want %s, the files rejected", st.Version, st.LastRejected, res.Version)
	}
	if err := os.Remove(filepath.Join(f.dir, "zz-broken.yaml")); err != nil {
		t.Fatal(err)
	}
	m.ReloadFiles()
	v3 := versionOf(t, doc("a", 3))
	if st := m.Status(); st.Version != v3 || st.Source != SourceFile {
		t.Errorf("after the broken file's removal: serving %s from %s; want %s from file", st.Version, st.Source, v3)
	}
	m.Close()
	if st := startManager(t, cfg).Status(); st.Version != v3 || st.Source != SourceFile {
		t.Errorf("restart serves %s from %s; want %s from file", st.Version, st.Source, v3)
	}
}

// TestFilesMovedInAfterApplyServedAfterRestart: a rules file copied in
// with its older time kept (cp -p, rsync -a, tar, mv from elsewhere), or
// over a file of the directory, after a set applied through the API
// changes the files' bytes, which the live server serves; a restart,
// also after kill -9, must serve that set too, not bring back the older
// one applied through the API.
func TestFilesMovedInAfterApplyServedAfterRestart(t *testing.T) {
	f := newFixture(t)
	replace(t, filepath.Join(f.dir, "a.yaml"), doc("a", 1))
	cfg := f.manualConfig(t, f.dir)
	m := startManager(t, cfg)
	if _, err := m.Apply(mustParse(t, doc("a", 2)), ApplyOptions{Origin: "test"}); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour)
	for i, step := range []struct{ name, text string }{
		{"b.yaml", doc("b", 1)}, // moved in, next to a.yaml
		{"a.yaml", doc("a", 3)}, // copied over a.yaml
	} {
		replaceAt(t, filepath.Join(f.dir, step.name), step.text, past)
		m.ReloadFiles()
		live := m.Status()
		if live.Source != SourceFile || live.LastRejected != nil {
			t.Fatalf("step %d: %s with an older time: serving %s from %s (rejected %v); want the files", i, step.name, live.Version, live.Source, live.LastRejected)
		}
		m.Close()
		m = startManager(t, cfg)
		if st := m.Status(); st.Version != live.Version || st.Source != SourceFile {
			t.Errorf("step %d: restart serves %s from %s; want %s from file, as the live server did", i, st.Version, st.Source, live.Version)
		}
	}
}

// TestFilesMatchingApplyServedAfterRestart: a file copied in with its
// older time kept that makes the files hold the very set applied through
// the API changes nothing that serves, but makes the files its source
// (Status, and what a later change of the files does); a restart, also
// after kill -9, must do the same, not bring back the persisted set as
// the API's, which a file removed next would leave serving.
func TestFilesMatchingApplyServedAfterRestart(t *testing.T) {
	f := newFixture(t)
	past := time.Now().Add(-time.Hour)
	put := func(name, text string) {
		t.Helper()
		replaceAt(t, filepath.Join(f.dir, name), text, past)
	}
	put("a.yaml", doc("a", 1))
	put("b.yaml", doc("b", 1))
	cfg := f.manualConfig(t, f.dir)
	m := startManager(t, cfg)
	both := doc("a", 2) + strings.TrimPrefix(doc("b", 1), "\ncampaigns:\n")
	res, err := m.Apply(mustParse(t, both), ApplyOptions{Origin: "test"})
	if err != nil {
		t.Fatal(err)
	}
	put("a.yaml", doc("a", 2)) // cp -p: the files now hold the applied set
	m.ReloadFiles()
	live := m.Status()
	if live.Version != res.Version || live.Source != SourceFile {
		t.Fatalf("files holding the applied set: serving %s from %s; want %s from file", live.Version, live.Source, res.Version)
	}
	m.Close()
	m = startManager(t, cfg)
	if st := m.Status(); st.Version != live.Version || st.Source != live.Source {
		t.Errorf("restart serves %s from %s; want %s from %s, as the live server did", st.Version, st.Source, live.Version, live.Source)
	}
	if err := os.Remove(filepath.Join(f.dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	m.ReloadFiles()
	if st, want := m.Status(), versionOf(t, doc("a", 2)); st.Version != want || st.Source != SourceFile {
		t.Errorf("after b.yaml's removal: serving %s from %s; want %s from file, the files left", st.Version, st.Source, want)
	}
}

// TestCurrencyChangeWithSpend: a set that changes the currency of a
// campaign that has spent is refused at that campaign's currency, and
// changes nothing (the ledger counts its spend in its currency); one that
// has spent nothing may change it.
func TestCurrencyChangeWithSpend(t *testing.T) {
	f := newFixture(t)
	replace(t, f.path, doc("a", 1)+"  - {id: b, bid_cpm: 1, creatives: [{id: b-1, w: 300, h: 250, adm: x}]}\n")
	lcfg := ledger.DefaultConfig()
	lcfg.Manual = true
	led, err := ledger.New(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	c, err := led.Campaign("a", ledger.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := led.Reserve(c, 1, 0, 22_002, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	// The engine binds the ledger's campaigns, which record the currency
	// of the rules that bind them.
	f.eng = newEngine(t, led)
	cfg.Engine, cfg.Path, cfg.NoWatch, cfg.Ledger = f.eng, f.path, true, led
	m := startManager(t, cfg)
	before := m.Status().Version
	inEUR := func(ids ...string) *rules.RuleSet {
		rs := mustParse(t, doc("a", 1)+"  - {id: b, bid_cpm: 1, creatives: [{id: b-1, w: 300, h: 250, adm: x}]}\n")
		for i := range rs.Campaigns {
			if slices.Contains(ids, rs.Campaigns[i].ID) {
				rs.Campaigns[i].Currency = "EUR"
			}
		}
		return rs
	}
	_, err = m.Apply(inEUR("a", "b"), ApplyOptions{})
	var verrs rules.ValidationErrors
	if !errors.As(err, &verrs) || len(verrs) != 1 || verrs[0].Path != "campaigns[0].currency" ||
		!strings.Contains(verrs[0].Msg, "from USD, in which it has spent 0.022002") {
		t.Fatalf("apply changing a's currency: %v; want one error at campaigns[0].currency naming its spend", err)
	}
	if st := m.Status(); st.Version != before {
		t.Errorf("serving %s after a refused apply, want %s", st.Version, before)
	}
	// Validate (personactl rules validate against the server) finds what
	// Apply would refuse, rather than calling the set valid.
	if errs, _, version := m.Validate(inEUR("a", "b")); len(errs) != 1 || errs[0].Path != "campaigns[0].currency" || version != "" {
		t.Errorf("validate changing a's currency: errors %v, version %q; want one error at campaigns[0].currency and no version", errs, version)
	}
	if errs, _, _ := m.Validate(inEUR("b")); len(errs) != 0 {
		t.Errorf("validate changing b's currency (nothing spent): %v; want no error", errs)
	}
	res, err := m.Apply(inEUR("b"), ApplyOptions{})
	if err != nil {
		t.Fatalf("apply changing b's currency (nothing spent): %v", err)
	}
	if got := f.eng.Rules().Campaigns(); res.Version == before || len(got) != 2 {
		t.Errorf("b's change not applied: version %s, %d campaigns", res.Version, len(got))
	}
	// Removed, then added back in EUR: still a's spend relabelled.
	withoutA := inEUR("b")
	withoutA.Campaigns = withoutA.Campaigns[1:]
	if _, err := m.Apply(withoutA, ApplyOptions{}); err != nil {
		t.Fatalf("apply removing a: %v", err)
	}
	if _, err := m.Apply(inEUR("a", "b"), ApplyOptions{}); !errors.As(err, &verrs) || len(verrs) != 1 || verrs[0].Path != "campaigns[0].currency" {
		t.Errorf("a added back in EUR after its removal: %v; want one error at campaigns[0].currency", err)
	}
}

// TestCurrencyChangeWhileDown: a rules file that changes the currency of
// a campaign that has spent, edited while personad was down, is refused
// at start: the ledger recorded the old currency.
func TestCurrencyChangeWhileDown(t *testing.T) {
	f := newFixture(t)
	lcfg := ledger.DefaultConfig()
	lcfg.Manual, lcfg.Dir = true, t.TempDir()
	led, err := ledger.New(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := led.Campaign("a", ledger.Limits{Currency: "USD"}) // as the last run's rules bound it
	if err != nil {
		t.Fatal(err)
	}
	if _, err := led.Reserve(c, 1, 0, 22_002, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	if err := led.Close(); err != nil {
		t.Fatal(err)
	}
	if led, err = ledger.New(lcfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })

	replace(t, f.path, strings.Replace(doc("a", 1), "bid_cpm: 1", "bid_cpm: 1\n    currency: EUR", 1))
	cfg := DefaultConfig()
	cfg.Engine, cfg.Path, cfg.NoWatch, cfg.Ledger = f.eng, f.path, true, led
	_, err = New(cfg)
	var verrs rules.ValidationErrors
	if !errors.As(err, &verrs) || len(verrs) != 1 || !strings.HasSuffix(verrs[0].Path, "campaigns[0].currency") ||
		!strings.Contains(verrs[0].Msg, "from USD, in which it has spent 0.022002") {
		t.Fatalf("start with a's currency changed while down: %v; want one error at campaigns[0].currency naming its spend", err)
	}
	replace(t, f.path, doc("a", 1))
	startManager(t, cfg) // in USD it starts
}

func TestStartFailsOnBrokenFile(t *testing.T) {
	f := newFixture(t)
	replace(t, f.path, broken)
	cfg := DefaultConfig()
	cfg.Engine, cfg.Path = f.eng, f.path
	_, err := New(cfg)
	var es rules.ValidationErrors
	if !errors.As(err, &es) || len(es) != 4 {
		t.Errorf("New over a broken file: %v", err)
	}
}

// TestDirectoryReparsesOnlyChangedFile reloads a rules directory through
// ReloadFiles: an edit reparses only the file that changed, and a broken
// file rejects the whole set while the old version keeps serving.
func TestDirectoryReparsesOnlyChangedFile(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"a", "b", "c"} {
		f.write(t, id+".yaml", doc(id, 1))
	}
	cfg := DefaultConfig()
	cfg.Engine, cfg.Path, cfg.NoWatch = f.eng, f.dir, true
	cfg.Logger = zaptest.NewLogger(t)
	m := startManager(t, cfg)
	if st := m.parser.Stats(); st.FilesParsed != 3 {
		t.Fatalf("start: %+v, want 3 files parsed", st)
	}
	all := func(bidB float64) string {
		return doc("a", 1) + doc("b", bidB)[len("\ncampaigns:"):] + doc("c", 1)[len("\ncampaigns:"):]
	}
	if got, want := m.Status().Version, versionOf(t, all(1)); got != want {
		t.Fatalf("start: version %s, want %s", got, want)
	}

	f.write(t, "b.yaml", doc("b", 2))
	m.ReloadFiles()
	v2 := versionOf(t, all(2))
	if st := m.Status(); st.Version != v2 || f.eng.Rules().Version() != v2 || st.LastRejected != nil {
		t.Fatalf("after editing b.yaml: status %+v, engine %s; want %s", st, f.eng.Rules().Version(), v2)
	}
	if st := m.parser.Stats(); st.Files != 3 || st.FilesParsed != 1 {
		t.Errorf("after editing b.yaml: %+v, want 1 of 3 files parsed", st)
	}

	f.write(t, "c.yaml", broken)
	m.ReloadFiles()
	st := m.Status()
	if st.LastRejected == nil || st.Version != v2 || f.eng.Rules().Version() != v2 {
		t.Fatalf("after breaking c.yaml: status %+v, engine %s; want %s still, and a rejection", st, f.eng.Rules().Version(), v2)
	}
	if e := st.LastRejected.Errors[0].Error(); !strings.Contains(e, "c.yaml: line 4: campaigns[0].bid_cpm") {
		t.Errorf("rejection names %q, want c.yaml's campaign", e)
	}

	before := m.Status().Outcomes
	f.write(t, "c.yaml", doc("c", 1))
	m.ReloadFiles()
	if st := m.Status(); st.Version != v2 || st.Outcomes != before+1 {
		t.Errorf("after restoring c.yaml: %+v, want %s", st, v2)
	}
	if st := m.parser.Stats(); st.FilesParsed != 1 {
		t.Errorf("after restoring c.yaml: %+v, want only c.yaml parsed", st)
	}
}

// TestReloadSameBytes checks that rules files rewritten with the same
// bytes (their stat changes, their content does not) are not applied or
// rejected again: the set is not re-applied, and a broken file's errors
// are reported once.
func TestReloadSameBytes(t *testing.T) {
	f := newFixture(t)
	f.write(t, "a.yaml", doc("a", 1))
	cfg := DefaultConfig()
	cfg.Engine, cfg.Path, cfg.NoWatch = f.eng, f.dir, true
	cfg.Logger = zaptest.NewLogger(t)
	m := startManager(t, cfg)
	outcomes := func() uint64 { return m.Status().Outcomes }

	n := outcomes()
	f.write(t, "a.yaml", doc("a", 1))
	m.ReloadFiles()
	if got := outcomes(); got != n {
		t.Errorf("a.yaml rewritten with the same bytes: %d outcomes, want %d (none)", got, n)
	}
	if st := m.parser.Stats(); st.FilesRead != 1 || st.FilesParsed != 0 {
		t.Errorf("a.yaml rewritten with the same bytes: %+v, want it read, not parsed", st)
	}

	f.write(t, "b.yaml", doc("b", -1))
	m.ReloadFiles()
	if st := m.Status(); st.Outcomes != n+1 || st.LastRejected == nil {
		t.Fatalf("b.yaml broken: %+v, want one rejection", st)
	}
	f.write(t, "b.yaml", doc("b", -1))
	m.ReloadFiles()
	if got := outcomes(); got != n+1 {
		t.Errorf("b.yaml rewritten broken with the same bytes: %d outcomes, want %d (its errors reported once)", got, n+1)
	}
}

// TestReloadParseTime: a reload that finds the files changed records
// their read and parse time, in the parse histogram and in its "rules
// applied" line; one that finds them unchanged records nothing.
func TestReloadParseTime(t *testing.T) {
	f := newFixture(t)
	f.write(t, filepath.Base(f.path), doc("a", 1))
	core, logs := observer.New(zap.InfoLevel)
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Engine, cfg.Path, cfg.NoWatch, cfg.Logger, cfg.Metrics = f.eng, f.path, true, zap.New(core), reg
	m := startManager(t, cfg)
	parses := func() uint64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "personad_rules_files_parse_duration_seconds" {
				return mf.GetMetric()[0].GetHistogram().GetSampleCount()
			}
		}
		t.Fatal("no personad_rules_files_parse_duration_seconds")
		return 0
	}

	m.ReloadFiles()
	if n := parses(); n != 0 {
		t.Errorf("unchanged file: %d parses recorded, want 0", n)
	}
	replace(t, f.path, doc("a", 2))
	m.ReloadFiles()
	if n := parses(); n != 1 {
		t.Errorf("changed file: %d parses recorded, want 1", n)
	}
	applied := logs.FilterMessage("rules applied").FilterField(zap.String("source", string(SourceFile))).All()
	if len(applied) == 0 {
		t.Fatal(`no "rules applied" line for the file`)
	}
	last := applied[len(applied)-1].ContextMap()
	if d, ok := last["parse_took"].(time.Duration); !ok || d <= 0 {
		t.Errorf(`"rules applied" line: parse_took %v, want a duration > 0; fields %v`, last["parse_took"], last)
	}
	replace(t, f.path, broken)
	m.ReloadFiles()
	if n := parses(); n != 2 {
		t.Errorf("broken file: %d parses recorded, want 2", n)
	}
}

// TestApplyPersistFailures: a failure to persist before the new set is in
// place rejects the apply and keeps the old set, live and on disk; a
// failure after it (the directory's fsync) serves the new set, which the
// data dir already holds, with a warning, so that a restart never serves
// a set other than the live one.
func TestApplyPersistFailures(t *testing.T) {
	f := newFixture(t)
	replace(t, f.path, doc("a", 1))
	m := f.start(t)
	first, err := m.Apply(mustParse(t, doc("a", 2)), ApplyOptions{Origin: "test"})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	defer func() { writeFile = atomicfile.Write }()

	writeFile = func(string, os.FileMode, func(io.Writer) error) error { return boom }
	if _, err := m.Apply(mustParse(t, doc("a", 3)), ApplyOptions{Origin: "test"}); !errors.Is(err, boom) || !errors.Is(err, ErrNotPersisted) {
		t.Fatalf("apply with a failing write: %v, want ErrNotPersisted wrapping boom", err)
	}
	if v := f.eng.Rules().Version(); v != first.Version {
		t.Fatalf("after a failed write the engine serves %s, want %s", v, first.Version)
	}

	writeFile = func(path string, perm os.FileMode, fill func(io.Writer) error) error {
		if err := atomicfile.Write(path, perm, fill); err != nil {
			return err
		}
		return fmt.Errorf("%w: %w", atomicfile.ErrNotDurable, boom)
	}
	res, err := m.Apply(mustParse(t, doc("a", 4)), ApplyOptions{Origin: "test"})
	if err != nil {
		t.Fatalf("apply with a failing directory fsync: %v, want applied with a warning", err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0].Msg, "machine crash") {
		t.Errorf("warnings %v, want one on durability", res.Warnings)
	}
	if v := f.eng.Rules().Version(); v != res.Version {
		t.Fatalf("the engine serves %s, want the persisted %s", v, res.Version)
	}
	writeFile = atomicfile.Write
	m.Close()
	if st := f.start(t).Status(); st.Version != res.Version {
		t.Errorf("restart serves %s, want %s (what the live server served)", st.Version, res.Version)
	}
}

// TestWithdrawAppliedFsyncFails: when files replace a set applied
// through the API and the persisted set is removed but the directory's
// fsync fails, the data dir already holds no persisted set, and a
// restart (also after kill -9) serves the files: the live server must
// serve them too, with a warning, never keep serving the set a restart
// would not bring back.
func TestWithdrawAppliedFsyncFails(t *testing.T) {
	f := newFixture(t)
	replace(t, filepath.Join(f.dir, "a.yaml"), doc("a", 1))
	cfg := f.manualConfig(t, f.dir)
	m := startManager(t, cfg)
	if _, err := m.Apply(mustParse(t, doc("a", 2)), ApplyOptions{Origin: "test"}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	syncDir = func(string) error { return boom }
	defer func() { syncDir = atomicfile.SyncDir }()
	past := time.Now().Add(-time.Hour)
	replaceAt(t, filepath.Join(f.dir, "a.yaml"), doc("a", 3), past) // cp -p
	m.ReloadFiles()
	syncDir = atomicfile.SyncDir
	live := m.Status()
	if _, err := os.Stat(filepath.Join(f.data, AppliedDir, "current.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the persisted set after its removal: %v, want it gone", err)
	}
	m.Close()
	if st := startManager(t, cfg).Status(); st.Version != live.Version || st.Source != live.Source {
		t.Errorf("restart serves %s from %s; the live server served %s from %s", st.Version, st.Source, live.Version, live.Source)
	}
}

// TestFileReloadsMatchFreshParse edits a rules file of many campaigns
// again and again — a nested value, a value and its undoing, entries
// moved — and reloads it: each version served must be the one a fresh
// parse gives, although the Compiler knows unchanged campaigns by the
// memory the Parser shares between its sets (CompileImmutable).
func TestFileReloadsMatchFreshParse(t *testing.T) {
	gen, err := world.GenerateRules(world.SmallConfig())
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	write := func() string {
		t.Helper()
		text, err := rules.Marshal(gen)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, text, 0o644); err != nil {
			t.Fatal(err)
		}
		return string(text)
	}
	text := write()
	cfg := DefaultConfig()
	cfg.Engine, cfg.Path, cfg.NoWatch = f.eng, f.path, true
	cfg.Logger = zaptest.NewLogger(t)
	m := startManager(t, cfg)
	check := func(what string) {
		t.Helper()
		want := mustParse(t, text)
		st := m.Status()
		if st.LastRejected != nil || st.Version != want.Version() || f.eng.Rules().Version() != want.Version() {
			t.Fatalf("%s: status %+v, engine %s; want %s", what, st, f.eng.Rules().Version(), want.Version())
		}
		digests, _ := want.Digests()
		if diff := cmp.Diff(digests, st.Rules.Digests()); diff != "" {
			t.Fatalf("%s: digests (-want +got):\n%s", what, diff)
		}
	}
	check("start")
	c := &gen.Campaigns[4]
	for i, edit := range []func(){
		func() { c.BidCPM++ },
		func() { c.BidCPM-- },
		func() {
			c.Targeting.All = slices.Clone(c.Targeting.All)
			c.Targeting.All[0].Any = append(slices.Clip(c.Targeting.All[0].Any), "edited")
		},
		func() { c.Creatives = slices.Clone(c.Creatives); c.Creatives[0].Adm += "<!-- edited -->" },
		func() { gen.Campaigns[1], gen.Campaigns[2] = gen.Campaigns[2], gen.Campaigns[1] },
		func() { c.Creatives[0].W, c.Creatives[0].H = c.Creatives[0].H, c.Creatives[0].W },
	} {
		edit()
		text = write()
		m.ReloadFiles()
		check(fmt.Sprintf("edit %d", i))
	}
}

// TestWarningsFollowSegments: the segment warnings follow the segment
// snapshot published, though the Manager remembers the segments of the
// one it last looked at: a facet no segment has is named once, a value of
// a facet in use that none has (a typo, a segment deleted) by its value.
func TestWarningsFollowSegments(t *testing.T) {
	f := newFixture(t)
	replace(t, f.path, doc("a", 1))
	build := func(segs ...string) *segments.Snapshot {
		b := segments.NewBuilder()
		for _, s := range segs {
			facet, value, _ := strings.Cut(s, ":")
			b.Add(facet, value, "u1")
		}
		return b.Build(1)
	}
	store := segments.NewStore(build("title:cmo"))
	cfg := DefaultConfig()
	cfg.Engine, cfg.Path, cfg.NoWatch, cfg.Segments = f.eng, f.path, true, store
	m := startManager(t, cfg)
	rs := mustParse(t, doc("a", 2))
	rs.Campaigns[0].Targeting.All = append(rs.Campaigns[0].Targeting.All, rules.Clause{Facet: "seniority", Any: []string{"cxo", "vp"}})
	const seniority = "campaigns[0].targeting.all[1]"
	for i, step := range []struct {
		publish []string // segments of the snapshot published first, if any
		want    []string // the warnings' paths
	}{
		{nil, []string{seniority + ".facet"}},
		{nil, []string{seniority + ".facet"}},
		{[]string{"title:cmo", "seniority:cxo", "seniority:vp"}, nil},
		{nil, nil},
		{[]string{"title:cmo", "seniority:vp"}, []string{seniority + ".any[0]"}},
		{[]string{"title:cfo", "seniority:cxo"}, []string{"campaigns[0].targeting.all[0].any[0]", seniority + ".any[1]"}},
		{[]string{"title:cmo"}, []string{seniority + ".facet"}},
	} {
		if step.publish != nil {
			store.Publish(build(step.publish...))
		}
		res, err := m.Apply(rs, ApplyOptions{DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		_, warnings, _ := m.Validate(rs)
		paths := func(ws rules.ValidationErrors) (p []string) {
			for _, w := range ws {
				p = append(p, w.Path)
			}
			return p
		}
		if got, got2 := paths(res.Warnings), paths(warnings); !slices.Equal(got, step.want) || !slices.Equal(got2, step.want) {
			t.Errorf("step %d: warnings %v (Apply), %v (Validate); want at %q", i, res.Warnings, warnings, step.want)
		}
	}
}

// TestCurrencyWarnings: a currency that is not an ISO 4217 code (a typo)
// is valid but draws a warning, once per code at its first campaign, from
// Validate and Apply alike, with or without segments to check against.
func TestCurrencyWarnings(t *testing.T) {
	f := newFixture(t)
	replace(t, f.path, doc("a", 1))
	cfg := DefaultConfig()
	cfg.Engine, cfg.Path, cfg.NoWatch = f.eng, f.path, true
	m := startManager(t, cfg)
	rs := mustParse(t, doc("a", 1)+doc("b", 1)[len("\ncampaigns:"):]+doc("c", 1)[len("\ncampaigns:"):]+doc("d", 1)[len("\ncampaigns:"):])
	for i, cur := range []string{"EUR", "UDS", "UDS", "XYZ"} {
		rs.Campaigns[i].Currency = cur
	}
	want := []string{
		`campaigns[1].currency: "UDS" is not an ISO 4217 currency (2 campaigns bid in it): only bid requests whose cur lists it can match`,
		`campaigns[3].currency: "XYZ" is not an ISO 4217 currency (1 campaign bids in it): only bid requests whose cur lists it can match`,
	}
	res, err := m.Apply(rs, ApplyOptions{})
	if err != nil {
		t.Fatalf("apply with unknown currencies: %v; want applied, with warnings", err)
	}
	errs, warnings, _ := m.Validate(rs)
	for what, ws := range map[string]rules.ValidationErrors{"Apply": res.Warnings, "Validate": warnings} {
		var got []string
		for _, w := range ws {
			got = append(got, w.Error())
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s warnings:\n%q\nwant\n%q", what, got, want)
		}
	}
	if len(errs) != 0 {
		t.Errorf("Validate errors %v, want none", errs)
	}
}

// TestDeliveryWarnings: a valid set with a campaign whose flight has
// ended by the Manager's clock applies, and Validate and Apply warn of it
// (a planner's copied campaign whose dates were not moved was applied
// without a word, and never bid).
func TestDeliveryWarnings(t *testing.T) {
	f := newFixture(t)
	old := strings.Replace(doc("a", 1), "bid_cpm: 1", `bid_cpm: 1
    end: "2026-01-01T00:00:00Z"`, 1)
	replace(t, f.path, old)
	cfg := DefaultConfig()
	cfg.Engine, cfg.Path, cfg.NoWatch = f.eng, f.path, true
	cfg.Now = func() time.Time { return time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC) }
	m := startManager(t, cfg)
	const want = `campaigns[0].end: flight ended 2026-01-01T00:00:00Z: the campaign never bids; move end, or pause it (1 active campaign's flight has ended: a)`
	rs := mustParse(t, old)
	res, err := m.Apply(rs, ApplyOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	errs, warnings, _ := m.Validate(rs)
	for what, ws := range map[string]rules.ValidationErrors{"Apply": res.Warnings, "Validate": warnings} {
		if len(ws) != 1 || ws[0].Error() != want {
			t.Errorf("%s warnings %v, want %q", what, ws, want)
		}
	}
	if len(errs) != 0 {
		t.Errorf("Validate errors %v, want none", errs)
	}
}

// TestCurrencyChangeBidInGap: bids on the rules still serving, priced in
// a campaign's old currency, while a set that changes that currency is
// applied (here: while the set is persisted, after the currency check,
// before it serves), never book spend that the new currency counts. The
// ledger decided the change atomically with its bookings, so such a bid
// is refused; the set applies; a crash at that moment restarts with it.
// Before, the check read the spend first: the bid booked 0.001 USD, which
// the applied set counted as EUR, and a kill -9 there left a ledger that
// had recorded USD with spend beside a persisted set in EUR, which the
// restart refused (personad exits 2). Then the other way: a bid in EUR
// books, and a set changing the currency back is refused whole — the
// rules, the persisted set and the ledger keep EUR, and EUR bids go on.
func TestCurrencyChangeBidInGap(t *testing.T) {
	f := newFixture(t)
	replace(t, f.path, doc("a", 1))
	lcfg := ledger.DefaultConfig()
	lcfg.Manual, lcfg.Dir = true, filepath.Join(t.TempDir(), "ledger")
	led, err := ledger.New(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	cfg := DefaultConfig()
	cfg.Engine, cfg.Path, cfg.DataDir, cfg.NoWatch, cfg.Ledger = newEngine(t, led), f.path, f.data, true, led
	cfg.Logger = zaptest.NewLogger(t)
	m := startManager(t, cfg)
	bid := func(eng *engine.Engine, cur string) int {
		q := &engine.Query{Now: time.Now(), BuyerUID: "u1", Currencies: []string{cur}, Imps: []engine.Imp{{ID: "1", Sizes: []engine.Size{{W: 300, H: 250}}}}}
		var d engine.Decision
		eng.Decide(context.Background(), q, &d)
		return len(d.Bids)
	}
	inEUR := mustParse(t, strings.Replace(doc("a", 1), "bid_cpm: 1", "bid_cpm: 1\n    currency: EUR", 1))

	crash := t.TempDir()
	gapBids := -1
	defer func() { writeFile = atomicfile.Write }()
	writeFile = func(path string, perm os.FileMode, fill func(io.Writer) error) error {
		if err := atomicfile.Write(path, perm, fill); err != nil {
			return err
		}
		gapBids = bid(cfg.Engine, "USD") // the USD rules still serve
		// What a kill -9 now leaves: the data dir and the ledger's log.
		if err := led.Flush(context.Background()); err != nil {
			return err
		}
		if err := os.CopyFS(filepath.Join(crash, "data"), os.DirFS(f.data)); err != nil {
			return err
		}
		fi, err := os.Stat(f.path) // the same file: its time too
		if err != nil {
			return err
		}
		if err := os.Chtimes(filepath.Join(crash, "data", "rules", "rules.yaml"), fi.ModTime(), fi.ModTime()); err != nil {
			return err
		}
		return os.CopyFS(filepath.Join(crash, "ledger"), os.DirFS(lcfg.Dir))
	}
	res, err := m.Apply(inEUR, ApplyOptions{Origin: "test"})
	writeFile = atomicfile.Write
	if err != nil {
		t.Fatalf("apply changing a's currency to EUR: %v", err)
	}
	if gapBids != 0 {
		t.Errorf("%d bids priced in USD booked while a's currency changed to EUR, want none", gapBids)
	}
	if r := report(led, "a"); r.Currency != "EUR" || r.TotalSpentMicros != 0 {
		t.Errorf("a in the ledger: currency %s, spent %d micros; want EUR, nothing spent", r.Currency, r.TotalSpentMicros)
	}

	// Restart from the crash image: the persisted EUR set serves.
	ccfg := lcfg
	ccfg.Dir = filepath.Join(crash, "ledger")
	cled, err := ledger.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cled.Close() })
	rcfg := cfg
	rcfg.Engine, rcfg.Ledger = newEngine(t, cled), cled
	rcfg.Path, rcfg.DataDir = filepath.Join(crash, "data", "rules", "rules.yaml"), filepath.Join(crash, "data")
	rm, err := New(rcfg)
	if err != nil {
		t.Fatalf("restart after a crash while applying: %v", err)
	}
	if st := rm.Status(); st.Version != res.Version {
		t.Errorf("restart after a crash serves %s, want the applied %s", st.Version, res.Version)
	}
	rm.Close()

	// Back to USD once a has spent in EUR: refused, changing nothing.
	if bid(cfg.Engine, "EUR") != 1 {
		t.Fatal("no bid in EUR after the change")
	}
	persisted, err := os.ReadFile(filepath.Join(f.data, AppliedDir, "current.json"))
	if err != nil {
		t.Fatal(err)
	}
	before := report(led, "a")
	_, err = m.Apply(mustParse(t, doc("a", 1)), ApplyOptions{Origin: "test"})
	var verrs rules.ValidationErrors
	if !errors.As(err, &verrs) || len(verrs) != 1 || verrs[0].Path != "campaigns[0].currency" || !strings.Contains(verrs[0].Msg, "from EUR, in which it has spent 0.001") {
		t.Fatalf("apply changing a's currency back to USD: %v; want one error at campaigns[0].currency naming its spend", err)
	}
	if st := m.Status(); st.Version != res.Version {
		t.Errorf("serving %s after a refused apply, want %s", st.Version, res.Version)
	}
	if got, err := os.ReadFile(filepath.Join(f.data, AppliedDir, "current.json")); err != nil || string(got) != string(persisted) {
		t.Errorf("the persisted set changed by a refused apply (%v)", err)
	}
	if r := report(led, "a"); r != before {
		t.Errorf("a in the ledger after a refused apply: %+v, want %+v", r, before)
	}
	if bid(cfg.Engine, "EUR") != 1 {
		t.Error("no bid in EUR after the refused change back to USD")
	}
}

// report is campaign id's report in led.
func report(led *ledger.Ledger, id string) ledger.CampaignReport {
	for _, r := range led.Report(time.Now()) {
		if r.ID == id {
			return r
		}
	}
	return ledger.CampaignReport{}
}

// TestFutureFileTimeLosesToLaterApply: a rules file whose modification
// time is in the future (clock skew, touch -d, a copy with its times
// kept) and that did not change since a set was applied through the API
// does not replace that set at restart: the acknowledged apply serves,
// as it did live. Before, the restart compared the file's time with the
// apply's, and the file won. A file whose bytes change while the server
// is down replaces the set at restart, whatever its time (here an older
// one, kept by cp -p), as a change seen live does; before, the older
// time lost to the apply.
func TestFutureFileTimeLosesToLaterApply(t *testing.T) {
	f := newFixture(t)
	future := time.Now().Add(time.Hour)
	replaceAt(t, f.path, doc("a", 1), future)
	cfg := f.manualConfig(t, f.path)
	m := startManager(t, cfg)
	res, err := m.Apply(mustParse(t, doc("a", 2)), ApplyOptions{Origin: "test"})
	if err != nil {
		t.Fatal(err)
	}
	m.ReloadFiles() // live: the files did not change, the apply serves
	if st := m.Status(); st.Version != res.Version || st.Source != SourceAPI {
		t.Fatalf("live: serving %s from %s; want the applied %s", st.Version, st.Source, res.Version)
	}
	m.Close()
	m = startManager(t, cfg)
	if st := m.Status(); st.Version != res.Version || st.Source != SourceAPI {
		t.Errorf("restart with the file's time in the future: serving %s from %s; want the applied %s from api", st.Version, st.Source, res.Version)
	}
	if _, err := m.Apply(mustParse(t, doc("a", 4)), ApplyOptions{Origin: "test"}); err != nil {
		t.Fatal(err)
	}
	m.Close()

	// Edited while down, its older time kept.
	past := time.Now().Add(-time.Hour)
	replaceAt(t, f.path, doc("a", 3), past)
	m = startManager(t, cfg)
	if st, want := m.Status(), versionOf(t, doc("a", 3)); st.Version != want || st.Source != SourceFile {
		t.Errorf("restart after an edit of the file while down: serving %s from %s; want %s from file", st.Version, st.Source, want)
	}
}

// TestBlankFileKeepsServing: a rules file read while an editor saves it
// in place (truncated, its new contents not yet written) is refused, and
// the active set keeps serving: it served no campaigns, and went on doing
// so when the contents written next were refused (TestReloadUnderLoad on
// a loaded machine). An explicit empty set is served; so is a blank file
// at start, with nothing serving to keep.
func TestBlankFileKeepsServing(t *testing.T) {
	f := newFixture(t)
	replace(t, f.path, doc("a", 1))
	cfg := f.manualConfig(t, f.path)
	m := startManager(t, cfg)
	v1 := versionOf(t, doc("a", 1))
	for _, blank := range []string{"", " \n\n"} {
		if err := os.WriteFile(f.path, []byte(blank), 0o644); err != nil { // truncated in place
			t.Fatal(err)
		}
		m.ReloadFiles()
		st := m.Status()
		if st.Version != v1 || f.eng.Rules().Version() != v1 {
			t.Errorf("after a blank file %q: serving %s (engine %s), want %s", blank, st.Version, f.eng.Rules().Version(), v1)
		}
		if st.LastRejected == nil || !strings.Contains(st.LastRejected.Errors[0].Msg, "empty") {
			t.Errorf("a blank file %q: rejection %+v, want one saying it is empty", blank, st.LastRejected)
		}
		replace(t, f.path, doc("a", 1))
		m.ReloadFiles()
	}
	replace(t, f.path, "campaigns: []\n")
	m.ReloadFiles()
	if st := m.Status(); st.Campaigns != 0 || st.Source != SourceFile || len(f.eng.Rules().Campaigns()) != 0 {
		t.Errorf("campaigns: [] serves %d campaigns from %s, want none from file", st.Campaigns, st.Source)
	}
	m.Close()

	f2 := newFixture(t)
	replace(t, f2.path, "")
	cfg.Engine, cfg.Path, cfg.DataDir = f2.eng, f2.path, f2.data
	m2 := startManager(t, cfg)
	if st := m2.Status(); st.Rules == nil || st.Campaigns != 0 || st.Source != SourceFile {
		t.Errorf("a blank file at start: %d campaigns from %s (rules %v), want an empty set from file", st.Campaigns, st.Source, st.Rules != nil)
	}
}

// TestAppliedRecordWithoutFiles: a set persisted by an earlier personad,
// without the files as last read, still loads, and the files' times
// decide against it, as they did then: older files leave it serving,
// newer ones replace it.
func TestAppliedRecordWithoutFiles(t *testing.T) {
	f := newFixture(t)
	past := time.Now().Add(-time.Hour)
	replaceAt(t, f.path, doc("a", 1), past)
	cfg := f.manualConfig(t, f.path)
	m := startManager(t, cfg)
	res, err := m.Apply(mustParse(t, doc("a", 2)), ApplyOptions{Origin: "test"})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	// Rewrite the record as an earlier personad wrote it.
	path := filepath.Join(f.data, AppliedDir, "current.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var a applied
	if err := json.Unmarshal(data, &a); err != nil {
		t.Fatal(err)
	}
	if a.Files == nil {
		t.Fatal("the persisted set records no files")
	}
	old, err := json.Marshal(struct {
		Version   string          `json:"version"`
		AppliedAt time.Time       `json:"applied_at"`
		Origin    string          `json:"origin"`
		RuleSet   json.RawMessage `json:"rule_set"`
	}{a.Version, a.AppliedAt, a.Origin, a.RuleSet})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, old, 0o644); err != nil {
		t.Fatal(err)
	}
	m = startManager(t, cfg)
	if st := m.Status(); st.Version != res.Version || st.Source != SourceAPI {
		t.Errorf("an earlier record, files older: serving %s from %s; want the applied %s", st.Version, st.Source, res.Version)
	}
	m.Close()
	future := time.Now().Add(time.Hour)
	touch(t, f.path, future)
	m = startManager(t, cfg)
	if st, want := m.Status(), versionOf(t, doc("a", 1)); st.Version != want || st.Source != SourceFile {
		t.Errorf("an earlier record, files newer: serving %s from %s; want %s from file", st.Version, st.Source, want)
	}
}

// TestApplyAfterFileRemovalSurvives: a set applied through the API after
// a rules file was removed (which left the set applied before serving)
// keeps serving, live and after a restart, until the files change: the
// files as last read are the ones without the removed file. Before, the
// Manager kept the digest of the files from before the removal, so the
// next read of the unchanged files, and a restart, found them changed
// and served them over the acknowledged apply.
func TestApplyAfterFileRemovalSurvives(t *testing.T) {
	f := newFixture(t)
	past := time.Now().Add(-time.Hour)
	for _, name := range []string{"a.yaml", "b.yaml"} {
		replaceAt(t, filepath.Join(f.dir, name), doc(strings.TrimSuffix(name, ".yaml"), 1), past)
	}
	cfg := f.manualConfig(t, f.dir)
	m := startManager(t, cfg)
	if _, err := m.Apply(mustParse(t, doc("a", 2)), ApplyOptions{Origin: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(f.dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	m.ReloadFiles()
	res, err := m.Apply(mustParse(t, doc("a", 3)), ApplyOptions{Origin: "test"})
	if err != nil {
		t.Fatal(err)
	}
	m.ReloadFiles()
	if st := m.Status(); st.Version != res.Version || st.Source != SourceAPI {
		t.Errorf("live, the files unchanged since the apply: serving %s from %s; want the applied %s", st.Version, st.Source, res.Version)
	}
	m.Close()
	if st := startManager(t, cfg).Status(); st.Version != res.Version || st.Source != SourceAPI {
		t.Errorf("restart, the files unchanged since the apply: serving %s from %s; want the applied %s", st.Version, st.Source, res.Version)
	}
}

// TestReloadWarningsLocated: the warnings of a set read from files are
// logged at the file and line they came from, as its errors are (and as
// personactl rules validate shows them), not at the merged set's path:
// "campaigns[1].end" names no campaign of either file.
func TestReloadWarningsLocated(t *testing.T) {
	f := newFixture(t)
	f.write(t, "a.yaml", doc("a", 1))
	f.write(t, "b.yaml", "campaigns:\n  - id: b\n    bid_cpm: 1\n    end: \"2025-01-01T00:00:00Z\"\n    creatives:\n      - {id: b-1, w: 300, h: 250, adm: x}\n")
	core, logs := observer.New(zap.InfoLevel)
	cfg := DefaultConfig()
	cfg.Engine, cfg.Path, cfg.NoWatch, cfg.Logger = f.eng, f.dir, true, zap.New(core)
	startManager(t, cfg)
	applied := logs.FilterMessage("rules applied").All()
	if len(applied) != 1 {
		t.Fatalf(`%d "rules applied" lines, want 1`, len(applied))
	}
	got, _ := applied[0].ContextMap()["warnings"].([]any)
	want := filepath.Join(f.dir, "b.yaml") + ": line 4: campaigns[0].end: flight ended 2025-01-01T00:00:00Z"
	if len(got) != 1 || !strings.HasPrefix(fmt.Sprint(got[0]), want) {
		t.Errorf(`"rules applied" warnings %q, want one starting %q`, got, want)
	}
}

// TestStartRemovesAppliedTemps: the temp file of an applied set's write
// that a crash cut short (atomicfile.Write's ".current.json.tmpN", as
// large as the set) goes at the next start, which serves the set last
// persisted. Before, nothing removed it: each crash during an apply on a
// filling disk left one more.
func TestStartRemovesAppliedTemps(t *testing.T) {
	f := newFixture(t)
	replace(t, f.path, doc("a", 1))
	m := f.start(t)
	res, err := m.Apply(mustParse(t, doc("a", 2)), ApplyOptions{Origin: "test"})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	stale := filepath.Join(f.data, AppliedDir, ".current.json.tmp2603395650")
	if err := os.WriteFile(stale, []byte(`{"version":"abc","rule`), 0o644); err != nil {
		t.Fatal(err)
	}
	if st := f.start(t).Status(); st.Version != res.Version {
		t.Errorf("restart serves %s, want the persisted %s", st.Version, res.Version)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temp file still there: %v", err)
	}
}
