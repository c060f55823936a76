package ledger

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// logState is the journal's sequence numbers and its count of fsyncs.
type logState struct{ appended, written, durable, syncs uint64 }

func stateOf(l *Ledger) logState {
	j := l.log
	j.mu.Lock()
	defer j.mu.Unlock()
	return logState{j.appended, j.written, j.durable, j.syncs}
}

// awaitLog waits until the journal's state satisfies ok. The writer
// goroutine sends no signal for a write that needs no fsync, so this
// polls; the writer decides under the same lock whether to fsync what it
// wrote, so once written has reached a sequence number, that decision
// (and its count in syncs) is made.
func awaitLog(t *testing.T, l *Ledger, what string, ok func(logState) bool) logState {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := stateOf(l)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("log never %s: %+v", what, s)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func allWritten(s logState) bool { return s.written == s.appended }

// lazyLedger is a durable ledger whose writer never fsyncs on its own
// timer within a test, and one campaign with its whole budget leased.
func lazyLedger(t *testing.T, dir string) (*Ledger, *Campaign) {
	t.Helper()
	clk := newFakeClock(t0)
	cfg := durableConfig(clk, dir)
	cfg.MaxSyncDelay = time.Hour
	cfg.LeaseFraction = 1
	l := newLedger(t, cfg)
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 1000 * unit, CapMax: 5, CapWindow: time.Hour})
	if err := l.Lease(context.Background(), c, t0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	return l, c
}

// TestReservationsWrittenNotSynced: reservations alone are written to the
// file, where a process crash (the files copied without Close) finds
// them, but not fsynced; Close fsyncs them.
func TestReservationsWrittenNotSynced(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a")
	l, c := lazyLedger(t, dir)
	now := t0.UnixNano()
	before := awaitLog(t, l, "written", allWritten)
	if before.durable != before.appended {
		t.Fatalf("the lease is not durable: %+v", before)
	}
	const n = 100
	for i := range n {
		if _, err := l.Reserve(c, uint64(i+1), uint64(i+1), unit, now); err != nil {
			t.Fatal(err)
		}
	}
	after := awaitLog(t, l, "written", func(s logState) bool {
		return s.appended >= before.appended+n && allWritten(s)
	})
	if after.syncs != before.syncs || after.durable != before.durable {
		t.Fatalf("reservations alone were fsynced: before %+v, after %+v", before, after)
	}

	crashed := filepath.Join(t.TempDir(), "b")
	copyDir(t, dir, crashed)
	l2 := newLedger(t, durableConfig(newFakeClock(t0), crashed))
	if got := l2.Lookup("c").reserved.Load(); got != n*unit {
		t.Errorf("after a crash: %d micros reserved, want %d", got, n*unit)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if s := stateOf(l); s.syncs != after.syncs+1 || s.durable != s.appended {
		t.Errorf("Close did not fsync: %+v", s)
	}
}

// TestUnsyncedWritesSyncedWithinMaxSyncDelay: with nobody waiting, the
// writer fsyncs written records MaxSyncDelay after it wrote them.
func TestUnsyncedWritesSyncedWithinMaxSyncDelay(t *testing.T) {
	clk := newFakeClock(t0)
	cfg := durableConfig(clk, t.TempDir())
	cfg.MaxSyncDelay = 20 * time.Millisecond
	cfg.LeaseFraction = 1
	l := newLedger(t, cfg)
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 1000 * unit})
	if err := l.Lease(context.Background(), c, t0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	before := awaitLog(t, l, "durable", func(s logState) bool { return s.durable == s.appended })
	start := time.Now()
	if _, err := l.Reserve(c, 1, 0, unit, t0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	after := awaitLog(t, l, "synced within MaxSyncDelay", func(s logState) bool { return s.durable > before.durable })
	if took := time.Since(start); took < cfg.MaxSyncDelay {
		t.Errorf("fsynced after %v, before MaxSyncDelay %v", took, cfg.MaxSyncDelay)
	}
	if after.syncs != before.syncs+1 {
		t.Errorf("%d fsyncs for one reservation, want 1", after.syncs-before.syncs)
	}
}

// TestNoticeWaitsForItsFsync: a notice that arrives just after a
// reservation-only write returns only once an fsync covers it, and so
// does Flush.
func TestNoticeWaitsForItsFsync(t *testing.T) {
	l, c := lazyLedger(t, t.TempDir())
	now := t0.UnixNano()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 3 {
		bid := uint64(i + 1)
		if _, err := l.Reserve(c, bid, 1, unit, now); err != nil {
			t.Fatal(err)
		}
		before := awaitLog(t, l, "written", allWritten)
		if before.durable == before.appended {
			t.Fatalf("the reservation was fsynced: %+v", before)
		}
		if err := l.Win(ctx, bid, now); err != nil {
			t.Fatal(err)
		}
		s := stateOf(l)
		if s.durable < before.appended+1 || s.syncs <= before.syncs {
			t.Fatalf("Win returned before an fsync covered it: before %+v, after %+v", before, s)
		}
	}
	if _, err := l.Reserve(c, 10, 2, unit, now); err != nil {
		t.Fatal(err)
	}
	before := awaitLog(t, l, "written", allWritten)
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if s := stateOf(l); s.durable != before.appended || s.syncs != before.syncs+1 {
		t.Fatalf("Flush returned before an fsync covered it: before %+v, after %+v", before, s)
	}
}

// TestNoWaiterMissed: waiters that register while the writer is deciding
// whether to fsync a reservation-only batch are never left waiting for
// the (hour-long) MaxSyncDelay.
func TestNoWaiterMissed(t *testing.T) {
	l, c := lazyLedger(t, t.TempDir())
	now := t0.UnixNano()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const workers, rounds = 4, 300
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				bid := uint64(w*rounds + i + 1)
				if _, err := l.Reserve(c, bid, bid, 1000, now); err != nil {
					errs <- err
					return
				}
				// Odd rounds leave the reservation to be written alone
				// first, even ones race it with the notice.
				if i%2 == 1 {
					time.Sleep(150 * time.Microsecond)
				}
				if err := l.Loss(ctx, bid, now); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestRotateSyncsOldSegment: a segment is fsynced before the next one
// starts, so that a power loss can tear only the newest segment.
func TestRotateSyncsOldSegment(t *testing.T) {
	dir := t.TempDir()
	cfg := durableConfig(newFakeClock(t0), dir)
	cfg.MaxSyncDelay = time.Hour
	cfg.LeaseFraction = 1
	cfg.CompactBytes = 4 << 10
	l := newLedger(t, cfg)
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 1000 * unit})
	if err := l.Lease(context.Background(), c, t0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	before := awaitLog(t, l, "written", allWritten)
	first := filepath.Base(onlySegment(t, dir))
	// 100 reservation records (~70 bytes each) pass CompactBytes.
	for i := range 100 {
		if _, err := l.Reserve(c, uint64(i+1), 0, 1000, t0.UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for filepath.Base(onlySegment(t, dir)) == first {
		if time.Now().After(deadline) {
			t.Fatal("the log never rotated")
		}
		time.Sleep(50 * time.Microsecond)
	}
	// The new segment exists, so the fsync of the old one is done.
	if s := stateOf(l); s.syncs != before.syncs+1 {
		t.Fatalf("rotation made %d fsyncs, want 1: before %+v, after %+v", s.syncs-before.syncs, before, s)
	}
}

// TestCloseSyncs: Close fsyncs what was written, with no lease to return
// (whose record would be waited for) to do it.
func TestCloseSyncs(t *testing.T) {
	cfg := durableConfig(newFakeClock(t0), t.TempDir())
	cfg.MaxSyncDelay = time.Hour
	l := newLedger(t, cfg)
	c := mustCampaign(t, l, "c", Limits{CapMax: 1, CapWindow: time.Hour})
	if _, err := l.Reserve(c, 1, 1, unit, t0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	before := awaitLog(t, l, "written", allWritten)
	if before.durable == before.appended {
		t.Fatalf("the reservation was fsynced: %+v", before)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if s := stateOf(l); s.syncs != before.syncs+1 || s.durable != s.appended {
		t.Errorf("Close did not fsync: before %+v, after %+v", before, s)
	}
}

// TestRetriedNoticeWaitsForItsRecord retries each kind of notice whose
// first attempt changed the ledger but returned an error before its
// record was durable: when the caller's context ended, the retry returns
// only once that record is fsynced (not at once, when a crash could
// still lose it); when the log has failed, the retry fails too.
func TestRetriedNoticeWaitsForItsRecord(t *testing.T) {
	kinds := []struct {
		name   string
		notice func(l *Ledger, ctx context.Context, bid uint64) error
	}{
		{"win", func(l *Ledger, ctx context.Context, bid uint64) error { return l.Win(ctx, bid, t0.UnixNano()) }},
		{"bill", func(l *Ledger, ctx context.Context, bid uint64) error { return l.Bill(ctx, bid, unit/2, t0.UnixNano()) }},
		{"loss", func(l *Ledger, ctx context.Context, bid uint64) error { return l.Loss(ctx, bid, t0.UnixNano()) }},
	}
	for _, k := range kinds {
		t.Run(k.name+"/cancelled", func(t *testing.T) {
			cfg := durableConfig(newFakeClock(t0), t.TempDir())
			cfg.SyncInterval = 300 * time.Millisecond // the notice's write waits this long after the last
			cfg.LeaseFraction = 1
			l := newLedger(t, cfg)
			c := mustCampaign(t, l, "c", Limits{DailyMicros: 1000 * unit, Pacing: PacingASAP})
			ctx := context.Background()
			if _, err := reserve(l, c, 7, 0, unit, t0.UnixNano()); err != nil {
				t.Fatal(err)
			}
			if err := l.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			gone, cancel := context.WithCancel(ctx)
			cancel() // the exchange hung up
			if err := k.notice(l, gone, 7); !errors.Is(err, context.Canceled) {
				t.Fatalf("first attempt: %v, want context.Canceled", err)
			}
			rec := stateOf(l).appended // its record
			if err := k.notice(l, ctx, 7); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if s := stateOf(l); s.durable < rec {
				t.Fatalf("retry acknowledged before record %d was durable: %+v", rec, s)
			}
		})
		t.Run(k.name+"/failed", func(t *testing.T) {
			l, c := lazyLedger(t, t.TempDir())
			if _, err := l.Reserve(c, 7, 1, unit, t0.UnixNano()); err != nil {
				t.Fatal(err)
			}
			disk := errors.New("disk gone")
			l.log.mu.Lock()
			l.log.failLocked(disk) // as a failed write or fsync does
			l.log.mu.Unlock()
			ctx := context.Background()
			if err := k.notice(l, ctx, 7); !errors.Is(err, disk) {
				t.Fatalf("first attempt: %v, want the log's error", err)
			}
			if err := k.notice(l, ctx, 7); !errors.Is(err, disk) {
				t.Fatalf("retry: %v, want the log's error", err)
			}
		})
	}
}

// TestOpenSyncsReplayedTail crashes a ledger whose last records were
// written but not fsynced, with a torn frame after them, and opens the
// files: the replayed segment, cut at the torn frame, is fsynced before
// the new segment is (a power loss could otherwise lose what the new
// segment's durable records build on, or leave a torn frame in a segment
// that is no longer the newest, which Open refuses as corruption).
func TestOpenSyncsReplayedTail(t *testing.T) {
	dir := t.TempDir()
	l, c := lazyLedger(t, dir)
	if _, err := l.Reserve(c, 7, 1, unit, t0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	awaitLog(t, l, "written", allWritten)
	crash := t.TempDir()
	copyDir(t, dir, crash) // kill -9 mid-write: a torn frame follows
	tail := onlySegment(t, crash)
	f, err := os.OpenFile(tail, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{40, 0, 0, 0, 1, 2})
	f.Close()

	var synced []string
	defer func(f func(*os.File) error) { fsyncFile = f }(fsyncFile)
	fsyncFile = func(f *os.File) error {
		synced = append(synced, filepath.Base(f.Name()))
		return f.Sync()
	}
	l2, err := New(durableConfig(newFakeClock(t0), crash))
	if err != nil {
		t.Fatal(err)
	}
	pending := l2.Pending()
	l2.Close()
	fsyncFile = (*os.File).Sync
	if pending != 1 {
		t.Fatalf("%d bids replayed, want 1", pending)
	}
	if len(synced) == 0 || synced[0] != filepath.Base(tail) {
		t.Fatalf("fsyncs at Open and Close: %v; want %s first", synced, filepath.Base(tail))
	}
}

// TestWriteFailureRetried fills the disk under the log: a write that
// fails part way (ENOSPC after half the batch) answers its notice with
// ErrNotDurable naming the file and the errno, is reported once through
// LogTrouble and LogErr, and cuts the torn half off; once space is
// freed the notice sent again is acknowledged, without a restart, and
// the files open again (no torn frame between good ones) with both
// notices and the reservations in them. Before, the first failed write
// made the log unusable until a restart: every later notice failed,
// and no lease could be taken, so budgeted campaigns stopped bidding.
func TestWriteFailureRetried(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock(t0)
	cfg := durableConfig(clk, dir)
	cfg.LeaseFraction = 1
	disk := fillableDisk(t, true)
	// LogTrouble is called once the writer lets go of the log's lock,
	// which may be after the waiter it woke has returned: read in turn.
	told := make(chan error, 8)
	cfg.LogTrouble = func(err error) { told <- err }

	l := newLedger(t, cfg)
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 1000 * unit, Pacing: PacingASAP})
	ctx := context.Background()
	for bid := uint64(1); bid <= 2; bid++ {
		if _, err := reserve(l, c, bid, 0, unit, t0.UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	size := func() int64 {
		fi, err := os.Stat(onlySegment(t, dir))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	good := size()

	disk.set(true)
	err := l.Win(ctx, 1, t0.UnixNano())
	if !errors.Is(err, ErrNotDurable) || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), onlySegment(t, dir)) {
		t.Fatalf("win on a full disk: %v; want ErrNotDurable naming %s and ENOSPC", err, onlySegment(t, dir))
	}
	if err := l.LogErr(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("LogErr on a full disk: %v", err)
	}
	if err := <-told; !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("LogTrouble told %v first; want the ENOSPC error", err)
	}
	if got := size(); got != good {
		t.Fatalf("log is %d bytes after the failed write, want the %d before it", got, good)
	}
	if err := l.Bill(ctx, 2, unit/2, t0.UnixNano()); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("bill on a full disk: %v", err)
	}
	if st := l.Stats(); st.LogWriteFailures < 2 {
		t.Fatalf("LogWriteFailures %d, want 2 or more", st.LogWriteFailures)
	}

	disk.set(false) // the filler is deleted
	if err := l.Win(ctx, 1, t0.UnixNano()); err != nil {
		t.Fatalf("win sent again after space was freed: %v", err)
	}
	if err := l.Bill(ctx, 2, unit/2, t0.UnixNano()); err != nil {
		t.Fatalf("bill sent again after space was freed: %v", err)
	}
	if err := l.LogErr(); err != nil {
		t.Fatalf("LogErr after space was freed: %v", err)
	}
	if err := <-told; err != nil {
		t.Errorf("LogTrouble told %v once space was freed; want nil", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if len(told) != 0 {
		t.Errorf("LogTrouble told %v more; want the ENOSPC error once, then nil", <-told)
	}

	l2 := newLedger(t, durableConfig(newFakeClock(t0), dir))
	if st := l2.Stats(); st.Wins != 1 || st.Bills != 1 || st.Reserved != 2 {
		t.Fatalf("after reopening: %d reserved, %d wins, %d bills; want 2, 1, 1", st.Reserved, st.Wins, st.Bills)
	}
}

// TestIdleLogRetriesWrite: records a failed write left waiting are tried
// again by the writer on its own, so that an idle server whose disk was
// freed clears its trouble (LogErr, /healthz, the metric) without a
// notice to prompt it. Before, it stayed failing until something was
// appended or waited for.
func TestIdleLogRetriesWrite(t *testing.T) {
	dir := t.TempDir()
	cfg := durableConfig(newFakeClock(t0), dir)
	cfg.LeaseFraction = 1
	disk := fillableDisk(t, false)
	told := make(chan error, 8)
	cfg.LogTrouble = func(err error) { told <- err }
	l := newLedger(t, cfg)
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 1000 * unit, Pacing: PacingASAP})
	if _, err := reserve(l, c, 1, 0, unit, t0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	disk.set(true)
	// One record, nobody waiting for it: one poke, one failed write.
	if _, err := l.Reserve(c, 2, 0, unit, t0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	if err := <-told; !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("LogTrouble told %v; want the ENOSPC error", err)
	}
	disk.set(false)
	// Nothing is sent: only the writer's own retry, a second on, can
	// clear the trouble. The minute only keeps a writer that never
	// retries from hanging the test until its -timeout.
	select {
	case err := <-told:
		if err != nil {
			t.Fatalf("LogTrouble told %v once space was freed; want nil", err)
		}
	case <-time.After(time.Minute):
		tried, failed := disk.counts()
		t.Fatalf("still failing a minute after space was freed, with nothing sent (%d writes tried, %d failed): %v", tried, failed, l.LogErr())
	}
	if err := l.LogErr(); err != nil {
		t.Fatalf("LogErr after the retry: %v", err)
	}
	if s := stateOf(l); s.written != s.appended {
		t.Fatalf("records left unwritten: %+v", s)
	}
}

// TestOneWriteAttemptPerBatch: while writes failed and the segment was
// over CompactBytes, rotate flushed again after the writer's own flush,
// so each batch made two attempts at once (the sync interval skipped)
// and Stats.LogWriteFailures counted each batch twice. A compaction
// under way when the segment passed CompactBytes (simulated here) is
// what holds its rotation off until the disk is full.
func TestOneWriteAttemptPerBatch(t *testing.T) {
	dir := t.TempDir()
	cfg := durableConfig(newFakeClock(t0), dir)
	cfg.MaxSyncDelay = time.Hour
	cfg.CompactBytes = 4 << 10
	// The disk fills; the first write it refuses holds the writer until
	// the test lets it go.
	var full atomic.Bool
	var failed atomic.Int64
	parked, release := make(chan struct{}), make(chan struct{})
	w, retry := writeFile, writeRetry
	t.Cleanup(func() { writeFile, writeRetry = w, retry }) // after the ledger's Close
	writeFile = func(f *os.File, b []byte) (int, error) {
		if !full.Load() {
			return w(f, b)
		}
		if failed.Add(1) == 1 {
			parked <- struct{}{}
			<-release
		}
		return 0, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	writeRetry = time.Hour // no batch but those the test makes
	l := newLedger(t, cfg)
	c := mustCampaign(t, l, "c", Limits{Pacing: PacingASAP})
	l.log.compacting.Store(true)
	// 100 reservation records (~70 bytes each) pass CompactBytes.
	for i := range 100 {
		if _, err := l.Reserve(c, uint64(i+1), 0, 1000, t0.UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(onlySegment(t, dir)); err != nil || fi.Size() < cfg.CompactBytes {
		t.Fatalf("segment %v, %v; want it over %d bytes", fi, err, cfg.CompactBytes)
	}
	full.Store(true)
	if _, err := l.Reserve(c, 101, 0, 1000, t0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	<-parked // a batch's write
	l.log.compacting.Store(false)
	select { // a poke left over: nothing else pokes the writer now
	case <-l.log.kick:
	default:
	}
	close(release)
	// That batch, then Close's last flush: two attempts.
	if err := l.Close(); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("close on a full disk: %v, want ErrNotDurable", err)
	}
	if n, st := failed.Load(), l.Stats(); n != 2 || st.LogWriteFailures != 2 {
		t.Errorf("a batch and Close made %d write attempts, LogWriteFailures %d; want 2 and 2", n, st.LogWriteFailures)
	}
}

// TestRefusedSegmentRetried: when the next segment could not be made
// (ENOSPC from its creation: no inode left, or a directory that cannot
// grow; or from the directory's fsync after it), the log was given up
// until a restart, and a failed directory fsync left an empty segment
// newer than the one written to. Now it is like a refused write: the
// half-made segment is removed, the records wait in memory, in order
// (nothing more goes to the old segment), a notice is refused until its
// record is durable, and the segment is made again with the next batch.
func TestRefusedSegmentRetried(t *testing.T) {
	for _, step := range []string{"create", "fsync"} {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			cfg := durableConfig(newFakeClock(t0), dir)
			cfg.CompactBytes = 4 << 10
			// LogTrouble runs on the writer, after its attempt: the
			// segments it lists are those the attempt left.
			type trouble struct {
				err  error
				segs []string
			}
			told := make(chan trouble, 8)
			cfg.LogTrouble = func(err error) { told <- trouble{err, segments(t, dir)} }
			var full atomic.Bool
			refused := make(chan struct{}, 1)
			refuse := func(op, path string) error {
				select {
				case refused <- struct{}{}:
				default:
				}
				return &os.PathError{Op: op, Path: path, Err: syscall.ENOSPC}
			}
			create, sync := createFile, syncDir
			t.Cleanup(func() { createFile, syncDir = create, sync }) // after the ledgers' Close
			createFile = func(name string) (*os.File, error) {
				if step == "create" && full.Load() {
					return nil, refuse("open", name)
				}
				return create(name)
			}
			syncDir = func(dir string) error {
				if step == "fsync" && full.Load() {
					return refuse("sync", dir)
				}
				return sync(dir)
			}
			l := newLedger(t, cfg)
			c := mustCampaign(t, l, "c", Limits{Pacing: PacingASAP})
			ctx := context.Background()
			first := segments(t, dir)
			full.Store(true)
			// 100 reservation records (~70 bytes each) pass CompactBytes.
			for i := range 100 {
				if _, err := l.Reserve(c, uint64(i+1), 0, 1000, t0.UnixNano()); err != nil {
					t.Fatal(err)
				}
			}
			<-refused // the rotation's
			if _, err := l.Reserve(c, 101, 0, 1000, t0.UnixNano()); err != nil {
				t.Fatal(err)
			}
			if err := l.Win(ctx, 101, t0.UnixNano()); !errors.Is(err, ErrNotDurable) || !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("win while no segment can be made: %v; want ErrNotDurable and ENOSPC", err)
			}
			if err := l.LogErr(); !errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), givenUp) {
				t.Fatalf("LogErr while no segment can be made: %v; want ENOSPC, not given up", err)
			}
			// The minute only keeps a log that never tells from hanging
			// the test.
			recv := func() trouble {
				t.Helper()
				select {
				case got := <-told:
					return got
				case <-time.After(time.Minute):
					t.Fatalf("LogTrouble not told (LogErr %v)", l.LogErr())
					return trouble{}
				}
			}
			got := recv()
			if !errors.Is(got.err, ErrNotDurable) || !errors.Is(got.err, syscall.ENOSPC) {
				t.Fatalf("LogTrouble told %v; want ErrNotDurable and ENOSPC", got.err)
			}
			if !slices.Equal(got.segs, first) {
				t.Fatalf("segments %v after the refused one; want only %v", got.segs, first)
			}

			full.Store(false)
			// An attempt the reservations' pokes made may still be
			// under way, refused, when the space comes back; the next
			// one is not.
			err := l.Win(ctx, 101, t0.UnixNano())
			if errors.Is(err, ErrNotDurable) {
				err = l.Win(ctx, 101, t0.UnixNano())
			}
			if err != nil {
				t.Fatalf("win sent again once a segment can be made: %v", err)
			}
			// The compaction may have removed the old segment by then.
			if got := recv(); got.err != nil || len(got.segs) == 0 || got.segs[len(got.segs)-1] != segName(1) {
				t.Errorf("LogTrouble told %v with segments %v once a segment could be made; want nil, the newest %s", got.err, got.segs, segName(1))
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l2 := newLedger(t, durableConfig(newFakeClock(t0), dir))
			if st := l2.Stats(); st.Reserved != 101 || st.Wins != 1 {
				t.Fatalf("after reopening: %d reserved, %d wins; want 101, 1", st.Reserved, st.Wins)
			}
		})
	}
}

// segments lists the log segments in dir (listDir would remove the
// temporary file of a compaction under way).
func segments(t *testing.T, dir string) []string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "log-*.wal"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range segs {
		segs[i] = filepath.Base(segs[i])
	}
	return segs
}

// countingLeaser grants what is asked and counts what it holds granted.
type countingLeaser struct{ daily, total atomic.Int64 }

func (c *countingLeaser) Lease(_ context.Context, req LeaseRequest) (LeaseGrant, error) {
	c.daily.Add(req.WantDaily)
	c.total.Add(req.WantTotal)
	return LeaseGrant{Daily: req.WantDaily, Total: req.WantTotal}, nil
}

func (c *countingLeaser) Return(_ context.Context, r LeaseReturn) error {
	c.daily.Add(-r.Daily)
	c.total.Add(-r.Total)
	return nil
}

func (c *countingLeaser) Close() error { return nil }

// TestNoLeaseWhileLogFails: while the log's writes failed, a grant asked
// the Leaser for a slice, could not make its ceiling durable, and so
// neither published nor gave it back: the Leaser (Redis) counted it as
// leased for good, a chunk of the campaign's budget lost to every node
// at each try (every 100ms while bids ask). Now no slice is asked for
// until the log writes again, and the Leaser counts what the node holds.
func TestNoLeaseWhileLogFails(t *testing.T) {
	clk := newFakeClock(t0)
	cfg := durableConfig(clk, t.TempDir())
	cl := &countingLeaser{}
	cfg.Leaser = cl
	disk := fillableDisk(t, false)
	l := newLedger(t, cfg)
	ctx := context.Background()
	disk.set(true)
	mustCampaign(t, l, "d", Limits{Pacing: PacingASAP}) // a record to fail
	if err := l.Flush(ctx); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("flush on a full disk: %v, want ErrNotDurable", err)
	}
	// A budgeted campaign: it asks for a lease (bids would, every 100ms).
	c := mustCampaign(t, l, "c", Limits{DailyMicros: 100 * unit, TotalMicros: 1000 * unit, Pacing: PacingASAP})
	for range 5 {
		if err := l.Lease(ctx, c, clk.NowNs()); !errors.Is(err, ErrNotDurable) {
			t.Fatalf("lease on a full disk: %v, want ErrNotDurable", err)
		}
	}
	if d, tot := cl.daily.Load(), cl.total.Load(); d != 0 || tot != 0 {
		t.Errorf("the Leaser granted %d daily, %d total while the log could not record it; want none", d, tot)
	}
	disk.set(false)
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Lease(ctx, c, clk.NowNs()); err != nil {
		t.Fatalf("lease once the disk takes writes: %v", err)
	}
	if d, tot := int64(c.ceilDay.Load()&usedMask), c.ceilTotal.Load(); cl.daily.Load() != d || cl.total.Load() != tot || d == 0 {
		t.Errorf("the Leaser counts %d daily, %d total as leased; the node holds %d, %d", cl.daily.Load(), cl.total.Load(), d, tot)
	}
}

// fillableDisk makes the log's writes fail with ENOSPC, naming the file,
// while set(true) holds; with half, after writing half of what they were
// given (a torn frame). writeFile is put back after the ledgers' Close
// (cleanups run last first): their writers write until then.
func fillableDisk(t *testing.T, half bool) *diskFull {
	d := &diskFull{half: half}
	w := writeFile
	t.Cleanup(func() { writeFile = w })
	writeFile = d.write
	return d
}

type diskFull struct {
	mu            sync.Mutex
	half, full    bool
	tried, failed int
}

func (d *diskFull) write(f *os.File, b []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tried++
	if !d.full {
		return f.Write(b)
	}
	d.failed++
	n := 0
	if d.half {
		n, _ = f.Write(b[:len(b)/2])
	}
	return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
}

func (d *diskFull) set(full bool) {
	d.mu.Lock()
	d.full = full
	d.mu.Unlock()
}

func (d *diskFull) counts() (tried, failed int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tried, d.failed
}

// TestFsyncFailureGivesUp: after a failed fsync the log is given up
// until a restart, though later fsyncs would work (the kernel may have
// dropped the pages it could not write), and its error says so: the
// log line LogTrouble makes had read "refused until it writes again",
// so an operator freed space and waited for a log that never would.
func TestFsyncFailureGivesUp(t *testing.T) {
	clk := newFakeClock(t0)
	cfg := durableConfig(clk, t.TempDir())
	told := make(chan error, 8)
	cfg.LogTrouble = func(err error) { told <- err }
	var fail atomic.Bool
	f := fsyncFile
	t.Cleanup(func() { fsyncFile = f }) // after the ledger's Close
	fsyncFile = func(file *os.File) error {
		if fail.Load() {
			return &os.PathError{Op: "sync", Path: file.Name(), Err: syscall.EIO}
		}
		return f(file)
	}
	l := newLedger(t, cfg)
	ctx := context.Background()
	fail.Store(true)
	mustCampaign(t, l, "c", Limits{Pacing: PacingASAP})
	if err := l.Flush(ctx); !errors.Is(err, ErrNotDurable) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("flush with a failing fsync: %v, want ErrNotDurable and EIO", err)
	}
	fail.Store(false)
	mustCampaign(t, l, "d", Limits{Pacing: PacingASAP})
	if err := l.Flush(ctx); !errors.Is(err, syscall.EIO) {
		t.Fatalf("flush after a failed fsync: %v, want the failure still", err)
	}
	for _, err := range []error{<-told, l.LogErr()} {
		if err == nil || !strings.Contains(err.Error(), "given up until a restart") {
			t.Errorf("LogTrouble / LogErr after a failed fsync: %v; want it to say the log is given up until a restart", err)
		}
	}
}
