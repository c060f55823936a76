package segments

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
)

var interleaveSeeds = flag.Int("interleaveseeds", 0, "seeds of TestInterleavedUploads, each run durable and in memory (0: 3, or 1 under the race detector)")

// TestInterleavedUploads runs random interleavings of several uploads at
// once (every mode, chunks of one to hundreds of ids, known and new,
// through AddMany and AddPacked) with their discards and commits, deletes,
// checkpoints and crashes (durable store), or Publish of the current
// snapshot and of a rebuilt one (in memory). A third of the uploads carry
// one of a few idempotency keys, so that keys are reused, for the same
// upload and for others; in the durable store one commit in eight meets a
// failing fsync. After every step the store must hold what a model
// applying each committed upload at its commit holds, every user of the
// published and the staged dictionary must resolve to itself, and a
// restart must recover exactly what was served; a key's reuse must replay
// its first commit's result or be refused as a conflict; a failed commit
// must publish nothing and fail every later mutation, and a restart then
// recover all of it or none of it.
func TestInterleavedUploads(t *testing.T) {
	seeds := *interleaveSeeds
	switch {
	case seeds > 0:
	case raceEnabled:
		seeds = 1 // ten times slower; the mapped run (make test-mapped) runs three
	default:
		seeds = 3
	}
	for seed := range uint64(seeds) {
		big := seed%2 == 1 // long chunks of users in order, which the run prediction resolves
		t.Run(fmt.Sprint("durable", seed), func(t *testing.T) { interleave(t, seed, true, big) })
		t.Run(fmt.Sprint("memory", seed), func(t *testing.T) { interleave(t, seed, false, big) })
	}
}

// openUpload is an upload in progress in TestInterleavedUploads.
type openUpload struct {
	u    *Upload
	k    Key
	mode Mode
	key  string
	ids  []string
}

// keyedUpload is what a store remembers of an idempotency key: the upload
// first committed with it, and that commit's result. res is unknown
// (known false) when the commit failed and a restart recovered it; maybe
// means that a failed commit might have left the key remembered or not.
type keyedUpload struct {
	k            Key
	mode         Mode
	ids          []string // in the order sent: the key's reuse with others is a conflict
	res          Result
	known, maybe bool
}

// apply returns a copy of m with an upload of ids committed.
func (m model) apply(k Key, mode Mode, ids []string) model {
	next := model{}
	for k, set := range m {
		next[k] = maps.Clone(set)
	}
	if mode == Replace || next[k] == nil {
		next[k] = map[string]bool{}
	}
	for _, id := range ids {
		if mode == Remove {
			delete(next[k], id)
		} else {
			next[k][id] = true
		}
	}
	return next
}

func interleave(t *testing.T, seed uint64, durable, big bool) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(seed, seed))
	var st *Store
	if durable {
		st = openStore(t, dir)
	} else {
		st = NewStore(nil)
	}
	m := model{}
	keyed := map[string]*keyedUpload{}
	var commits, replays, conflicts, failed int
	keys := []Key{{"t", "a"}, {"t", "b"}, {"t", "c"}}
	var open []*openUpload
	nextNew := 0
	id := func() string {
		if r.IntN(3) == 0 {
			nextNew++
			return fmt.Sprintf("n%d", nextNew)
		}
		return fmt.Sprintf("u%d", r.IntN(60))
	}
	for i := range 1500 {
		when := fmt.Sprintf("seed %d step %d", seed, i)
		switch op := r.IntN(20); {
		case op < 3 || len(open) == 0: // start
			k := keys[r.IntN(len(keys))]
			mode := Mode(1 + r.IntN(3))
			var key string
			switch r.IntN(12) {
			case 0: // a key any upload may reuse: mostly conflicts
				key = fmt.Sprintf("any%d", r.IntN(4))
			case 1, 2, 3: // a key of this segment and mode: mostly replays
				key = fmt.Sprintf("%s.%s.%d", k.Value, mode, r.IntN(4))
			}
			u, err := st.NewUpload(k.Facet, k.Value, mode, key)
			if err != nil {
				t.Fatal(err)
			}
			x := &openUpload{u: u, k: k, mode: mode, key: key}
			if e := keyed[key]; e != nil && r.IntN(2) == 0 {
				// A retry: the same ids, in the same order, in other
				// chunks (a later chunk may still make it a conflict).
				for rest := e.ids; len(rest) > 0; {
					n := 1 + r.IntN(len(rest))
					if _, _, err := u.AddPacked([]byte(strings.Join(rest[:n], "\n") + "\n")); err != nil {
						t.Fatal(err)
					}
					rest = rest[n:]
				}
				x.ids = slices.Clone(e.ids)
			}
			open = append(open, x)
		case op < 11: // a chunk
			x := open[r.IntN(len(open))]
			var ids []string
			if big && r.IntN(2) == 0 {
				lo := r.IntN(2000)
				for j := range r.IntN(700) {
					if r.IntN(50) == 0 {
						ids = append(ids, id())
					} else {
						ids = append(ids, fmt.Sprintf("u%d", lo+j))
					}
				}
			}
			for range 1 + r.IntN(6) {
				ids = append(ids, id())
			}
			if r.IntN(2) == 0 {
				if _, _, err := x.u.AddPacked([]byte(strings.Join(ids, "\n"))); err != nil {
					t.Fatal(err)
				}
			} else if _, err := x.u.AddMany(ids); err != nil {
				t.Fatal(err)
			}
			x.ids = append(x.ids, ids...)
		case op < 13: // discard
			j := r.IntN(len(open))
			open[j].u.Discard()
			open = append(open[:j], open[j+1:]...)
		case op < 17: // commit
			j := r.IntN(len(open))
			x := open[j]
			open = append(open[:j], open[j+1:]...)
			failing := durable && r.IntN(8) == 0
			if failing {
				st.wal.sync = func(*os.File) error { return errors.New("EIO") }
			}
			before := st.Current()
			res, err := st.Commit(x.u)
			if failing {
				st.wal.sync = (*os.File).Sync
			}
			if e := keyed[x.key]; e != nil {
				if e.maybe && err == nil && !res.Replayed {
					delete(keyed, x.key) // the failed commit's key was not recovered
				} else {
					if e.maybe && !errors.Is(err, ErrKeyConflict) {
						e.maybe = false // it was
					}
					if checkReplay(t, when, e, x, res, err) {
						replays++
					} else {
						conflicts++
					}
					if st.Current() != before {
						t.Fatalf("%s: a replayed upload changed the store", when)
					}
					break
				}
			}
			if x.mode == Remove && m[x.k] == nil {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("%s: remove from a missing segment: %v, want ErrNotFound", when, err)
				}
				break
			}
			next := m.apply(x.k, x.mode, x.ids)
			if failing && err != nil {
				failed++
				if !errors.Is(err, ErrNotDurable) {
					t.Fatalf("%s: commit with a failing fsync: %v, want ErrNotDurable", when, err)
				}
				if st.Current() != before {
					t.Fatalf("%s: a commit that was not durable was published", when)
				}
				// The log now refuses every change, until a restart.
				nextNew++
				if _, err := tryUpload(st, "t", "a", Add, "", fmt.Sprintf("n%d", nextNew)); !errors.Is(err, ErrNotDurable) {
					t.Fatalf("%s: upload after a failed fsync: %v, want ErrNotDurable", when, err)
				}
				for _, x := range open {
					x.u.Discard()
				}
				open = nil
				crash(st)
				st = openStore(t, dir)
				switch got := st.Current(); {
				case maps.EqualFunc(m, next, maps.Equal) && m.diff(got) == "":
					if x.key != "" {
						keyed[x.key] = &keyedUpload{k: x.k, mode: x.mode, ids: x.ids, maybe: true}
					}
				case m.diff(got) == "":
				case next.diff(got) == "":
					m = next
					if x.key != "" {
						keyed[x.key] = &keyedUpload{k: x.k, mode: x.mode, ids: x.ids}
					}
				default:
					t.Fatalf("%s: after a failed commit, recovered neither the store before it (%s) nor with it (%s)", when, m.diff(got), next.diff(got))
				}
				break
			}
			if err != nil {
				t.Fatalf("%s: commit: %v", when, err)
			}
			m = next
			commits++
			if res.Replayed || res.Cardinality != uint64(len(m[x.k])) {
				t.Fatalf("%s: commit result %+v, want cardinality %d, not replayed", when, res, len(m[x.k]))
			}
			if x.key != "" {
				res.Replayed = true
				keyed[x.key] = &keyedUpload{k: x.k, mode: x.mode, ids: x.ids, res: res, known: true}
			}
		case op == 17: // delete
			k := keys[r.IntN(len(keys))]
			_, err := st.Delete(k.Facet, k.Value)
			if (m[k] == nil) != errors.Is(err, ErrNotFound) {
				t.Fatalf("%s: delete: %v", when, err)
			}
			delete(m, k)
		case op == 18 && durable:
			if err := st.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		case op == 18 && r.IntN(2) == 0:
			st.Publish(st.Current())
		case op == 18: // the same segments over another dictionary
			cur := st.Current()
			b := NewBuilder()
			for _, seg := range cur.Segments() {
				b.Add(seg.Facet, seg.Value)
				ids := members(cur, seg.Facet, seg.Value)
				for j := len(ids) - 1; j >= 0; j-- {
					b.Add(seg.Facet, seg.Value, ids[j])
				}
			}
			st.Publish(b.Build(cur.Version() + 1))
		case op == 19 && durable: // crash and restart
			before := st.Current()
			for _, x := range open {
				x.u.Discard()
			}
			open = nil
			crash(st)
			st = openStore(t, dir)
			if d := diffSnapshots(st.Current(), before); d != "" {
				t.Fatalf("%s: recovered store differs:\n%s", when, d)
			}
		}
		m.check(t, st.Current(), when)
		checkDictSelf(t, st, when)
	}
	t.Logf("%d commits, %d replays, %d key conflicts, %d failed commits", commits, replays, conflicts, failed)
	if replays == 0 || conflicts == 0 || durable && failed == 0 {
		t.Fatal("the run tried too little")
	}
	if durable {
		before := st.Current()
		crash(st)
		st = openStore(t, dir)
		if d := diffSnapshots(st.Current(), before); d != "" {
			t.Fatalf("recovered store differs:\n%s", d)
		}
	}
}

// checkReplay checks the commit of upload x, whose key e remembers: a
// conflict when x is another segment or mode, or other ids, else e's
// result replayed. It reports whether the result was replayed.
func checkReplay(t *testing.T, when string, e *keyedUpload, x *openUpload, res Result, err error) bool {
	t.Helper()
	if e.k != x.k || e.mode != x.mode || !slices.Equal(e.ids, x.ids) {
		if !errors.Is(err, ErrKeyConflict) {
			t.Fatalf("%s: key %q of %s %v (%d ids) reused for %s %v (%d ids, the same: %t): %v, want ErrKeyConflict",
				when, x.key, e.mode, e.k, len(e.ids), x.mode, x.k, len(x.ids), slices.Equal(e.ids, x.ids), err)
		}
		return false
	}
	if err != nil || !res.Replayed {
		t.Fatalf("%s: key %q reused: %+v, %v; want its result replayed", when, x.key, res, err)
	}
	if e.known && res != e.res {
		t.Fatalf("%s: key %q replayed %+v, want %+v", when, x.key, res, e.res)
	}
	e.res, e.known = res, true
	return true
}

// checkDictSelf checks that every user of the published dictionary and of
// the stage resolves to itself: no id twice, no slot lost.
func checkDictSelf(t *testing.T, st *Store, when string) {
	t.Helper()
	check := func(d *Dict, which string) {
		for i := range d.Len() {
			id, _ := d.ID(uint32(i))
			if n, ok := d.Lookup(id); !ok || n != uint32(i) {
				t.Fatalf("%s: %s Lookup(%q) = %d, %t; want %d", when, which, id, n, ok, i)
			}
		}
	}
	check(st.Current().Dict(), "published")
	st.stage.mu.Lock()
	defer st.stage.mu.Unlock()
	check(st.stage.d, "staged")
}
