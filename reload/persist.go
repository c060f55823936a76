package reload

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/personad/personad/internal/atomicfile"
	"github.com/personad/personad/rules"
)

// AppliedDir is where, within the data dir, an applied rule set persists.
const AppliedDir = "rules-applied"

// appliedFile is the persisted set within AppliedDir.
const appliedFile = "current.json"

// applied is the persisted form of a rule set applied through the API.
type applied struct {
	Version   string    `json:"version"`
	AppliedAt time.Time `json:"applied_at"`
	Origin    string    `json:"origin"`
	// Files is the rules files as the Manager had last read them when the
	// set was applied, which a restart compares the files with (see
	// filesReplace); nil without rules files, and in a set persisted
	// before they were recorded (by an earlier personad), which the
	// files' modification times decide against, as they did then.
	Files   *appliedFiles   `json:"files,omitempty"`
	RuleSet json.RawMessage `json:"rule_set"` // rules JSON: the proto JSON of personad.v1.RuleSet; last (encodeApplied)
}

// appliedFiles is the rules files as last read: what ReloadFiles
// compares the files with.
type appliedFiles struct {
	// Digest is their names and contents (rules.Digest, in hex).
	Digest string `json:"digest"`
	// Newest is their newest modification time.
	Newest time.Time `json:"newest"`
	// ModTimes is each one's modification time, by name.
	ModTimes map[string]time.Time `json:"mod_times"`

	sum rules.Digest // Digest, decoded
}

// decode checks and decodes Digest.
func (f *appliedFiles) decode() error {
	b, err := hex.DecodeString(f.Digest)
	if err != nil || len(b) != len(f.sum) {
		return fmt.Errorf("files.digest: %q is not %d hex digits", f.Digest, 2*len(f.sum))
	}
	copy(f.sum[:], b)
	return nil
}

// filesReplace reports whether files, read at start with the digest sum,
// replace the set persisted in a: whether ReloadFiles would have had them
// replace it had the server run on since the apply and seen them as they
// are. They do when their bytes changed since the Manager last read them
// before the apply (an edit, even one that kept an older time: cp -p),
// or when a file was written after the apply with the bytes it held (its
// time moved past the newest then, and is not before the apply), unless
// files were only removed, or renamed or moved in with a time before the
// apply. Modification times are compared with those of that read, not
// with the time of the apply alone: a file whose time is in the future
// (clock skew, touch -d, a copy with its times kept) and unchanged since
// does not replace a set applied after it.
func (a *applied) filesReplace(files []rules.File, sum rules.Digest) bool {
	was := a.Files
	newest := newestModTime(files)
	written, removed := compareFiles(was.ModTimes, files, a.AppliedAt)
	if removed && !written && a.AppliedAt.After(newest) {
		return false
	}
	rewritten := newest.After(was.Newest) && !a.AppliedAt.After(newest)
	return sum != was.sum || rewritten
}

func (a *applied) ruleSet() (*rules.RuleSet, error) {
	return rules.Parse("rule_set", a.RuleSet)
}

func (m *Manager) appliedPath() string {
	return filepath.Join(m.cfg.DataDir, AppliedDir, appliedFile)
}

// readApplied returns the persisted applied set, or nil when there is
// none. It runs at start, and first removes the temp files of writes a
// crash cut short (atomicfile.Write's "." + appliedFile + ".tmp" +
// digits): never renamed into place, they hold nothing applied, and
// each is as large as the rule set, space a full disk needs back.
func (m *Manager) readApplied() (*applied, error) {
	if m.cfg.DataDir == "" {
		return nil, nil
	}
	dir := filepath.Dir(m.appliedPath())
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reload: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "."+appliedFile+".tmp") {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return nil, fmt.Errorf("reload: removing a stale temp file: %w", err)
			}
		}
	}
	data, err := os.ReadFile(m.appliedPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reload: %w", err)
	}
	var a applied
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return nil, fmt.Errorf("reload: %s: %w", m.appliedPath(), err)
	}
	if a.Files != nil {
		if err := a.Files.decode(); err != nil {
			return nil, fmt.Errorf("reload: %s: %w", m.appliedPath(), err)
		}
	}
	return &a, nil
}

// encodeApplied returns the persisted form of an applied set whose rules
// JSON is js. The envelope is framed by hand: json.Marshal of a RawMessage
// would compact and HTML-escape the whole rule set again (~150 ms for
// 10,000 campaigns).
func encodeApplied(js []byte, version string, at time.Time, origin string, files *appliedFiles) ([]byte, error) {
	head, err := json.Marshal(applied{Version: version, AppliedAt: at, Origin: origin, Files: files, RuleSet: json.RawMessage("null")})
	if err != nil {
		return nil, fmt.Errorf("reload: %w", err)
	}
	head = bytes.TrimSuffix(head, []byte("null}"))
	data := make([]byte, 0, len(head)+len(js)+2)
	data = append(append(append(data, head...), js...), "}\n"...)
	return data, nil
}

// writeFile is atomicfile.Write; tests replace it to fail.
var writeFile = atomicfile.Write

// syncDir is atomicfile.SyncDir; tests replace it to fail.
var syncDir = atomicfile.SyncDir

// writeApplied persists an applied set durably, js being its rules JSON
// (rules.MarshalJSON), with files, the rules files as last read: a temp file, fsync, rename over the previous one,
// fsync of the directory. A crash leaves the old set or the new one, never
// a mix. An error wrapping atomicfile.ErrNotDurable means the new set is
// in place, its durability unconfirmed.
func (m *Manager) writeApplied(js []byte, version string, at time.Time, origin string, files *appliedFiles) error {
	data, err := encodeApplied(js, version, at, origin, files)
	if err != nil {
		return err
	}
	err = writeFile(m.appliedPath(), 0o644, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotPersisted, err)
	}
	return nil
}

// ErrNotPersisted is an Apply refused because the set could not be
// written to <data-dir>/rules-applied (a full or read-only disk): the
// error wraps the file system's, which names the file and the errno.
// Nothing changed: the active set keeps serving, and the same Apply
// succeeds once the disk takes the file.
var ErrNotPersisted = errors.New("reload: persisting the applied rules")

// removeApplied withdraws the persisted applied set, if any, once rules
// files replace the set it holds: a restart then serves the files, as the
// live server does, whatever their modification times (a file copied in
// with its older time kept changes the files live, but would lose to the
// persisted set at start). The removal is durable (directory fsync). An
// error wrapping errRemovedNotDurable means the set is gone, its removal
// unconfirmed.
func (m *Manager) removeApplied() error {
	if m.cfg.DataDir == "" {
		return nil
	}
	err := os.Remove(m.appliedPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		if err = syncDir(filepath.Dir(m.appliedPath())); err != nil {
			err = fmt.Errorf("%w: %w", errRemovedNotDurable, err)
		}
	}
	if err != nil {
		return fmt.Errorf("reload: withdrawing the applied rules replaced by the files: %w", err)
	}
	return nil
}

// errRemovedNotDurable is removeApplied's error once the persisted set is
// removed but the directory's fsync failed.
var errRemovedNotDurable = errors.New("removed, but the directory's fsync failed")

// withdrawApplied is removeApplied for files about to serve: once the
// persisted set is removed, unconfirmed durable or not, a restart serves
// the files, so they serve now too (never the other way round), with a
// warning that a machine crash may bring the persisted set back.
func (m *Manager) withdrawApplied(res *Result) error {
	err := m.removeApplied()
	if errors.Is(err, errRemovedNotDurable) {
		m.log.Error("persisted applied rules removed, but not confirmed durable", zap.String("version", res.Version), zap.Error(err))
		res.Warnings = append(res.Warnings, &rules.ValidationError{Msg: fmt.Sprintf("applied, but %v; a machine crash may restore the set applied through the API", err)})
		return nil
	}
	return err
}
