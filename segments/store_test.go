package segments

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

// openStore opens a store in dir, closed when the test ends.
func openStore(t testing.TB, dir string) *Store {
	t.Helper()
	st, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// upload commits one upload of ids.
func upload(t testing.TB, st *Store, facet, value string, mode Mode, key string, ids ...string) Result {
	t.Helper()
	res, err := tryUpload(st, facet, value, mode, key, ids...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func tryUpload(st *Store, facet, value string, mode Mode, key string, ids ...string) (Result, error) {
	u, err := st.NewUpload(facet, value, mode, key)
	if err != nil {
		return Result{}, err
	}
	for _, id := range ids {
		if err := u.Add(id); err != nil {
			u.Discard()
			return Result{}, err
		}
	}
	return st.Commit(u)
}

// members returns the external ids in segment (facet, value), sorted, or
// nil when the segment does not exist.
func members(s *Snapshot, facet, value string) []string {
	seg := s.Segment(facet, value)
	if seg == nil {
		return nil
	}
	out := []string{}
	it := seg.Users.Iterator()
	for it.HasNext() {
		id, _ := s.Dict().ID(it.Next())
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func TestCommitModes(t *testing.T) {
	st := openStore(t, t.TempDir())
	type step struct {
		mode Mode
		ids  []string
		want Result
		seg  []string
	}
	for i, s := range []step{
		{Add, []string{"a", "b", "a"}, Result{IDs: 3, Added: 2, NewUsers: 2, Cardinality: 2, Version: 1}, []string{"a", "b"}},
		{Add, []string{"b", "c"}, Result{IDs: 2, Added: 1, Unchanged: 1, NewUsers: 1, Cardinality: 3, Version: 2}, []string{"a", "b", "c"}},
		// Nothing changes: no new version.
		{Add, []string{"a", "c"}, Result{IDs: 2, Unchanged: 2, Cardinality: 3, Version: 2}, []string{"a", "b", "c"}},
		{Remove, []string{"a", "zz", "d"}, Result{IDs: 3, Removed: 1, Cardinality: 2, Version: 3}, []string{"b", "c"}},
		{Replace, []string{"c", "d", "e"}, Result{IDs: 3, Added: 2, Removed: 1, Unchanged: 1, NewUsers: 2, Cardinality: 3, Version: 4}, []string{"c", "d", "e"}},
		{Replace, nil, Result{Removed: 3, Version: 5}, []string{}},
	} {
		got := upload(t, st, "title", "cmo", s.mode, "", s.ids...)
		if d := cmp.Diff(s.want, got); d != "" {
			t.Errorf("step %d (%s %v): result (-want +got):\n%s", i, s.mode, s.ids, d)
		}
		if d := cmp.Diff(s.seg, members(st.Current(), "title", "cmo")); d != "" {
			t.Errorf("step %d: members (-want +got):\n%s", i, d)
		}
	}
	if _, err := tryUpload(st, "title", "cfo", Remove, "", "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove from a missing segment: %v, want ErrNotFound", err)
	}
	if _, err := st.Delete("title", "cfo"); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete of a missing segment: %v, want ErrNotFound", err)
	}
	upload(t, st, "title", "cfo", Add, "", "x")
	if res, err := st.Delete("title", "cfo"); err != nil || res.Removed != 1 || res.Version != 7 {
		t.Errorf("Delete = %+v, %v; want 1 removed at version 7", res, err)
	}
	if st.Current().Segment("title", "cfo") != nil {
		t.Error("deleted segment still served")
	}
	u, err := st.NewUpload("title", "cmo", Add, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", strings.Repeat("x", MaxIDLen+1)} {
		if err := u.Add(id); !errors.Is(err, ErrBadUserID) {
			t.Errorf("Add(%d bytes) = %v, want ErrBadUserID", len(id), err)
		}
	}
	if err := u.Add(strings.Repeat("x", MaxIDLen)); err != nil {
		t.Errorf("Add(%d bytes) = %v", MaxIDLen, err)
	}
	for _, n := range [][2]string{{"", "v"}, {"f", ""}, {strings.Repeat("f", 256), "v"}} {
		if _, err := st.NewUpload(n[0], n[1], Add, ""); !errors.Is(err, ErrBadName) {
			t.Errorf("NewUpload(%q, %q) = %v, want ErrBadName", n[0], n[1], err)
		}
	}
}

// TestUploadNotCommitted: an upload that is discarded, however far it got
// (here past several growths of the table it staged its users in),
// changes nothing, not even the dictionary: neither what is published
// meanwhile, nor what the next commit publishes and logs.
func TestUploadNotCommitted(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	upload(t, st, "title", "cmo", Add, "", "a")
	before := st.Current()
	u, _ := st.NewUpload("title", "cmo", Add, "")
	for i := range 100_000 {
		u.Add(fmt.Sprint("new-", i))
	}
	u.Add("new-5") // found, staged by u itself: taken back all the same
	if st.Current() != before || st.Current().Dict().Len() != 1 {
		t.Error("an uncommitted upload changed the store")
	}
	u.Discard()
	if _, err := st.Commit(u); err == nil {
		t.Error("Commit after Discard succeeded")
	}
	res := upload(t, st, "title", "cfo", Add, "", "new-7", "b")
	if n, ok := st.Current().User("new-7"); res.NewUsers != 2 || st.Current().Dict().Len() != 3 || !ok || n != 1 {
		t.Errorf("next upload: result %+v, %d users, new-7 = %d, %t; want 2 new users, 3 users, new-7 = 1",
			res, st.Current().Dict().Len(), n, ok)
	}
	for _, id := range []string{"a", "new-7", "b"} {
		if _, ok := st.Current().User(id); !ok {
			t.Errorf("user %q lost after the rollback", id)
		}
	}
	if _, ok := st.Current().User("new-8"); ok {
		t.Error("a discarded user is visible")
	}
	crash(st)
	st = openStore(t, dir)
	if got := st.Current().Dict().Len(); got != 3 {
		t.Errorf("after restart: %d users, want 3", got)
	}
}

// TestUploadDiscardInterleaved: an upload discarded after another one
// staged users behind its own cannot take them back; they stay, known and
// in no segment, and are published, logged and recovered with the next
// commit, under the same internal ids.
func TestUploadDiscardInterleaved(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	a, _ := st.NewUpload("title", "cmo", Add, "")
	b, _ := st.NewUpload("title", "cfo", Add, "")
	a.AddPacked([]byte("a1\na2\n"))
	b.AddPacked([]byte("b1\na1\n"))
	a.AddPacked([]byte("a3\n"))
	a.Discard()
	res, err := st.Commit(b)
	if err != nil {
		t.Fatal(err)
	}
	if res.NewUsers != 1 || res.Cardinality != 2 || st.Current().Segment("title", "cmo") != nil {
		t.Errorf("result %+v; want 1 new user, 2 members, no title:cmo", res)
	}
	want := map[string]uint32{"a1": 0, "a2": 1, "b1": 2, "a3": 3}
	check := func(when string) {
		snap := st.Current()
		if snap.Dict().Len() != len(want) {
			t.Errorf("%s: %d users, want %d", when, snap.Dict().Len(), len(want))
		}
		for id, n := range want {
			if got, ok := snap.User(id); !ok || got != n {
				t.Errorf("%s: %s = %d, %t; want %d", when, id, got, ok, n)
			}
		}
		if diff := cmp.Diff([]string{"a1", "b1"}, members(snap, "title", "cfo")); diff != "" {
			t.Errorf("%s: members (-want +got):\n%s", when, diff)
		}
	}
	check("after the commit")
	crash(st)
	st = openStore(t, dir)
	check("after restart")
}

// TestUploadDiscardFound: users that one upload staged and another found
// stay when the first is discarded: the second holds their internal ids,
// and commits them later. Taking them back would give their ids to the
// next new users, and the second upload would commit those instead.
func TestUploadDiscardFound(t *testing.T) {
	for _, mode := range []Mode{Add, Remove} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			st := openStore(t, dir)
			upload(t, st, "title", "cmo", Add, "", "a0", "a1", "x1")
			b, _ := st.NewUpload("title", "cfo", Add, "")
			b.AddPacked([]byte("x2\nx3\n"))
			a, _ := st.NewUpload("title", "cmo", mode, "")
			a.AddPacked([]byte("x1\nx2\nx3\n"))
			b.Discard()
			upload(t, st, "title", "cmo", Add, "", "y2", "y3")
			if _, err := st.Commit(a); err != nil {
				t.Fatal(err)
			}
			want := []string{"a0", "a1", "x1", "x2", "x3", "y2", "y3"}
			if mode == Remove {
				want = []string{"a0", "a1", "y2", "y3"}
			}
			check := func(when string) {
				if diff := cmp.Diff(want, members(st.Current(), "title", "cmo")); diff != "" {
					t.Errorf("%s: title:cmo (-want +got):\n%s", when, diff)
				}
			}
			check("after the commits")
			crash(st)
			st = openStore(t, dir)
			check("after restart")
		})
	}
}

func TestIdempotencyKey(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	first := upload(t, st, "title", "cmo", Add, "k1", "a", "b")
	upload(t, st, "title", "cmo", Remove, "", "a")
	again := upload(t, st, "title", "cmo", Add, "k1", "a", "b")
	if want := (Result{IDs: 2, Added: 2, NewUsers: 2, Cardinality: 2, Version: 1, Replayed: true}); again != want {
		t.Errorf("repeat of k1 = %+v, want the first result %+v replayed", again, want)
	}
	if d := cmp.Diff([]string{"b"}, members(st.Current(), "title", "cmo")); d != "" {
		t.Errorf("the repeat was applied again: %s", d)
	}
	if _, err := tryUpload(st, "title", "cfo", Add, "k1", "a"); !errors.Is(err, ErrKeyConflict) {
		t.Errorf("k1 for another segment: %v, want ErrKeyConflict", err)
	}
	// Keys in the log survive a restart.
	st.Close()
	st = openStore(t, dir)
	want := first
	want.Replayed = true
	if again := upload(t, st, "title", "cmo", Add, "k1", "a", "b"); again != want {
		t.Errorf("after restart, repeat of k1 = %+v, want the first result %+v replayed", again, want)
	}

	// Interleaved: another upload stages users first, so the keyed
	// upload's record carries them too; after a restart the repeat still
	// answers with the keyed upload's own new users.
	other, err := st.NewUpload("title", "cfo", Add, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.AddPacked([]byte("o1\no2\n")); err != nil {
		t.Fatal(err)
	}
	keyed := upload(t, st, "title", "cto", Add, "k2", "n1")
	if keyed.NewUsers != 1 {
		t.Fatalf("keyed upload beside a staged one: %+v, want 1 new user", keyed)
	}
	other.Discard()
	crash(st)
	st = openStore(t, dir)
	want = keyed
	want.Replayed = true
	if again := upload(t, st, "title", "cto", Add, "k2", "n1"); again != want {
		t.Errorf("after restart, repeat of k2 = %+v, want the first result %+v replayed", again, want)
	}

	// An upload that changes nothing has no change record; its key
	// survives a crash all the same (a keys record of its own).
	noop := upload(t, st, "title", "cto", Add, "k3", "n1")
	if noop.Added != 0 || noop.Unchanged != 1 {
		t.Fatalf("upload of a member again: %+v, want 1 unchanged", noop)
	}
	upload(t, st, "title", "cto", Remove, "", "n1")
	crash(st)
	st = openStore(t, dir)
	want = noop
	want.Replayed = true
	if again := upload(t, st, "title", "cto", Add, "k3", "n1"); again != want {
		t.Errorf("after a crash, repeat of k3 = %+v, want the first result %+v replayed", again, want)
	}
	if got := members(st.Current(), "title", "cto"); len(got) != 0 {
		t.Errorf("title:cto = %v after the repeat, want no member (it was applied again)", got)
	}
}

// TestReserveUsers: a store opened with Config.ReserveUsers has room for
// that many users, and uploads up to it grow neither the table nor the
// arrays, also after a restart and after Publish.
func TestReserveUsers(t *testing.T) {
	if _, err := Open(Config{Dir: t.TempDir(), ReserveUsers: -1}); err == nil || !strings.Contains(err.Error(), "ReserveUsers") {
		t.Errorf("Open with ReserveUsers -1: %v, want an error naming it", err)
	}
	// More than the machine's memory: an error, not a crash, and the
	// store opens without it.
	func() {
		defer func(f func() (uint64, string, bool)) { machineMemory = f }(machineMemory)
		machineMemory = func() (uint64, string, bool) { return 1 << 30, "the machine's", true }
		dir := t.TempDir()
		_, err := Open(Config{Dir: dir, ReserveUsers: 100_000_000})
		if want := "segments: not enough memory for the reserve: ReserveUsers 100000000 needs about 2997 MiB for the user dictionary, more than the machine's 1024 MiB"; !errors.Is(err, ErrNoRoom) || err.Error() != want {
			t.Errorf("Open with a reserve beyond memory: %v, want %q", err, want)
		}
		st, err := Open(Config{Dir: dir, ReserveUsers: 10_000})
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
	}()
	const room = 50_000
	dir := t.TempDir()
	ids := func(from, n int) []string {
		var s []string
		for i := range n {
			s = append(s, fmt.Sprintf("user-%06d", from+i))
		}
		return s
	}
	type arrays struct {
		slots      *uint64
		ends       *uint32
		arena      *byte
		cap, bytes int
	}
	of := func(st *Store) arrays {
		d := st.stage.d
		return arrays{unsafe.SliceData(d.slots), unsafe.SliceData(d.ends), unsafe.SliceData(d.arena), cap(d.ends), cap(d.arena)}
	}
	check := func(st *Store, when string, have int) {
		t.Helper()
		before := of(st)
		if before.cap < room || len(st.stage.d.slots) < tableSize(room) {
			t.Fatalf("%s: room for %d users, a table of %d slots; want %d and %d", when, before.cap, len(st.stage.d.slots), room, tableSize(room))
		}
		upload(t, st, "title", "cmo", Add, "", ids(have, room-have)...)
		if after := of(st); after != before {
			t.Errorf("%s: uploads up to the reserve grew the dictionary: %+v, then %+v", when, before, after)
		}
	}
	st, err := Open(Config{Dir: dir, ReserveUsers: room})
	if err != nil {
		t.Fatal(err)
	}
	upload(t, st, "title", "cmo", Add, "", ids(0, 1000)...)
	check(st, "after Open", 1000)
	crash(st)
	// Reopened with a larger reserve, at the average id length so far.
	const more = 2 * room
	st, err = Open(Config{Dir: dir, ReserveUsers: more})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if d := st.stage.d; cap(d.ends) < more || cap(d.arena) < more*len("user-000000") {
		t.Errorf("reopened: room for %d users and %d bytes, want %d and %d", cap(d.ends), cap(d.arena), more, more*len("user-000000"))
	}
	st.Publish(st.Current())
	if d := st.stage.d; cap(d.ends) < more || len(d.slots) < tableSize(more) {
		t.Errorf("after Publish: room for %d users, a table of %d slots, want %d and %d", cap(d.ends), len(d.slots), more, tableSize(more))
	}
}

// TestIdempotencyKeysForgotten: the store remembers the most recent
// maxKeys keys, the same ones after a crash, with or without a checkpoint
// in between.
func TestIdempotencyKeysForgotten(t *testing.T) {
	defer func(n int) { maxKeys = n }(maxKeys)
	maxKeys = 5
	dir := t.TempDir()
	st := openStore(t, dir)
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6"}
	id := func(key string) string { return "u" + key } // a retry sends the same id
	for i, key := range keys {
		upload(t, st, "title", "cmo", Add, key, id(key))
		if i == 3 {
			if err := st.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(when string) {
		t.Helper()
		// Remembered keys first: a forgotten one, uploaded again, is
		// remembered anew and pushes the oldest out.
		for i := len(keys) - 1; i >= 0; i-- {
			res, err := tryUpload(st, "title", "cmo", Add, keys[i], id(keys[i]))
			if err != nil {
				t.Fatal(err)
			}
			if want := i >= len(keys)-maxKeys; res.Replayed != want {
				t.Errorf("%s: %s replayed = %v, want %v", when, keys[i], res.Replayed, want)
			}
			if !res.Replayed {
				break
			}
		}
	}
	crash(st)
	st = openStore(t, dir)
	check("after a crash")
	// k1 is now remembered again, the newest, and k2 forgotten.
	keys = append(slices.Delete(keys, 1, 2), "k1")
	if err := st.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	crash(st)
	st = openStore(t, dir)
	check("after a checkpoint and a crash")
}

// TestKeyReusedForOtherIds: an idempotency key committed again with the
// same ids, in the same order however chunked, replays; with other ids,
// even as many, it is a conflict, after a restart too.
func TestKeyReusedForOtherIds(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	first := upload(t, st, "title", "cmo", Add, "k", "u1", "u2", "u3")
	try := func(when string, chunks ...string) (Result, error) {
		t.Helper()
		u, err := st.NewUpload("title", "cmo", Add, "k")
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range chunks {
			if i%2 == 0 {
				_, _, err = u.AddPacked([]byte(c))
			} else {
				_, err = u.AddMany(strings.Split(c, "\n"))
			}
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
		}
		return st.Commit(u)
	}
	for _, when := range []string{"before a restart", "after a crash"} {
		if when == "after a crash" {
			crash(st)
			st = openStore(t, dir)
		}
		for _, chunks := range [][]string{{"u1\nu2\nu3"}, {"u1\n", "u2\nu3"}, {"u1", "u2", "u3\n"}, {"", "u1\nu2", "", "u3"}} {
			res, err := try(when, chunks...)
			if want := first; err != nil || !res.Replayed || res.Version != want.Version || res.Added != 3 {
				t.Errorf("%s: the same ids in chunks %q: %+v, %v; want %+v replayed", when, chunks, res, err, want)
			}
		}
		for _, chunks := range [][]string{{"u1\nu2\nu4"}, {"u3\nu2\nu1"}, {"u1\nu2"}, {"u1\nu2\nu3\nu3"}} {
			res, err := try(when, chunks...)
			const want = `segments: idempotency key already used for a different upload: "k" was add title:cmo of other ids, or of the same in another order (3 of them; a retry must send them as the first time)`
			if !errors.Is(err, ErrKeyConflict) || err.Error() != want {
				t.Errorf("%s: other ids %q under the same key: %+v, %v; want %q", when, chunks, res, err, want)
			}
		}
	}
	if got := members(st.Current(), "title", "cmo"); !slices.Equal(got, []string{"u1", "u2", "u3"}) {
		t.Errorf("members %v; want u1 u2 u3 (no conflicting upload applied)", got)
	}
}

// TestKeysRecordWithoutSums: a keys record as written before keys carried
// the hash of their ids (op 3) still loads, and its keys replay whatever
// ids come with them, as they did.
func TestKeysRecordWithoutSums(t *testing.T) {
	e := keyEntry{facet: "title", value: "cmo", mode: Add, res: Result{IDs: 3, Added: 3, Cardinality: 3, Version: 1}, sum: 42}
	b := appendKeysRecord(nil, 1, []string{"old"}, map[string]keyEntry{"old": e})
	// The same record without the sum: op 3, and 8 bytes shorter.
	p := b[walRecHdrSize : len(b)-8]
	p[8] = byte(opKeys)
	var k keyLog
	if c, err := decodeChange(p, &k); err != nil || c.op != opKeys {
		t.Fatalf("decoding the old keys record: %+v, %v", c, err)
	}
	if got := k.m["old"]; got.sum != 0 || got.res != e.res {
		t.Fatalf("old record's entry %+v; want %+v without a sum", got, e.res)
	}
	if res, ok, err := k.check("old", "title", "cmo", Add, 7); !ok || err != nil || !res.Replayed {
		t.Errorf("a key without a sum, reused: %+v, %t, %v; want replayed", res, ok, err)
	}
	// The new record, read back, keeps its sum.
	var k2 keyLog
	b = appendKeysRecord(nil, 1, []string{"new"}, map[string]keyEntry{"new": e})
	if _, err := decodeChange(b[walRecHdrSize:], &k2); err != nil || k2.m["new"].sum != 42 {
		t.Fatalf("new keys record: sum %d, %v; want 42", k2.m["new"].sum, err)
	}
	if _, _, err := k2.check("new", "title", "cmo", Add, 7); !errors.Is(err, ErrKeyConflict) {
		t.Errorf("a key with a sum, reused for other ids: %v; want ErrKeyConflict", err)
	}
}

// withoutSums rewrites a log file's keys records as a build from before
// keys carried the hash of their ids wrote them: op 3, no sum.
func withoutSums(t testing.TB, data []byte) []byte {
	t.Helper()
	out := slices.Clone(data[:walHeaderSize])
	for p := data[walHeaderSize:]; len(p) > 0; {
		n := int(binary.LittleEndian.Uint32(p))
		rec, payload := p[:walRecHdrSize+n], p[walRecHdrSize:walRecHdrSize+n]
		p = p[walRecHdrSize+n:]
		if op(payload[8]) != opKeysSummed {
			out = append(out, rec...)
			continue
		}
		start := len(out)
		out = append(out, make([]byte, walRecHdrSize)...)
		out = append(out, payload[:8]...)
		out = append(out, byte(opKeys))
		out = append(out, payload[9:13]...) // entries
		r := payloadReader{p: payload[13:]}
		for range binary.LittleEndian.Uint32(payload[9:]) {
			from := len(payload) - len(r.p)
			r.str()
			r.str()
			r.str()
			r.u8()
			for range 7 {
				r.u64()
			}
			out = append(out, payload[from:len(payload)-len(r.p)]...)
			r.u64() // the sum, dropped
		}
		if r.err != nil || len(r.p) != 0 {
			t.Fatalf("keys record: %v, %d bytes left", r.err, len(r.p))
		}
		out = frame(out, start)
	}
	return out
}

// TestOldKeysRecordsRecover: a log whose keys records an older build
// wrote (op 3, no sums) recovers; its keys replay whatever ids come, as
// before, while a key committed since is compared by ids, across a crash
// and a checkpoint.
func TestOldKeysRecordsRecover(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	upload(t, st, "title", "cmo", Add, "k1", "a", "b")
	upload(t, st, "title", "cmo", Add, "k2", "a") // changes nothing: a keys record of its own
	crash(st)
	for _, name := range walFiles(t, dir) {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, withoutSums(t, data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st = openStore(t, dir)
	upload(t, st, "title", "cmo", Add, "k3", "c")
	for _, when := range []string{"recovered", "after a crash", "after a checkpoint and a crash"} {
		switch when {
		case "after a crash":
			crash(st)
			st = openStore(t, dir)
		case "after a checkpoint and a crash":
			if err := st.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			crash(st)
			st = openStore(t, dir)
		}
		for _, key := range []string{"k1", "k2"} {
			if res, err := tryUpload(st, "title", "cmo", Add, key, "zz"); err != nil || !res.Replayed {
				t.Errorf("%s: old key %s with other ids: %+v, %v; want replayed, as before sums", when, key, res, err)
			}
		}
		if res, err := tryUpload(st, "title", "cmo", Add, "k3", "c"); err != nil || !res.Replayed {
			t.Errorf("%s: new key k3 with its ids: %+v, %v; want replayed", when, res, err)
		}
		if _, err := tryUpload(st, "title", "cmo", Add, "k3", "zz"); !errors.Is(err, ErrKeyConflict) {
			t.Errorf("%s: new key k3 with other ids: %v; want ErrKeyConflict", when, err)
		}
		if got := members(st.Current(), "title", "cmo"); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Errorf("%s: members %v; want a b c", when, got)
		}
	}
}

// TestLineBreakInID: an id holding a line break is refused by every mode.
// A Remove keeps unknown ids one per line until it commits: "a\nb" would
// have removed users a and b.
func TestLineBreakInID(t *testing.T) {
	st := NewStore(nil)
	upload(t, st, "title", "cmo", Add, "", "a", "b", "c")
	for _, mode := range []Mode{Remove, Replace, Add} { // Remove first, while "a\nb" is unknown
		u, err := st.NewUpload("title", "cmo", mode, "")
		if err != nil {
			t.Fatal(err)
		}
		if i, err := u.AddMany([]string{"d", "a\nb"}); i != 1 || !errors.Is(err, ErrBadUserID) || !strings.Contains(err.Error(), "a line break (0x0a) as byte 2 of 3") {
			t.Errorf("%s: AddMany of an id holding a line break = %d, %v; want 1, ErrBadUserID as byte 2 of 3", mode, i, err)
		}
		if err := u.Add("a\n"); !errors.Is(err, ErrBadUserID) {
			t.Errorf("%s: Add(\"a\\n\") = %v, want ErrBadUserID", mode, err)
		}
		if mode == Replace {
			u.Discard() // it would empty the segment
		} else if _, err := st.Commit(u); err != nil {
			t.Fatal(err)
		}
	}
	if got := members(st.Current(), "title", "cmo"); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("members %q, want [a b c]", got)
	}
}

// TestRemoveCommitted: a Remove takes out the users the store holds when
// it commits, also those its ids named only after they arrived: added by
// an upload committed in between, or staged again after Publish dropped
// them. Ids still unknown at commit add no user.
func TestRemoveCommitted(t *testing.T) {
	t.Run("added meanwhile", func(t *testing.T) {
		dir := t.TempDir()
		st := openStore(t, dir)
		upload(t, st, "title", "cmo", Add, "", "a", "b")
		rm, _ := st.NewUpload("title", "cmo", Remove, "")
		rm.AddPacked([]byte("x\nb\ny\nnever\n")) // x and y unknown yet
		upload(t, st, "title", "cmo", Add, "", "x")
		stage, _ := st.NewUpload("title", "cfo", Add, "")
		stage.AddPacked([]byte("y\n")) // staged, in no segment
		res, err := st.Commit(rm)
		if err != nil {
			t.Fatal(err)
		}
		if res.Removed != 2 || res.Cardinality != 1 {
			t.Errorf("result %+v, want 2 removed (x, b), 1 left", res)
		}
		stage.Discard()
		check := func(when string) {
			if got := members(st.Current(), "title", "cmo"); !slices.Equal(got, []string{"a"}) {
				t.Errorf("%s: title:cmo = %v, want [a]", when, got)
			}
			if _, ok := st.Current().User("never"); ok {
				t.Errorf("%s: an id only removed became a user", when)
			}
		}
		check("after the commit")
		crash(st)
		st = openStore(t, dir)
		check("after restart")
	})
	t.Run("after Publish", func(t *testing.T) {
		st := NewStore(nil)
		upload(t, st, "title", "cmo", Add, "", "a")
		add, _ := st.NewUpload("title", "cmo", Add, "")
		add.Add("x")
		rm, _ := st.NewUpload("title", "cmo", Remove, "")
		rm.Add("x") // found, staged by add
		st.Publish(st.Current())
		rm.Add("a") // rm resolves x again, in a dictionary without it
		if _, err := st.Commit(add); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Commit(rm); err != nil {
			t.Fatal(err)
		}
		if got := members(st.Current(), "title", "cmo"); len(got) != 0 {
			t.Errorf("title:cmo = %v, want no member", got)
		}
	})
}

// TestRemoveMissingMemory: a Remove holds the ids it did not find about
// once each however often they are sent, and looks them up at commit a
// block at a time, without copying them all again.
func TestRemoveMissingMemory(t *testing.T) {
	st := NewStore(nil)
	upload(t, st, "title", "cmo", Add, "", "a")
	rm, _ := st.NewUpload("title", "cmo", Remove, "")
	for range 100_000 {
		rm.Add("ghost")
	}
	if got, want := len(rm.missing), len("ghost\n"); got != want {
		t.Errorf("a Remove of one unknown id 100000 times holds %d bytes of unknown ids, want %d", got, want)
	}
	ids := make([]string, 100_000)
	for i := range ids {
		ids[i] = fmt.Sprintf("ghost-%06d", i)
	}
	rm.AddMany(ids)
	// Two of them, one in the first block and one in the last, are added
	// meanwhile, and the snapshot's users grow past a flush of rm's ids.
	add, _ := st.NewUpload("title", "cmo", Add, "")
	add.AddMany([]string{ids[3], ids[len(ids)-1], "ghost"})
	if _, err := st.Commit(add); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := st.Commit(rm)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 256<<10 {
		t.Errorf("the commit allocated %d bytes for 100001 unknown ids", got)
	}
	if res.Removed != 3 || res.Cardinality != 1 {
		t.Errorf("result %+v, want 3 removed (ghost and the two added), a left", res)
	}
	t.Logf("commit allocated %d bytes", after.TotalAlloc-before.TotalAlloc)
}

// model is what a store should hold: segment → members.
type model map[Key]map[string]bool

func (m model) check(t *testing.T, s *Snapshot, when string) {
	t.Helper()
	if d := m.diff(s); d != "" {
		t.Fatalf("%s: %s", when, d)
	}
}

// diff describes how s differs from m, "" when it holds exactly m.
func (m model) diff(s *Snapshot) string {
	if s.Len() != len(m) {
		return fmt.Sprintf("%d segments, want %d", s.Len(), len(m))
	}
	for k, set := range m {
		want := []string{}
		for id := range set {
			want = append(want, id)
		}
		slices.Sort(want)
		if d := cmp.Diff(want, members(s, k.Facet, k.Value)); d != "" {
			return fmt.Sprintf("segment %s:%s (-want +got):\n%s", k.Facet, k.Value, d)
		}
	}
	return ""
}

// TestRandomOperations runs random uploads and deletes against a model,
// reopening the store (with and without a snapshot in between, and after a
// close that snapshots) and checking it holds exactly the model each time.
func TestRandomOperations(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(7, 7))
	st, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	m := model{}
	keys := []Key{{"title", "cmo"}, {"title", "cfo"}, {"industry", "fintech"}, {"region", "emea"}}
	for i := range 300 {
		k := keys[r.IntN(len(keys))]
		var ids []string
		for range r.IntN(50) {
			ids = append(ids, fmt.Sprintf("user-%d", r.IntN(400)))
		}
		switch r.IntN(10) {
		case 0:
			_, err := st.Delete(k.Facet, k.Value)
			if (m[k] == nil) != errors.Is(err, ErrNotFound) {
				t.Fatalf("op %d: Delete(%v) = %v with model %v", i, k, err, m[k])
			}
			delete(m, k)
		case 1, 2:
			if _, err := tryUpload(st, k.Facet, k.Value, Replace, "", ids...); err != nil {
				t.Fatal(err)
			}
			m[k] = map[string]bool{}
			for _, id := range ids {
				m[k][id] = true
			}
		case 3, 4, 5:
			_, err := tryUpload(st, k.Facet, k.Value, Remove, "", ids...)
			if (m[k] == nil) != errors.Is(err, ErrNotFound) {
				t.Fatalf("op %d: remove from %v = %v with model %v", i, k, err, m[k])
			}
			for _, id := range ids {
				delete(m[k], id)
			}
		default:
			if _, err := tryUpload(st, k.Facet, k.Value, Add, "", ids...); err != nil {
				t.Fatal(err)
			}
			if m[k] == nil {
				m[k] = map[string]bool{}
			}
			for _, id := range ids {
				m[k][id] = true
			}
		}
		m.check(t, st.Current(), fmt.Sprintf("op %d", i))
		if i%25 == 24 {
			before := st.Current()
			switch i % 3 {
			case 0: // a crash: the log is all there is
				st.wal.close()
				st.closed = true
				close(st.stop)
				<-st.done
			case 1:
				if err := st.Checkpoint(); err != nil {
					t.Fatal(err)
				}
				st.wal.close()
				close(st.stop)
				<-st.done
			case 2:
				if err := st.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if st, err = Open(Config{Dir: dir}); err != nil {
				t.Fatalf("op %d: reopen: %v", i, err)
			}
			if d := diffSnapshots(st.Current(), before); d != "" {
				t.Fatalf("op %d: reopened store differs:\n%s", i, d)
			}
		}
	}
	st.Close()
}

// walFiles returns the paths of the store's log files.
func walFiles(t testing.TB, dir string) []string {
	t.Helper()
	names, err := listWAL(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range names {
		names[i] = filepath.Join(dir, names[i])
	}
	return names
}

// crash stops a store the way kill -9 would leave its files: no final
// snapshot.
func crash(st *Store) {
	st.mu.Lock()
	st.closed = true
	st.wal.close()
	st.mu.Unlock()
	close(st.stop)
	<-st.done
}

// TestTornTail cuts the log inside its last record at every offset, and
// appends zeros: recovery drops exactly that record, truncates the file
// and keeps appending after it.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	upload(t, st, "title", "cmo", Add, "", "a", "b", "c")
	upload(t, st, "title", "cfo", Add, "", "c", "d")
	want := st.Current()
	upload(t, st, "title", "cmo", Replace, "", "e", "f")
	crash(st)
	files := walFiles(t, dir)
	path := files[len(files)-1]
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Where the last record starts.
	_, _, _, lastStart, err := replayFile(emptySnapshot(), path, full[:len(full)-1], true, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{"zeros after": append(bytes.Clone(full[:lastStart]), make([]byte, 100)...)}
	for n := lastStart; n < int64(len(full)); n++ {
		cases[fmt.Sprintf("cut at %d", n)] = full[:n]
	}
	flipped := bytes.Clone(full)
	flipped[len(flipped)-1] ^= 1
	cases["last byte flipped"] = flipped
	for name, data := range cases {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		st, err := Open(Config{Dir: dir})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d := diffSnapshots(st.Current(), want); d != "" {
			t.Fatalf("%s: recovered store differs:\n%s", name, d)
		}
		if rec := st.Recovery(); int64(len(data)) > lastStart && (rec.TruncatedFile != path || rec.TruncatedAt != lastStart) {
			t.Errorf("%s: Recovery() = %+v, want truncated at %d", name, rec, lastStart)
		}
		// The log goes on after the cut.
		upload(t, st, "title", "ceo", Add, "", "g")
		crash(st)
		st, err = Open(Config{Dir: dir})
		if err != nil {
			t.Fatalf("%s: reopen after appending: %v", name, err)
		}
		if got := members(st.Current(), "title", "ceo"); !slices.Equal(got, []string{"g"}) {
			t.Fatalf("%s: upload after recovery lost: %v", name, got)
		}
		crash(st)
	}
}

// TestLogDamage: damage before the last record is not a torn write; Open
// refuses it, naming the file and offset.
func TestLogDamage(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	upload(t, st, "title", "cmo", Add, "", "a", "b", "c")
	upload(t, st, "title", "cfo", Add, "", "c", "d")
	crash(st)
	path := walFiles(t, dir)[0]
	good, _ := os.ReadFile(path)
	for i := walHeaderSize + walRecHdrSize; i < walHeaderSize+60; i++ {
		bad := bytes.Clone(good)
		bad[i] ^= 0x40
		os.WriteFile(path, bad, 0o644)
		_, err := Open(Config{Dir: dir})
		var we *WALError
		if !errors.As(err, &we) || we.File != path || we.Offset != walHeaderSize {
			t.Fatalf("byte %d flipped: Open = %v, want a *WALError at %s offset %d", i, err, path, walHeaderSize)
		}
	}
	want := fmt.Sprintf("segments: %s: record at offset %d: checksum mismatch", path, walHeaderSize)
	if _, err := Open(Config{Dir: dir}); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Open = %v, want %q…", err, want)
	}
}

// TestFsyncFailure: a failed fsync fails the upload, publishes nothing and
// refuses every later mutation; what is on disk stays recoverable.
func TestFsyncFailure(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	upload(t, st, "title", "cmo", Add, "", "a")
	before := st.Current()
	if err := st.LogErr(); err != nil {
		t.Fatalf("LogErr before the failure: %v", err)
	}
	st.wal.sync = func(*os.File) error { return errors.New("EIO") }
	if _, err := tryUpload(st, "title", "cmo", Add, "", "b", "c"); !errors.Is(err, ErrNotDurable) || errors.Is(err, ErrNotApplied) {
		t.Fatalf("upload with a failing fsync: %v, want ErrNotDurable, not ErrNotApplied (a restart may apply it)", err)
	}
	// The log takes no more changes until a restart: LogErr says so
	// (the metric personad_segments_log_failing reads it), naming the file.
	if err := st.LogErr(); !errors.Is(err, ErrNotDurable) || !strings.Contains(err.Error(), "fsync wal-") || !strings.Contains(err.Error(), "EIO") {
		t.Fatalf("LogErr after a failed fsync: %v, want ErrNotDurable naming the file and the error", err)
	}
	if st.Current() != before {
		t.Fatal("a failed upload was published")
	}
	if n := st.stage.d.Len(); n != 1 {
		t.Fatalf("the stage holds %d users after the failed upload, want 1 (its users taken back)", n)
	}
	st.wal.sync = (*os.File).Sync
	if _, err := st.Delete("title", "cmo"); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("delete after a failed fsync: %v, want ErrNotDurable", err)
	}
	crash(st)
	st = openStore(t, dir)
	// The record may or may not have reached the disk; here it did (the
	// fsync "failed" after the write): all of it or none of it is there.
	switch got := members(st.Current(), "title", "cmo"); {
	case slices.Equal(got, []string{"a"}), slices.Equal(got, []string{"a", "b", "c"}):
	default:
		t.Errorf("after restart: %v, want [a] or [a b c]", got)
	}
}

// TestWriteRefused: a record whose write the disk refuses midway is cut
// back: the upload fails with ErrNotApplied (an ErrNotDurable), the log
// takes the next change, and a restart does not apply the refused one.
func TestWriteRefused(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	upload(t, st, "title", "cmo", Add, "", "a")
	st.wal.writeFile = func(f *os.File, p []byte) (int, error) {
		n, _ := f.Write(p[:len(p)/2]) // part of the record reaches the file
		return n, errors.New("ENOSPC")
	}
	_, err := tryUpload(st, "title", "cmo", Add, "k1", "b", "c")
	if !errors.Is(err, ErrNotApplied) || !errors.Is(err, ErrNotDurable) || !strings.Contains(err.Error(), "ENOSPC") {
		t.Fatalf("upload with a refused write: %v, want ErrNotApplied and ErrNotDurable naming the error", err)
	}
	if _, err := st.Delete("title", "cmo"); !errors.Is(err, ErrNotApplied) {
		t.Fatalf("delete with a refused write: %v, want ErrNotApplied", err)
	}
	if err := st.LogErr(); err != nil {
		t.Fatalf("LogErr after a write cut back: %v, want nil", err)
	}
	st.wal.writeFile = (*os.File).Write
	upload(t, st, "title", "cfo", Add, "", "d")
	crash(st)
	st = openStore(t, dir)
	if got := members(st.Current(), "title", "cmo"); !slices.Equal(got, []string{"a"}) {
		t.Errorf("after restart: title:cmo holds %v, want [a]: the refused upload applied", got)
	}
	if got := members(st.Current(), "title", "cfo"); !slices.Equal(got, []string{"d"}) {
		t.Errorf("after restart: title:cfo holds %v, want [d]", got)
	}
}

// TestDictWriterAbort: an aborted writer leaves the published dictionary
// exactly as it was, and readers of an older view never see newer users.
func TestDictWriterAbort(t *testing.T) {
	b := NewBuilder()
	for i := range 1000 {
		b.Intern(fmt.Sprint("old-", i))
	}
	d := b.Build(1).Dict()
	slots := slices.Clone(d.slots)
	for _, n := range []int{10, 100_000} { // within the table, and past a growth
		w := d.extend()
		for i := range n {
			w.intern(fmt.Sprint("new-", i))
		}
		if _, ok := d.Lookup("new-0"); ok {
			t.Errorf("%d new: the published view sees a new user", n)
		}
		if got, ok := w.d.Lookup("new-0"); !ok || got != 1000 {
			t.Errorf("%d new: the writer's view: Lookup(new-0) = %d, %v", n, got, ok)
		}
		w.abort()
		if !slices.Equal(slots, d.slots) {
			t.Fatalf("%d new: abort left the published table changed", n)
		}
	}
	for i := range 1000 {
		if got, ok := d.Lookup(fmt.Sprint("old-", i)); !ok || got != uint32(i) {
			t.Fatalf("Lookup(old-%d) = %d, %v", i, got, ok)
		}
	}
}

// TestConcurrentReaders looks users up in published snapshots while
// uploads add users to the same shared dictionary (run with -race).
func TestConcurrentReaders(t *testing.T) {
	st := openStore(t, t.TempDir())
	upload(t, st, "title", "cmo", Add, "", "seed")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := st.Current()
				n := s.Dict().Len()
				for i := range n {
					id, _ := s.Dict().ID(uint32(i))
					if got, ok := s.User(id); !ok || got != uint32(i) {
						t.Errorf("User(%q) = %d, %v; want %d", id, got, ok, i)
						return
					}
				}
				if _, ok := s.User(fmt.Sprint("u-", n)); ok {
					t.Errorf("a snapshot of %d users knows u-%d", n, n)
					return
				}
			}
		})
	}
	for i := range 200 {
		var ids []string
		for j := range 50 {
			ids = append(ids, fmt.Sprint("u-", i*50+j))
		}
		upload(t, st, "title", "cmo", Add, "", ids...)
	}
	close(stop)
	wg.Wait()
}

// TestCheckpoint: a snapshot starts a new log file and removes the old
// ones; the store reopens the same.
func TestCheckpoint(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	upload(t, st, "title", "cmo", Add, "", "a", "b")
	if err := st.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	upload(t, st, "title", "cmo", Add, "", "c")
	if got, want := walFiles(t, dir), []string{filepath.Join(dir, walName(2))}; !slices.Equal(got, want) {
		t.Errorf("log files %v, want %v", got, want)
	}
	want := st.Current()
	crash(st)
	st = openStore(t, dir)
	if d := diffSnapshots(st.Current(), want); d != "" {
		t.Error(d)
	}
	if rec := st.Recovery(); rec.SnapshotVersion != 1 || rec.Records != 1 || rec.Version != 2 {
		t.Errorf("Recovery() = %+v, want snapshot 1 + 1 record = 2", rec)
	}
}

// TestCheckpointRetry: a checkpoint whose snapshot could not be written
// is retried with the log already in the file that snapshot begins; the
// retry must not create that file again (it would truncate the records
// appended since), and a failure in it must lose nothing acknowledged.
func TestCheckpointRetry(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	upload(t, st, "title", "cmo", Add, "k1", "a") // a key: a checkpoint writes a keys record
	snapPath := filepath.Join(dir, SnapshotFile)
	if err := os.Mkdir(snapPath, 0o755); err != nil { // the rename into place fails
		t.Fatal(err)
	}
	if err := st.Checkpoint(); err == nil {
		t.Fatal("checkpoint with a directory in the snapshot's place succeeded")
	}
	synced := 0
	st.wal.sync = func(*os.File) error { synced++; return errors.New("EIO") }
	if err := st.Checkpoint(); err == nil {
		t.Fatal("checkpoint with the snapshot's place taken succeeded")
	}
	if synced != 0 {
		t.Error("the retry fsynced the log: it created its file again")
	}
	st.wal.sync = (*os.File).Sync
	upload(t, st, "title", "cmo", Add, "", "b") // into the file the retry did not create
	os.Remove(snapPath)
	check := func(when string) {
		want := st.Current()
		crash(st)
		st = openStore(t, dir)
		if d := diffSnapshots(st.Current(), want); d != "" {
			t.Errorf("%s: %s", when, d)
		}
		if again := upload(t, st, "title", "cmo", Add, "k1", "a"); !again.Replayed {
			t.Errorf("%s: k1 = %+v, want replayed", when, again)
		}
	}
	check("after the failed checkpoints and a crash")
	upload(t, st, "title", "cmo", Add, "", "c")
	if err := st.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	upload(t, st, "title", "cmo", Add, "", "d")
	check("after a checkpoint and a crash")
}

// TestCheckpointKeepsKeys: a checkpoint deletes the log files before the
// one it starts only once that file holds the remembered idempotency
// keys, also when it finds the file already there: recreated by recovery
// after a crash tore its header, it holds none.
func TestCheckpointKeepsKeys(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	upload(t, st, "title", "cmo", Add, "k1", "a")
	// The crash tore the header of the file the checkpoint started.
	st = crashInCheckpoint(t, st, dir, 0)
	if err := st.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if got, want := walFiles(t, dir), []string{filepath.Join(dir, walName(2))}; !slices.Equal(got, want) {
		t.Errorf("log files %v after the checkpoint, want %v", got, want)
	}
	crash(st)
	st = openStore(t, dir)
	if again := upload(t, st, "title", "cmo", Add, "k1", "a"); !again.Replayed {
		t.Errorf("k1 = %+v after the checkpoint and a crash, want replayed", again)
	}
}

// crashInCheckpoint makes st's next checkpoint fail after it has started
// log file 2 (the snapshot's rename fails), crashes st, cuts that file to
// size bytes and reopens the store.
func crashInCheckpoint(t *testing.T, st *Store, dir string, size int64) *Store {
	t.Helper()
	snapPath := filepath.Join(dir, SnapshotFile)
	if err := os.Mkdir(snapPath, 0o755); err != nil { // the rename into place fails
		t.Fatal(err)
	}
	if err := st.Checkpoint(); err == nil {
		t.Fatal("checkpoint with a directory in the snapshot's place succeeded")
	}
	crash(st)
	if err := os.Truncate(filepath.Join(dir, walName(2)), size); err != nil {
		t.Fatal(err)
	}
	os.Remove(snapPath)
	return openStore(t, dir)
}

// TestCheckpointKeysOrder: a key logged into a file that recovery
// recreated, before a checkpoint logs all the keys after it, is still the
// most recent after a crash, and the oldest key is the first forgotten.
func TestCheckpointKeysOrder(t *testing.T) {
	defer func(n int) { maxKeys = n }(maxKeys)
	maxKeys = 3
	dir := t.TempDir()
	st := openStore(t, dir)
	upload(t, st, "title", "cmo", Add, "k1", "a")
	// The crash came before the keys record of the file the checkpoint
	// started.
	st = crashInCheckpoint(t, st, dir, walHeaderSize)
	upload(t, st, "title", "cmo", Add, "k2", "a") // changes nothing: a keys record of its own
	if err := st.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	crash(st)
	st = openStore(t, dir)
	if want := []string{"k1", "k2"}; !slices.Equal(st.keys.order, want) {
		t.Errorf("keys after a crash: %v, want %v", st.keys.order, want)
	}
	upload(t, st, "title", "cmo", Add, "k3", "b")
	upload(t, st, "title", "cmo", Add, "k4", "c") // forgets k1
	if res := upload(t, st, "title", "cmo", Add, "k2", "a"); !res.Replayed {
		t.Errorf("k2 = %+v, want replayed (k1 is the oldest key)", res)
	}
}

// TestCheckpointCreateFailure: a checkpoint that cannot fsync the log file
// it starts leaves no such file behind (were its header lost, recovery
// would refuse it once a later file followed it), and the log goes on in
// its old file.
func TestCheckpointCreateFailure(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	upload(t, st, "title", "cmo", Add, "", "a")
	st.wal.sync = func(*os.File) error { return errors.New("EIO") }
	if err := st.Checkpoint(); err == nil {
		t.Fatal("checkpoint with a failing fsync succeeded")
	}
	st.wal.sync = (*os.File).Sync
	if got, want := walFiles(t, dir), []string{filepath.Join(dir, walName(1))}; !slices.Equal(got, want) {
		t.Errorf("log files %v after the failed checkpoint, want %v", got, want)
	}
	upload(t, st, "title", "cmo", Add, "", "b")
	if err := st.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	upload(t, st, "title", "cmo", Add, "", "c")
	want := st.Current()
	crash(st)
	st = openStore(t, dir)
	if d := diffSnapshots(st.Current(), want); d != "" {
		t.Error(d)
	}
}

// FuzzWALReplay feeds arbitrary bytes as the last log file after a small
// snapshot: replay must never panic, and whatever it accepts must be a
// consistent store (every bitmap within the dictionary).
func FuzzWALReplay(f *testing.F) {
	dir := f.TempDir()
	st, err := Open(Config{Dir: dir})
	if err != nil {
		f.Fatal(err)
	}
	upload(f, st, "title", "cmo", Add, "", "a", "b")
	upload(f, st, "title", "cmo", Remove, "k", "a")
	st.Delete("title", "cmo")
	upload(f, st, "title", "cfo", Replace, "", "x")
	crash(st)
	for _, p := range walFiles(f, dir) {
		data, _ := os.ReadFile(p)
		f.Add(data)
		f.Add(data[:len(data)/2])
		f.Add(withoutSums(f, data)) // keys records as older builds wrote them
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		snap, _, _, end, err := replayFile(emptySnapshot(), "wal-00000000000000000001.log", data, true, &keyLog{})
		if err != nil {
			return
		}
		if end > int64(len(data)) {
			t.Fatalf("end %d past the data (%d bytes)", end, len(data))
		}
		for _, seg := range snap.Segments() {
			if !seg.Users.IsEmpty() && int(seg.Users.Maximum()) >= snap.Dict().Len() {
				t.Fatalf("segment %s:%s holds user %d of %d", seg.Facet, seg.Value, seg.Users.Maximum(), snap.Dict().Len())
			}
		}
		// What was accepted encodes and decodes again.
		var buf bytes.Buffer
		if _, err := snap.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadSnapshot(&buf); err != nil {
			t.Fatalf("replayed snapshot does not round-trip: %v", err)
		}
	})
}

var uploadMemUsers = flag.Int("uploadmem", 0, "measure TestUploadMemory at this many users (e.g. 10000000); 0 skips it")

// TestUploadMemory measures, through the upload path (Commit, shared
// dictionary growth), the dictionary's bytes per user and the bytes of a
// segment of 1M members spread over all users (the dense case of the
// issue's budget: ≤ 1.3 MB per 1M members at 10M users).
//
//	go test -run TestUploadMemory -v ./segments -uploadmem=10000000
func TestUploadMemory(t *testing.T) {
	users := *uploadMemUsers
	if users == 0 {
		t.Skip("-uploadmem not set")
	}
	st := openStore(t, t.TempDir())
	const chunk = 1_000_000
	var buf []byte
	grew, _ := heapGrowth(func() any {
		for c := 0; c < users; c += chunk {
			u, _ := st.NewUpload("all", "users", Add, "")
			for i := c; i < min(c+chunk, users); i++ {
				buf = fmt.Appendf(buf[:0], "u%08d", i)
				u.AddBytes(buf)
			}
			if _, err := st.Commit(u); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	snap := st.Current()
	d := snap.Dict()
	t.Logf("%d users via %d uploads of %d: dictionary %.1f B/user (MemoryBytes), heap growth %.1f B/user incl. the all-users segment (%d B)",
		d.Len(), (users+chunk-1)/chunk, chunk, float64(d.MemoryBytes())/float64(d.Len()), float64(grew)/float64(users),
		snap.Segment("all", "users").Users.GetSizeInBytes())
	for _, members := range []int{1_000_000, users / 2} {
		u, _ := st.NewUpload("dense", fmt.Sprint("m", members), Replace, "")
		step := users / members
		for i := 0; i < users; i += step {
			buf = fmt.Appendf(buf[:0], "u%08d", i)
			u.AddBytes(buf)
		}
		res, err := st.Commit(u)
		if err != nil {
			t.Fatal(err)
		}
		seg := st.Current().Segment("dense", fmt.Sprint("m", members))
		t.Logf("segment of %d members, every %dth user: %d bytes = %.3f MB per 1M members (new users: %d)",
			res.Cardinality, step, seg.Users.GetSizeInBytes(), float64(seg.Users.GetSizeInBytes())/float64(res.Cardinality), res.NewUsers)
	}
	// Random 1M of the users: the least compressible.
	u, _ := st.NewUpload("dense", "random", Replace, "")
	r := rand.New(rand.NewPCG(1, 1))
	for range 1_000_000 {
		buf = fmt.Appendf(buf[:0], "u%08d", r.IntN(users))
		u.AddBytes(buf)
	}
	res, _ := st.Commit(u)
	seg := st.Current().Segment("dense", "random")
	t.Logf("segment of %d random members: %d bytes = %.3f MB per 1M members", res.Cardinality, seg.Users.GetSizeInBytes(), float64(seg.Users.GetSizeInBytes())/float64(res.Cardinality))
}

// TestAddPacked: packed ids resolve as the same ids added one by one do,
// whether new or known, with or without a final newline; a bad id adds
// nothing of its chunk and is named by its index.
func TestAddPacked(t *testing.T) {
	st := openStore(t, t.TempDir())
	upload(t, st, "title", "cmo", Add, "", "a", "b")
	u, _ := st.NewUpload("title", "cfo", Add, "")
	for _, p := range []string{"a\nc\n", "d\nb\nc", "", "e\n"} {
		if _, j, err := u.AddPacked([]byte(p)); err != nil {
			t.Fatalf("AddPacked(%q) = %d, %v", p, j, err)
		}
	}
	for _, tc := range []struct {
		packed string
		bad    int
	}{
		{"f\n\ng\n", 1},
		{"\n", 0},
		{"f\n" + strings.Repeat("x", MaxIDLen+1), 1},
	} {
		if _, j, err := u.AddPacked([]byte(tc.packed)); !errors.Is(err, ErrBadUserID) || j != tc.bad {
			t.Errorf("AddPacked(%.10q) = %d, %v; want %d, ErrBadUserID", tc.packed, j, err, tc.bad)
		}
	}
	res, err := st.Commit(u)
	if err != nil {
		t.Fatal(err)
	}
	want := Result{IDs: 6, Added: 5, NewUsers: 3, Cardinality: 5, Version: 2}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"a", "b", "c", "d", "e"}, members(st.Current(), "title", "cfo")); diff != "" {
		t.Errorf("members (-want +got):\n%s", diff)
	}
	if got := st.Current().Dict().Len(); got != 5 {
		t.Errorf("%d users, want 5 (f and g were in rejected chunks)", got)
	}
}

// TestUploadRuns: ids resolve the same whether they continue a run of
// users interned in order (Upload.lookup's prediction), break it, or mix
// runs with random known ids, new ids, repeats and users a discarded
// upload staged and took back, in chunks of every size across lookup's
// blocks, in every mode.
func TestUploadRuns(t *testing.T) {
	const users = 3000
	st := openStore(t, t.TempDir())
	var base []string
	for i := range users {
		base = append(base, fmt.Sprintf("p%05d", i))
	}
	upload(t, st, "title", "base", Add, "", base...)
	// Users staged and taken back: ids past the published ones, which a
	// run reaching the dictionary's end must not find.
	d, _ := st.NewUpload("title", "gone", Add, "")
	d.AddPacked([]byte("gone1\ngone2\n"))
	d.Discard()

	r := rand.New(rand.NewPCG(3, 9))
	m := model{{"title", "base"}: set(base)}
	interned := set(base) // every id of every upload but the removals
	newID := 0
	for round := range 40 {
		var ids []string
		for len(ids) < 1500 {
			switch r.IntN(5) {
			case 0, 1: // a run of known users in order, up to the end
				from := r.IntN(users)
				for i := from; i < min(from+r.IntN(600), users); i++ {
					ids = append(ids, base[i])
				}
			case 2: // random known users
				for range r.IntN(20) {
					ids = append(ids, base[r.IntN(users)])
				}
			case 3: // new users, in a run of their own
				for range r.IntN(40) {
					ids = append(ids, fmt.Sprintf("n%05d", newID))
					newID++
				}
			case 4: // repeats, and ids never staged again
				if len(ids) > 0 {
					ids = append(ids, ids[r.IntN(len(ids))])
				}
				ids = append(ids, "gone2", "gone1")
			}
		}
		k := Key{"title", fmt.Sprint("v", round%3)}
		mode := []Mode{Add, Replace, Remove}[r.IntN(3)]
		if mode == Remove && m[k] == nil {
			mode = Add
		}
		u, err := st.NewUpload(k.Facet, k.Value, mode, "")
		if err != nil {
			t.Fatal(err)
		}
		for lo := 0; lo < len(ids); {
			hi := min(lo+1+r.IntN(700), len(ids))
			if _, err := u.AddMany(ids[lo:hi]); err != nil {
				t.Fatal(err)
			}
			lo = hi
		}
		if _, err := st.Commit(u); err != nil {
			t.Fatal(err)
		}
		if mode != Remove {
			maps.Copy(interned, set(ids))
		}
		switch mode {
		case Replace:
			m[k] = set(ids)
		case Add:
			if m[k] == nil {
				m[k] = map[string]bool{}
			}
			maps.Copy(m[k], set(ids))
		case Remove:
			for _, id := range ids {
				delete(m[k], id)
			}
		}
		m.check(t, st.Current(), fmt.Sprintf("round %d (%s)", round, mode))
	}
	snap := st.Current()
	if got, want := snap.Dict().Len(), len(interned); got != want {
		t.Errorf("%d users, want %d (each id interned once)", got, want)
	}
	for id := range interned {
		if _, ok := snap.User(id); !ok {
			t.Fatalf("user %s not in the dictionary", id)
		}
	}
}

func set(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// TestUploadAcrossCommit: ids staged by an upload still streaming are
// interned once: another upload of them finds them (and its commit
// publishes them, in no segment of the first upload's yet); and an upload
// in progress when Publish replaces the dictionary resolves its ids again
// in the new one.
func TestUploadAcrossCommit(t *testing.T) {
	st := NewStore(nil)
	u, _ := st.NewUpload("title", "cfo", Add, "")
	if _, _, err := u.AddPacked([]byte("x\ny\nz\ny")); err != nil {
		t.Fatal(err)
	}
	if st.Current().Dict().Len() != 0 {
		t.Fatalf("staged users are visible: %d users", st.Current().Dict().Len())
	}
	other := upload(t, st, "title", "cmo", Add, "", "y", "w")
	if other.NewUsers != 1 || st.Current().Dict().Len() != 4 || len(members(st.Current(), "title", "cfo")) != 0 {
		t.Errorf("other upload: result %+v, %d users; want 1 new user (w) and 4 users published, none in title:cfo", other, st.Current().Dict().Len())
	}
	res, err := st.Commit(u)
	if err != nil {
		t.Fatal(err)
	}
	if res.NewUsers != 3 || res.Cardinality != 3 || st.Current().Dict().Len() != 4 {
		t.Errorf("result %+v, %d users; want 3 new users, 3 members and 4 users", res, st.Current().Dict().Len())
	}
	if diff := cmp.Diff([]string{"x", "y", "z"}, members(st.Current(), "title", "cfo")); diff != "" {
		t.Errorf("members (-want +got):\n%s", diff)
	}
	// A dictionary with another seed and other internal ids, published
	// under the upload: p (staged) and x (known, 0 before) resolve again.
	u, _ = st.NewUpload("title", "cto", Add, "")
	u.AddPacked([]byte("p\nx\n"))
	b := NewBuilder()
	for _, id := range []string{"q", "x", "y", "z"} {
		b.Intern(id)
	}
	st.Publish(b.Build(5))
	if _, _, err := u.AddPacked([]byte("r\n")); err != nil {
		t.Fatal(err)
	}
	if res, err = st.Commit(u); err != nil {
		t.Fatal(err)
	}
	if n, ok := st.Current().User("x"); !ok || n != 1 || res.NewUsers != 2 || st.Current().Dict().Len() != 6 {
		t.Errorf("x = %d, %t; result %+v; %d users; want x = 1, 2 new users (p, r), 6 users", n, ok, res, st.Current().Dict().Len())
	}
	if diff := cmp.Diff([]string{"p", "r", "x"}, members(st.Current(), "title", "cto")); diff != "" {
		t.Errorf("members (-want +got):\n%s", diff)
	}
}

// TestUploadExpect: an upload told how many ids to expect grows the
// dictionary's table a few times, each time to what the rest of the
// upload predicts (within maxAhead per id received, or the users already
// known), instead of by half a score of times; into a dictionary as large
// as the upload, once; a false hint reserves little and changes no
// result.
func TestUploadExpect(t *testing.T) {
	const n = 100_000
	chunk := func(prefix string, lo, hi int) []string {
		var ids []string
		for i := lo; i < hi; i++ {
			ids = append(ids, fmt.Sprint(prefix, i%2, "-", i)) // all new
		}
		return ids
	}
	// sizes uploads n new ids with prefix and returns how many sizes the
	// table took, the one before the upload included.
	sizes := func(st *Store, prefix string, hint uint64) int {
		u, _ := st.NewUpload("title", fmt.Sprint(prefix, hint), Add, "")
		u.Expect(hint)
		users := st.Current().Dict().Len()
		seen := map[int]bool{len(st.stage.d.slots): true}
		for lo := 0; lo < n; lo += 256 { // one block of Upload.resolve: each growth seen
			if _, err := u.AddMany(chunk(prefix, lo, min(lo+256, n))); err != nil {
				t.Fatal(err)
			}
			seen[len(st.stage.d.slots)] = true
		}
		res, err := st.Commit(u)
		if err != nil || res.NewUsers != n || res.Cardinality != n || st.Current().Dict().Len() != users+n {
			t.Fatalf("hint %d: result %+v, %v, %d users", hint, res, err, st.Current().Dict().Len())
		}
		return len(seen)
	}
	var with, without int
	for _, hint := range []uint64{0, n} {
		st := openStore(t, t.TempDir())
		upload(t, st, "title", "cmo", Add, "", "k0", "k1")
		g := sizes(st, "k", hint) - 1
		if hint == 0 {
			without = g
		} else {
			with = g
			// The next upload, into a dictionary of n users, rebuilds
			// the table once, at its first new id, for all of them
			// (twice while what it reserved was bounded by the ids
			// received alone).
			if got := sizes(st, "m", n) - 1; got != 1 {
				t.Errorf("an upload of %d new ids into %d users grew the table %d times, want 1", n, n+2, got)
			}
			// A false hint into a large dictionary, with one id as long
			// as ids get: the table, the ids' bytes and their offsets
			// grow (the table is full), to room for at most as much
			// again as the dictionary holds.
			d := st.stage.d
			users, slots, bytes := d.Len(), len(d.slots), len(d.arena)
			capBytes, capEnds := cap(d.arena), cap(d.ends)
			u, _ := st.NewUpload("title", "f", Add, "")
			u.Expect(1 << 40)
			if _, err := u.AddMany([]string{strings.Repeat("f", MaxIDLen)}); err != nil {
				t.Fatal(err)
			}
			d = st.stage.d
			if got, most := len(d.slots), max(slots*3/2, tableSize(2*users+1)); got <= slots || got > most {
				t.Errorf("a 1-id upload expecting 2^40 ids into %d users: %d slots (from %d), want more, and at most %d", users, got, slots, most)
			}
			if got, most := cap(d.arena), max(capBytes*3/2, 2*bytes+MaxIDLen); got > most {
				t.Errorf("a 1-id upload expecting 2^40 ids into %d bytes of ids: room for %d, want at most %d", bytes, got, most)
			}
			if got, most := cap(d.ends), max(capEnds*3/2, 2*users+1); got > most {
				t.Errorf("a 1-id upload expecting 2^40 ids into %d users: room for %d, want at most %d", users, got, most)
			}
			u.Discard()
		}
	}
	t.Logf("table growths during a %d-id upload: %d with the hint, %d without", n, with, without)
	if with > 4 || with >= without {
		t.Errorf("the table grew %d times with the hint, %d without; want at most 4, and fewer", with, without)
	}
	// A false hint: a small upload reserves at most maxAhead users per id.
	st := openStore(t, t.TempDir())
	u, _ := st.NewUpload("title", "h", Add, "")
	u.Expect(1 << 40)
	u.AddMany(chunk("k", 0, 20))
	if got := len(st.stage.d.slots); got > tableSize(maxAhead*20+20) {
		t.Errorf("a 20-id upload expecting 2^40 ids: %d slots, want at most %d", got, tableSize(maxAhead*20+20))
	}
	res, err := st.Commit(u)
	if err != nil || res.NewUsers != 20 || res.Cardinality != 20 {
		t.Errorf("result %+v, %v; want 20 new users and members", res, err)
	}
}

// TestStoresShareNoSpareRoom: writers that start from the same dictionary
// never write into one another's users, nor into its table. Two stores
// serving one built snapshot each stage their own users; publishing an
// older snapshot (built, or committed: its arrays have the stage's spare
// room) while a reader holds a newer one leaves the reader's users as
// they were. The dictionary is large enough for its arrays to be mapped
// (offheap.go), where they grow in place, and one store's growth in place
// must not be another's.
func TestStoresShareNoSpareRoom(t *testing.T) {
	const base = 300_000 // 2.7 MB of ids, 1.2 MB of ends: both mapped
	b := NewBuilder()
	for i := range base {
		if _, err := b.Intern(demoID(i)); err != nil {
			t.Fatal(err)
		}
	}
	built := b.Build(1)
	occupied := func() (n int) {
		for _, s := range built.dict.slots {
			if s != 0 {
				n++
			}
		}
		return n
	}
	slotsBefore := occupied()
	upload := func(s *Store, prefix string) *Snapshot {
		t.Helper()
		u, err := s.NewUpload("title", "cmo", Add, "")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 1000 {
			if err := u.Add(fmt.Sprintf("%s%06d", prefix, i)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Commit(u); err != nil {
			t.Fatal(err)
		}
		return s.Current()
	}
	// holds checks that snap still holds prefix's users, as ids base on.
	holds := func(what string, snap *Snapshot, prefix string) {
		t.Helper()
		d := snap.Dict()
		for i := range 1000 {
			id := fmt.Sprintf("%s%06d", prefix, i)
			if u, ok := d.Lookup(id); !ok || u != uint32(base+i) {
				got, _ := d.ID(uint32(base + i))
				t.Fatalf("%s: Lookup(%s) = %d, %t; user %d reads %q", what, id, u, ok, base+i, got)
			}
		}
	}

	s1, s2 := NewStore(built), NewStore(built)
	a := upload(s1, "a")
	upload(s2, "b")
	holds("two stores from one snapshot, the first", a, "a")
	holds("two stores from one snapshot, the first, now", s1.Current(), "a")
	holds("two stores from one snapshot, the second", s2.Current(), "b")

	s := NewStore(built)
	held := upload(s, "c")
	s.Publish(built)
	upload(s, "d")
	holds("an older built snapshot published again", held, "c")

	s = NewStore(built)
	older := upload(s, "e")
	held = upload(s, "f") // users base+1000 on
	s.Publish(older)
	upload(s, "g")
	d := held.Dict()
	for i := range 1000 {
		id := fmt.Sprintf("f%06d", i)
		if u, ok := d.Lookup(id); !ok || u != uint32(base+1000+i) {
			got, _ := d.ID(uint32(base + 1000 + i))
			t.Fatalf("an older committed snapshot published again: Lookup(%s) = %d, %t; user %d reads %q", id, u, ok, base+1000+i, got)
		}
	}
	// The stores' users went into tables of their own: several stores
	// storing slots into the built one, each counting only its own users,
	// would fill it.
	if after := occupied(); after != slotsBefore {
		t.Errorf("the built snapshot's table holds %d slots after the stores' uploads, %d before", after, slotsBefore)
	}
}

// TestSortUsers: sortUsers sorts as slices.Sort does, whichever digits the
// ids differ in, and leaves ids in order as they are.
func TestSortUsers(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	var spare []uint32
	for _, tc := range []struct {
		name string
		n    int
		max  uint32 // ids are below it
	}{
		{"empty", 0, 1}, {"one", 1, 10}, {"small", 100, 1 << 11}, {"two digits", 70_000, 1 << 22},
		{"three digits", 70_000, math.MaxUint32}, {"top digit only", 5000, 0}, {"equal", 300, 1},
		{"first smallest", 1000, 1 << 20},
	} {
		ids := make([]uint32, tc.n)
		for i := range ids {
			switch {
			case tc.max == 0:
				ids[i] = uint32(r.IntN(1024)) << 22
			default:
				ids[i] = uint32(r.Uint64N(uint64(tc.max)))
			}
		}
		if tc.name == "first smallest" {
			ids[0] = 0
		}
		want := slices.Clone(ids)
		slices.Sort(want)
		var got []uint32
		got, spare = sortUsers(ids, spare)
		if !slices.Equal(got, want) {
			t.Errorf("%s: not sorted", tc.name)
		}
		if len(spare) > 0 && &got[0] == &spare[0] {
			t.Errorf("%s: sorted and other share memory", tc.name)
		}
		in := slices.Clone(want)
		if got, _ := sortUsers(in, spare); len(in) > 0 && &got[0] != &in[0] {
			t.Errorf("%s: ids in order were moved", tc.name)
		}
	}
}

// TestUploadSortedFlushes: an upload of known users out of order sorts
// each buffer of flushKnown ids by radix, into and out of its spare
// buffer, several times over; the buffers must never end up shared.
func TestUploadSortedFlushes(t *testing.T) {
	const n = 3 * flushKnown
	st := openStore(t, t.TempDir())
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("s%06d", i)
	}
	upload(t, st, "title", "base", Add, "", ids...)
	r := rand.New(rand.NewPCG(7, 7))
	r.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	want := slices.Clone(ids[:n-1000])
	u, _ := st.NewUpload("title", "cmo", Add, "")
	for lo := 0; lo < len(want); lo += flushKnown + 1000 {
		if _, err := u.AddMany(want[lo:min(lo+flushKnown+1000, len(want))]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Commit(u); err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	if got := members(st.Current(), "title", "cmo"); !slices.Equal(got, want) {
		t.Errorf("%d members, want %d (or not the same)", len(got), len(want))
	}
}

// TestAddPackedNoReference: AddPacked keeps no string pointing into the
// chunk it was given (the server reuses its buffers): neither its split
// ids nor the ids it looked up in a batch.
func TestAddPackedNoReference(t *testing.T) {
	st := openStore(t, t.TempDir())
	upload(t, st, "title", "cmo", Add, "", "a", "b", "c", "d")
	u, _ := st.NewUpload("title", "cfo", Add, "")
	// Runs of users in order, users out of order, and new ones: the run
	// prediction and the batch lookup both see some.
	packed := []byte("a\nb\nd\nc\nnew1\na\nc\nnew2\n")
	if _, _, err := u.AddPacked(packed); err != nil {
		t.Fatal(err)
	}
	inside := func(s string) bool {
		if s == "" {
			return false
		}
		p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
		lo := uintptr(unsafe.Pointer(&packed[0]))
		return p >= lo && p < lo+uintptr(len(packed))
	}
	if slices.ContainsFunc(u.views[:cap(u.views)], inside) {
		t.Error("the upload keeps a split id pointing into the chunk")
	}
	if slices.ContainsFunc(u.block.ids[:], inside) {
		t.Error("the upload keeps a looked-up id pointing into the chunk")
	}
}

// TestMaxSegments: a client could create any number of segments, one
// upload each (3,000 one-user segments took personad from 86 MB to 147
// MB RSS, and each commit clones the map of every segment). Now an upload
// that would add a segment past Config.MaxSegments is ErrTooManySegments
// and applies nothing, not even its new users; uploads to existing
// segments, removes and deletes are not limited, a deletion makes room,
// and a store holding more than a lowered limit still opens.
func TestMaxSegments(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(Config{Dir: dir, MaxSegments: 2})
	if err != nil {
		t.Fatal(err)
	}
	upload(t, st, "title", "cmo", Add, "", "u1")
	upload(t, st, "title", "cto", Add, "", "u2")
	_, err = tryUpload(st, "title", "ceo", Replace, "", "u3")
	want := "segments: upload title:ceo: segments: too many segments: the store holds 2, the limit is 2 (delete segments no longer used)"
	if !errors.Is(err, ErrTooManySegments) || err.Error() != want {
		t.Fatalf("third segment: %v, want %q", err, want)
	}
	snap := st.Current()
	if snap.Len() != 2 || snap.Version() != 2 || snap.Dict().Len() != 2 {
		t.Errorf("after the refusal: %d segments, version %d, %d users; want 2, 2, 2", snap.Len(), snap.Version(), snap.Dict().Len())
	}
	upload(t, st, "title", "cmo", Add, "", "u3", "u4") // an existing segment grows
	upload(t, st, "title", "cto", Remove, "", "u2")
	if _, err := st.Delete("title", "cto"); err != nil {
		t.Fatal(err)
	}
	upload(t, st, "title", "ceo", Add, "", "u5") // the deletion made room
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openStore(t, dir) // no limit
	upload(t, st, "industry", "fintech", Add, "", "u1")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = Open(Config{Dir: dir, MaxSegments: 1}) // 3 segments, limit 1: opens
	if err != nil {
		t.Fatalf("a store over a lowered limit: %v", err)
	}
	defer st.Close()
	if got := st.Current().Len(); got != 3 {
		t.Errorf("segments after reopening over the limit: %d, want 3", got)
	}
	if _, err := tryUpload(st, "industry", "saas", Add, "", "u9"); !errors.Is(err, ErrTooManySegments) {
		t.Errorf("a new segment over a lowered limit: %v, want ErrTooManySegments", err)
	}
	upload(t, st, "title", "ceo", Add, "", "u6")
}
