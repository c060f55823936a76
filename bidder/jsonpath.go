package bidder

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A JSON body protojson refuses (a value of the wrong type, a duplicate
// field, a syntax error) is reported by protojson with its line
// and column, and the field's name, but not its path. decodeErrorPath
// finds the path ("imp[0].banner.w") for the HTTP answer's "field", as a
// ValidationError names it. It runs on the error path only.

// linePos is how protojson places an error: "(line 3:17)", the column
// counting runes from 1.
var linePos = regexp.MustCompile(`\(line (\d+):(\d+)\)`)

// decodeErrorPath returns the path of the member or element of body at
// the position err names, or "" when it names none or the position is at
// the top level.
func decodeErrorPath(body []byte, err error) string {
	m := linePos.FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	line, _ := strconv.Atoi(m[1])
	col, _ := strconv.Atoi(m[2])
	off, ok := offsetOf(body, line, col)
	if !ok {
		return ""
	}
	return pathAt(body, off)
}

// offsetOf turns a 1-based line and rune column into a byte offset.
func offsetOf(b []byte, line, col int) (int, bool) {
	off := 0
	for ; line > 1; line-- {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return 0, false
		}
		off += i + 1
	}
	for ; col > 1; col-- {
		if off >= len(b) {
			return 0, false
		}
		_, n := utf8.DecodeRune(b[off:])
		off += n
	}
	return off, true
}

// jsonFrame is an object or array being read by pathAt.
type jsonFrame struct {
	object    bool
	key       string // the member being read (object)
	expectKey bool   // the next token is a key (object)
	index     int    // the element being read (array)
}

// pathAt returns the path of the token of body that ends after off:
// the key or value there, or the container the reading stopped in when
// body is malformed before it.
func pathAt(body []byte, off int) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var stack []jsonFrame
	done := func() { // a value ended
		if n := len(stack); n > 0 {
			if f := &stack[n-1]; f.object {
				f.expectKey = true
			} else {
				f.index++
			}
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return framesPath(stack)
		}
		past := int(dec.InputOffset()) > off
		d, isDelim := tok.(json.Delim)
		switch {
		case isDelim && (d == '}' || d == ']'):
			stack = stack[:len(stack)-1]
			if past {
				return framesPath(stack)
			}
			done()
			continue
		case len(stack) > 0 && stack[len(stack)-1].object && stack[len(stack)-1].expectKey:
			f := &stack[len(stack)-1]
			f.key, _ = tok.(string)
			f.expectKey = false
			if past {
				return framesPath(stack)
			}
			continue
		}
		if past {
			return framesPath(stack)
		}
		switch d {
		case '{':
			stack = append(stack, jsonFrame{object: true, expectKey: true})
		case '[':
			stack = append(stack, jsonFrame{})
		default:
			done()
		}
	}
}

func framesPath(stack []jsonFrame) string {
	var b strings.Builder
	for _, f := range stack {
		switch {
		case !f.object:
			fmt.Fprintf(&b, "[%d]", f.index)
		case f.key != "" && !f.expectKey:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(f.key)
		default:
			return b.String() // between members: the object itself
		}
	}
	return b.String()
}
