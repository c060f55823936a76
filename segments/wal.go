package segments

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/personad/personad/internal/atomicfile"
)

// The write-ahead log. Every committed mutation (an upload or a delete) is
// one record, fsynced before the mutation is published or acknowledged.
// The log is a sequence of files in the store's directory,
//
//	wal-<first version, 20 digits>.log
//
// each holding records with consecutive store versions from its first
// version on. A snapshot at version V starts a new file (wal-<V+1>) and,
// once the snapshot file is durable, the older files are deleted: every
// record in them is in the snapshot. Integers are little-endian.
//
//	file header  magic "PSEGWAL1" | format u32 (1) | reserved u32 (0) |
//	             first version u64 | crc32c(preceding 24 bytes) u32
//	record       length u32 | crc32c(length, payload) u32 | payload
//	payload      version u64 | op u8 (1 upload, 2 delete) | mode u8 |
//	             time (Unix ns) i64 | ids received u64 |
//	             facet, value, idempotency key (each u16 length + bytes) |
//	             first new user u32 | new users u32 |
//	             new users' id lengths (u8 each, length-1) | their id bytes |
//	             roaring portable serialization of the internal ids
//	             (uploads only; the payload ends with it)
//	keys payload version u64 (the snapshot's) | op u8 (4) | entries u32 |
//	             per entry: key, facet, value (u16 length + bytes) | mode u8 |
//	             ids, added, removed, unchanged, new users, cardinality,
//	             version, sum (u64 each: sum is the xxhash64 of the
//	             upload's ids, each followed by '\n', 0 if unknown).
//	             Op 3, written before sums were, has no sum.
//
// A keys record starts every file a snapshot begins: the idempotency keys
// the store remembers, which would otherwise go with the deleted files.
// (When the snapshot finds its file already there without one, opened by
// recovery or after a failed keys write, it writes one after what the
// file holds, before deleting anything; replay then moves each key it
// reads again to the most recent place, see keyLog.put.)
// A keyed upload that changes nothing writes one too, holding its key
// alone: it has no change record to carry it.
//
// A record carries the users it added to the dictionary, in internal-id
// order, so that replay assigns each the same internal id, and the
// uploaded set as internal ids, so that replay performs the same bitmap
// operation. Recovery loads the snapshot, then replays every record with a
// higher version, in order; versions must follow one another. Only the
// last file may end in a torn record (cut short, or failing its checksum
// at the very end of the file, or followed by nothing but zeros): recovery
// truncates it, since a torn record was never acknowledged. Damage
// anywhere else is an error naming the file and offset, and the store
// does not open: serving a log with a hole would silently drop uploads.
const (
	walMagic      = "PSEGWAL1"
	walFormat     = 1
	walHeaderSize = 28
	walRecHdrSize = 8
	// maxRecord bounds one record's payload (the length is a u32). Uploads
	// are limited well below it (bidder's MaxUploadIDs).
	maxRecord = 1<<31 - 1
)

// ErrTooManySegments is an upload that would add a segment to a store
// holding Config.MaxSegments.
var ErrTooManySegments = errors.New("segments: too many segments")

// ErrTooLarge is a mutation whose log record would exceed the record size
// limit (2 GiB).
var ErrTooLarge = errors.New("segments: change too large for one log record (2 GiB)")

func walName(first uint64) string { return fmt.Sprintf("wal-%020d.log", first) }

// walFirst parses the first version out of a log file name.
func walFirst(name string) (uint64, bool) {
	s, ok := strings.CutPrefix(name, "wal-")
	if !ok {
		return 0, false
	}
	if s, ok = strings.CutSuffix(s, ".log"); !ok || len(s) != 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil
}

// listWAL returns the log files in dir, oldest first.
func listWAL(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("segments: %w", err)
	}
	var names []string
	for _, e := range ents {
		if _, ok := walFirst(e.Name()); ok && e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names) // fixed-width numbers sort as numbers
	return names, nil
}

// wal appends records to the newest log file. It is used under Store.mu.
type wal struct {
	dir   string
	f     *os.File
	name  string   // f's name
	files []string // every log file, oldest first; the last is f
	size  int64    // bytes of f holding whole records
	// records is how many records f holds; bytes what all files hold.
	records int
	bytes   int64
	// failed is sticky: after a failed fsync nobody knows what reached the
	// disk, so no later record may be written (PostgreSQL's lesson).
	failed error
	// broken is failed for readers outside the store's lock (LogErr).
	broken atomic.Pointer[error]
	// keysLogged says that f holds every idempotency key the store
	// remembers: a checkpoint wrote them all into it (appendKeys), and
	// every key since went into it too. False for a file recovery opens
	// and after a failed keys write: the next checkpoint writes them.
	keysLogged bool
	// sync is f.Sync, and writeFile f.Write; tests make them fail.
	sync      func(*os.File) error
	writeFile func(*os.File, []byte) (int, error)
	buf       []byte
	tail      []byte // a record's bitmap (see appendRecord)
}

// setBroken publishes failed, once set, for LogErr.
func (w *wal) setBroken() {
	err := fmt.Errorf("%w: %v", ErrNotDurable, w.failed)
	w.broken.Store(&err)
}

// create starts a new log file for records from version first on.
func (w *wal) create(first uint64) error {
	name := walName(first)
	path := filepath.Join(w.dir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("segments: %w", err)
	}
	// fail leaves no file behind: one whose header did not reach the disk
	// would make recovery refuse the log once a later file follows it.
	// When the removal is not durable either, the log takes no more
	// changes (failed), so that no later file follows it, and recovery
	// finds it last, where a torn header means an empty file.
	fail := func(err error) error {
		f.Close()
		rerr := os.Remove(path)
		if rerr == nil {
			rerr = atomicfile.SyncDir(w.dir)
		}
		if rerr != nil {
			w.failed = fmt.Errorf("creating %s: %v; removing it: %v", name, err, rerr)
			w.setBroken()
		}
		return fmt.Errorf("segments: creating %s: %w", name, err)
	}
	var hdr [walHeaderSize]byte
	copy(hdr[:], walMagic)
	binary.LittleEndian.PutUint32(hdr[8:], walFormat)
	binary.LittleEndian.PutUint64(hdr[16:], first)
	binary.LittleEndian.PutUint32(hdr[24:], crc32.Checksum(hdr[:24], castagnoli))
	if _, err := f.Write(hdr[:]); err != nil {
		return fail(err)
	}
	if err := w.sync(f); err != nil {
		return fail(fmt.Errorf("fsync: %w", err))
	}
	if err := atomicfile.SyncDir(w.dir); err != nil {
		return fail(err)
	}
	if w.f != nil {
		w.f.Close()
	}
	w.f, w.name, w.size, w.records, w.keysLogged = f, name, walHeaderSize, 0, false
	w.bytes += walHeaderSize
	if i := slices.Index(w.files, name); i >= 0 {
		w.files = w.files[:i] // a file recreated after a torn header
	}
	w.files = append(w.files, name)
	return nil
}

// append writes c as one record and fsyncs it. keyed, when set, is c's
// idempotency key and result, written in a keys record right after c's
// in the same write and fsync: replay takes the result from it (c's
// record alone cannot say how many of its new users were the keyed
// upload's own, see Store.Commit). On a failed write the file is cut back
// to its last whole record; on a failed fsync the log fails for good (see
// failed). Either way c is not durable and must not be published.
func (w *wal) append(c *change, keyed *keyEntry) error {
	if w.failed != nil {
		return fmt.Errorf("%w: %v", ErrNotDurable, w.failed)
	}
	var err error
	w.buf, w.tail, err = appendRecord(w.buf[:0], w.tail[:0], c)
	if err != nil {
		return err
	}
	if keyed != nil {
		w.tail = appendKeysRecord(w.tail, c.version, []string{c.key}, map[string]keyEntry{c.key: *keyed})
	}
	if cap(w.buf) > 64<<20 || cap(w.tail) > 64<<20 {
		defer func() { w.buf, w.tail = nil, nil }() // do not pin a huge upload's buffers
	}
	return w.write(c.userBytes, w.tail)
}

// write writes one whole record, w.buf then more, and fsyncs it (see
// append).
func (w *wal) write(more ...[]byte) error {
	n := int64(len(w.buf))
	_, err := w.writeFile(w.f, w.buf)
	for _, p := range more {
		if err != nil {
			break
		}
		n += int64(len(p))
		_, err = w.writeFile(w.f, p)
	}
	if err != nil {
		// Cut back, the record is certainly not applied (ErrNotApplied);
		// otherwise what reached the disk is unknown.
		cut := ErrNotApplied
		if terr := w.f.Truncate(w.size); terr != nil {
			w.failed = fmt.Errorf("write %s: %v; truncating it back: %v", w.name, err, terr)
			w.setBroken()
			cut = ErrNotDurable
		} else if _, serr := w.f.Seek(w.size, io.SeekStart); serr != nil {
			w.failed = fmt.Errorf("write %s: %v; seeking back: %v", w.name, err, serr)
			w.setBroken()
			cut = ErrNotDurable
		}
		return fmt.Errorf("%w: write %s: %v", cut, w.name, err)
	}
	if err := w.sync(w.f); err != nil {
		w.failed = fmt.Errorf("fsync %s: %v", w.name, err)
		w.setBroken()
		return fmt.Errorf("%w: %v (the record may have reached the disk all the same: a restart may apply it)", ErrNotDurable, w.failed)
	}
	w.size += n
	w.bytes += n
	w.records++
	return nil
}

func (w *wal) close() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// appendKeys writes the remembered idempotency keys as one record.
func (w *wal) appendKeys(version uint64, k *keyLog) error {
	if len(k.order) > 0 {
		w.buf = appendKeysRecord(w.buf[:0], version, k.order, k.m)
		if err := w.write(); err != nil {
			return err
		}
	}
	w.keysLogged = true
	return nil
}

// appendKey writes one idempotency key and its result as a keys record:
// that of an upload that changed nothing, and so has no change record.
func (w *wal) appendKey(version uint64, key string, e keyEntry) error {
	if w.failed != nil {
		return fmt.Errorf("%w: %v", ErrNotDurable, w.failed)
	}
	w.buf = appendKeysRecord(w.buf[:0], version, []string{key}, map[string]keyEntry{key: e})
	return w.write()
}

// appendKeysRecord appends a keys record of version holding the entries
// of order (from m) to b.
func appendKeysRecord(b []byte, version uint64, order []string, m map[string]keyEntry) []byte {
	start := len(b)
	b = append(b, make([]byte, walRecHdrSize)...)
	b = binary.LittleEndian.AppendUint64(b, version)
	b = append(b, byte(opKeysSummed))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(order)))
	for _, key := range order {
		e := m[key]
		for _, s := range []string{key, e.facet, e.value} {
			b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
			b = append(b, s...)
		}
		b = append(b, byte(e.mode))
		r := e.res
		for _, v := range []uint64{r.IDs, r.Added, r.Removed, r.Unchanged, r.NewUsers, r.Cardinality, r.Version, e.sum} {
			b = binary.LittleEndian.AppendUint64(b, v)
		}
	}
	return frame(b, start)
}

// decodeKeys restores the entries of a keys record payload (after its
// version and op); summed says each entry ends with its sum (opKeysSummed).
func decodeKeys(r *payloadReader, k *keyLog, summed bool) error {
	n := r.u32()
	if r.err == nil && uint64(n) > uint64(len(r.p)) {
		return fmt.Errorf("%d keys, %d bytes left", n, len(r.p))
	}
	for range n {
		key, facet, value := r.str(), r.str(), r.str()
		e := keyEntry{facet: facet, value: value, mode: Mode(r.u8())}
		e.res = Result{IDs: r.u64(), Added: r.u64(), Removed: r.u64(), Unchanged: r.u64(), NewUsers: r.u64(), Cardinality: r.u64(), Version: r.u64()}
		if summed {
			e.sum = r.u64()
		}
		if r.err != nil {
			return r.err
		}
		if k != nil {
			k.put(key, e)
		}
	}
	if r.err == nil && len(r.p) != 0 {
		return errors.New("data after the keys")
	}
	return r.err
}

// frame fills in the header of the record that starts at b[start:] and
// continues with more.
func frame(b []byte, start int, more ...[]byte) []byte {
	n := len(b) - start - walRecHdrSize
	for _, p := range more {
		n += len(p)
	}
	binary.LittleEndian.PutUint32(b[start:], uint32(n))
	crc := crc32.Update(0, castagnoli, b[start:start+4])
	crc = crc32.Update(crc, castagnoli, b[start+walRecHdrSize:])
	for _, p := range more {
		crc = crc32.Update(crc, castagnoli, p)
	}
	binary.LittleEndian.PutUint32(b[start+4:], crc)
	return b
}

// appendRecord encodes c's record (header and payload) in three parts,
// written back to back: head, appended to b (the header, the fields and
// the new users' lengths); c.userBytes as they are; and tail, appended
// to t (the bitmap). A big upload's record is 100s of MB, nearly all of
// it user bytes: they are written from the dictionary's arena rather
// than copied and cleared.
func appendRecord(b, t []byte, c *change) (head, tail []byte, err error) {
	start := len(b)
	b = slices.Grow(b, walRecHdrSize+64+len(c.facet)+len(c.value)+len(c.key)+len(c.userEnds))
	b = append(b, make([]byte, walRecHdrSize)...)
	b = binary.LittleEndian.AppendUint64(b, c.version)
	b = append(b, byte(c.op), byte(c.mode))
	b = binary.LittleEndian.AppendUint64(b, uint64(c.at.UnixNano()))
	b = binary.LittleEndian.AppendUint64(b, c.ids)
	for _, s := range []string{c.facet, c.value, c.key} {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	b = binary.LittleEndian.AppendUint32(b, c.firstUser)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(c.userEnds)))
	prev := c.userBase
	for _, end := range c.userEnds {
		b = append(b, byte(end-prev-1))
		prev = end
	}
	if c.set != nil {
		t = slices.Grow(t, int(c.set.GetSerializedSizeInBytes()))
		if t, err = appendBitmap(t, c.set); err != nil {
			return nil, nil, err
		}
	}
	if len(b)-start-walRecHdrSize+len(c.userBytes)+len(t) > maxRecord {
		return nil, nil, ErrTooLarge
	}
	return frame(b, start, c.userBytes, t), t, nil
}

// appendBitmap appends bm's portable serialization to b.
func appendBitmap(b []byte, bm *roaring.Bitmap) ([]byte, error) {
	buf := bytes.NewBuffer(b)
	if _, err := bm.WriteTo(buf); err != nil {
		return nil, fmt.Errorf("segments: serializing bitmap: %w", err)
	}
	return buf.Bytes(), nil
}

// decodeChange decodes a record payload. The change's strings are copies;
// its user bytes alias p. A keys record restores its keys into k and returns a
// change with op opKeys and nothing else.
func decodeChange(p []byte, k *keyLog) (*change, error) {
	r := payloadReader{p: p}
	c := &change{}
	c.version = r.u64()
	c.op = op(r.u8())
	if c.op == opKeys || c.op == opKeysSummed {
		summed := c.op == opKeysSummed
		c.op = opKeys
		return c, decodeKeys(&r, k, summed)
	}
	c.mode = Mode(r.u8())
	c.at = time.Unix(0, int64(r.u64())).UTC()
	c.ids = r.u64()
	c.facet, c.value, c.key = r.str(), r.str(), r.str()
	c.firstUser = r.u32()
	users := r.u32()
	if r.err != nil {
		return nil, r.err
	}
	if uint64(users) > uint64(len(r.p)) {
		return nil, fmt.Errorf("%d new users, %d bytes left", users, len(r.p))
	}
	lens := r.bytes(int(users))
	c.userEnds = make([]uint32, users)
	var end uint32
	for i, l := range lens {
		end += uint32(l) + 1
		c.userEnds[i] = end
	}
	c.userBytes = r.bytes(int(end))
	if r.err != nil {
		return nil, r.err
	}
	switch c.op {
	case opUpload:
		if c.mode < Replace || c.mode > Remove {
			return nil, fmt.Errorf("unknown upload mode %d", c.mode)
		}
		bm, err := decodeBitmap(r.p)
		if err != nil {
			return nil, fmt.Errorf("bitmap: %v", err)
		}
		c.set = bm
	case opDelete:
		if len(r.p) != 0 || users != 0 {
			return nil, errors.New("a delete carries users or a bitmap")
		}
	default:
		return nil, fmt.Errorf("unknown operation %d", c.op)
	}
	if err := checkNames(c.facet, c.value); err != nil {
		return nil, err
	}
	return c, nil
}

// payloadReader reads a record payload; its first error sticks.
type payloadReader struct {
	p   []byte
	err error
}

func (r *payloadReader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.p) {
		r.err = fmt.Errorf("payload ends %d bytes short", n-len(r.p))
		return nil
	}
	b := r.p[:n]
	r.p = r.p[n:]
	return b
}

func (r *payloadReader) u8() uint8 {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *payloadReader) u16() uint16 {
	if b := r.bytes(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *payloadReader) u32() uint32 {
	if b := r.bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *payloadReader) u64() uint64 {
	if b := r.bytes(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *payloadReader) str() string {
	b := r.bytes(int(r.u16()))
	return string(b)
}

// WALError is damage in the write-ahead log that recovery cannot repair:
// where it is and what it is.
type WALError struct {
	File   string
	Offset int64
	Msg    string
}

func (e *WALError) Error() string {
	return fmt.Sprintf("segments: %s: record at offset %d: %s", e.File, e.Offset, e.Msg)
}

// replayFile replays the records of one log file over cur. data is the
// whole file; last says whether it is the newest file, the only one that
// may end in a torn record. It returns the snapshot after the file's
// records, the records applied and skipped, the offset where whole records
// end (len(data) unless torn); the idempotency keys it sees go into keys.
func replayFile(cur *Snapshot, name string, data []byte, last bool, keys *keyLog) (*Snapshot, int, int, int64, error) {
	bad := func(off int64, format string, args ...any) error {
		return &WALError{File: name, Offset: off, Msg: fmt.Sprintf(format, args...)}
	}
	first, _ := walFirst(filepath.Base(name))
	if len(data) < walHeaderSize {
		if last && allZero(data) || last && bytes.HasPrefix([]byte(walMagic), data) {
			return cur, 0, 0, 0, nil // a torn header: the file holds nothing
		}
		return nil, 0, 0, 0, bad(0, "file header is cut short (%d bytes)", len(data))
	}
	hdr := data[:walHeaderSize]
	switch {
	case string(hdr[:8]) != walMagic:
		return nil, 0, 0, 0, bad(0, "not a personad segments log (magic %q)", hdr[:8])
	case binary.LittleEndian.Uint32(hdr[24:]) != crc32.Checksum(hdr[:24], castagnoli):
		if last && allZero(data[8:]) {
			return cur, 0, 0, 0, nil
		}
		return nil, 0, 0, 0, bad(0, "file header checksum mismatch")
	case binary.LittleEndian.Uint32(hdr[8:]) != walFormat:
		return nil, 0, 0, 0, bad(0, "log format %d; this personad reads %d", binary.LittleEndian.Uint32(hdr[8:]), walFormat)
	case binary.LittleEndian.Uint64(hdr[16:]) != first:
		return nil, 0, 0, 0, bad(0, "header says the file starts at version %d, its name %d", binary.LittleEndian.Uint64(hdr[16:]), first)
	}
	applied, skipped := 0, 0
	off := int64(walHeaderSize)
	for off < int64(len(data)) {
		rest := data[off:]
		torn := func(format string, args ...any) (*Snapshot, int, int, int64, error) {
			if last {
				return cur, applied, skipped, off, nil
			}
			return nil, 0, 0, 0, bad(off, format, args...)
		}
		if last && allZero(rest) {
			return cur, applied, skipped, off, nil
		}
		if len(rest) < walRecHdrSize {
			return torn("record header cut short (%d bytes)", len(rest))
		}
		n := int64(binary.LittleEndian.Uint32(rest))
		if n > int64(len(rest))-walRecHdrSize {
			return torn("record of %d bytes, the file has %d left", n, len(rest)-walRecHdrSize)
		}
		p := rest[walRecHdrSize : walRecHdrSize+n]
		crc := crc32.Update(0, castagnoli, rest[:4])
		crc = crc32.Update(crc, castagnoli, p)
		if crc != binary.LittleEndian.Uint32(rest[4:]) {
			if walRecHdrSize+n == int64(len(rest)) {
				return torn("checksum mismatch")
			}
			return nil, 0, 0, 0, bad(off, "checksum mismatch (more records follow, so it is damage, not a torn write)")
		}
		c, err := decodeChange(p, keys)
		if err != nil {
			return nil, 0, 0, 0, bad(off, "%v", err)
		}
		switch {
		case c.op == opKeys:
		case c.version < first:
			return nil, 0, 0, 0, bad(off, "version %d precedes the file's first version %d", c.version, first)
		case c.version <= cur.version:
			skipped++ // already in the snapshot
		case c.version != cur.version+1:
			return nil, 0, 0, 0, bad(off, "version %d does not follow version %d: records are missing", c.version, cur.version)
		default:
			next, res, err := replay(cur, c)
			if err != nil {
				return nil, 0, 0, 0, bad(off, "%v", err)
			}
			if c.key != "" && keys != nil {
				keys.put(c.key, keyEntry{facet: c.facet, value: c.value, mode: c.mode, res: res})
			}
			cur = next
			applied++
		}
		off += walRecHdrSize + n
	}
	return cur, applied, skipped, off, nil
}

// replay applies a logged change to cur, checking that its new users get
// the internal ids they were logged with.
func replay(cur *Snapshot, c *change) (*Snapshot, Result, error) {
	if c.firstUser != uint32(cur.dict.Len()) {
		return nil, Result{}, fmt.Errorf("first new user %d, the dictionary holds %d", c.firstUser, cur.dict.Len())
	}
	w := cur.dict.extend()
	start := c.userBase
	for i, end := range c.userEnds {
		b := c.userBytes[start-c.userBase : end-c.userBase]
		start = end
		n, err := w.intern(unsafe.String(unsafe.SliceData(b), len(b)))
		if err != nil {
			w.abort()
			return nil, Result{}, fmt.Errorf("new user %d: %v", i, err)
		}
		if n != c.firstUser+uint32(i) {
			w.abort()
			return nil, Result{}, fmt.Errorf("new user %d repeats user %d", c.firstUser+uint32(i), n)
		}
	}
	if c.set != nil && !c.set.IsEmpty() && uint64(c.set.Maximum()) >= uint64(w.d.Len()) {
		w.abort()
		return nil, Result{}, fmt.Errorf("bitmap holds internal id %d, the dictionary has %d users", c.set.Maximum(), w.d.Len())
	}
	next, res, err := apply(cur, c, w.d)
	if err == nil && next == nil {
		err = errors.New("the record changes nothing (such uploads are never logged)")
	}
	if err != nil {
		w.abort()
		return nil, Result{}, err
	}
	return next, res, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
