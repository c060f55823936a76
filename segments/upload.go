package segments

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"time"
	"unsafe"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/cespare/xxhash/v2"
)

// Mode is how an upload changes its segment.
type Mode uint8

// Upload modes.
const (
	// Replace makes the segment exactly the uploaded users.
	Replace Mode = iota + 1
	// Add puts the uploaded users in the segment, creating it when missing.
	Add
	// Remove takes the uploaded users out of an existing segment, as the
	// store holds them when the upload commits: an id no user had when it
	// arrived is kept (its bytes; once when it is sent again soon after,
	// within the last 4096 unknown ids) and looked up again then, since an
	// upload committed in between may have added it.
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
	// (another segment or mode, or other ids).
	ErrKeyConflict = errors.New("segments: idempotency key already used for a different upload")
	// ErrNotDurable is a mutation whose write-ahead log record could not be
	// written or fsynced: it was not applied and not acknowledged. After a
	// failed fsync the log refuses every later mutation until personad
	// restarts, since what reached the disk is unknown: the record itself
	// may have, and the restart then applies it, so its client cannot
	// tell (personactl says the upload may have been applied or not).
	// A write the disk refused, cut back, wraps ErrNotApplied too.
	ErrNotDurable = errors.New("segments: write-ahead log failed; change not applied")
	// ErrNotApplied wraps ErrNotDurable, and reads the same: a mutation
	// whose record the disk refused to write (full, read-only), the log
	// cut back to its last whole record, so that it is certainly not
	// applied, now or after a restart, and the same mutation may succeed
	// once there is room. An error wrapping ErrNotDurable but not
	// ErrNotApplied (a failed fsync, a write the log could not cut back,
	// a log that failed before) leaves the outcome unknown until a
	// restart. personad's Segments service sends this one as UNAVAILABLE
	// with a google.rpc.ErrorInfo of reason NOT_APPLIED.
	ErrNotApplied = fmt.Errorf("%w", ErrNotDurable)
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
// all at once. Ids are resolved as they arrive: ids the dictionary does
// not know yet are interned at once as staged users (see stage), which
// no reader sees until a commit publishes them, so that the commit only
// publishes. An Upload changes no segment and no published dictionary
// until Commit; one that will not be committed must be Discarded, which
// takes back the users it staged (when no other upload has staged any
// after them; otherwise they stay, known and in no segment).
// It is not safe for concurrent use.
type Upload struct {
	s            *Store
	facet, value string
	mode         Mode
	key          string

	gen   uint64          // the stage generation its internal ids belong to
	src   *Dict           // that generation's dictionary, for remap
	first uint32          // the first user it staged, when added > 0
	added int             // users it staged
	done  bool            // committed or discarded
	hint  uint64          // ids expected in all (Expect)
	ids   uint64          // ids added, duplicates included
	known []uint32        // resolved internal ids not yet in bm
	spare []uint32        // flush's scratch
	bm    *roaring.Bitmap // resolved internal ids
	next  uint32          // the user the next id is predicted to be (see lookup)
	block *lookupBlock    // lookup's results and scratch
	views []string        // AddPacked's ids, sharing the caller's chunk
	// missing: a Remove's ids that no user had when they arrived, each
	// followed by '\n', looked up again at commit (see resolve).
	missing []byte
	// recent: where in missing an id was kept, +1, by its tag's low bits:
	// a cheap filter of the same id sent again (see keepMissing).
	recent *[recentMissing]int
	one    [1]string
	// sum hashes a keyed upload's ids, each followed by '\n', in the order
	// added, so that its key, used again for other ids, is told apart
	// from a retry (keyLog.check).
	sum *xxhash.Digest
}

// recentMissing is how many of a Remove's ids unknown on arrival its
// duplicate filter remembers.
const recentMissing = 1 << 12

// flushKnown is how many resolved ids Upload buffers before sorting them
// into its bitmap: sorted runs make AddMany fast.
const flushKnown = 1 << 16

// NewUpload starts an upload to segment (facet, value). key, when not
// empty, makes it idempotent: committing the same upload again (the same
// segment, mode and ids, in the same order) with the key returns the
// first one's result; committing a different one with it, ErrKeyConflict.
// (A key remembered without the hash of its ids, see keyEntry.sum, is not
// compared by ids.)
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
	u := &Upload{s: s, facet: facet, value: value, mode: mode, key: key, bm: roaring.New()}
	if key != "" {
		u.sum = xxhash.New()
	}
	s.stage.mu.Lock()
	u.gen, u.src = s.stage.gen, s.stage.d
	s.stage.mu.Unlock()
	return u, nil
}

func checkNames(facet, value string) error {
	if len(facet) == 0 || len(facet) > maxNameLen || len(value) == 0 || len(value) > maxNameLen {
		return fmt.Errorf("%w: %q:%q", ErrBadName, facet, value)
	}
	return nil
}

// Expect tells the upload it will hold about n ids, duplicates included.
// Whenever the dictionary must grow for its new ids, it then makes room
// for as many new users as the rest of n predicts at the rate of new ids
// so far, rather than growing the table by half, step by step (each step
// rebuilds it). It is a hint: a wrong n costs memory or time, never
// correctness. What it reserves is bounded by maxAhead users per id
// received (and their bytes, at the length of the new ids so far), or by
// as many users and id bytes as the dictionary already holds, so that an
// upload's first growth of a large dictionary already makes room for all
// of it (one rebuild of the table, not two), and a false hint at most
// doubles the dictionary's arrays. What was reserved and not used stays
// reserved, for later uploads.
func (u *Upload) Expect(n uint64) { u.hint = n }

// maxAhead bounds what Expect reserves in a small dictionary: new users
// per id received so far.
const maxAhead = 64

// Add adds one external user id. An id that breaks the rules of uploaded
// ids (UserIDProblem) is an error wrapping ErrBadUserID, and is not
// added; a new id that
// would overflow the dictionary is an error wrapping ErrDictFull.
func (u *Upload) Add(id string) error {
	u.one[0] = id
	_, err := u.AddMany(u.one[:])
	u.one[0] = ""
	return err
}

// AddMany adds ids, looking them up in batches (see Dict.lookupBatch) and
// staging the new ones: the fast way to add a chunk. When an id breaks
// the rules of uploaded ids (UserIDProblem), AddMany adds none of ids and
// returns that id's index and an error wrapping ErrBadUserID. When the
// dictionary is full it returns an error wrapping ErrDictFull, having
// added some of ids.
func (u *Upload) AddMany(ids []string) (int, error) {
	for i, id := range ids {
		if err := checkUserID(id); err != nil {
			return i, err
		}
	}
	if u.sum != nil { // every id staged, even if add fails midway
		for _, id := range ids {
			u.sum.WriteString(id) //nolint:errcheck // a Digest never fails
			u.sum.WriteString("\n")
		}
	}
	return -1, u.add(ids)
}

// add is AddMany of ids already checked.
func (u *Upload) add(ids []string) error {
	if u.done {
		return errUploadDone
	}
	if len(ids) == 0 {
		return nil // nothing to resolve: the stage's lock stays free
	}
	g := &u.s.stage
	g.mu.Lock()
	err := u.resolve(ids, true)
	g.mu.Unlock()
	u.ids += uint64(len(ids))
	if len(u.known) >= flushKnown {
		u.flush()
	}
	if err != nil {
		return fmt.Errorf("segments: upload %s:%s: %w", u.facet, u.value, err)
	}
	return nil
}

// resolve appends the internal ids of ids to u.known, staging the new
// ones unless u removes; a Remove keeps those it does not find when keep.
// Callers hold the stage's lock.
func (u *Upload) resolve(ids []string, keep bool) error {
	g := &u.s.stage
	if u.gen != g.gen {
		if err := u.remap(); err != nil {
			return err
		}
	}
	// A user found that u did not stage may have been staged by another
	// upload, which must then not take it back: u holds its internal id
	// (stage.pin; pinning a published user changes nothing). With u's users
	// interleaved with another upload's, [u.first, u.first+u.added) holds
	// some of the other's too; neither can then take its users back: they
	// are not the newest run.
	pin := func(n uint32) {
		if n-u.first >= uint32(u.added) {
			g.pin(n)
		}
	}
	// Look up, then intern the misses, a block at a time, so that the
	// interning finds in the cache the table slots the lookups brought in.
	for lo := 0; lo < len(ids); lo += resolveBlock {
		b := ids[lo:min(lo+resolveBlock, len(ids))]
		out, found, tags := u.lookup(g.d, b)
		if u.mode == Remove {
			// A user nobody has seen is in no segment now, but an upload
			// committed before u may yet add it: Commit looks it up again
			// (resolveMissing). Its bytes are kept, not staged: a Remove
			// of unknown ids leaves the dictionary as it was.
			for i, id := range b {
				if found[i] {
					pin(out[i])
					u.known = append(u.known, out[i])
				} else if keep {
					u.keepMissing(id, tags[i])
				}
			}
			continue
		}
		var misses, bytes int
		for i, id := range b {
			if !found[i] {
				misses++
				bytes += len(id)
			}
		}
		if misses > 0 {
			// Expect: when the dictionary must grow anyway, make room
			// for the new users the rest of the upload predicts at this
			// block's rate too, but for no more than maxAhead per id
			// received, or the users (and bytes) already known, so that
			// a false hint cannot make an upload reserve much memory.
			var more, moreBytes float64
			if seen := u.ids + uint64(lo+len(b)); u.hint > seen {
				perID := float64(bytes) / float64(misses)
				more = min(float64(u.hint-seen)*float64(misses)/float64(len(b)), max(maxAhead*float64(seen), float64(g.d.Len())))
				moreBytes = min(more*perID, max(maxAhead*float64(seen)*perID, float64(len(g.d.arena))))
			}
			g.reserve(misses, bytes, int(more), int(moreBytes))
		}
		for i, id := range b {
			if !found[i] {
				n, added, err := g.intern(id, tags[i])
				if err != nil {
					return err
				}
				if added {
					if u.added == 0 {
						u.first = n
					}
					u.added++
				}
				out[i] = n
			} else {
				pin(out[i])
			}
			u.known = append(u.known, out[i])
		}
	}
	return nil
}

// lookup looks up b, at most one block of ids, in d: out[i] is b[i]'s
// internal id where found[i], and tags[i] its hash tag where not.
//
// Lists are often uploaded again in the order the dictionary first saw
// them: the same file refreshed, or another segment cut from the same
// export. Their ids are then users interned one after the other. So
// lookup first compares each id with the user after the last one found
// (u.next): an id that continues the run is resolved by comparing bytes
// that lie in order in the arena, and not by a probe at a random place in
// the table, which in a large dictionary misses the caches and the TLB.
// The ids that do not continue it are looked up in one batch
// (lookupBatch), and the run goes on from the last id found. A miss
// costs one comparison with bytes already in the cache: the predicted
// user stays the same until an id matches it.
func (u *Upload) lookup(d *Dict, b []string) (out []uint32, found []bool, tags []uint32) {
	if u.block == nil {
		u.block = new(lookupBlock)
	}
	r := u.block
	out, found, tags = r.out[:len(b)], r.found[:len(b)], r.tags[:len(b)]
	n := 0
	next, users := u.next, uint32(len(d.ends))
	for i, id := range b {
		if next < users && d.bytes(next) == id {
			out[i], found[i] = next, true
			next++
			continue
		}
		r.ids[n], r.at[n] = id, uint16(i)
		n++
	}
	runtime.KeepAlive(d) // its mapped memory, until compared (offheap.go)
	if n == len(b) {
		d.lookupBatch(b, out, found, tags)
	} else if n > 0 {
		d.lookupBatch(r.ids[:n], r.restOut[:n], r.restFound[:n], r.restTags[:n])
		for j, i := range r.at[:n] {
			out[i], found[i], tags[i] = r.restOut[j], r.restFound[j], r.restTags[j]
		}
	}
	clear(r.ids[:n]) // keep no reference to the caller's ids
	for i := len(b) - 1; i >= 0; i-- {
		if found[i] {
			next = out[i] + 1
			break
		}
	}
	u.next = next
	return out, found, tags
}

// resolveBlock is how many ids resolve looks up at a time.
const resolveBlock = 256

// lookupBlock holds Upload.lookup's results for a block of ids, and the
// ids it looks up in a batch: where they are in the block, and what the
// batch found.
type lookupBlock struct {
	out   [resolveBlock]uint32
	found [resolveBlock]bool
	tags  [resolveBlock]uint32

	ids       [resolveBlock]string
	at        [resolveBlock]uint16
	restOut   [resolveBlock]uint32
	restFound [resolveBlock]bool
	restTags  [resolveBlock]uint32
}

// remap moves u to the stage's current generation after Publish replaced
// the dictionary: it resolves again, in the new dictionary, every id it
// resolved in the old one. Callers hold the stage's lock.
func (u *Upload) remap() error {
	g := &u.s.stage
	u.flush()
	old, src := u.bm, u.src
	u.bm, u.gen, u.src, u.added = roaring.New(), g.gen, g.d, 0
	var batch []string
	it := old.Iterator()
	for it.HasNext() {
		id, ok := src.ID(it.Next())
		if !ok {
			continue // cannot happen: src holds every id u resolved in it
		}
		batch = append(batch, id)
		if len(batch) == flushKnown || !it.HasNext() {
			if err := u.resolve(batch, true); err != nil {
				return err
			}
			batch = batch[:0]
			u.flush()
		}
	}
	runtime.KeepAlive(src) // batch's ids point into its mapped arena (offheap.go)
	return nil
}

// keepMissing keeps id, with hash tag tag, in u.missing, unless the same
// id was kept recently: a list that names one unknown user many times
// holds its bytes about once, not once per line.
func (u *Upload) keepMissing(id string, tag uint32) {
	if u.recent == nil {
		u.recent = new([recentMissing]int)
	}
	slot := &u.recent[tag%recentMissing]
	if at := *slot - 1; at >= 0 && at+len(id) < len(u.missing) &&
		u.missing[at+len(id)] == '\n' && string(u.missing[at:at+len(id)]) == id {
		return
	}
	*slot = len(u.missing) + 1
	u.missing = append(append(u.missing, id...), '\n')
}

// resolveMissing looks up, at commit, the ids of a Remove that no user had
// when they arrived: users committed since then (or staged, and published
// by this commit) are taken out with the others. Those still unknown are
// in no segment. It goes through them a block at a time, holding no more
// than a block's views of them. Callers hold the stage's lock.
func (u *Upload) resolveMissing() error {
	rest := u.missing
	u.missing, u.recent = nil, nil
	var b [resolveBlock]string
	for len(rest) > 0 {
		n := 0
		for ; n < len(b) && len(rest) > 0; n++ {
			i := bytes.IndexByte(rest, '\n') // every id ends in one
			b[n], rest = unsafe.String(unsafe.SliceData(rest), i), rest[i+1:]
		}
		if err := u.resolve(b[:n], false); err != nil {
			return err
		}
		if len(u.known) >= flushKnown {
			u.flush()
		}
	}
	return nil
}

// Discard drops the upload: nothing of it is applied, and the users it
// staged are taken back when no other upload staged users after them (see
// stage). Discard after Commit, or twice, does nothing.
func (u *Upload) Discard() {
	if u.done {
		return
	}
	u.done = true
	g := &u.s.stage
	g.mu.Lock()
	if u.gen == g.gen {
		g.rollback(u.first, u.added)
	}
	g.mu.Unlock()
}

// errUploadDone is an Upload used after Commit or Discard: a bug in the
// caller.
var errUploadDone = errors.New("segments: upload already committed or discarded")

// AddPacked adds the ids in packed: ids separated by '\n', the last one
// optionally followed by a '\n' too (so "a\nb" and "a\nb\n" both hold
// a and b; an empty packed holds none). It is AddMany without a string
// per id, and keeps no reference to packed. It returns how many ids
// packed holds; when one breaks the rules of uploaded ids
// (UserIDProblem), AddPacked adds none of them and returns that id's
// index and an error wrapping ErrBadUserID.
func (u *Upload) AddPacked(packed []byte) (n, bad int, err error) {
	views, err := splitPacked(packed, u.views[:0])
	u.views = views[:0] // the array, for the next chunk
	defer clear(views)  // keep no reference to packed
	if err != nil {
		return 0, len(views), err
	}
	if u.sum != nil && len(packed) > 0 { // as AddMany's: the same ids give the same sum
		u.sum.Write(packed) //nolint:errcheck // a Digest never fails
		if packed[len(packed)-1] != '\n' {
			u.sum.WriteString("\n")
		}
	}
	if err := u.add(views); err != nil {
		return 0, -1, err
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
		s := unsafe.String(unsafe.SliceData(id), len(id))
		if err := checkUserID(s); err != nil {
			return views, err
		}
		views = append(views, s)
	}
	return views, nil
}

// AddBytes is Add for an id in a byte slice; it keeps no reference to it.
func (u *Upload) AddBytes(id []byte) error {
	return u.Add(unsafe.String(unsafe.SliceData(id), len(id)))
}

func (u *Upload) flush() {
	var sorted []uint32
	sorted, u.spare = sortUsers(u.known, u.spare)
	u.bm.AddMany(sorted)
	u.known = sorted[:0]
}

// sortUsers sorts ids, with spare as scratch, and returns them sorted and
// the other buffer, either of which may be spare (grown to len(ids)). Ids
// already in order (new users, known ones in the order they were
// interned) are left as they are. Others are sorted by radix, least
// significant digit first, 11 bits at a time, skipping the digits that
// all ids share (the highest, in a dictionary of fewer than 2^22 users):
// at most three passes that read and write in order, against a
// comparison sort's 16 rounds of unpredictable branches for a buffer of
// 64K ids (flushKnown).
func sortUsers(ids, spare []uint32) (sorted, other []uint32) {
	if slices.IsSorted(ids) {
		return ids, spare
	}
	const bits, digits = 11, 3
	var count [digits][1 << bits]int
	for _, id := range ids {
		for d := range digits {
			count[d][id>>(d*bits)&(1<<bits-1)]++
		}
	}
	if cap(spare) < len(ids) {
		spare = make([]uint32, len(ids))
	}
	src, dst := ids, spare[:len(ids)]
	for d := range digits {
		c := &count[d]
		if c[ids[0]>>(d*bits)&(1<<bits-1)] == len(ids) {
			continue // every id has this digit
		}
		at := 0
		for i, n := range c {
			c[i] = at
			at += n
		}
		for _, id := range src {
			k := id >> (d * bits) & (1<<bits - 1)
			dst[c[k]] = id
			c[k]++
		}
		src, dst = dst, src
	}
	return src, dst
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
	// userEnds are where each new user's id ends, as offsets past
	// userBase; userBytes starts at userBase. A commit points them into
	// the dictionary's own arrays (userBase: where its first new id
	// starts); a decoded record has userBase 0.
	userEnds  []uint32
	userBase  uint32
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
	// opKeysSummed is opKeys whose entries end with the hash of their
	// upload's ids (keyEntry.sum); the log writes only these, and reads
	// both (an opKeys entry's sum is unknown, 0).
	opKeysSummed op = 4
)

// apply builds the snapshot that follows cur with c applied, and what it
// did. dict is cur's dictionary grown by c's new users, already interned
// (the stage's view at commit, or the log's users at replay); apply never
// modifies cur. An upload that changes nothing (no new user, no member
// added or removed, the segment exists) returns a nil snapshot and its
// result.
func apply(cur *Snapshot, c *change, dict *Dict) (*Snapshot, Result, error) {
	k := Key{c.facet, c.value}
	old := cur.segs[k]
	res := Result{IDs: c.ids, Version: c.version, NewUsers: uint64(len(c.userEnds))}
	switch c.op {
	case opDelete:
		if old == nil {
			return nil, Result{}, ErrNotFound
		}
		res.Removed = old.Users.GetCardinality()
		segs := maps.Clone(cur.segs)
		delete(segs, k)
		return &Snapshot{version: c.version, segs: segs, dict: dict}, res, nil
	case opUpload:
	default:
		return nil, Result{}, fmt.Errorf("segments: unknown operation %d", c.op)
	}
	var oldCard, both uint64
	if old != nil {
		oldCard = old.Users.GetCardinality()
		both = old.Users.AndCardinality(c.set)
	}
	setCard := c.set.GetCardinality()
	switch c.mode {
	case Replace:
		res.Added, res.Removed, res.Unchanged = setCard-both, oldCard-both, both
	case Add:
		res.Added, res.Unchanged = setCard-both, both
	case Remove:
		if old == nil {
			return nil, Result{}, ErrNotFound
		}
		res.Removed, res.Unchanged = both, setCard-both
	default:
		return nil, Result{}, fmt.Errorf("segments: unknown upload mode %d", c.mode)
	}
	if old != nil && len(c.userEnds) == 0 && res.Added == 0 && res.Removed == 0 {
		// Nothing changes (a file uploaded again): no snapshot to build,
		// nothing to log, the version stays.
		res.Cardinality = oldCard
		return nil, res, nil
	}
	var users *roaring.Bitmap
	switch {
	case c.mode == Replace || old == nil:
		users = c.set.Clone()
	case c.mode == Add:
		users = roaring.Or(old.Users, c.set)
	default: // Remove
		users = roaring.AndNot(old.Users, c.set)
	}
	users.RunOptimize()
	segs := maps.Clone(cur.segs)
	segs[k] = &Segment{Facet: c.facet, Value: c.value, Users: users, Version: c.version, Updated: c.at}
	res.Cardinality = users.GetCardinality()
	return &Snapshot{version: c.version, segs: segs, dict: dict}, res, nil
}
