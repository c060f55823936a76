package segments

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

var interleaveSeeds = flag.Int("interleaveseeds", 0, "seeds of TestInterleavedUploads, each run durable and in memory (0: 3, or 1 under the race detector)")

// TestInterleavedUploads runs random interleavings of several uploads at
// once (every mode, chunks of one to hundreds of ids, known and new,
// through AddMany and AddPacked) with their discards and commits, deletes,
// checkpoints and crashes (durable store), or Publish of the current
// snapshot and of a rebuilt one (in memory). After every step the store
// must hold what a model applying each committed upload at its commit
// holds, every user of the published and the staged dictionary must
// resolve to itself, and a restart must recover exactly what was served.
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
	ids  []string
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
			u, err := st.NewUpload(k.Facet, k.Value, mode, "")
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, &openUpload{u: u, k: k, mode: mode})
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
			_, err := st.Commit(x.u)
			if x.mode == Remove && m[x.k] == nil {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("%s: remove from a missing segment: %v, want ErrNotFound", when, err)
				}
				break
			}
			if err != nil {
				t.Fatalf("%s: commit: %v", when, err)
			}
			if x.mode == Replace || m[x.k] == nil {
				m[x.k] = map[string]bool{}
			}
			for _, id := range x.ids {
				if x.mode == Remove {
					delete(m[x.k], id)
				} else {
					m[x.k][id] = true
				}
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
	if durable {
		before := st.Current()
		crash(st)
		st = openStore(t, dir)
		if d := diffSnapshots(st.Current(), before); d != "" {
			t.Fatalf("recovered store differs:\n%s", d)
		}
	}
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
