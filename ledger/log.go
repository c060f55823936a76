package ledger

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/personad/personad/internal/atomicfile"
)

// The durable log: segments log-<seq>.wal of framed records, and
// checkpoints checkpoint-<seq>.ckpt that stand for every segment below
// seq. A frame is
//
//	uint32 length of body | uint32 CRC-32C of body | body = type byte, payload
//
// little endian. Replay stops at the first frame that is short or fails
// its CRC; in the newest segment that is a torn tail, cut off, and
// anywhere else it is corruption, reported as ErrCorrupt.

// Record types.
const (
	recCampaign  byte = iota + 1 // key, id[, currency]: again when the currency changes
	recReserve                   // bid, reservation
	recNotice                    // kind, bid, price, at
	recCeiling                   // key, day, day ceiling, total ceiling (absolute)
	recPhantom                   // key, day, amount counted as spent at recovery
	recRate                      // key, rate threshold
	recProfile                   // key, 24 float32 (key profileGlobal: the ledger's own)
	recCampState                 // checkpoint: a campaign's counters
	recResv                      // checkpoint: a remembered bid
	recFreq                      // checkpoint: a frequency entry
	recEnd                       // checkpoint: trailer, record count
)

const (
	frameHeader   = 8
	maxFrame      = 1 << 16
	profileGlobal = math.MaxUint32
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// frame appends one framed record to b: typ and the payload written by
// body (which appends to its argument).
func frame(b []byte, typ byte, body func([]byte) []byte) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0, typ)
	b = body(b)
	n := len(b) - start - frameHeader
	binary.LittleEndian.PutUint32(b[start:], uint32(n))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(b[start+frameHeader:], castagnoli))
	return b
}

var (
	le = binary.LittleEndian
	be = binary.BigEndian
)

func encReserve(b []byte, bid uint64, r *resv) []byte {
	b = le.AppendUint64(b, bid)
	b = le.AppendUint32(b, r.key)
	b = le.AppendUint64(b, r.user)
	b = le.AppendUint64(b, uint64(r.price))
	b = le.AppendUint64(b, uint64(r.at))
	b = le.AppendUint64(b, uint64(r.deadline))
	b = le.AppendUint32(b, uint32(r.day))
	return le.AppendUint32(b, r.fexp)
}

func encResv(b []byte, bid uint64, r *resv) []byte {
	b = encReserve(b, bid, r)
	b = le.AppendUint64(b, uint64(r.billed))
	return append(b, r.state)
}

// reader decodes a payload; a short payload sets bad.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) u8() byte {
	if len(r.b) < 1 {
		r.bad = true
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.bad = true
		return 0
	}
	v := le.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.bad = true
		return 0
	}
	v := le.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) i64() int64 { return int64(r.u64()) }

func (r *reader) str(n int) string {
	if len(r.b) < n {
		r.bad = true
		return ""
	}
	v := string(r.b[:n])
	r.b = r.b[n:]
	return v
}

func decReserve(rd *reader) (uint64, resv) {
	bid := rd.u64()
	var r resv
	r.key = rd.u32()
	r.user = rd.u64()
	r.price = rd.i64()
	r.at = rd.i64()
	r.deadline = rd.i64()
	r.day = int32(rd.u32())
	r.fexp = rd.u32()
	return bid, r
}

// journal is the append side of the log: records are added to a buffer
// under mu (callers may hold a table lock: mu is always innermost) and a
// writer goroutine writes them to the file in batches, at most one write
// per SyncInterval. It fsyncs only when a waiter needs a record it wrote
// (wait), when written records have waited MaxSyncDelay, and before a
// rotation or Close: a write alone survives the process's crash (kill -9),
// and an fsync per batch kept a P in a system call for a fifth to a third
// of its time under bid load (BENCHMARKS.md §2).
type journal struct {
	l   *Ledger
	dir string

	mu       sync.Mutex
	buf      []byte
	spare    []byte
	appended uint64        // records added
	written  uint64        // records written to the file (set by the writer only)
	durable  uint64        // records written and fsynced
	want     uint64        // the highest record a waiter has waited for
	syncs    uint64        // fsyncs of segments begun (tests count them)
	synced   chan struct{} // closed when durable advances or err is set
	err      error         // sticky error (a failed fsync): the log is unusable
	// werr is the last write's error while records it could not write
	// wait in buf for the next batch; failedAt is the last record that
	// write held: a waiter for a record up to it is told werr.
	werr          error
	failedAt      uint64
	fails         uint64       // writes that failed (wait tells its own from earlier ones)
	writeFailures atomic.Int64 // writes that failed (Stats)
	dirty         time.Time    // the writer's: when the first unsynced write was made

	kick chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
	f    *os.File
	seg  uint64 // current segment number
	size int64
	// rotating is set (by the writer only) from the moment the current
	// segment is durable and over CompactBytes until the next one is
	// made: no record is written meanwhile, so that none goes to a
	// segment a newer one follows.
	rotating   bool
	compacting atomic.Bool
	compactErr atomic.Pointer[error]
}

func segName(n uint64) string  { return fmt.Sprintf("log-%016x.wal", n) }
func ckptName(n uint64) string { return fmt.Sprintf("checkpoint-%016x.ckpt", n) }

// listDir returns the checkpoint and segment numbers in dir, ascending.
func listDir(dir string) (ckpts, segs []uint64, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range ents {
		var n uint64
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".tmp"):
			os.Remove(filepath.Join(dir, name)) // an interrupted checkpoint
		case strings.HasPrefix(name, "checkpoint-"):
			if _, err := fmt.Sscanf(name, "checkpoint-%016x.ckpt", &n); err == nil {
				ckpts = append(ckpts, n)
			}
		case strings.HasPrefix(name, "log-"):
			if _, err := fmt.Sscanf(name, "log-%016x.wal", &n); err == nil {
				segs = append(segs, n)
			}
		}
	}
	slices.Sort(ckpts)
	slices.Sort(segs)
	return ckpts, segs, nil
}

// openJournal replays dir into l (checkpoint, then newer segments, cutting
// a torn tail), counts as spent what the log cannot prove unspent, and
// starts a new segment and the writer goroutine.
func openJournal(l *Ledger, dir string) (*journal, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	ckpts, segs, err := listDir(dir)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	var base uint64
	if len(ckpts) > 0 {
		base = ckpts[len(ckpts)-1]
		if err := loadFile(l, filepath.Join(dir, ckptName(base)), true, false); err != nil {
			return nil, err
		}
	}
	next := base
	for i, s := range segs {
		if s < base {
			continue
		}
		last := i == len(segs)-1
		if err := loadFile(l, filepath.Join(dir, segName(s)), false, last); err != nil {
			return nil, err
		}
		next = s + 1
	}
	j := &journal{
		l:      l,
		dir:    dir,
		synced: make(chan struct{}),
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		seg:    next,
	}
	if err := j.openSegment(); err != nil {
		return nil, err
	}
	for _, s := range segs {
		if s < base {
			os.Remove(filepath.Join(dir, segName(s)))
		}
	}
	for _, c := range ckpts {
		if c < base {
			os.Remove(filepath.Join(dir, ckptName(c)))
		}
	}
	j.recover()
	l.indexDue()
	j.wg.Add(1)
	go j.writer()
	if err := j.wait(context.Background(), j.appendedSeq()); err != nil {
		j.close()
		return nil, err
	}
	return j, nil
}

// recover counts as spent, for each campaign, what its durable leases
// cover beyond the spend the log replayed: reservations made under a
// lease whose records a crash lost. A lost reservation raised both the
// day and the total counter, and neither could pass its lease, so the
// lost amount is at most the smallest headroom of the leases in force;
// that much is counted, on both counters. Never under-count spend.
func (j *journal) recover() {
	for _, c := range *j.l.campaigns.Load() {
		phantom := int64(-1)
		cd := c.ceilDay.Load()
		// Day words keep the day modulo 2^16, which is all on and addDay
		// compare.
		day := int32(dayOfWord(cd))
		// A day ceiling of zero bounds nothing: a campaign without a
		// daily budget logs one with every total lease, and its day
		// spend, replayed, may be zero because the crash lost all of it.
		// (A campaign with a daily budget could not spend under a zero
		// day ceiling; ignoring it then over-counts: the safe side.)
		if cd&usedMask != 0 {
			if used, ok := on(c.dayUsed.Load(), day); ok && int64(cd&usedMask) >= used {
				phantom = int64(cd&usedMask) - used
			}
		}
		if ct, used := c.ceilTotal.Load(), c.totalUsed.Load(); ct != 0 && ct >= used {
			if phantom < 0 || ct-used < phantom {
				phantom = ct - used
			}
		}
		if phantom <= 0 {
			continue
		}
		j.l.applyPhantom(c, day, phantom)
		j.append(recPhantom, func(b []byte) []byte {
			b = le.AppendUint32(b, c.key)
			b = le.AppendUint32(b, uint32(day))
			return le.AppendUint64(b, uint64(phantom))
		})
	}
}

func (l *Ledger) applyPhantom(c *Campaign, day int32, v int64) {
	c.addSpend(day, v)
	c.settledTotal.Add(v)
	addDay(&c.settledDay, day, v)
	c.crashMicros.Add(v)
}

func (j *journal) openSegment() error {
	f, err := j.createSegment(j.seg)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	j.f, j.size = f, 0
	return nil
}

// createSegment creates segment n, empty, and fsyncs the directory so
// that its name is durable. When either fails (ENOSPC: no inode left, or
// a directory that cannot grow) it removes what it may have made, and
// fsyncs the directory again, so that a restart finds no empty segment
// newer than the current one: replay cuts a torn tail off the newest
// segment only, and takes a torn frame in any other for ErrCorrupt. (The
// log also writes nothing to the current segment until the next one is
// made, rotating, so one a failed removal leaves replays as empty.)
func (j *journal) createSegment(n uint64) (*os.File, error) {
	name := filepath.Join(j.dir, segName(n))
	f, err := createFile(name)
	if err == nil {
		if err = syncDir(j.dir); err == nil {
			return f, nil
		}
		f.Close()
		err = fmt.Errorf("creating %s: %w", name, err)
	}
	if rerr := os.Remove(name); rerr == nil {
		if serr := syncDir(j.dir); serr != nil {
			err = fmt.Errorf("%w; removing it again: %w", err, serr)
		}
	} else if !errors.Is(rerr, fs.ErrNotExist) {
		err = fmt.Errorf("%w; removing it again: %w", err, rerr)
	}
	return nil, err
}

// append adds one record and returns its sequence number.
func (j *journal) append(typ byte, body func([]byte) []byte) uint64 {
	j.mu.Lock()
	j.buf = frame(j.buf, typ, body)
	j.appended++
	seq := j.appended
	j.mu.Unlock()
	j.poke()
	return seq
}

func (j *journal) poke() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

func (j *journal) appendedSeq() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.appended
}

// appendReserve and appendNotice frame in place rather than through a
// closure, so the hot path does not allocate.
func (j *journal) appendReserve(bid uint64, r *resv) uint64 {
	j.mu.Lock()
	start := len(j.buf)
	j.buf = append(j.buf, 0, 0, 0, 0, 0, 0, 0, 0, recReserve)
	j.buf = encReserve(j.buf, bid, r)
	j.seal(start)
	seq := j.appended
	j.mu.Unlock()
	j.poke()
	return seq
}

func (j *journal) appendNotice(kind byte, bid uint64, price, at int64) uint64 {
	j.mu.Lock()
	start := len(j.buf)
	j.buf = append(j.buf, 0, 0, 0, 0, 0, 0, 0, 0, recNotice, kind)
	j.buf = le.AppendUint64(j.buf, bid)
	j.buf = le.AppendUint64(j.buf, uint64(price))
	j.buf = le.AppendUint64(j.buf, uint64(at))
	j.seal(start)
	seq := j.appended
	j.mu.Unlock()
	j.poke()
	return seq
}

func (j *journal) seal(start int) {
	n := len(j.buf) - start - frameHeader
	le.PutUint32(j.buf[start:], uint32(n))
	le.PutUint32(j.buf[start+4:], crc32.Checksum(j.buf[start+frameHeader:], castagnoli))
	j.appended++
}

func (j *journal) appendCampaign(key uint32, id, currency string) uint64 {
	return j.append(recCampaign, func(b []byte) []byte { return encCampaign(b, key, id, currency) })
}

// encCampaign appends a campaign record's payload. The currency comes
// last, and only when known, where logs written before it was recorded
// end: such a record replays as a campaign without one, and a log from
// now replays in a build from before (which reads the key and id, and
// takes a record for a key it has as the same campaign).
func encCampaign(b []byte, key uint32, id, currency string) []byte {
	b = le.AppendUint32(b, key)
	b = le.AppendUint32(b, uint32(len(id)))
	b = append(b, id...)
	if currency != "" {
		b = append(b, byte(len(currency)))
		b = append(b, currency...)
	}
	return b
}

func (j *journal) appendCeiling(c *Campaign, day int32, dayCeil, totalCeil int64) uint64 {
	return j.append(recCeiling, func(b []byte) []byte {
		b = le.AppendUint32(b, c.key)
		b = le.AppendUint32(b, uint32(day))
		b = le.AppendUint64(b, uint64(dayCeil))
		return le.AppendUint64(b, uint64(totalCeil))
	})
}

// wait returns once record seq is durable, the log failed, or ctx is done.
// It raises want before it blocks, under mu, where the writer decides
// whether to fsync: the writer either sees it there, or decided before it
// and then finds the poke that follows and decides again. want stays
// raised if ctx ends first, so the record is still synced promptly.
//
// While writes fail, it returns the write error once a write that held
// seq failed after the wait began: each wait has its record tried at
// least once more (a notice sent again after space is freed is then
// acknowledged), but never waits out a disk that stays full.
func (j *journal) wait(ctx context.Context, seq uint64) error {
	start := uint64(0)
	for first := true; ; first = false {
		j.mu.Lock()
		durable, err, ch := j.durable, j.err, j.synced
		if durable < seq && j.want < seq {
			j.want = seq
		}
		if first {
			start = j.fails
		}
		if err == nil && j.werr != nil && seq <= j.failedAt && j.fails > start {
			err = j.werr
		}
		j.mu.Unlock()
		if durable >= seq {
			return nil
		}
		if err != nil {
			return err
		}
		j.poke()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// writer is the log's goroutine: it writes whatever accumulated, at most
// once per SyncInterval so that a busy ledger batches, and fsyncs when
// flush finds it due, or when the oldest unsynced write is MaxSyncDelay
// old (the lazy timer) though nothing else came.
func (j *journal) writer() {
	defer j.wg.Done()
	var last time.Time
	// One timer each for the writer's life (since Go 1.23 a Reset or
	// Stopped timer never delivers a stale tick), not one per batch.
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	lazy := time.NewTimer(time.Hour)
	lazy.Stop()
	defer lazy.Stop()
	var armed time.Time // when lazy fires; zero when stopped
	defer j.flush(true) // on stop: write and fsync what is left
	for {
		select {
		case <-j.kick:
		case <-lazy.C:
			armed = time.Time{}
		case <-j.stop:
			return
		}
		if d := j.l.cfg.SyncInterval - time.Since(last); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-j.stop:
				return
			}
		}
		last = time.Now()
		j.flush(false)
		if j.size >= j.l.cfg.CompactBytes && !j.compacting.Load() {
			j.rotate()
		}
		j.mu.Lock()
		retry := j.werr != nil
		j.mu.Unlock()
		switch at := j.dirty.Add(j.l.cfg.MaxSyncDelay); {
		case retry:
			// Records wait unwritten: try again soon even if nothing
			// else comes, so that an idle ledger finds the space freed
			// (and its LogErr clears) without a notice to poke it.
			if armed.IsZero() || time.Until(armed) > writeRetry {
				armed = time.Now().Add(writeRetry)
				lazy.Reset(writeRetry)
			}
		case j.dirty.IsZero():
			if !armed.IsZero() {
				lazy.Stop()
				armed = time.Time{}
			}
		case at != armed:
			lazy.Reset(time.Until(at))
			armed = at
		}
	}
}

// flush writes the buffer, then fsyncs when force is set, a waiter wants
// a record written but not yet durable, or the oldest unsynced write is
// MaxSyncDelay old. The decision is made under mu, where wait raises want.
func (j *journal) flush(force bool) {
	j.mu.Lock()
	b, seq, failed := j.buf, j.appended, j.err != nil
	j.buf = j.spare[:0]
	j.mu.Unlock()
	var err error
	sticky := false
	// A change of the log's state (writes began to fail, or work again)
	// is told to Config.LogTrouble once the lock is let go.
	var report, recovered bool
	var reportErr error
	defer func() {
		if cb := j.l.cfg.LogTrouble; cb != nil && (report || recovered) {
			cb(reportErr)
		}
	}()
	// A new segment due (rotate) is made before any record is written,
	// even with none waiting, so that an idle log's retry clears the
	// trouble; a failure is like a refused write.
	started := false
	if !failed && j.rotating {
		err = j.nextSegment()
		started = err == nil
	}
	if !failed && err == nil && len(b) > 0 {
		var n int
		n, err = writeFile(j.f, b)
		if err == nil {
			j.size += int64(n)
			if j.dirty.IsZero() {
				j.dirty = time.Now()
			}
		} else {
			err = fmt.Errorf("%w: write: %w", ErrNotDurable, err)
			// A write the disk refused (full, or the file system
			// gone read-only) may have left part of a frame: cut it
			// off, so that the records are written again whole after
			// the last good frame, with the next batch. A log that
			// cannot be cut back stays failed: a torn frame followed
			// by good ones is corruption at the next start.
			if n > 0 {
				if terr := j.f.Truncate(j.size); terr != nil {
					err, sticky = fmt.Errorf("%w; cutting off the part written: %w; %s", err, terr, givenUp), true
				} else if _, serr := j.f.Seek(j.size, io.SeekStart); serr != nil {
					err, sticky = fmt.Errorf("%w; cutting off the part written: %w; %s", err, serr, givenUp), true
				}
			}
		}
	}
	if err != nil {
		j.writeFailures.Add(1) // one a batch: the segment's making, or the write
	}
	j.mu.Lock()
	switch {
	case err == nil:
		j.spare = b[:0]
		if j.werr != nil && !failed && (len(b) > 0 || started) {
			j.werr, j.failedAt, recovered = nil, 0, true
		}
	case sticky || len(b)+len(j.buf) > maxUnwritten:
		j.spare = b[:0]
		if !sticky {
			err = fmt.Errorf("%w; %d bytes of records wait unwritten, over %d: %s", err, len(b)+len(j.buf), maxUnwritten, givenUp)
		}
		report, reportErr = true, err
		j.failLocked(err)
		j.werr = nil
	default:
		// Keep the unwritten records, in order, before those added
		// since, and wake their waiters with the error.
		report, reportErr = j.werr == nil, err
		j.werr, j.failedAt = err, seq
		j.fails++
		j.buf, j.spare = append(b, j.buf...), j.buf[:0]
		close(j.synced)
		j.synced = make(chan struct{})
	}
	if j.err == nil && j.werr == nil {
		j.written = seq
	}
	due := j.err == nil && j.written > j.durable &&
		(force || j.want > j.durable || time.Since(j.dirty) >= j.l.cfg.MaxSyncDelay)
	if due {
		j.syncs++
	}
	written := j.written
	j.mu.Unlock()
	if !due {
		return
	}
	err = fsyncFile(j.f)
	j.dirty = time.Time{}
	j.mu.Lock()
	if err != nil {
		err = fmt.Errorf("%w: fsync %s: %w; %s", ErrNotDurable, j.f.Name(), err, givenUp)
		report, recovered, reportErr = true, false, err
		j.failLocked(err)
		j.werr = nil
	} else if j.err == nil {
		j.durable = written
		close(j.synced)
		j.synced = make(chan struct{})
	}
	j.mu.Unlock()
}

// failLocked makes err the log's sticky error and wakes the waiters.
func (j *journal) failLocked(err error) {
	if j.err != nil {
		return
	}
	j.err = err
	close(j.synced)
	j.synced = make(chan struct{})
}

// rotate starts a new segment and compacts everything before it into a
// checkpoint in the background. While the log is in trouble it does
// nothing: the batch has made its one attempt, and a rotation waits for
// a write that works.
func (j *journal) rotate() {
	if j.trouble() != nil {
		return
	}
	// The old segment must be durable before any record of the new one
	// can be: replay takes a torn frame anywhere but in the newest
	// segment for corruption.
	j.flush(true)
	if j.trouble() != nil {
		return
	}
	// flush makes the new segment, then writes what came since into it.
	j.rotating = true
	j.flush(false)
}

// nextSegment makes the segment after the current one, whose records
// are durable, and starts the compaction of everything before it. On
// failure the current segment stays, with nothing more written to it,
// and rotating stays set: the next flush tries again.
func (j *journal) nextSegment() error {
	f, err := j.createSegment(j.seg + 1)
	if err != nil {
		return fmt.Errorf("%w: new segment: %w", ErrNotDurable, err)
	}
	j.f.Close()
	j.f, j.size, j.rotating = f, 0, false
	j.seg++
	j.compacting.Store(true)
	j.wg.Add(1)
	go func(upto uint64) {
		defer j.wg.Done()
		defer j.compacting.Store(false)
		if err := compact(j.l.cfg, j.dir, upto); err != nil {
			j.compactErr.Store(&err)
		}
	}(j.seg)
	return nil
}

func (j *journal) close() error {
	close(j.stop)
	j.wg.Wait()
	j.mu.Lock()
	err := j.err
	if err == nil {
		err = j.werr // records the last write could not write are lost
	}
	j.mu.Unlock()
	if cerr := j.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("ledger: %w", cerr)
	}
	if p := j.compactErr.Load(); p != nil && err == nil {
		err = *p
	}
	return err
}

// compact writes checkpoint-upto from the previous checkpoint and the
// segments below upto, by replaying them into a scratch ledger: the
// checkpoint is derived from the log alone, never from live memory, so it
// needs no pause. Temp file, fsync, rename, directory fsync; then the
// files it replaces are removed.
func compact(cfg Config, dir string, upto uint64) error {
	scratch := DefaultConfig()
	scratch.Manual = true
	scratch.Location = cfg.Location
	scratch.Retention = cfg.Retention
	scratch.FrequencyShards = cfg.FrequencyShards
	scratch.MaxFrequencyEntries = math.MaxInt
	scratch.NoticeKey = make([]byte, 16)
	s, err := New(scratch)
	if err != nil {
		return err
	}
	defer s.Close()
	ckpts, segs, err := listDir(dir)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	var base uint64
	for _, c := range ckpts {
		if c < upto {
			base = c
		}
	}
	if base > 0 {
		if err := loadFile(s, filepath.Join(dir, ckptName(base)), true, false); err != nil {
			return err
		}
	}
	for _, n := range segs {
		if n >= base && n < upto {
			if err := loadFile(s, filepath.Join(dir, segName(n)), false, false); err != nil {
				return err
			}
		}
	}
	s.forget(s.lastSeen)
	if err := writeCheckpoint(s, dir, upto); err != nil {
		return err
	}
	for _, n := range segs {
		if n < upto {
			os.Remove(filepath.Join(dir, segName(n)))
		}
	}
	for _, c := range ckpts {
		if c < upto {
			os.Remove(filepath.Join(dir, ckptName(c)))
		}
	}
	return nil
}

// writeCheckpoint writes l's whole state as checkpoint-n.
func writeCheckpoint(l *Ledger, dir string, n uint64) error {
	tmp := filepath.Join(dir, ckptName(n)+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var b []byte
	count := uint64(0)
	emit := func(typ byte, body func([]byte) []byte) {
		b = frame(b[:0], typ, body)
		w.Write(b)
		count++
	}
	for _, c := range *l.campaigns.Load() {
		emit(recCampaign, func(b []byte) []byte { return encCampaign(b, c.key, c.id, c.Currency()) })
		emit(recCampState, func(b []byte) []byte {
			b = le.AppendUint32(b, c.key)
			for _, v := range []uint64{
				c.dayUsed.Load(), uint64(c.totalUsed.Load()), uint64(c.reserved.Load()),
				c.ceilDay.Load(), uint64(c.ceilTotal.Load()), c.settledDay.Load(),
				uint64(c.settledTotal.Load()), uint64(c.crashMicros.Load()),
				uint64(c.lateMicros.Load()), c.rate.Load(),
			} {
				b = le.AppendUint64(b, v)
			}
			return b
		})
	}
	l.pace.each(func(key uint32, prof *[24]float64) {
		emit(recProfile, func(b []byte) []byte { return encProfile(b, key, prof) })
	})
	for i := range l.resv.shards {
		s := &l.resv.shards[i]
		s.mu.Lock()
		for bid, r := range s.m {
			emit(recResv, func(b []byte) []byte { return encResv(b, bid, &r) })
		}
		s.mu.Unlock()
	}
	l.freq.each(uint32(l.lastSeen/int64(time.Second)), func(k freqKey, e *freqEntry) {
		emit(recFreq, func(b []byte) []byte {
			b = le.AppendUint64(b, k.user)
			b = le.AppendUint32(b, k.camp)
			for i := range e.exp {
				b = le.AppendUint32(b, e.exp[i])
			}
			for i := range e.n {
				b = append(b, byte(e.n[i]), byte(e.n[i]>>8))
			}
			return b
		})
	})
	emit(recEnd, func(b []byte) []byte { return le.AppendUint64(b, count) })
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, ckptName(n)))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ledger: checkpoint: %w", err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	return nil
}

func encProfile(b []byte, key uint32, prof *[24]float64) []byte {
	b = le.AppendUint32(b, key)
	for _, v := range prof {
		b = le.AppendUint32(b, math.Float32bits(float32(v)))
	}
	return b
}

// loadFile replays one checkpoint or segment into l. A checkpoint must be
// whole (it was renamed into place after fsync). In the newest segment
// (tail) a bad frame is a torn write: the file is truncated there.
func loadFile(l *Ledger, path string, checkpoint, tail bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	good, ended, err := replay(l, data, checkpoint)
	if err != nil {
		return fmt.Errorf("ledger: %s: %w", filepath.Base(path), err)
	}
	switch {
	case checkpoint && !ended:
		return fmt.Errorf("ledger: %s: %w: no trailer", filepath.Base(path), ErrCorrupt)
	case good < len(data) && !tail:
		return fmt.Errorf("ledger: %s: %w at offset %d", filepath.Base(path), ErrCorrupt, good)
	case good < len(data):
		if err := os.Truncate(path, int64(good)); err != nil {
			return fmt.Errorf("ledger: truncate torn tail: %w", err)
		}
	}
	if tail {
		// What was replayed may be in the page cache only (written by a
		// process that crashed before its fsync), and so may the cut:
		// both must be durable before the new segment's records, which
		// build on them, can be, or a power loss could leave a torn frame
		// in a segment that is no longer the newest (ErrCorrupt at Open),
		// or lose records that later durable ones depend on.
		if err := syncPath(path); err != nil {
			return fmt.Errorf("ledger: sync replayed segment: %w", err)
		}
	}
	return nil
}

// fsyncFile is (*os.File).Sync; tests watch it.
var fsyncFile = (*os.File).Sync

// writeFile is (*os.File).Write, the log's writes; tests make it fail.
var writeFile = (*os.File).Write

// createFile creates (or empties) a log segment; tests make it fail.
var createFile = func(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
}

// syncDir is atomicfile.SyncDir for the log's segments; tests make it
// fail.
var syncDir = atomicfile.SyncDir

// maxUnwritten bounds the records kept in memory while the log's writes
// fail: past it the log is given up (as after a failed fsync) rather
// than let bids grow the buffer without end on a full disk.
const maxUnwritten = 64 << 20

// givenUp ends the error of a log given up until a restart (a failed
// fsync, a torn write it could not cut off, too much waiting unwritten),
// so that whoever reads it (LogTrouble's log line, LogErr, /healthz)
// knows that waiting for space will not do.
const givenUp = "the log is given up until a restart"

// writeRetry is how soon the writer tries again, unprompted, to write
// records a failed write left waiting; tests lengthen it.
var writeRetry = time.Second

// trouble returns the log's trouble: the sticky error, else the last write's
// error while records it could not write wait; nil when writes work.
func (j *journal) trouble() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return j.err
	}
	return j.werr
}

func syncPath(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = fsyncFile(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// replay applies the frames of data to l. It returns how many bytes were
// whole frames, and whether a checkpoint trailer was seen; err is set only
// for frames that pass their CRC yet make no sense (a bug or a forged
// file), never for a torn tail.
func replay(l *Ledger, data []byte, checkpoint bool) (good int, ended bool, err error) {
	var count uint64
	for off := 0; off < len(data); {
		if len(data)-off < frameHeader {
			return off, false, nil
		}
		n := int(le.Uint32(data[off:]))
		if n < 1 || n > maxFrame || len(data)-off-frameHeader < n {
			return off, false, nil
		}
		body := data[off+frameHeader : off+frameHeader+n]
		if crc32.Checksum(body, castagnoli) != le.Uint32(data[off+4:]) {
			return off, false, nil
		}
		if body[0] == recEnd {
			rd := reader{b: body[1:]}
			if checkpoint && rd.u64() == count && !rd.bad {
				return off + frameHeader + n, true, nil
			}
			return off, false, ErrCorrupt
		}
		if err := l.applyRecord(body[0], body[1:]); err != nil {
			return off, false, err
		}
		count++
		off += frameHeader + n
	}
	return len(data), false, nil
}

var errRecord = errors.New("malformed record")

// applyRecord applies one decoded record to l (open, compaction).
func (l *Ledger) applyRecord(typ byte, payload []byte) error {
	rd := reader{b: payload}
	switch typ {
	case recCampaign:
		key := rd.u32()
		id := rd.str(int(rd.u32()))
		currency := ""
		if len(rd.b) > 0 {
			currency = rd.str(int(rd.u8()))
		}
		if rd.bad || id == "" || len(rd.b) > 0 {
			return errRecord
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		list := *l.campaigns.Load()
		var c *Campaign
		switch {
		case int(key) == len(list):
			if _, dup := l.byID[id]; dup {
				return fmt.Errorf("%w: campaign %q twice", ErrCorrupt, id)
			}
			c = l.addCampaignLocked(id)
		case int(key) < len(list) && list[key].id == id:
			c = list[key]
		default:
			return fmt.Errorf("%w: campaign key %d", ErrCorrupt, key)
		}
		if currency != "" {
			c.currency.Store(&currency)
		}
		return nil
	case recReserve:
		bid, r := decReserve(&rd)
		c := l.campaignByKey(r.key)
		if rd.bad || c == nil || bid == 0 || r.price <= 0 || r.price > MaxMicros {
			return errRecord
		}
		l.note(r.at)
		s := l.resv.shard(bid)
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.m[bid]; ok {
			return nil
		}
		if r.fexp != 0 {
			l.freq.put(freqKey{r.user, r.key}, r.at, r.fexp)
			r.state |= fFreq
		}
		s.m[bid] = r
		c.addSpend(r.day, r.price)
		c.reserved.Add(r.price)
		l.stats.reserved.Add(1) // as its notices' replay counts them (Stats)
		return nil
	case recNotice:
		kind, bid, price, at := rd.u8(), rd.u64(), rd.i64(), rd.i64()
		if rd.bad || kind < noticeWin || kind > noticeExpire {
			return errRecord
		}
		l.note(at)
		s := l.resv.shard(bid)
		s.mu.Lock()
		defer s.mu.Unlock()
		r, ok := s.m[bid]
		if !ok {
			return nil // forgotten past retention
		}
		if _, err := l.apply(&r, kind, price, at); err != nil && !errors.Is(err, ErrPrice) && !errors.Is(err, ErrConflict) {
			return err
		}
		s.m[bid] = r
		return nil
	case recCeiling:
		key, day, dc, tc := rd.u32(), int32(rd.u32()), rd.i64(), rd.i64()
		c := l.campaignByKey(key)
		if rd.bad || c == nil || dc < 0 || dc > usedMask || tc < 0 {
			return errRecord
		}
		c.ceilDay.Store(pack(day, dc))
		c.ceilTotal.Store(tc)
		return nil
	case recPhantom:
		key, day, v := rd.u32(), int32(rd.u32()), rd.i64()
		c := l.campaignByKey(key)
		if rd.bad || c == nil || v < 0 || v > usedMask {
			return errRecord
		}
		l.applyPhantom(c, day, v)
		return nil
	case recRate:
		key, rate := rd.u32(), rd.u64()
		c := l.campaignByKey(key)
		if rd.bad || c == nil || rate > rateOne {
			return errRecord
		}
		c.rate.Store(rate)
		return nil
	case recProfile:
		key := rd.u32()
		var prof [24]float64
		for i := range prof {
			prof[i] = float64(math.Float32frombits(rd.u32()))
		}
		if rd.bad {
			return errRecord
		}
		if key != profileGlobal && l.campaignByKey(key) == nil {
			return errRecord
		}
		l.pace.setProfile(key, &prof)
		return nil
	case recCampState:
		key := rd.u32()
		c := l.campaignByKey(key)
		var v [10]uint64
		for i := range v {
			v[i] = rd.u64()
		}
		if rd.bad || c == nil || v[9] > rateOne {
			return errRecord
		}
		c.dayUsed.Store(v[0])
		c.totalUsed.Store(int64(v[1]))
		c.reserved.Store(int64(v[2]))
		c.ceilDay.Store(v[3])
		c.ceilTotal.Store(int64(v[4]))
		c.settledDay.Store(v[5])
		c.settledTotal.Store(int64(v[6]))
		c.crashMicros.Store(int64(v[7]))
		c.lateMicros.Store(int64(v[8]))
		c.rate.Store(v[9])
		return nil
	case recResv:
		bid, r := decReserve(&rd)
		r.billed = rd.i64()
		r.state = rd.u8()
		if rd.bad || l.campaignByKey(r.key) == nil || bid == 0 {
			return errRecord
		}
		l.note(r.at)
		s := l.resv.shard(bid)
		s.mu.Lock()
		s.m[bid] = r
		s.mu.Unlock()
		// A reservation still open (no bill, loss or expiry yet) has its
		// outcome counted from now on, as one of the log's tail
		// (recReserve): count it reserved too. One settled before the
		// checkpoint had its outcome counted before the restart.
		if r.state&(fBilled|fReleased|fExpired) == 0 {
			l.stats.reserved.Add(1)
		}
		return nil
	case recFreq:
		k := freqKey{user: rd.u64(), camp: rd.u32()}
		var e freqEntry
		for i := range e.exp {
			e.exp[i] = rd.u32()
		}
		for i := range e.n {
			e.n[i] = uint16(rd.u8()) | uint16(rd.u8())<<8
		}
		if rd.bad || l.campaignByKey(k.camp) == nil {
			return errRecord
		}
		l.freq.set(k, e)
		return nil
	}
	return fmt.Errorf("%w: record type %d", errRecord, typ)
}

// note remembers the latest time a replayed record carries.
func (l *Ledger) note(t int64) {
	if t > l.lastSeen {
		l.lastSeen = t
	}
}
