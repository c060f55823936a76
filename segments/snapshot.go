package segments

import (
	"cmp"
	"slices"
	"sync/atomic"
	"time"

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
// It is safe for concurrent use.
type Snapshot struct {
	version uint64
	segs    map[Key]*Segment
	dict    *Dict
}

// Version increases with every change published by the store.
func (s *Snapshot) Version() uint64 { return s.version }

// Segment returns the segment (facet, value), or nil.
func (s *Snapshot) Segment(facet, value string) *Segment { return s.segs[Key{facet, value}] }

// User returns the internal id of an external user id.
func (s *Snapshot) User(id string) (uint32, bool) { return s.dict.Lookup(id) }

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

// Dict maps external user ids to dense internal ids, assigned in order of
// first appearance. Ids are never reassigned.
type Dict struct {
	ids map[string]uint32
}

// Lookup returns the internal id of an external user id.
func (d *Dict) Lookup(id string) (uint32, bool) {
	if d == nil {
		return 0, false
	}
	n, ok := d.ids[id]
	return n, ok
}

// Len is the number of users.
func (d *Dict) Len() int {
	if d == nil {
		return 0
	}
	return len(d.ids)
}

// Builder assembles a Snapshot in memory. It is not safe for concurrent use.
type Builder struct {
	dict *Dict
	segs map[Key]*Segment
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder {
	return &Builder{dict: &Dict{ids: map[string]uint32{}}, segs: map[Key]*Segment{}}
}

// Add puts the users (external ids) in segment (facet, value).
func (b *Builder) Add(facet, value string, users ...string) {
	k := Key{facet, value}
	seg := b.segs[k]
	if seg == nil {
		seg = &Segment{Facet: facet, Value: value, Users: roaring.New()}
		b.segs[k] = seg
	}
	for _, u := range users {
		n, ok := b.dict.ids[u]
		if !ok {
			n = uint32(len(b.dict.ids))
			b.dict.ids[u] = n
		}
		seg.Users.Add(n)
	}
}

// Build returns the snapshot with the given version.
func (b *Builder) Build(version uint64) *Snapshot {
	now := time.Now()
	for _, seg := range b.segs {
		seg.Users.RunOptimize()
		seg.Version, seg.Updated = version, now
	}
	return &Snapshot{version: version, segs: b.segs, dict: b.dict}
}

// Store publishes the current Snapshot. It is safe for concurrent use.
type Store struct {
	cur atomic.Pointer[Snapshot]
}

// NewStore returns a store serving snap.
func NewStore(snap *Snapshot) *Store {
	s := &Store{}
	s.cur.Store(snap)
	return s
}

// Current returns the snapshot decisions should use.
func (s *Store) Current() *Snapshot { return s.cur.Load() }

// Publish makes snap current.
func (s *Store) Publish(snap *Snapshot) { s.cur.Store(snap) }
