//go:build !race

package segments

import (
	"runtime"
	"testing"
	"time"
)

// TestDictOffHeap checks that a large dictionary's arrays live in
// mappings, not on the Go heap, and are unmapped once no Dict refers to
// them (race builds keep them on the heap: offheap_heap.go).
func TestDictOffHeap(t *testing.T) {
	if !offHeap {
		t.Skip("no memory mappings on this system")
	}
	const n = 500_000
	runtime.GC()
	waitCleanups()
	before := MappedBytes()
	grew, v := heapGrowth(func() any {
		b := NewBuilder()
		for i := range n {
			if _, err := b.Intern(demoID(i)); err != nil {
				t.Fatal(err)
			}
		}
		return b.Build(1)
	})
	snap := v.(*Snapshot)
	d := snap.Dict()
	var mapped int64
	for _, m := range d.mem {
		if m != nil {
			mapped += int64(len(m.b))
		}
	}
	t.Logf("%d users: %d bytes grown (heap and mapped), %d mapped, MemoryBytes %d", n, grew, mapped, d.MemoryBytes())
	if mapped < int64(d.MemoryBytes())*9/10 {
		t.Errorf("%d bytes mapped for a dictionary of %d bytes: want nearly all of it", mapped, d.MemoryBytes())
	}
	if heap := int64(grew) - mapped; heap > int64(d.MemoryBytes())/10 {
		t.Errorf("heap grew %d bytes for a dictionary of %d: want little", heap, d.MemoryBytes())
	}
	for i := range n { // still readable
		if u, ok := d.Lookup(demoID(i)); !ok || u != uint32(i) {
			t.Fatalf("Lookup(%s) = %d, %v", demoID(i), u, ok)
		}
	}
	runtime.KeepAlive(snap)
	snap, d = nil, nil
	// Mappings of earlier tests may be returned meanwhile too: at most
	// what was mapped before may be left.
	for deadline := time.Now().Add(5 * time.Second); MappedBytes() > before && time.Now().Before(deadline); {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if left := MappedBytes() - before; left > 0 {
		t.Errorf("%d bytes still mapped 5 s after the dictionary was dropped", left)
	}
}
