package segments

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
	"unsafe"

	"github.com/RoaringBitmap/roaring/v2"
)

// Mode is how an upload changes its segment.
type Mode uint8

// Upload modes.
const (
	// Replace makes the segment exactly the uploaded users.
	Replace Mode = iota + 1
	// Add puts the uploaded users in the segment, creating it when missing.
	Add
	// Remove takes the uploaded users out of an existing segment.
	Remove
)

func (m Mode) String() string {
	switch m {
	case Replace:
		return "replace"
	case Add:
		return "add"
	case Remove:
		return "remove"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Errors of store mutations.
var (
	// ErrNotFound is a Delete, or a Remove upload, of a segment that does
	// not exist.
	ErrNotFound = errors.New("segments: no such segment")
	// ErrKeyConflict is an idempotency key reused for a different upload
	// (another segment or mode).
	ErrKeyConflict = errors.New("segments: idempotency key already used for a different upload")
	// ErrNotDurable is a mutation whose write-ahead log record could not be
	// written or fsynced: it was not applied and not acknowledged. After a
	// failed fsync the log refuses every later mutation until personad
	// restarts, since what reached the disk is unknown.
	ErrNotDurable = errors.New("segments: write-ahead log failed; change not applied")
	// ErrClosed is a mutation after Close.
	ErrClosed = errors.New("segments: store closed")
	// ErrBadName is a facet or value that is empty or longer than 255
	// bytes (the snapshot format's limit; the wire validates the stricter
	// naming rules).
	ErrBadName = errors.New("segments: facet and value must be 1 to 255 bytes")
)

// Result is what a committed upload or delete did.
type Result struct {
	IDs       uint64 // ids received, duplicates included
	Added     uint64 // users that joined the segment
	Removed   uint64 // users that left it
	Unchanged uint64 // distinct ids whose membership did not change
	NewUsers  uint64 // ids the dictionary had not seen before
	// Cardinality is the segment's size afterwards (0 after a delete).
	Cardinality uint64
	// Version is the store version that holds the change: the new one, or
	// the current one when nothing changed.
	Version uint64
	// Replayed means the idempotency key matched an earlier upload: this
	// is its result, and nothing was applied again.
	Replayed bool
}

// Upload collects the ids of one upload before Store.Commit applies them
// all at once. Ids are resolved against the dictionary as they arrive;
// ids it does not know yet are kept aside and interned at commit. An
// Upload never changes the store: dropping it discards everything.
// It is not safe for concurrent use.
type Upload struct {
	facet, value string
	mode         Mode
	key          string

	dict   *Dict           // resolves ids while streaming
	ids    uint64          // ids added, duplicates included
	known  []uint32        // resolved internal ids not yet in bm
	bm     *roaring.Bitmap // resolved internal ids
	unseen idList          // ids the dictionary did not know
	out    []uint32        // AddMany's lookup results
	found  []bool
	tags   []uint32 // AddMany's hash tags, kept for unseen ids
	views  []string // AddPacked's ids, sharing the caller's chunk
}

// flushKnown is how many resolved ids Upload buffers before sorting them
// into its bitmap: sorted runs make AddMany fast.
const flushKnown = 1 << 16

// NewUpload starts an upload to segment (facet, value). key, when not
// empty, makes it idempotent: committing another upload with the same key
// returns the first one's result.
func (s *Store) NewUpload(facet, value string, mode Mode, key string) (*Upload, error) {
	if err := checkNames(facet, value); err != nil {
		return nil, err
	}
	if mode < Replace || mode > Remove {
		return nil, fmt.Errorf("segments: upload %s:%s: unknown mode %d", facet, value, mode)
	}
	if len(key) > maxNameLen {
		return nil, fmt.Errorf("segments: upload %s:%s: idempotency key is %d bytes, the limit is %d", facet, value, len(key), maxNameLen)
	}
	return &Upload{facet: facet, value: value, mode: mode, key: key, dict: s.Current().dict, bm: roaring.New()}, nil
}

func checkNames(facet, value string) error {
	if len(facet) == 0 || len(facet) > maxNameLen || len(value) == 0 || len(value) > maxNameLen {
		return fmt.Errorf("%w: %q:%q", ErrBadName, facet, value)
	}
	return nil
}

// Len is the number of ids added so far, duplicates included.
func (u *Upload) Len() uint64 { return u.ids }

// Add adds one external user id. An empty id or one longer than MaxIDLen
// is an error wrapping ErrBadUserID, and is not added.
func (u *Upload) Add(id string) error {
	if len(id) == 0 || len(id) > MaxIDLen {
		return fmt.Errorf("%w: got %d bytes", ErrBadUserID, len(id))
	}
	u.ids++
	if n, ok := u.dict.Lookup(id); ok {
		u.known = append(u.known, n)
		if len(u.known) == flushKnown {
			u.flush()
		}
		return nil
	}
	if u.mode == Remove {
		return nil // a user nobody has seen is in no segment
	}
	u.unseen.add(id, u.dict.tag(id))
	return nil
}

// AddMany adds ids, looking them up in batches (see Dict.lookupBatch):
// the fast way to add a chunk. When an id is empty or longer than
// MaxIDLen, AddMany adds none of ids and returns that id's index and an
// error wrapping ErrBadUserID.
func (u *Upload) AddMany(ids []string) (int, error) {
	for i, id := range ids {
		if len(id) == 0 || len(id) > MaxIDLen {
			return i, fmt.Errorf("%w: got %d bytes", ErrBadUserID, len(id))
		}
	}
	if cap(u.out) < len(ids) {
		u.out, u.found, u.tags = make([]uint32, len(ids)), make([]bool, len(ids)), make([]uint32, len(ids))
	}
	out, found, tags := u.out[:len(ids)], u.found[:len(ids)], u.tags[:len(ids)]
	u.dict.lookupBatch(ids, out, found, tags)
	for i, id := range ids {
		if found[i] {
			u.known = append(u.known, out[i])
		} else if u.mode != Remove {
			u.unseen.add(id, tags[i])
		}
	}
	u.ids += uint64(len(ids))
	if len(u.known) >= flushKnown {
		u.flush()
	}
	return -1, nil
}

// AddPacked adds the ids in packed: ids separated by '\n', the last one
// optionally followed by a '\n' too (so "a\nb" and "a\nb\n" both hold
// a and b; an empty packed holds none). It is AddMany without a string
// per id, and keeps no reference to packed. It returns how many ids
// packed holds; when one is empty or longer than MaxIDLen, AddPacked adds
// none of them and returns that id's index and an error wrapping
// ErrBadUserID.
func (u *Upload) AddPacked(packed []byte) (n, bad int, err error) {
	views, err := splitPacked(packed, u.views[:0])
	u.views = views
	if err != nil {
		return 0, len(views), err
	}
	clear(u.views[len(views):cap(views)]) // drop views of older chunks
	if j, err := u.AddMany(views); err != nil {
		return 0, j, err
	}
	return len(views), -1, nil
}

// splitPacked appends to views the ids in packed (see AddPacked), as
// strings sharing packed's memory. On an invalid id it returns the views
// before it and the error.
func splitPacked(packed []byte, views []string) ([]string, error) {
	for len(packed) > 0 {
		i := bytes.IndexByte(packed, '\n')
		id := packed
		if i >= 0 {
			id, packed = packed[:i], packed[i+1:]
		} else {
			packed = nil
		}
		if len(id) == 0 || len(id) > MaxIDLen {
			return views, fmt.Errorf("%w: got %d bytes", ErrBadUserID, len(id))
		}
		views = append(views, unsafe.String(unsafe.SliceData(id), len(id)))
	}
	return views, nil
}

// AddBytes is Add for an id in a byte slice; it keeps no reference to it.
func (u *Upload) AddBytes(id []byte) error {
	return u.Add(unsafe.String(unsafe.SliceData(id), len(id)))
}

func (u *Upload) flush() {
	slices.Sort(u.known)
	u.bm.AddMany(u.known)
	u.known = u.known[:0]
}

// idList holds ids back to back with their hash tags, in blocks, so
// that growing it never copies the ids already in it (a 10M-id upload
// holds about 100 MB of them).
type idList struct {
	blocks []idBlock
	n      int // ids
	bytes  int // id bytes
}

type idBlock struct {
	data []byte   // ids back to back
	ends []uint32 // where each id ends in data
	tags []uint32 // each id's hash tag (Dict.tag)
}

// idBlockBytes is the size of an idList block.
const idBlockBytes = 1 << 20

func (l *idList) add(id string, tag uint32) {
	if len(l.blocks) == 0 || len(l.blocks[len(l.blocks)-1].data)+len(id) > idBlockBytes {
		l.blocks = append(l.blocks, idBlock{
			data: make([]byte, 0, idBlockBytes),
			// Room for 16-byte ids; shorter ones make these grow.
			ends: make([]uint32, 0, idBlockBytes/16),
			tags: make([]uint32, 0, idBlockBytes/16),
		})
	}
	b := &l.blocks[len(l.blocks)-1]
	b.data = append(b.data, id...)
	b.ends = append(b.ends, uint32(len(b.data)))
	b.tags = append(b.tags, tag)
	l.n++
	l.bytes += len(id)
}

// id returns the i-th id of the block.
func (b *idBlock) id(i int) string {
	var start uint32
	if i > 0 {
		start = b.ends[i-1]
	}
	s := b.data[start:b.ends[i]]
	return unsafe.String(unsafe.SliceData(s), len(s))
}

// change is one mutation as the log records it and apply performs it: the
// users it interns, in internal-id order from firstUser, and the internal
// ids it adds, removes or replaces the segment with.
type change struct {
	version   uint64
	op        op
	mode      Mode
	at        time.Time
	facet     string
	value     string
	key       string
	ids       uint64 // ids received (for the idempotent result)
	firstUser uint32
	userEnds  []uint32 // where each new user's id ends in userBytes
	userBytes []byte
	set       *roaring.Bitmap // nil for a delete
}

type op uint8

const (
	opUpload op = 1
	opDelete op = 2
	// opKeys carries the remembered idempotency keys into a new log file,
	// so that they outlive the snapshot that deletes the old files. It
	// changes no segment and takes no version.
	opKeys op = 3
)

// apply builds the snapshot that follows cur with c applied, and what it
// did. The dictionary grows through w (over cur's dictionary), whose
// users must already be interned; apply never modifies cur.
func apply(cur *Snapshot, c *change, dict *Dict) (*Snapshot, Result, error) {
	k := Key{c.facet, c.value}
	old := cur.segs[k]
	res := Result{IDs: c.ids, Version: c.version, NewUsers: uint64(len(c.userEnds))}
	segs := maps.Clone(cur.segs)
	switch c.op {
	case opDelete:
		if old == nil {
			return nil, Result{}, ErrNotFound
		}
		res.Removed = old.Users.GetCardinality()
		delete(segs, k)
	case opUpload:
		var users *roaring.Bitmap
		var oldCard, both uint64
		if old != nil {
			oldCard = old.Users.GetCardinality()
			both = old.Users.AndCardinality(c.set)
		}
		setCard := c.set.GetCardinality()
		switch c.mode {
		case Replace:
			users = c.set.Clone()
			res.Added, res.Removed, res.Unchanged = setCard-both, oldCard-both, both
		case Add:
			if old == nil {
				users = c.set.Clone()
			} else {
				users = roaring.Or(old.Users, c.set)
			}
			res.Added, res.Unchanged = setCard-both, both
		case Remove:
			if old == nil {
				return nil, Result{}, ErrNotFound
			}
			users = roaring.AndNot(old.Users, c.set)
			res.Removed, res.Unchanged = both, setCard-both
		default:
			return nil, Result{}, fmt.Errorf("segments: unknown upload mode %d", c.mode)
		}
		users.RunOptimize()
		segs[k] = &Segment{Facet: c.facet, Value: c.value, Users: users, Version: c.version, Updated: c.at}
		res.Cardinality = users.GetCardinality()
	default:
		return nil, Result{}, fmt.Errorf("segments: unknown operation %d", c.op)
	}
	return &Snapshot{version: c.version, segs: segs, dict: dict}, res, nil
}

// noChange reports whether applying c to cur would change nothing, so the
// upload needs neither a log record nor a new version.
func noChange(cur *Snapshot, c *change, res Result) bool {
	return c.op == opUpload && len(c.userEnds) == 0 && res.Added == 0 && res.Removed == 0 &&
		cur.segs[Key{c.facet, c.value}] != nil
}
