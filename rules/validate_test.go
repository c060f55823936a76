package rules

import "testing"

// TestMayRepeat: equal hashes are found wherever they are, zeros (empty
// ids) never count, and distinct hashes pass even when they share a slot.
func TestMayRepeat(t *testing.T) {
	for _, tc := range []struct {
		hashes []uint64
		want   bool
	}{
		{nil, false},
		{[]uint64{0, 0, 0}, false},
		{[]uint64{1, 2, 3}, false},
		{[]uint64{1, 1 << 40, 2 << 40, 3}, false}, // one slot, probed past
		{[]uint64{5, 0, 5}, true},
		{[]uint64{1, 1 << 40, 2 << 40, 1 << 40}, true},
		{[]uint64{idHash("a"), idHash("b"), idHash(""), idHash("")}, false},
		{[]uint64{idHash("a"), idHash("b"), idHash("a")}, true},
	} {
		if got := mayRepeat(tc.hashes); got != tc.want {
			t.Errorf("mayRepeat(%v) = %v, want %v", tc.hashes, got, tc.want)
		}
	}
}
