package reload

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/personad/personad/engine"
	"github.com/personad/personad/internal/atomicfile"
	"github.com/personad/personad/ledger"
	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

// Source says how a rule set came in.
type Source string

const (
	SourceFile Source = "file"
	SourceAPI  Source = "api"
)

// Config configures a Manager. Start from DefaultConfig.
type Config struct {
	// Engine receives every applied rule set. Required.
	Engine *engine.Engine
	// Compiler compiles rule sets; nil means a Manager-owned one with
	// engine.DefaultCompilerConfig.
	Compiler *engine.Compiler
	// Path is the rules file or directory to load and watch; empty means
	// rules come only through Apply (and from DataDir at start).
	Path string
	// DataDir is where applied rule sets persist (rules-applied/ within);
	// empty means they are not persisted.
	DataDir string
	// Debounce is how long the watcher waits after the last file event
	// before reloading.
	Debounce time.Duration
	// NoWatch turns the watcher off: Path is loaded at start only (and on
	// ReloadFiles).
	NoWatch bool
	// Segments, when set, is where segment warnings look for the
	// segments uploaded (see rules.RuleSet.SegmentWarnings).
	Segments engine.Segments
	// Ledger, when set, is the Engine's ledger, which records each
	// campaign's currency and refuses a change of it while the campaign
	// holds money in the old one (see switchCurrencies).
	Ledger  *ledger.Ledger
	Logger  *zap.Logger
	Metrics prometheus.Registerer
	Now     func() time.Time
}

// DefaultConfig returns the defaults: a 100 ms debounce.
func DefaultConfig() Config { return Config{Debounce: 100 * time.Millisecond} }

// Status is the active rule set and the last rejected attempt.
type Status struct {
	Version   string
	AppliedAt time.Time
	Source    Source
	// Origin is the file or directory for SourceFile, what the caller named
	// for SourceAPI ("restart" once a persisted set is reloaded at start,
	// after the original origin).
	Origin    string
	Campaigns int
	RuleSet   *rules.RuleSet // read-only
	Rules     *engine.Rules
	// LastRejected is the last refused attempt since start, or nil.
	LastRejected *Rejection
	// Outcomes counts every reload attempt that reached an outcome
	// (applied, unchanged or rejected); tests wait on it.
	Outcomes uint64
}

// Rejection is a refused attempt to change the rules.
type Rejection struct {
	At     time.Time
	Source Source
	Origin string
	// Errors lists every problem; a problem that is not about one field
	// (an unreadable file, a YAML syntax error) has an empty Path.
	Errors rules.ValidationErrors
}

// Result is what Apply did, or would do with DryRun.
type Result struct {
	Version         string
	PreviousVersion string
	Diff            Diff
	Warnings        rules.ValidationErrors
	DryRun          bool
	Unchanged       bool
	AppliedAt       time.Time
	Campaigns       int
	Stats           engine.CompileStats
}

// ApplyOptions qualify an Apply.
type ApplyOptions struct {
	DryRun bool
	// Origin names the caller in Status and logs (a peer address).
	Origin string
}

// Manager owns the active rule set: it loads it at start, watches the
// files, applies sets from the API, and persists applied ones. It is safe
// for concurrent use; Close stops the watcher and waits for it.
type Manager struct {
	cfg      Config
	log      *zap.Logger
	metrics  *metrics
	compiler *engine.Compiler
	ownsComp bool
	// parser remembers the files' parsed campaigns, so a reload parses
	// only the files, and in them the campaigns, whose text changed.
	parser    *rules.Parser
	mu        sync.Mutex // serialises changes: apply, reloadFiles
	state     atomic.Pointer[state]
	fileSum   rules.Digest // digest of the files last read (under mu)
	filesAt   time.Time    // the newest modification time of the files last read (under mu)
	changed   chan struct{}
	changedMu sync.Mutex
	watcher   *watcher
	// seen are the rules files of the last read, with their
	// modification times (ReloadFiles, under mu).
	seen map[string]time.Time
	// segs are the segments of the snapshot the last warnings looked at.
	segs      atomic.Pointer[uploadedSegments]
	closeOnce sync.Once
	closeErr  error
}

// state is one immutable Status, published whole; the diff reads its
// RuleSet and Rules.
type state struct {
	Status
}

// New loads the initial rule set — the persisted applied set, unless the
// rules files changed since it was applied (applied.filesReplace) —
// publishes it to the engine and, unless NoWatch,
// starts watching Path. It fails when there is nothing valid to serve.
func New(cfg Config) (*Manager, error) {
	if cfg.Engine == nil {
		return nil, errors.New("reload: Config.Engine is required")
	}
	if cfg.Debounce <= 0 {
		return nil, errors.New("reload: Config.Debounce must be > 0")
	}
	if cfg.Path == "" && cfg.DataDir == "" {
		return nil, errors.New("reload: Config needs a Path, a DataDir, or both")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Manager{cfg: cfg, log: cfg.Logger.Named("rules"), compiler: cfg.Compiler, parser: rules.NewParser(), changed: make(chan struct{})}
	var err error
	if m.metrics, err = newMetrics(cfg.Metrics); err != nil {
		return nil, fmt.Errorf("reload: %w", err)
	}
	if m.compiler == nil {
		if m.compiler, err = engine.NewCompiler(engine.DefaultCompilerConfig()); err != nil {
			return nil, err
		}
		m.ownsComp = true
	}
	m.state.Store(&state{})
	if err := m.start(); err != nil {
		m.closeCompiler()
		return nil, err
	}
	if cfg.Path != "" && !cfg.NoWatch {
		if m.watcher, err = startWatcher(m); err != nil {
			m.closeCompiler()
			return nil, err
		}
	}
	return m, nil
}

// Close stops the watcher and waits for it. The Manager must not be used
// afterwards; the engine keeps the last rules. Closing again does nothing.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		if m.watcher != nil {
			m.closeErr = m.watcher.close()
		}
		m.closeCompiler()
	})
	return m.closeErr
}

func (m *Manager) closeCompiler() {
	if m.ownsComp {
		m.compiler.Close()
	}
}

// start chooses and applies the initial rule set: the persisted set
// applied through the API, unless the rules files replace it
// (applied.filesReplace), or there are no readable files.
func (m *Manager) start() error {
	var (
		files    []rules.File
		fileErr  error
		newest   time.Time
		fromFile = m.cfg.Path != ""
	)
	if fromFile {
		files, fileErr = m.parser.ReadFiles(m.cfg.Path)
		newest = newestModTime(files)
	}
	saved, savedErr := m.readApplied()
	if savedErr != nil {
		return savedErr
	}
	var (
		rs       *rules.RuleSet
		origins  rules.Origins
		parseErr error
		parsed   bool
	)
	parse := func() {
		// Parsing gives the files' digest, and readies the Parser for
		// their next version, also when the persisted set serves: they
		// are applied once they change.
		rs, origins, parseErr = m.parser.ParseFiles(files)
		m.fileSum = m.parser.Digest()
		parsed = true
	}
	useSaved := saved != nil
	if saved != nil && fromFile && fileErr == nil {
		if saved.Files == nil {
			// Persisted before the files were recorded with it: the
			// newer wins, by the files' modification times, as then.
			useSaved = saved.AppliedAt.After(newest)
		} else {
			parse()
			useSaved = !saved.filesReplace(files, m.fileSum)
		}
	}
	if fromFile {
		m.filesAt = newest
		m.see(files, time.Time{})
	}
	if useSaved {
		rs, err := saved.ruleSet()
		if err == nil {
			_, err = m.apply(rs, nil, SourceAPI, "restart (applied by "+saved.Origin+")", false, saved.AppliedAt)
		}
		if err != nil {
			return fmt.Errorf("reload: the applied rule set persisted in %s: %w", m.appliedPath(), err)
		}
		if fromFile && fileErr == nil {
			if !parsed {
				parse()
			}
			m.log.Info("rules: the rules files did not change since the set persisted was applied through the API; serving it",
				zap.String("path", m.cfg.Path), zap.Time("files_modified", newest), zap.Time("applied_at", saved.AppliedAt))
		}
		return nil
	}
	if fileErr != nil {
		return fileErr
	}
	if !parsed {
		parse()
	}
	if parseErr != nil {
		return parseErr
	}
	_, err := m.apply(rs, origins, SourceFile, m.cfg.Path, false, time.Time{})
	return err
}

// lastRead is the rules files as last read, for the persisted set
// (nil without rules files). Under mu.
func (m *Manager) lastRead() *appliedFiles {
	if m.cfg.Path == "" {
		return nil
	}
	return &appliedFiles{Digest: m.fileSum.String(), Newest: m.filesAt, ModTimes: maps.Clone(m.seen)}
}

// see records files as the last read, and reports whether one of them
// was written since the read before, and whether a name of that read is
// gone (compareFiles).
func (m *Manager) see(files []rules.File, notBefore time.Time) (written, removed bool) {
	written, removed = compareFiles(m.seen, files, notBefore)
	seen := make(map[string]time.Time, len(files))
	for _, f := range files {
		seen[f.Name] = f.ModTime
	}
	m.seen = seen
	return written, removed
}

// compareFiles reports whether one of files was written since a read
// that saw prev (their modification times, by name): modified, or new
// under a name prev does not have, with a time not before notBefore (a
// file renamed, or moved in, keeps an older time); and whether a name
// of prev is gone (removed).
func compareFiles(prev map[string]time.Time, files []rules.File, notBefore time.Time) (written, removed bool) {
	names := make(map[string]bool, len(files))
	for _, f := range files {
		names[f.Name] = true
		t, ok := prev[f.Name]
		if ok && !t.Equal(f.ModTime) || !ok && !notBefore.After(f.ModTime) {
			written = true
		}
	}
	for name := range prev {
		if !names[name] {
			removed = true
		}
	}
	return written, removed
}

// allBlank reports whether files, all read this time, hold nothing but
// white space. An empty directory is not blank: its files were removed.
func allBlank(files []rules.File) bool {
	for _, f := range files {
		if f.Sum != (rules.Digest{}) || len(bytes.TrimSpace(f.Data)) > 0 {
			return false // not read (unchanged, so not blank), or not blank
		}
	}
	return len(files) > 0
}

// newestModTime is the latest modification time of files (zero for none).
func newestModTime(files []rules.File) time.Time {
	var t time.Time
	for _, f := range files {
		t = later(t, f.ModTime)
	}
	return t
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Status returns the active rule set and the last rejection.
func (m *Manager) Status() Status { return m.state.Load().Status }

// Changed returns a channel closed at the next outcome (applied, unchanged
// or rejected), for waiting without sleeping.
func (m *Manager) Changed() <-chan struct{} {
	m.changedMu.Lock()
	defer m.changedMu.Unlock()
	return m.changed
}

func (m *Manager) notify() {
	m.changedMu.Lock()
	close(m.changed)
	m.changed = make(chan struct{})
	m.changedMu.Unlock()
}

// Validate checks rs without applying it: its errors (nil when valid), its
// warnings, and the version it would have. Its errors include those Apply
// would add against the live state: a currency change of a campaign that
// holds money in its currency (currencyChanges).
func (m *Manager) Validate(rs *rules.RuleSet) (errs, warnings rules.ValidationErrors, version string) {
	if err := rs.Validate(); err != nil {
		return rules.Problems(err), nil, ""
	}
	m.mu.Lock()
	errs = m.currencyChanges(rs)
	m.mu.Unlock()
	if len(errs) > 0 {
		return errs, nil, ""
	}
	return nil, m.warnings(rs, nil), rs.Version()
}

// Apply validates, compiles and activates rs (persisting it when DataDir is
// set), or with DryRun only reports what it would change. An invalid set
// returns rules.ValidationErrors and changes nothing.
func (m *Manager) Apply(rs *rules.RuleSet, opts ApplyOptions) (*Result, error) {
	return m.apply(rs, nil, SourceAPI, opts.Origin, opts.DryRun, time.Time{})
}

// ReloadFiles reads the rules files now and applies them if their bytes
// changed since they were last read, or if one of them was written after
// the active set was applied through the API (the last writer wins, as at
// start). The watcher calls it; so may tests.
func (m *Manager) ReloadFiles() {
	m.mu.Lock()
	defer m.mu.Unlock()
	start := time.Now()
	files, err := m.parser.ReadFiles(m.cfg.Path) // only the files that may have changed
	if err != nil {
		m.rejectLocked(SourceFile, m.cfg.Path, err)
		return
	}
	// The Sums of the files the Parser did not read are known now; those
	// of the files it read, once they are parsed (from the digests of
	// their pieces, rather than hashing each file whole first). An
	// unchanged file is not parsed again either way.
	var (
		rs      *rules.RuleSet
		origins rules.Origins
	)
	sum, known := rules.FilesDigest(files)
	// Files written after the set applied through the API win over it
	// (the last writer), even with the bytes they held: a restart would
	// serve them (New decides as here, from the files as last read before
	// the apply: applied.filesReplace), so this server does too, once for
	// each such write.
	newest := newestModTime(files)
	cur := m.state.Load()
	var notBefore time.Time
	if cur.Source == SourceAPI {
		notBefore = cur.AppliedAt
	}
	written, removed := m.see(files, notBefore)
	if cur.Source == SourceAPI && removed && !written && cur.AppliedAt.After(newest) {
		// Files were only removed since the last read, or renamed or
		// moved in with a time before the set applied through the API:
		// none was written, so that set stays, as a restart would serve
		// it (New decides as here). The files are applied once one is
		// written, or they change. (A file written after the apply,
		// with a broken one that is now removed, was: the files win, as
		// at a restart.) They are read as they are now: a later change
		// is one from these, and so is, for a restart, a change from
		// these after a later Apply, which persists them as last read.
		if !known {
			m.parser.ParseFiles(files) //nolint:errcheck // applied, and reported, once they change
			sum = m.parser.Digest()
		}
		m.fileSum = sum
		m.filesAt = newest
		m.log.Info("rules files removed, none written: the set applied through the API keeps serving (as a restart would); write or touch a rules file to serve the files",
			zap.String("path", m.cfg.Path), zap.Time("applied_at", cur.AppliedAt), zap.Time("newest_file", newest))
		return
	}
	rewritten := cur.Source == SourceAPI && newest.After(m.filesAt) && !cur.AppliedAt.After(newest)
	m.filesAt = newest
	if !known || sum != m.fileSum || rewritten {
		rs, origins, err = m.parser.ParseFiles(files)
		sum = m.parser.Digest()
	}
	parsed := time.Since(start) // read, and parsed if needed
	if sum == m.fileSum && !rewritten {
		m.log.Debug("rules files unchanged", zap.String("path", m.cfg.Path))
		return
	}
	m.fileSum = sum
	m.metrics.parse.Observe(parsed.Seconds())
	if err == nil && cur.Rules != nil && allBlank(files) {
		// An editor saving in place truncates the file, then writes it:
		// read in between (the debounce does not always cover a busy
		// machine), it would serve no campaigns, and go on doing so if
		// what was written next is then refused.
		err = fmt.Errorf("rules: %s: empty (read while being saved?); the active rules keep serving; to serve no campaigns, write %q", files[0].Name, "campaigns: []")
	}
	if err != nil {
		m.rejectLocked(SourceFile, m.cfg.Path, err)
		return
	}
	st := m.parser.Stats()
	m.log.Debug("rules files parsed", zap.Int("files", st.Files), zap.Int("files_read", st.FilesRead), zap.Int("files_parsed", st.FilesParsed),
		zap.Int("entries", st.Entries), zap.Int("entries_parsed", st.EntriesParsed), zap.Duration("took", parsed))
	m.applyLocked(rs, origins, SourceFile, m.cfg.Path, false, time.Time{}, zap.Duration("parse_took", parsed)) //nolint:errcheck // logged and recorded by applyLocked
}

func (m *Manager) apply(rs *rules.RuleSet, origins rules.Origins, src Source, origin string, dryRun bool, at time.Time) (*Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applyLocked(rs, origins, src, origin, dryRun, at)
}

// applyLocked is the pipeline. origins, for a set read from files, maps
// validation errors to the file and campaign index they came from (nil
// for the API). at, when set, is the applied time to record (a persisted
// set reloaded at start keeps its own). logged are more fields for the
// "rules applied" line (a file reload's parse time).
func (m *Manager) applyLocked(rs *rules.RuleSet, origins rules.Origins, src Source, origin string, dryRun bool, at time.Time, logged ...zap.Field) (*Result, error) {
	t0 := time.Now()
	cur := m.state.Load()
	persist := src == SourceAPI && at.IsZero() && m.cfg.DataDir != "" && !dryRun // not a persisted set reloaded at start
	var marshaled chan marshalResult
	if persist {
		// Encode the set for the data dir while it compiles (neither
		// writes to rs): for 10,000 campaigns that is ~60 ms of the
		// apply's critical path.
		marshaled = make(chan marshalResult, 1)
		go func() {
			js, err := rules.MarshalJSON(rs)
			marshaled <- marshalResult{js, err}
		}()
	}
	compile := m.compiler.Compile
	if src == SourceFile {
		// From m.parser, whose sets are never modified: the Compiler
		// keeps them as they are, and next time knows each campaign the
		// Parser reused by its memory, without reading its contents.
		compile = m.compiler.CompileImmutable
	}
	r, err := compile(rs, "")
	if err == nil && dryRun {
		if errs := m.currencyChanges(rs); len(errs) > 0 {
			err = errs
		}
	}
	if err != nil {
		err = origins.Locate(err)
		// At start the error is New's to return, not to log as well.
		if !dryRun && cur.Rules != nil {
			m.rejectLocked(src, origin, err)
		}
		return nil, err
	}
	// A file reload's Result is only logged, and so is that of the
	// persisted set applied at start (at set): those count, not list.
	listed := 0
	if src != SourceFile && at.IsZero() {
		listed = MaxListed
	}
	res := &Result{
		Version:   r.Version(),
		Warnings:  m.warnings(rs, r),
		DryRun:    dryRun,
		Campaigns: len(rs.Campaigns),
		Stats:     r.Stats(),
	}
	if cur.Rules != nil {
		res.PreviousVersion = cur.Version
	}
	// The diff is the caller's and the log's: a new set serves before it
	// is computed (a replaced set of 100,000 campaigns takes 30-60 ms to
	// diff, 120 listing ids).
	setDiff := func() { res.Diff = diff(cur.RuleSet, cur.Rules, rs, r, listed) }
	if dryRun {
		setDiff()
		return res, nil
	}
	if cur.Rules != nil && cur.Version == r.Version() {
		if src == SourceFile && cur.Source == SourceAPI {
			// The files become the source of the set applied through
			// the API (below): withdraw the persisted copy, as when
			// they replace it, or a restart would serve it as the API's
			// (files copied in with an older time, cp -p).
			if err := m.withdrawApplied(res); err != nil {
				m.rejectLocked(src, origin, err)
				return nil, err
			}
		}
		setDiff()
		res.Unchanged = true
		res.AppliedAt = cur.AppliedAt
		m.metrics.outcome(src, outcomeUnchanged)
		m.log.Info("rules unchanged", zap.String("source", string(src)), zap.String("origin", origin), zap.String("version", r.Version()))
		m.publish(func(s *state) {
			s.Outcomes++
			if src == SourceFile {
				// Files written with the set applied through the API
				// are its source now, as at the next start.
				s.Source, s.Origin = src, origin
			}
		})
		return res, nil
	}
	// From here on the ledger refuses bids priced in a currency this set
	// changes (it refused the set if one of those campaigns holds money
	// in its old currency): undo, if the set never serves.
	undo, err := m.switchCurrencies(rs)
	if err != nil {
		err = origins.Locate(err)
		if cur.Rules != nil {
			m.rejectLocked(src, origin, err)
		}
		return nil, err
	}
	if at.IsZero() {
		at = m.cfg.Now()
	}
	if persist {
		mr := <-marshaled
		err := mr.err
		if err == nil {
			err = m.writeApplied(mr.js, r.Version(), at, origin, m.lastRead())
		}
		if errors.Is(err, atomicfile.ErrNotDurable) {
			// The new set is already what the data dir holds, and what a
			// restart serves: serve it now too, never the other way round,
			// and say that a machine crash may bring the previous one back.
			m.log.Error("rules persisted but not confirmed durable", zap.String("version", r.Version()), zap.Error(err))
			res.Warnings = append(res.Warnings, &rules.ValidationError{Msg: fmt.Sprintf("applied, but %v; a machine crash may restore the previous set", err)})
			err = nil
		}
		if err != nil {
			undo()
			m.rejectLocked(src, origin, err)
			return nil, err
		}
	}
	if src == SourceFile {
		// The files replace whatever was applied through the API: a
		// restart must not bring that back.
		if err := m.withdrawApplied(res); err != nil {
			undo()
			if cur.Rules != nil {
				m.rejectLocked(src, origin, err)
			}
			return nil, err
		}
	}
	_, refused := m.cfg.Engine.SetRules(r)
	res.AppliedAt = at
	took := time.Since(t0)
	m.publish(func(s *state) {
		s.Version, s.AppliedAt, s.Source, s.Origin = r.Version(), at, src, origin
		s.Campaigns, s.RuleSet, s.Rules = len(rs.Campaigns), rs, r
		s.Outcomes++
	})
	setDiff()
	m.metrics.applied(src, r, at, took)
	fields := []zap.Field{
		zap.String("source", string(src)),
		zap.String("origin", origin),
		zap.String("version", r.Version()),
		zap.String("previous_version", res.PreviousVersion),
		zap.Int("campaigns", len(rs.Campaigns)),
		zap.Int("compiled", res.Stats.Compiled),
		zap.Int("reused", res.Stats.Reused),
		zap.Duration("took", took),
		zap.Object("diff", res.Diff),
	}
	fields = append(fields, logged...)
	if len(res.Warnings) > 0 {
		fields = append(fields, zap.Strings("warnings", locatedStrings(origins, res.Warnings, maxLoggedProblems)))
	}
	if refused > 0 {
		// Validation checks what the ledger checks, so this means the two
		// disagree: those campaigns fail closed (they cannot spend).
		fields = append(fields, zap.Int("ledger_refused", refused))
		m.log.Warn("rules applied; the ledger refused some campaigns' limits, which cannot spend", fields...)
		return res, nil
	}
	m.log.Info("rules applied", fields...)
	return res, nil
}

// maxLoggedProblems bounds the errors one log line lists (all of them are
// in Status and the Rules service).
const maxLoggedProblems = 100

// marshalResult is a rule set's rules JSON, encoded beside its compile.
type marshalResult struct {
	js  []byte
	err error
}

func (m *Manager) rejectLocked(src Source, origin string, err error) {
	rej := &Rejection{At: m.cfg.Now(), Source: src, Origin: origin, Errors: rules.Problems(err)}
	m.publish(func(s *state) {
		s.LastRejected = rej
		s.Outcomes++
	})
	m.metrics.outcome(src, outcomeRejected)
	m.log.Warn("rules rejected; the active rules keep serving",
		zap.String("source", string(src)),
		zap.String("origin", origin),
		zap.String("active_version", m.state.Load().Version),
		zap.Int("errors", len(rej.Errors)),
		zap.Strings("problems", problemStrings(rej.Errors, maxLoggedProblems)))
}

// publish stores a copy of the state changed by f, then wakes waiters.
func (m *Manager) publish(f func(*state)) {
	s := *m.state.Load()
	f(&s)
	m.state.Store(&s)
	m.notify()
}

// locatedStrings is problemStrings of the first n of es located at the
// files and lines they came from (origins.Locate, as the errors of a set
// read from files are), so that a logged warning names a campaign of a
// file, not an index of the merged set; only those logged are located.
func locatedStrings(origins rules.Origins, es rules.ValidationErrors, n int) []string {
	out := problemStrings(rules.Problems(origins.Locate(es[:min(n, len(es))])), n)
	if len(es) > n {
		out = append(out, fmt.Sprintf("... and %d more", len(es)-n))
	}
	return out
}

func problemStrings(es rules.ValidationErrors, n int) []string {
	out := make([]string, 0, min(n, len(es)))
	for _, e := range es[:min(n, len(es))] {
		if e.Path == "" {
			out = append(out, e.Msg)
		} else {
			out = append(out, e.Error())
		}
	}
	if len(es) > n {
		out = append(out, fmt.Sprintf("... and %d more", len(es)-n))
	}
	return out
}

// currencyChanges is what switchCurrencies would refuse now, changing
// nothing (Validate, and a dry run).
func (m *Manager) currencyChanges(rs *rules.RuleSet) rules.ValidationErrors {
	if m.cfg.Ledger == nil {
		return nil
	}
	return currencyErrors(rs, m.cfg.Ledger.CurrencyConflicts(currencies(rs)))
}

// switchCurrencies records rs's currencies in the ledger before rs
// serves (ledger.SetCurrencies), all or nothing. It refuses each campaign
// whose currency rs changes from the one the ledger recorded (from a set
// applied before, in this run or an earlier one; also a campaign removed
// and added back) while the ledger holds money for it in that currency:
// spend, or bids a win or billing notice may still count. The ledger
// counts spend and budgets in micro-units of the campaign's currency,
// which such a change would relabel (0.02 USD spent becoming 0.02 EUR,
// and the USD bids outstanding settling in EUR). A campaign that holds
// none may change it. The check is atomic with the ledger's bookings:
// once the change is recorded, bids priced by the rules still serving,
// in the old currency, are refused (ledger.ErrCurrency) until rs serves,
// so none books spend that rs would count in the new currency. A change
// made while personad was down is refused at start, as the ledger
// recorded the old currency (a ledger written before currencies were
// recorded holds none: its campaigns are not checked until a set has
// been applied). undo puts the recorded currencies back, for a set that
// will not serve.
func (m *Manager) switchCurrencies(rs *rules.RuleSet) (undo func(), err error) {
	undo = func() {}
	if m.cfg.Ledger == nil {
		return undo, nil
	}
	was, err := m.cfg.Ledger.SetCurrencies(currencies(rs))
	if ce := (*ledger.CurrencyError)(nil); errors.As(err, &ce) {
		return undo, currencyErrors(rs, ce.Conflicts)
	}
	if err != nil {
		return undo, fmt.Errorf("reload: %w", err)
	}
	if len(was) == 0 {
		return undo, nil
	}
	return func() {
		// Nothing priced in the new currencies has booked (rs never
		// served), so the ledger takes the old ones back.
		if _, err := m.cfg.Ledger.SetCurrencies(was); err != nil {
			m.log.Error("rules: putting back the ledger's currencies of a set not applied", zap.Error(err))
		}
	}, nil
}

// currencies is each of rs's campaigns' currency, by id.
func currencies(rs *rules.RuleSet) map[string]string {
	out := make(map[string]string, len(rs.Campaigns))
	for i := range rs.Campaigns {
		out[rs.Campaigns[i].ID] = rs.Campaigns[i].EffectiveCurrency()
	}
	return out
}

// currencyErrors are the ledger's refusals of rs's currency changes, at
// each campaign's currency field.
func currencyErrors(rs *rules.RuleSet, cs []ledger.CurrencyConflict) rules.ValidationErrors {
	if len(cs) == 0 {
		return nil
	}
	at := make(map[string]int, len(rs.Campaigns))
	for i := range rs.Campaigns {
		at[rs.Campaigns[i].ID] = i
	}
	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(a, b ledger.CurrencyConflict) int { return at[a.ID] - at[b.ID] })
	var errs rules.ValidationErrors
	for _, c := range cs {
		var msg string
		if c.SpentMicros > 0 {
			msg = fmt.Sprintf("%s would change campaign %s's currency from %s, in which it has spent %s (its spend and budgets would count as %s): keep %s, or bid in %s under a new campaign id",
				c.To, c.ID, c.From, strconv.FormatFloat(float64(c.SpentMicros)/1e6, 'f', -1, 64), c.To, c.From, c.To)
		} else {
			msg = fmt.Sprintf("%s would change campaign %s's currency from %s, in which it has %d bids that a win or billing notice may still count as spend (until they are settled, or forgotten after their reservation's expiry and the ledger's retention): keep %s until then, or bid in %s under a new campaign id",
				c.To, c.ID, c.From, c.Bids, c.From, c.To)
		}
		errs = append(errs, &rules.ValidationError{Path: "campaigns[" + strconv.Itoa(at[c.ID]) + "].currency", Msg: msg})
	}
	return errs
}

// warnings are rs's currency warnings, its delivery warnings (what can
// never deliver as written: an ended flight, ...), then its segment
// warnings against the live segments. r, when set, is rs compiled: when
// every fact it refers to has a segment there is no segment to warn
// about, and the walk over every clause is skipped.
func (m *Manager) warnings(rs *rules.RuleSet, r *engine.Rules) rules.ValidationErrors {
	ws := append(rs.CurrencyWarnings(), rs.DeliveryWarnings(m.cfg.Now())...)
	if m.cfg.Segments == nil {
		return ws
	}
	up := m.uploaded(m.cfg.Segments.Current())
	if r != nil {
		all := true
		for f := range r.Facts() {
			if !up.segments[f] {
				all = false
				break
			}
		}
		if all {
			return ws
		}
	}
	return append(ws, rs.SegmentWarnings(
		func(f string) bool { return up.facets[f] },
		func(f, v string) bool { return up.segments[engine.Fact{Facet: f, Value: v}] })...)
}

// uploadedSegments are the segments of a snapshot, and their facets. It
// is immutable.
type uploadedSegments struct {
	snap     weak.Pointer[segments.Snapshot]
	facets   map[string]bool
	segments map[engine.Fact]bool
}

// uploaded returns the segments of snap (none for nil), remembered for
// the next call with the same snapshot, which is immutable: a reload
// while no segments are uploaded neither lists nor sorts them all again.
// The weak pointer keeps no snapshot alive, and never equals one made
// from a later snapshot, even at its address.
func (m *Manager) uploaded(snap *segments.Snapshot) *uploadedSegments {
	w := weak.Make(snap)
	if up := m.segs.Load(); up != nil && up.snap == w {
		return up
	}
	up := &uploadedSegments{snap: w, facets: map[string]bool{}, segments: map[engine.Fact]bool{}}
	if snap != nil {
		for _, s := range snap.Segments() {
			up.facets[s.Facet] = true
			up.segments[engine.Fact{Facet: s.Facet, Value: s.Value}] = true
		}
	}
	m.segs.Store(up)
	return up
}
