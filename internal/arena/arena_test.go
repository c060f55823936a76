package arena

import "testing"

// TestCut: slices cut one after another share an array while it has
// room, each ends at its own length, and Refill starts a new array only
// when the next cut would not fit.
func TestCut(t *testing.T) {
	var s []int
	Refill(&s, 2, 4)
	a := Cut(&s, 2)
	Refill(&s, 2, 4)
	b := Cut(&s, 2)
	if cap(a) != 2 || cap(b) != 2 || &a[:cap(a)][0] == &b[0] {
		t.Fatalf("cuts overlap or carry capacity: a %v (cap %d), b %v (cap %d)", a, cap(a), b, cap(b))
	}
	if &a[:2][1] != &s[:2][1] {
		t.Fatal("a and b were not cut from one array")
	}
	if a2 := append(a, 9); b[0] != 0 || &a2[0] == &a[0] {
		t.Fatalf("appending to a wrote into b (%v) or into a's array", b)
	}
	rest := cap(s) - len(s)
	Refill(&s, rest+1, 4)
	if len(s) != 0 || cap(s) < rest+1 {
		t.Fatalf("Refill for %d more: len %d cap %d", rest+1, len(s), cap(s))
	}
	c := Cut(&s, 1)
	if &c[0] == &b[0] {
		t.Fatal("a refilled array is the old one")
	}
}
