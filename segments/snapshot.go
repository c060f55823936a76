package segments

import (
	"cmp"
	"fmt"
	"slices"
	"time"
	"unsafe"

	"github.com/RoaringBitmap/roaring/v2"
)

// Segment is one (facet, value) pair and the users in it, as dense internal
// user ids. A Segment in a published Snapshot is immutable.
type Segment struct {
	Facet   string
	Value   string
	Users   *roaring.Bitmap
	Version uint64    // store version that last changed it
	Updated time.Time // when it last changed
}

// Key is a segment's identity.
type Key struct{ Facet, Value string }

// Snapshot is an immutable view of every segment and the user dictionary.
// It is safe for concurrent use; Segment and User never allocate and take
// no lock.
type Snapshot struct {
	version uint64
	segs    map[Key]*Segment
	dict    *Dict
}

// emptySnapshot is what a store with no data serves: version 0, no
// segments, no users.
func emptySnapshot() *Snapshot {
	return &Snapshot{segs: map[Key]*Segment{}, dict: newDict(0)}
}

// Version increases with every change published by the store.
func (s *Snapshot) Version() uint64 { return s.version }

// Segment returns the segment (facet, value), or nil.
func (s *Snapshot) Segment(facet, value string) *Segment { return s.segs[Key{facet, value}] }

// User returns the internal id of an external user id.
func (s *Snapshot) User(id string) (uint32, bool) { return s.dict.Lookup(id) }

// Dict returns the user dictionary.
func (s *Snapshot) Dict() *Dict { return s.dict }

// Len is the number of segments.
func (s *Snapshot) Len() int { return len(s.segs) }

// Segments returns every segment ordered by facet, then value.
func (s *Snapshot) Segments() []*Segment {
	out := make([]*Segment, 0, len(s.segs))
	for _, seg := range s.segs {
		out = append(out, seg)
	}
	slices.SortFunc(out, func(a, b *Segment) int {
		return cmp.Or(cmp.Compare(a.Facet, b.Facet), cmp.Compare(a.Value, b.Value))
	})
	return out
}

// Builder assembles a Snapshot in memory. It is not safe for concurrent use.
//
// Users are interned in order of first appearance, so a caller that interns
// users 0..n-1 first knows their internal ids without asking (the demo
// world generator does). Errors — an invalid or one-too-many user id — are
// sticky: the offending id is skipped and Err reports the first of them.
type Builder struct {
	dict *Dict
	segs map[Key]*Segment
	err  error
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder {
	return &Builder{dict: newDict(0), segs: map[Key]*Segment{}}
}

// Grow makes room for users more users, so that interning them does not
// rehash the dictionary.
func (b *Builder) Grow(users int) {
	if n := b.dict.Len() + users; tableSize(n) > len(b.dict.slots) {
		b.dict.grow(tableSize(n))
		b.dict.reserve(users, 0)
	}
}

// Intern returns the internal id of the external user id, adding it to the
// dictionary when new.
func (b *Builder) Intern(id string) (uint32, error) {
	return b.dict.intern(id)
}

// InternBytes is Intern for an id held in a byte slice, which it copies.
func (b *Builder) InternBytes(id []byte) (uint32, error) {
	// intern copies id into its arena and keeps no reference to it.
	return b.dict.intern(unsafe.String(unsafe.SliceData(id), len(id)))
}

// Users is the number of users interned so far.
func (b *Builder) Users() int { return b.dict.Len() }

func (b *Builder) segment(facet, value string) *Segment {
	k := Key{facet, value}
	seg := b.segs[k]
	if seg == nil {
		seg = &Segment{Facet: facet, Value: value, Users: roaring.New()}
		b.segs[k] = seg
	}
	return seg
}

// Add puts the users (external ids) in segment (facet, value), interning
// them. An invalid id is skipped and recorded for Err.
func (b *Builder) Add(facet, value string, users ...string) {
	seg := b.segment(facet, value)
	for _, u := range users {
		n, err := b.Intern(u)
		if err != nil {
			b.fail(fmt.Errorf("segments: add to %s:%s: %w", facet, value, err))
			continue
		}
		seg.Users.Add(n)
	}
}

// AddIDs puts users already interned, by internal id, in segment
// (facet, value); ascending ids are the fastest. Ids not yet interned are
// skipped and recorded for Err.
func (b *Builder) AddIDs(facet, value string, ids ...uint32) {
	seg := b.segment(facet, value)
	n := uint32(b.dict.Len())
	unknown := func(id uint32) bool { return id >= n }
	if slices.ContainsFunc(ids, unknown) {
		b.fail(fmt.Errorf("segments: add to %s:%s: internal id not interned (%d users)", facet, value, n))
		ids = slices.DeleteFunc(slices.Clone(ids), unknown)
	}
	seg.Users.AddMany(ids)
}

func (b *Builder) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

// Err returns the first error met while adding users, or nil.
func (b *Builder) Err() error { return b.err }

// Build returns the snapshot with the given version, every segment stamped
// with that version and the current time. The Builder starts over empty.
func (b *Builder) Build(version uint64) *Snapshot { return b.BuildAt(version, time.Now()) }

// BuildAt is Build with the segments' Updated time given, for output that
// must be reproducible.
func (b *Builder) BuildAt(version uint64, at time.Time) *Snapshot {
	for _, seg := range b.segs {
		seg.Users.RunOptimize()
		seg.Version, seg.Updated = version, at
	}
	s := &Snapshot{version: version, segs: b.segs, dict: b.dict.compact()}
	b.dict, b.segs = newDict(0), map[Key]*Segment{}
	return s
}
