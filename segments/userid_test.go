package segments

import (
	"bytes"
	"strings"
	"testing"
)

func TestUserIDProblem(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"u00000042", ""},
		{"émile@example.com", ""},
		{"\xff\xfe binary but no control byte", ""},
		{strings.Repeat("x", MaxIDLen), ""},
		{"", "is 0 bytes; ids are 1 to 256 bytes"},
		{strings.Repeat("x", MaxIDLen+1), "is 257 bytes; ids are 1 to 256 bytes"},
		{"u1\r", "holds a carriage return (0x0d) as byte 3 of 3"},
		{"a\nb", "holds a line break (0x0a) as byte 2 of 3"},
		{"tab\there", "holds a tab (0x09) as byte 4 of 8"},
		{"nul\x00", "holds the control character 0x00 as byte 4 of 4"},
		{"0123456789abcdef\x1f", "holds the control character 0x1f as byte 17 of 17"},
	} {
		if got := UserIDProblem(tc.id); got != tc.want {
			t.Errorf("UserIDProblem(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}
}

// TestControlByte checks the eight-bytes-at-a-time scan against a byte
// loop: every byte value at every position of ids up to 24 bytes, over
// backgrounds of printable, high (UTF-8) and borderline bytes.
func TestControlByte(t *testing.T) {
	naive := func(s string) int {
		for i := range len(s) {
			if s[i] < 0x20 || s[i] == 0x7f {
				return i
			}
		}
		return -1
	}
	for _, bg := range []byte{'a', ' ', '~', 0x80, 0xff, 0xa0} {
		for n := 1; n <= 24; n++ {
			b := bytes.Repeat([]byte{bg}, n)
			for pos := range n {
				for c := range 256 {
					old := b[pos]
					b[pos] = byte(c)
					if got, want := controlByte(string(b)), naive(string(b)); got != want {
						t.Fatalf("controlByte(%q) = %d, want %d", b, got, want)
					}
					b[pos] = old
				}
			}
		}
	}
}
