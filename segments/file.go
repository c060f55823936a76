package segments

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/personad/personad/internal/atomicfile"
)

// SnapshotFile is the name of the snapshot file in a store's directory.
const SnapshotFile = "segments.snap"

// The snapshot file format, version 1. All integers are little-endian.
//
//	header   magic "PSEGSNAP" | format u32 (1) | flags u32 (0) |
//	         store version u64 | reserved u32 (0) | crc32c(preceding 28 bytes) u32
//	section  kind u32 | length u64 | payload (length bytes) |
//	         crc32c(kind, length, payload) u32
//
// Sections come in this order: one dictionary, the segments in strictly
// increasing (facet, value) order, one end section; nothing follows it.
//
//	dictionary (kind 1)  users u32 | ends (users × u32) | id bytes
//	    ends[n] is where user n's external id ends in the id bytes (it
//	    starts at ends[n-1], or 0); the users are in internal-id order.
//	segment (kind 2)     facet length u16 | facet | value length u16 | value |
//	                     version u64 | updated (Unix ns, 0 = unknown) i64 |
//	                     cardinality u64 | roaring portable serialization
//	end (kind 3)         segments u32 | users u32
//
// Every section carries its own CRC-32C (Castagnoli), so an error names the
// damaged section and its offset; the end section makes truncation
// detectable. The header's store version is the version the write-ahead log
// continues from: recovery loads the snapshot, then replays the log records
// with a higher version. New section kinds (a kind nobody reads today) mean
// a new format version; a reader refuses versions it does not know.
const (
	snapMagic      = "PSEGSNAP"
	snapFormat     = 1
	headerSize     = 32
	sectionHdrSize = 12
	maxNameLen     = 255
)

// Section kinds of the snapshot file.
const (
	kindDict    = 1
	kindSegment = 2
	kindEnd     = 3
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CorruptError reports a damaged snapshot: where the damage is and what it
// is. Loading stops at the first one; nothing of the file is served.
type CorruptError struct {
	File    string // the file, empty for a stream
	Section string // "header", "dictionary", "segment title:cmo", "end", or "section"
	Offset  int64  // where the section starts
	Msg     string
}

func (e *CorruptError) Error() string {
	file := e.File
	if file == "" {
		file = "snapshot"
	}
	return fmt.Sprintf("segments: %s: %s at offset %d: %s", file, e.Section, e.Offset, e.Msg)
}

// WriteSnapshot writes snap durably as dir's snapshot file (SnapshotFile),
// replacing any previous one: it writes a temporary file, fsyncs it,
// renames it into place and fsyncs dir, so after a crash the file is
// either the old snapshot or the new one, whole. It creates dir when
// missing.
func WriteSnapshot(dir string, snap *Snapshot) error {
	err := atomicfile.Write(filepath.Join(dir, SnapshotFile), 0o644, func(w io.Writer) error {
		_, err := snap.WriteTo(w)
		return err
	})
	if err != nil {
		return fmt.Errorf("segments: snapshot: %w", err)
	}
	return nil
}

// WriteTo writes the snapshot to w in the snapshot file format. The output
// depends only on the snapshot's content: equal snapshots give equal bytes.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	e := &encoder{w: w}
	var hdr [headerSize]byte
	copy(hdr[:], snapMagic)
	binary.LittleEndian.PutUint32(hdr[8:], snapFormat)
	binary.LittleEndian.PutUint64(hdr[16:], s.version)
	binary.LittleEndian.PutUint32(hdr[28:], crc32.Checksum(hdr[:28], castagnoli))
	e.write(hdr[:])

	d := s.dict
	users := d.Len()
	e.begin(kindDict, 4+4*uint64(users)+uint64(len(d.arena)))
	e.u32(uint32(users))
	chunk := make([]byte, 0, 64<<10)
	for i, end := range d.ends {
		chunk = binary.LittleEndian.AppendUint32(chunk, end)
		if len(chunk) == cap(chunk) || i == users-1 {
			e.write(chunk)
			chunk = chunk[:0]
		}
	}
	e.write(d.arena)
	e.end()

	segs := s.Segments()
	for _, seg := range segs {
		if len(seg.Facet) == 0 || len(seg.Facet) > maxNameLen || len(seg.Value) == 0 || len(seg.Value) > maxNameLen {
			return e.n, fmt.Errorf("segments: segment %q:%q: facet and value must be 1 to %d bytes", seg.Facet, seg.Value, maxNameLen)
		}
		size := seg.Users.GetSerializedSizeInBytes()
		e.begin(kindSegment, uint64(2+len(seg.Facet)+2+len(seg.Value)+24)+size)
		e.u16(uint16(len(seg.Facet)))
		e.write([]byte(seg.Facet))
		e.u16(uint16(len(seg.Value)))
		e.write([]byte(seg.Value))
		e.u64(seg.Version)
		var updated int64
		if !seg.Updated.IsZero() {
			updated = seg.Updated.UnixNano()
		}
		e.u64(uint64(updated))
		e.u64(seg.Users.GetCardinality())
		if e.err == nil {
			before := e.n
			if _, err := seg.Users.WriteTo(e); err != nil && e.err == nil {
				e.err = err
			}
			if e.err == nil && uint64(e.n-before) != size {
				return e.n, fmt.Errorf("segments: segment %s:%s: bitmap wrote %d bytes, announced %d", seg.Facet, seg.Value, e.n-before, size)
			}
		}
		e.end()
	}

	e.begin(kindEnd, 8)
	e.u32(uint32(len(segs)))
	e.u32(uint32(users))
	e.end()
	return e.n, e.err
}

// encoder writes sections, keeping the running CRC of the current one.
// Its first error sticks.
type encoder struct {
	w   io.Writer
	n   int64
	crc uint32
	err error
	num [8]byte
}

// Write lets a bitmap serialize itself into the current section.
func (e *encoder) Write(b []byte) (int, error) {
	e.write(b)
	if e.err != nil {
		return 0, e.err
	}
	return len(b), nil
}

func (e *encoder) write(b []byte) {
	if e.err != nil {
		return
	}
	n, err := e.w.Write(b)
	e.n += int64(n)
	e.crc = crc32.Update(e.crc, castagnoli, b)
	e.err = err
}

func (e *encoder) u16(v uint16) { e.write(binary.LittleEndian.AppendUint16(e.num[:0], v)) }
func (e *encoder) u32(v uint32) { e.write(binary.LittleEndian.AppendUint32(e.num[:0], v)) }
func (e *encoder) u64(v uint64) { e.write(binary.LittleEndian.AppendUint64(e.num[:0], v)) }

func (e *encoder) begin(kind uint32, length uint64) {
	e.crc = 0
	e.u32(kind)
	e.u64(length)
}

func (e *encoder) end() {
	sum := e.crc
	e.u32(sum)
}

// ReadSnapshotFile reads a snapshot file. A missing file is an error
// satisfying errors.Is(err, os.ErrNotExist); a damaged one is a
// *CorruptError naming the file.
func ReadSnapshotFile(path string) (*Snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("segments: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("segments: %w", err)
	}
	// Payloads larger than the buffer are read straight into place, so the
	// buffer only needs to hold headers and small segments.
	d := &decoder{r: bufio.NewReaderSize(f, 64<<10), file: path, size: fi.Size(), verify: true}
	return d.snapshot()
}

// ReadSnapshot decodes a snapshot written by Snapshot.WriteTo. It reads r to
// the end.
func ReadSnapshot(r io.Reader) (*Snapshot, error) {
	d := &decoder{r: bufio.NewReader(r), size: -1, verify: true}
	return d.snapshot()
}

// decoder reads the snapshot format. Lengths read from the input are
// checked against the bytes left (when the size is known) before anything
// is allocated for them, and when the size is unknown, buffers grow only
// as data actually arrives, so a damaged length never allocates wildly.
type decoder struct {
	r    *bufio.Reader
	file string
	size int64 // total bytes, -1 when unknown
	off  int64
	// verify checks CRCs. Only the fuzz target turns it off, to reach the
	// parsers behind the checksums.
	verify bool
	buf    []byte

	sec    string // the section being read, for errors
	secOff int64
}

func (d *decoder) corrupt(format string, args ...any) error {
	return &CorruptError{File: d.file, Section: d.sec, Offset: d.secOff, Msg: fmt.Sprintf(format, args...)}
}

// read returns the next n bytes, in d.buf: valid until the next read.
func (d *decoder) read(n uint64) ([]byte, error) {
	if d.size >= 0 && n > uint64(d.size-d.off) {
		return nil, d.corrupt("truncated: needs %d bytes at offset %d, the file has %d left", n, d.off, d.size-d.off)
	}
	d.buf = d.buf[:0]
	for uint64(len(d.buf)) < n {
		have, rem := len(d.buf), n-uint64(len(d.buf))
		if d.size < 0 {
			rem = min(rem, 16<<20)
		}
		d.buf = slices.Grow(d.buf, int(rem))[:have+int(rem)]
		m, err := io.ReadFull(d.r, d.buf[have:])
		d.buf = d.buf[:have+m]
		d.off += int64(m)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, d.corrupt("truncated: needs %d bytes at offset %d, the input ends %d bytes later", n, d.off-int64(len(d.buf)), len(d.buf))
		}
		if err != nil {
			return nil, d.ioErr(err)
		}
	}
	return d.buf, nil
}

func (d *decoder) ioErr(err error) error {
	if d.file == "" {
		return fmt.Errorf("segments: reading snapshot: %w", err)
	}
	return fmt.Errorf("segments: reading %s: %w", d.file, err)
}

func (d *decoder) snapshot() (*Snapshot, error) {
	d.sec = "header"
	hdr, err := d.read(headerSize)
	if err != nil {
		return nil, err
	}
	if string(hdr[:8]) != snapMagic {
		return nil, d.corrupt("not a personad segments snapshot (magic %q)", hdr[:8])
	}
	if got, want := binary.LittleEndian.Uint32(hdr[28:]), crc32.Checksum(hdr[:28], castagnoli); d.verify && got != want {
		return nil, d.corrupt("checksum mismatch: stored %08x, computed %08x", got, want)
	}
	if f := binary.LittleEndian.Uint32(hdr[8:]); f != snapFormat {
		return nil, d.corrupt("format version %d; this personad reads version %d", f, snapFormat)
	}
	if fl, res := binary.LittleEndian.Uint32(hdr[12:]), binary.LittleEndian.Uint32(hdr[24:]); fl != 0 || res != 0 {
		return nil, d.corrupt("unknown flags %#x or reserved field %#x", fl, res)
	}
	snap := &Snapshot{version: binary.LittleEndian.Uint64(hdr[16:]), segs: map[Key]*Segment{}}

	var last *Segment
	for {
		kind, p, err := d.section()
		if err != nil {
			return nil, err
		}
		if snap.dict == nil && kind != kindDict {
			return nil, d.corrupt("section kind %d before the user dictionary", kind)
		}
		switch kind {
		case kindDict:
			if snap.dict != nil {
				return nil, d.corrupt("a second user dictionary")
			}
			if snap.dict, err = d.dict(p); err != nil {
				return nil, err
			}
		case kindSegment:
			seg, err := d.segment(p, uint64(snap.dict.Len()))
			if err != nil {
				return nil, err
			}
			if last != nil && cmp.Or(cmp.Compare(last.Facet, seg.Facet), cmp.Compare(last.Value, seg.Value)) >= 0 {
				return nil, d.corrupt("segment %s:%s is out of order or repeated after %s:%s", seg.Facet, seg.Value, last.Facet, last.Value)
			}
			snap.segs[Key{seg.Facet, seg.Value}], last = seg, seg
		case kindEnd:
			d.sec = "end"
			if len(p) != 8 {
				return nil, d.corrupt("payload is %d bytes, want 8", len(p))
			}
			segs, users := binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:])
			if int(segs) != len(snap.segs) || int(users) != snap.dict.Len() {
				return nil, d.corrupt("end records %d segments and %d users, the file holds %d and %d", segs, users, len(snap.segs), snap.dict.Len())
			}
			if _, err := d.r.ReadByte(); err != io.EOF {
				d.sec, d.secOff = "trailer", d.off
				if err != nil {
					return nil, d.ioErr(err)
				}
				return nil, d.corrupt("data after the end section")
			}
			return snap, nil
		default:
			return nil, d.corrupt("unknown section kind %d", kind)
		}
	}
}

// section reads one section, checks its CRC and returns its kind and
// payload (valid until the next read).
func (d *decoder) section() (uint32, []byte, error) {
	d.sec, d.secOff = "section", d.off
	if d.size >= 0 && d.off == d.size {
		return 0, nil, d.corrupt("truncated: the file ends without an end section")
	}
	h, err := d.read(sectionHdrSize)
	if err != nil {
		return 0, nil, err
	}
	kind, n := binary.LittleEndian.Uint32(h), binary.LittleEndian.Uint64(h[4:])
	switch kind {
	case kindDict:
		d.sec = "dictionary"
	case kindSegment:
		d.sec = "segment"
	case kindEnd:
		d.sec = "end"
	}
	sum := crc32.Update(0, castagnoli, h)
	p, err := d.read(n)
	if err != nil {
		return 0, nil, err
	}
	sum = crc32.Update(sum, castagnoli, p)
	var tail [4]byte
	if _, err := io.ReadFull(d.r, tail[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, d.corrupt("truncated: the checksum at offset %d is missing", d.off)
		}
		return 0, nil, d.ioErr(err)
	}
	d.off += 4
	if got := binary.LittleEndian.Uint32(tail[:]); d.verify && got != sum {
		if kind == kindSegment {
			// Name the segment as recorded: a hint, since the damage may be
			// in the name itself.
			if f, v, ok := segmentNames(p); ok {
				d.sec = "segment " + f + ":" + v
			}
		}
		return 0, nil, d.corrupt("checksum mismatch: stored %08x, computed %08x", got, sum)
	}
	return kind, p, nil
}

func (d *decoder) dict(p []byte) (*Dict, error) {
	if len(p) < 4 {
		return nil, d.corrupt("payload is %d bytes, too short for the user count", len(p))
	}
	users := uint64(binary.LittleEndian.Uint32(p))
	if users > MaxUsers || 4+4*users > uint64(len(p)) {
		return nil, d.corrupt("%d users need %d bytes of offsets, the payload has %d", users, 4*users, len(p)-4)
	}
	ends, ids := p[4:4+4*users], p[4+4*users:]
	dict := newDict(0)
	dict.ends, dict.mem[memEnds] = allocGrowable[uint32](int(users), MaxUsers)
	var prev uint32
	for i := range dict.ends {
		end := binary.LittleEndian.Uint32(ends[4*i:])
		if end <= prev || end-prev > MaxIDLen || uint64(end) > uint64(len(ids)) {
			return nil, d.corrupt("user %d: id ends at %d after %d (ids are 1 to %d of %d bytes)", i, end, prev, MaxIDLen, len(ids))
		}
		dict.ends[i], prev = end, end
	}
	if uint64(prev) != uint64(len(ids)) {
		return nil, d.corrupt("ids take %d bytes, the payload holds %d", prev, len(ids))
	}
	dict.arena, dict.mem[memArena] = allocGrowable[byte](len(ids), MaxDictBytes)
	copy(dict.arena, ids)
	if err := dict.index(); err != nil {
		return nil, d.corrupt("%v", err)
	}
	return dict, nil
}

func (d *decoder) segment(p []byte, users uint64) (*Segment, error) {
	facet, value, ok := segmentNames(p)
	if !ok {
		return nil, d.corrupt("bad facet or value name")
	}
	p = p[4+len(facet)+len(value):]
	d.sec = "segment " + facet + ":" + value
	if len(p) < 24 {
		return nil, d.corrupt("payload too short")
	}
	seg := &Segment{Facet: facet, Value: value, Version: binary.LittleEndian.Uint64(p)}
	if ns := int64(binary.LittleEndian.Uint64(p[8:])); ns != 0 {
		seg.Updated = time.Unix(0, ns).UTC()
	}
	card := binary.LittleEndian.Uint64(p[16:])
	bm, err := decodeBitmap(p[24:])
	if err != nil {
		return nil, d.corrupt("bitmap: %v", err)
	}
	if got := bm.GetCardinality(); got != card {
		return nil, d.corrupt("bitmap holds %d users, the section records %d", got, card)
	}
	if !bm.IsEmpty() && uint64(bm.Maximum()) >= users {
		return nil, d.corrupt("bitmap holds internal id %d, the dictionary has %d users", bm.Maximum(), users)
	}
	seg.Users = bm
	return seg, nil
}

// segmentNames returns the facet and value at the start of a segment
// payload.
func segmentNames(p []byte) (facet, value string, ok bool) {
	name := func() (string, bool) {
		if len(p) < 2 {
			return "", false
		}
		n := int(binary.LittleEndian.Uint16(p))
		if n == 0 || n > maxNameLen || len(p) < 2+n {
			return "", false
		}
		s := string(p[2 : 2+n])
		p = p[2+n:]
		return s, true
	}
	facet, ok1 := name()
	value, ok2 := name()
	return facet, value, ok1 && ok2
}

// decodeBitmap decodes roaring's portable serialization, which must fill b
// exactly, into a bitmap that owns its memory. The roaring decoder trusts
// its input more than a file deserves: its panics become errors.
func decodeBitmap(b []byte) (bm *roaring.Bitmap, err error) {
	defer func() {
		if r := recover(); r != nil {
			bm, err = nil, fmt.Errorf("malformed: %v", r)
		}
	}()
	bm = roaring.New()
	n, err := bm.ReadFrom(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	if n != int64(len(b)) {
		return nil, fmt.Errorf("serialization is %d bytes, the section holds %d", n, len(b))
	}
	if err := bm.Validate(); err != nil {
		return nil, err
	}
	return bm, nil
}
