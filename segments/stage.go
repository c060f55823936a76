package segments

import (
	"sync"
	"sync/atomic"
)

// stage is the store's dictionary writer for uploads in progress: uploads
// intern their new ids here while their streams are still arriving, so
// that a commit only publishes them. It holds one Dict, d, that extends
// the published dictionary (see "Growing under readers" on Dict): its
// first pub users are the published ones, the rest are staged — interned
// by uploads not yet committed, visible to no reader, in no log record.
//
// A commit publishes every staged user (its own and, since uploads
// interleave their chunks, those of uploads still streaming) and logs
// them in its record, in internal-id order, so that replay gives them the
// same ids. An upload that is discarded takes its users back when they
// are the newest and no other upload found them (rollback): the common
// case of one upload at a time leaves the dictionary exactly as it was.
// Otherwise they stay, known but in no segment, and are published and
// logged with the next commit: each costs its dictionary bytes (about
// 25 B for a 9-byte id) and nothing else, and a later upload of the same
// id finds it known. An upload that found another's staged user holds
// its internal id, to commit it later, so that user may never be taken
// back: the next id interned would reuse its number for someone else
// (pinned).
//
// It is safe for concurrent use; mu guards everything.
type stage struct {
	mu  sync.Mutex
	gen uint64 // bumped when Publish replaces the published dictionary
	d   *Dict  // the published users, then the staged ones
	pub int    // users published (or being published by a commit)
	// pinned: users below it are never taken back, since an upload other
	// than the one that staged them found them (see Upload.resolve).
	pinned int
	// room is how many users reset makes room for (Config.ReserveUsers).
	room int
}

// reset makes the stage extend dict, the newly published dictionary,
// dropping whatever was staged: an upload that staged users under the
// old generation re-resolves its ids (Upload.remap).
//
// It then makes room for g.room users in all (Config.ReserveUsers).
//
// With own, dict is the store's alone (recovered by Open: its table holds
// exactly its users, and nothing else writes to it), and the stage
// continues it (Dict.continued): its table and its arrays, spare room
// included, as replay left them, at no cost in time or memory. Else (a
// dictionary handed to NewStore or Publish) it may come from anywhere:
// other stores may serve it too, and its table may hold tombstones and
// slots of users beyond it. The stage then rebuilds the table, so that
// it stores no slot into a table others share (each counting only its
// own users towards the load) and counts every slot it keeps, and
// extends a view (Dict.view), which must grow before it appends, so that
// stores sharing a snapshot never write into one another's users.
func (g *stage) reset(dict *Dict, own bool) {
	g.gen++
	if own {
		g.d = dict.continued()
	} else {
		g.d = dict.view()
		g.d.grow(max(len(dict.slots), tableSize(dict.Len())))
	}
	g.pub, g.pinned = dict.Len(), 0
	if users, bytes := roomFor(g.d, g.room); users > 0 {
		g.reserve(users, bytes, 0, 0)
	}
}

// roomFor returns the users and id bytes that d must make room for to hold
// room users: at the average id length so far, 16 bytes while d is
// empty. (0, 0) when it holds that many already.
func roomFor(d *Dict, room int) (users, bytes int) {
	n := len(d.ends)
	if room <= n {
		return 0, 0
	}
	perUser := 16
	if n > 0 {
		perUser = (len(d.arena) + n - 1) / n
	}
	users = room - n
	return users, min(users*perUser, MaxDictBytes-len(d.arena))
}

// machineMemory is availableMemory, a variable for tests.
var machineMemory = availableMemory

// roomBytes is about the memory that making room for users more users and
// bytes more id bytes in d takes: their end offsets and bytes, and the
// table that holds them all.
func roomBytes(d *Dict, users, bytes int) int {
	return 4*users + bytes + 8*tableSize(len(d.ends)+users)
}

// view returns the dictionary of every user interned so far, for
// publishing, and marks them published: rollback never takes them back.
func (g *stage) view() *Dict {
	d := g.d
	g.pub = len(d.ends)
	return d.view()
}

// reserve makes room for users more users with bytes more id bytes. When
// the table, the arena or the ends must grow for them, it grows to hold
// moreUsers and moreBytes beyond them too (an upload's prediction, see
// Upload.Expect), and at least by half (the table) or an eighth (the
// arena and ends, which grow in place; see Dict.reserve), so that a long
// upload rebuilds the table only a few times.
func (g *stage) reserve(users, bytes, moreUsers, moreBytes int) {
	d := g.d
	if need := len(d.ends) + d.tombs + users; need*10 > len(d.slots)*7 {
		d.grow(max(len(d.slots)*3/2, tableSize(len(d.ends)+users+moreUsers)))
	}
	if len(d.arena)+bytes > cap(d.arena) {
		bytes += moreBytes
	}
	if len(d.ends)+users > cap(d.ends) {
		users += moreUsers
	}
	d.reserve(users, bytes)
}

// intern returns id's internal id, whose hash tag is tag, adding it as a
// staged user when new (added).
func (g *stage) intern(id string, tag uint32) (u uint32, added bool, err error) {
	d := g.d
	u, slot, err := d.internSlot(id, tag, func() {
		d.grow(max(len(d.slots)*3/2, tableSize(len(d.ends)+1), 16))
	})
	return u, slot >= 0, err
}

// pin keeps user u, found by an upload that did not stage it, from being
// taken back.
func (g *stage) pin(u uint32) { g.pinned = max(g.pinned, int(u)+1) }

// rollback takes back the n users from first on, which one upload staged,
// when they are the newest and none is published or pinned: their slots
// become tombstones (so that no probe chain through them breaks, whatever
// the order the table was built in) and the arena and ends shrink back.
// Readers never see them: every published view is shorter. It reports
// whether it did.
func (g *stage) rollback(first uint32, n int) bool {
	d := g.d
	if n == 0 || int(first) < max(g.pub, g.pinned) || int(first)+n != len(d.ends) {
		return false
	}
	slots := uint64(len(d.slots))
	for u := first; u < first+uint32(n); u++ {
		tag := d.tag(d.bytes(u))
		want := uint64(tag)<<32 | uint64(u+1)
		for i := home(tag, slots); ; {
			if atomic.LoadUint64(&d.slots[i]) == want {
				atomic.StoreUint64(&d.slots[i], uint64(tag)<<32|tombstone)
				break
			}
			if i++; i == slots {
				i = 0
			}
		}
	}
	d.tombs += n
	var start uint32
	if first > 0 {
		start = d.ends[first-1]
	}
	d.arena, d.ends = d.arena[:start], d.ends[:first]
	return true
}
