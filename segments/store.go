package segments

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/personad/personad/internal/atomicfile"
)

// Config configures a Store opened with Open. Start from DefaultConfig;
// a zero duration or size means its default.
type Config struct {
	// Dir is the store's own directory, holding the snapshot file
	// (SnapshotFile) and the write-ahead log (wal-*.log); personad uses
	// <data-dir>/segments. Open creates it when missing.
	Dir string
	// SnapshotInterval is how often the store writes a snapshot when the
	// log holds records since the last one. Default 5m.
	SnapshotInterval time.Duration
	// SnapshotLogBytes starts a snapshot early once the log holds this
	// many bytes, bounding restart time. Default 256 MiB.
	SnapshotLogBytes int64
	// ReserveUsers, when above the users the store holds, makes room in
	// the user dictionary for that many at Open (and again when Publish
	// replaces it): its hash table, id offsets and id bytes (at the
	// average id length so far, 16 bytes when empty) are allocated and
	// faulted in up front, so that uploads up to it never grow them. It
	// costs their memory from the start, about 15 bytes a user plus the
	// id bytes (26 for 9-byte ids), and the time to fault it in. It pays
	// where fresh memory is slow to fault in: on virtual machines that
	// back a guest's memory only when first touched and take freed memory
	// back (free page reporting), a new dictionary array costs about 1.5
	// ms per MB the first time (BENCHMARKS.md §2). At most MaxUsers, and
	// Open refuses a reserve that needs more memory than the process
	// may have, the machine's or its cgroup's limit if lower (ErrNoRoom);
	// 0 reserves nothing.
	ReserveUsers int
	// MaxSegments bounds how many segments the store holds: an upload
	// that would add one more is ErrTooManySegments, nothing applied
	// (uploads to existing segments, removes and deletes are not
	// limited). Each segment costs memory in every snapshot and time in
	// every commit, whatever its users; one-user segments took ~20 KB
	// each in personad. A store that already holds more (the limit
	// lowered since) opens and serves them. Default 100,000; 0 is no
	// limit.
	MaxSegments int
	// OnSnapshot, when set, is called after each snapshot the store
	// writes by itself (periodic, early, at Close) or fails to write, from
	// the goroutine that wrote it. personad logs it. (The package does not
	// log: segments sit below the engine, which must not reach zap's
	// net/http.)
	OnSnapshot func(SnapshotEvent)
}

// SnapshotEvent reports one snapshot.
type SnapshotEvent struct {
	Version         uint64
	Segments, Users int
	LogFilesRemoved int
	Took            time.Duration
	Err             error // the snapshot failed; the log keeps every change
}

// DefaultConfig returns the defaults: the directory ./data/segments, that
// is personad's default data dir, and the snapshot cadence documented on
// Config.
func DefaultConfig() Config {
	return Config{
		Dir:              filepath.Join("data", "segments"),
		SnapshotInterval: 5 * time.Minute,
		SnapshotLogBytes: 256 << 20,
		MaxSegments:      100_000,
	}
}

// Store publishes the current Snapshot and applies mutations durably. It
// is safe for concurrent use: readers only Load the current snapshot;
// mutations are serialized by a mutex, each building its snapshot to the
// side, logging it, then publishing it.
type Store struct {
	cfg Config
	cur atomic.Pointer[Snapshot]

	mu     sync.Mutex // serializes mutations and log rotation
	stage  stage      // the dictionary uploads in progress intern into
	wal    *wal       // nil for a store made by NewStore
	keys   keyLog
	closed bool

	ckMu     sync.Mutex // serializes snapshots
	snapVer  uint64     // version of the snapshot file
	recovery Recovery

	kick chan struct{} // asks the snapshotter for a snapshot now
	stop chan struct{}
	done chan struct{}
}

// Recovery describes what Open did.
type Recovery struct {
	SnapshotVersion uint64        // version of the snapshot file loaded (0: none)
	Version         uint64        // version after replaying the log
	LogFiles        int           // log files read
	Records         int           // records replayed over the snapshot
	Skipped         int           // records already in the snapshot
	TruncatedFile   string        // the log file whose torn tail was cut off, if any
	TruncatedAt     int64         // the offset it was cut at
	Took            time.Duration // the whole of Open
}

// NewStore returns an in-memory store serving snap (an empty snapshot when
// snap is nil). It has no directory and no log: its mutations are applied
// but nothing it serves is durable.
func NewStore(snap *Snapshot) *Store {
	if snap == nil {
		snap = emptySnapshot()
	}
	s := &Store{}
	s.stage.reset(snap.dict, false)
	s.cur.Store(snap)
	return s
}

// ErrNoRoom is a Config.ReserveUsers that needs more memory than the
// process may have: the machine's, or its cgroup's limit if lower.
var ErrNoRoom = errors.New("segments: not enough memory for the reserve")

// Open opens the store in cfg.Dir, creating the directory when missing:
// it loads the snapshot file (none: an empty store), replays the
// write-ahead log over it, truncating a torn tail, and starts the
// snapshotter goroutine, which Close stops. Temporary files left by a
// snapshot write that crashed are removed. A corrupt snapshot or log is an
// error naming the file and where the damage is (*CorruptError,
// *WALError); Open never serves part of either.
func Open(cfg Config) (*Store, error) {
	start := time.Now()
	if cfg.Dir == "" {
		return nil, errors.New("segments: Config.Dir is empty")
	}
	if cfg.ReserveUsers < 0 || cfg.ReserveUsers > MaxUsers {
		return nil, fmt.Errorf("segments: Config.ReserveUsers %d is outside [0, %d]", cfg.ReserveUsers, MaxUsers)
	}
	if cfg.MaxSegments < 0 {
		return nil, fmt.Errorf("segments: Config.MaxSegments %d must be >= 0", cfg.MaxSegments)
	}
	def := DefaultConfig()
	if cfg.SnapshotInterval <= 0 {
		cfg.SnapshotInterval = def.SnapshotInterval
	}
	if cfg.SnapshotLogBytes <= 0 {
		cfg.SnapshotLogBytes = def.SnapshotLogBytes
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("segments: %w", err)
	}
	if err := removeTemps(cfg.Dir); err != nil {
		return nil, err
	}
	snap, err := ReadSnapshotFile(filepath.Join(cfg.Dir, SnapshotFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		snap = emptySnapshot()
	case err != nil:
		return nil, err
	}
	s := &Store{
		cfg:     cfg,
		snapVer: snap.version,
		wal:     &wal{dir: cfg.Dir, sync: (*os.File).Sync, writeFile: (*os.File).Write},
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	s.recovery.SnapshotVersion = snap.version
	if snap, err = s.recover(snap); err != nil {
		s.wal.close()
		return nil, err
	}
	if users, bytes := roomFor(snap.dict, cfg.ReserveUsers); users > 0 {
		// A reserve beyond the memory there is would end the process
		// (the mappings fall back to the Go heap, which cannot either).
		need := uint64(roomBytes(snap.dict, users, bytes))
		if total, of, ok := machineMemory(); ok && need > total {
			s.wal.close()
			return nil, fmt.Errorf("%w: ReserveUsers %d needs about %d MiB for the user dictionary, more than %s %d MiB",
				ErrNoRoom, cfg.ReserveUsers, need>>20, of, total>>20)
		}
	}
	s.stage.room = cfg.ReserveUsers
	s.stage.reset(snap.dict, true)
	s.cur.Store(snap)
	s.recovery.Version = snap.version
	s.recovery.Took = time.Since(start)
	go s.snapshotter()
	return s, nil
}

// recover replays the log over snap and opens the newest log file for
// appending (creating one when there is none).
func (s *Store) recover(snap *Snapshot) (*Snapshot, error) {
	w := s.wal
	names, err := listWAL(s.cfg.Dir)
	if err != nil {
		return nil, err
	}
	for i, name := range names {
		last := i == len(names)-1
		path := filepath.Join(s.cfg.Dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("segments: %w", err)
		}
		next, applied, skipped, end, err := replayFile(snap, path, data, last, &s.keys)
		if err != nil {
			return nil, err
		}
		snap = next
		s.recovery.LogFiles++
		s.recovery.Records += applied
		s.recovery.Skipped += skipped
		w.bytes += end
		if !last {
			continue
		}
		if end < walHeaderSize {
			// A torn file header: the file never held a record.
			first, _ := walFirst(name)
			w.files = names[:i]
			w.bytes -= end
			if end != int64(len(data)) {
				s.recovery.TruncatedFile, s.recovery.TruncatedAt = path, 0
			}
			return snap, w.create(first)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("segments: %w", err)
		}
		if end < int64(len(data)) {
			s.recovery.TruncatedFile, s.recovery.TruncatedAt = path, end
			if err := f.Truncate(end); err != nil {
				f.Close()
				return nil, fmt.Errorf("segments: truncating the torn tail of %s: %w", path, err)
			}
			if err := w.sync(f); err != nil {
				f.Close()
				return nil, fmt.Errorf("segments: fsync %s: %w", path, err)
			}
		}
		if _, err := f.Seek(end, 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("segments: %w", err)
		}
		w.f, w.name, w.size, w.files = f, name, end, names
		w.records = applied + skipped
		return snap, nil
	}
	return snap, w.create(snap.version + 1)
}

// removeTemps deletes snapshot temp files that a crash left behind: they
// were never renamed into place, so they hold nothing acknowledged, and
// each is as large as a snapshot, space a full disk needs back. Their
// names are atomicfile.Write's, "." + SnapshotFile + ".tmp" + digits
// (and, from before it, without the dot).
func removeTemps(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("segments: %w", err)
	}
	for _, e := range ents {
		if name := strings.TrimPrefix(e.Name(), "."); strings.HasPrefix(name, SnapshotFile+".tmp") {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("segments: removing stale temp file: %w", err)
			}
		}
	}
	return nil
}

// Current returns the snapshot decisions should use. It is never nil.
func (s *Store) Current() *Snapshot { return s.cur.Load() }

// Publish makes snap current, bypassing the log: for in-memory stores
// (NewStore) and tests. A store opened with Open changes only through
// Commit and Delete. Uploads in progress resolve their ids again in
// snap's dictionary.
func (s *Store) Publish(snap *Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stage.mu.Lock()
	s.stage.reset(snap.dict, false)
	s.stage.mu.Unlock()
	s.cur.Store(snap)
}

// Dir is the store's directory, empty for a store made by NewStore.
func (s *Store) Dir() string { return s.cfg.Dir }

// LogErr reports why the write-ahead log takes no more changes (a failed
// fsync, or a failed write it could not cut back: what reached the disk
// is unknown), an error wrapping ErrNotDurable naming the file and the
// system's error, until a restart; nil while it takes them (a write the
// disk refused, cut back, is no such trouble: the next upload may
// succeed). It takes no lock, and is safe for concurrent use.
func (s *Store) LogErr() error {
	if s.wal == nil {
		return nil
	}
	if p := s.wal.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// Recovery reports what Open did: versions, records replayed, a torn tail
// cut off, and how long it took.
func (s *Store) Recovery() Recovery { return s.recovery }

// Commit applies an upload atomically: it publishes the users the
// dictionary gained since the last commit (interned while the uploads
// streamed, see stage), builds the segment's new bitmap to the side,
// writes and fsyncs the log record, then publishes the next snapshot
// (version + 1). It returns only after the record is durable; on any error
// nothing is published, the upload is discarded and the store is as
// before. An upload that changes nothing logs no change and keeps the
// current version (a keyed one logs its key and result). The Upload must
// not be used afterwards.
func (s *Store) Commit(u *Upload) (Result, error) {
	if u.done {
		return Result{}, errUploadDone
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		u.Discard()
		return Result{}, ErrClosed
	}
	var sum uint64
	if u.sum != nil {
		sum = max(u.sum.Sum64(), 1) // 0 means unknown
	}
	if res, ok, err := s.keys.check(u.key, u.facet, u.value, u.mode, sum); ok || err != nil {
		u.Discard()
		return res, err
	}
	cur := s.cur.Load()
	if max := s.cfg.MaxSegments; max > 0 && u.mode != Remove && cur.segs[Key{u.facet, u.value}] == nil && cur.Len() >= max {
		u.Discard()
		return Result{}, fmt.Errorf("segments: upload %s:%s: %w: the store holds %d, the limit is %d (delete segments no longer used)",
			u.facet, u.value, ErrTooManySegments, cur.Len(), max)
	}
	g := &s.stage
	g.mu.Lock()
	var err error
	if u.gen != g.gen {
		err = u.remap()
	}
	if err == nil {
		err = u.resolveMissing()
	}
	if err != nil || g.pub != cur.dict.Len() {
		g.mu.Unlock()
		u.Discard()
		if err == nil {
			err = fmt.Errorf("segments: the stage has %d published users, the snapshot %d", g.pub, cur.dict.Len())
		}
		return Result{}, fmt.Errorf("segments: upload %s:%s: %w", u.facet, u.value, err)
	}
	dict := g.view()
	g.mu.Unlock()
	u.flush()
	u.done = true
	undo := func() {
		g.mu.Lock()
		g.pub = cur.dict.Len()
		g.rollback(u.first, u.added)
		g.mu.Unlock()
	}

	first := uint32(cur.dict.Len())
	c := &change{
		version: cur.version + 1, op: opUpload, mode: u.mode, at: time.Now().UTC(),
		facet: u.facet, value: u.value, key: u.key, ids: u.ids,
		firstUser: first, set: u.bm,
	}
	if ends := dict.ends[first:]; len(ends) > 0 {
		if first > 0 {
			c.userBase = dict.ends[first-1]
		}
		c.userEnds = ends
		c.userBytes = dict.arena[c.userBase:ends[len(ends)-1]]
	}
	next, res, err := apply(cur, c, dict)
	if err != nil {
		undo()
		return Result{}, fmt.Errorf("%w: %s:%s", err, u.facet, u.value)
	}
	// The upload's own new users: the record holds every user staged since
	// the last commit, other uploads' too.
	res.NewUsers = uint64(u.added)
	entry := keyEntry{facet: u.facet, value: u.value, mode: u.mode, res: res, sum: sum}
	var keyed *keyEntry
	if u.key != "" {
		keyed = &entry
	}
	if next == nil { // nothing changes: no new version, no change record
		undo()
		entry.res.Version = cur.version
		if keyed != nil && s.wal != nil {
			// The key's result must survive a restart as a changing
			// upload's does: a keys record of its own.
			if err := s.wal.appendKey(cur.version, u.key, entry); err != nil {
				return Result{}, fmt.Errorf("segments: upload %s:%s: %w", u.facet, u.value, err)
			}
		}
	} else if err := s.commit(c, next, keyed); err != nil {
		undo()
		return Result{}, fmt.Errorf("segments: upload %s:%s: %w", u.facet, u.value, err)
	}
	runtime.KeepAlive(dict) // c's users point into its memory, maybe mapped, until the record is written (offheap.go)
	s.keys.put(u.key, entry)
	res = entry.res
	return res, nil
}

// Delete removes segment (facet, value) durably, as Commit does an upload.
// A missing segment is ErrNotFound.
func (s *Store) Delete(facet, value string) (Result, error) {
	if err := checkNames(facet, value); err != nil {
		return Result{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Result{}, ErrClosed
	}
	cur := s.cur.Load()
	c := &change{version: cur.version + 1, op: opDelete, at: time.Now().UTC(), facet: facet, value: value, firstUser: uint32(cur.dict.Len())}
	next, res, err := apply(cur, c, cur.dict)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %s:%s", err, facet, value)
	}
	if err := s.commit(c, next, nil); err != nil {
		return Result{}, fmt.Errorf("segments: delete %s:%s: %w", facet, value, err)
	}
	return res, nil
}

// commit logs c and publishes next. Callers hold s.mu.
func (s *Store) commit(c *change, next *Snapshot, keyed *keyEntry) error {
	if s.wal != nil {
		if err := s.wal.append(c, keyed); err != nil {
			return err
		}
		if s.wal.bytes >= s.cfg.SnapshotLogBytes {
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
	}
	s.cur.Store(next)
	return nil
}

// snapshotter writes a snapshot every SnapshotInterval, or sooner when the
// log grows past SnapshotLogBytes, until Close.
func (s *Store) snapshotter() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.SnapshotInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.kick:
		}
		s.Checkpoint() //nolint:errcheck // reported through OnSnapshot

	}
}

// Checkpoint writes the current snapshot durably and deletes the log files
// it makes redundant, when there are changes since the last snapshot, and
// reports it to OnSnapshot.
// Uploads continue meanwhile: the log is switched to a new file under the
// mutation lock, and the snapshot, which is immutable, is written outside
// it.
func (s *Store) Checkpoint() error {
	if s.wal == nil {
		return nil
	}
	s.ckMu.Lock()
	defer s.ckMu.Unlock()
	ev, err := s.checkpoint()
	if ev != nil && s.cfg.OnSnapshot != nil {
		ev.Err = err
		s.cfg.OnSnapshot(*ev)
	}
	return err
}

// checkpoint is Checkpoint under ckMu; the event is nil when there was
// nothing to do.
func (s *Store) checkpoint() (*SnapshotEvent, error) {
	start := time.Now()
	s.mu.Lock()
	snap := s.cur.Load()
	if snap.version == s.snapVer || s.wal.failed != nil {
		s.mu.Unlock()
		return nil, nil
	}
	ev := &SnapshotEvent{Version: snap.version, Segments: snap.Len(), Users: snap.dict.Len()}
	// A retry after a failed snapshot write finds the log already in the
	// file this snapshot begins (and appending to it): creating that file
	// again would truncate it under the records it holds.
	if s.wal.name != walName(snap.version+1) {
		if err := s.wal.create(snap.version + 1); err != nil {
			s.mu.Unlock()
			return ev, err
		}
	}
	// The files the snapshot replaces go, and with them the idempotency
	// keys they hold: the new file must hold them first. A file found
	// already there may not (recovery recreates one whose header a crash
	// tore), and a failed write is tried again by the next checkpoint.
	if !s.wal.keysLogged {
		if err := s.wal.appendKeys(snap.version, &s.keys); err != nil {
			s.mu.Unlock()
			return ev, fmt.Errorf("segments: %w", err)
		}
	}
	older := s.wal.files[:len(s.wal.files)-1]
	s.mu.Unlock()

	if err := WriteSnapshot(s.cfg.Dir, snap); err != nil {
		return ev, err
	}
	s.snapVer = snap.version
	var removed int64
	for _, name := range older {
		path := filepath.Join(s.cfg.Dir, name)
		if fi, err := os.Stat(path); err == nil {
			removed += fi.Size()
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return ev, fmt.Errorf("segments: removing %s: %w", name, err)
		}
	}
	if err := atomicfile.SyncDir(s.cfg.Dir); err != nil {
		return ev, fmt.Errorf("segments: %w", err)
	}
	s.mu.Lock()
	s.wal.files = s.wal.files[len(older):]
	s.wal.bytes -= removed
	s.mu.Unlock()
	ev.LogFilesRemoved, ev.Took = len(older), time.Since(start)
	return ev, nil
}

// Close stops the snapshotter and waits for it, writes a last snapshot
// when the log holds changes (so the next start replays nothing), and
// closes the log. The current snapshot stays readable; later mutations
// fail with ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	if s.wal == nil {
		return nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	err := s.Checkpoint()
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(err, s.wal.close())
}

// keyLog remembers the results of recent uploads by idempotency key, also
// across restarts for the uploads still in the log. It is used under
// Store.mu.
type keyLog struct {
	m     map[string]keyEntry
	order []string
}

// maxKeys is how many idempotency keys the store remembers, the most
// recent ones (a variable for tests).
var maxKeys = 4096

type keyEntry struct {
	facet, value string
	mode         Mode
	res          Result
	// sum is the hash of the upload's ids (Upload.sum); 0 when unknown:
	// a key logged before sums were, or known only from its change
	// record, whose keys record a crash cut off.
	sum uint64
}

// check returns the remembered result of key, ok when there is one; an
// error when key names a different upload: another segment or mode, or
// other ids (sum, when both sums are known).
func (k *keyLog) check(key, facet, value string, mode Mode, sum uint64) (Result, bool, error) {
	if key == "" {
		return Result{}, false, nil
	}
	e, ok := k.m[key]
	if !ok {
		return Result{}, false, nil
	}
	if e.facet != facet || e.value != value || e.mode != mode {
		return Result{}, false, fmt.Errorf("%w: %q was %s %s:%s", ErrKeyConflict, key, e.mode, e.facet, e.value)
	}
	if e.sum != 0 && sum != 0 && e.sum != sum {
		return Result{}, false, fmt.Errorf("%w: %q was %s %s:%s of other ids, or of the same in another order (%d of them; a retry must send them as the first time)", ErrKeyConflict, key, e.mode, e.facet, e.value, e.res.IDs)
	}
	res := e.res
	res.Replayed = true
	return res, true, nil
}

// put remembers key's result as the most recent. Only replay puts a key
// again: every keyed change (its change record, then its keys record),
// and a key that a file recovery recreated, or a failed keys write, left
// before the record of all the keys a checkpoint writes. Such a key moves
// to the end, so that replay rebuilds the order the store had.
func (k *keyLog) put(key string, e keyEntry) {
	if key == "" {
		return
	}
	if k.m == nil {
		k.m = map[string]keyEntry{}
	}
	if _, ok := k.m[key]; ok {
		i := len(k.order) - 1 // searched from the end: replay puts a keyed change's key again at once
		for k.order[i] != key {
			i--
		}
		k.order = slices.Delete(k.order, i, i+1)
	}
	k.order = append(k.order, key)
	k.m[key] = e
	if len(k.order) > maxKeys {
		delete(k.m, k.order[0])
		k.order = k.order[1:]
	}
}
