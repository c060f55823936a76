package segments

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

// An uploaded user id is 1 to MaxIDLen bytes with no control character:
// no byte below 0x20 and no 0x7f (DEL). No exchange sends such an id, so
// one in an upload is a mistake that would never match a bid: most often
// the carriage return of a Windows line ending, or a tab of a TSV file.
// A line break would also break the lists of ids the store keeps one per
// line (packed chunks, the unknown ids of a Remove). Ids need not be
// UTF-8. The dictionary itself takes any 1 to MaxIDLen bytes, so that
// logs and snapshots written before this rule still load.

// UserIDProblem says what is wrong with id as an uploaded user id, ""
// when nothing is, completing a sentence that begins "user id …": "is 0
// bytes; ids are 1 to 256 bytes", "holds a carriage return (0x0d) as byte
// 3 of 3" (bytes counted from 1, as the ids of an upload are).
func UserIDProblem(id string) string {
	if len(id) == 0 || len(id) > MaxIDLen {
		return fmt.Sprintf("is %d bytes; ids are 1 to %d bytes", len(id), MaxIDLen)
	}
	if i := controlByte(id); i >= 0 {
		return fmt.Sprintf("holds %s as byte %d of %d", controlName(id[i]), i+1, len(id))
	}
	return ""
}

// checkUserID is UserIDProblem as an error wrapping ErrBadUserID.
func checkUserID(id string) error {
	if len(id) > 0 && len(id) <= MaxIDLen && controlByte(id) < 0 { // the common case, without a call
		return nil
	}
	return fmt.Errorf("%w: user id %s", ErrBadUserID, UserIDProblem(id))
}

func controlName(c byte) string {
	switch c {
	case '\n':
		return "a line break (0x0a)"
	case '\r':
		return "a carriage return (0x0d)"
	case '\t':
		return "a tab (0x09)"
	}
	return fmt.Sprintf("the control character 0x%02x", c)
}

// controlByte returns the index of id's first control character (below
// 0x20, or 0x7f), or -1. It tests eight bytes at a time: it runs for
// every uploaded id, on the upload's one core.
func controlByte(id string) int {
	const (
		ones = 0x0101010101010101
		high = 0x8080808080808080
	)
	i := 0
	for ; i+8 <= len(id); i += 8 {
		x := binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(id[i:]), 8))
		del := x ^ (ones * 0x7f)
		// A byte below 0x20 (x - 0x20 borrows into a high bit x lacks),
		// or one equal to 0x7f (a zero byte of del). Exact for the word;
		// the loop below finds which byte.
		if ((x-ones*0x20)&^x|(del-ones)&^del)&high != 0 {
			break
		}
	}
	for ; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c == 0x7f {
			return i
		}
	}
	return -1
}
