package rules

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/personad/personad/internal/par"
)

// MaxFileSize bounds one rules file; larger files are rejected unread.
const MaxFileSize = 256 << 20

// Parse decodes a rules document, YAML or JSON (JSON is YAML), into a
// RuleSet. Unknown fields (names are case-sensitive), duplicate keys and
// values of the wrong type are errors, each naming its line and field
// path ("line 14: campaigns[1].targeting.all[0]: unknown field \"anyy\""):
// a misspelt field never passes silently. A syntax error names its line,
// and in a document written as JSON its column. name labels errors (a
// file name, or "request"). Parse does not validate; call
// [RuleSet.Validate].
func Parse(name string, data []byte) (*RuleSet, error) {
	return parse(name, data, nil)
}

// parse is Parse, reusing the campaign entries of cache when it is set;
// it returns no rule set, and no error, when cache tells that data is
// the previous version's text (cache.same).
func parse(name string, data []byte, cache *entryCache) (*RuleSet, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("rules: %s: %d bytes exceeds the %d-byte limit", name, len(data), MaxFileSize)
	}
	// YAML 1.2 semantics (go.yaml.in/yaml/v3): an id such as "no" or "y"
	// stays a string. The document is decoded from yaml.v3's node tree
	// (decode.go), a large one in pieces on every CPU (split.go); one
	// that uses aliases, merge keys or explicit tags takes the generic
	// route, parseViaJSON.
	if len(data) >= splitMin || cache != nil {
		if rs, ok := parseSplit(data, cache); ok {
			return rs, nil
		}
	}
	// The fast front end (fastyaml.go) takes the document when it is
	// written in its subset of YAML; yaml.v3 takes any other.
	fp := fastParsers.Get().(*fastParser)
	defer fastParsers.Put(fp)
	doc, ok := fp.parse(data, false)
	if !ok {
		doc = new(yaml.Node)
		ydec := yaml.NewDecoder(bytes.NewReader(data))
		if err := ydec.Decode(doc); err != nil && !errors.Is(err, io.EOF) {
			return nil, syntaxError(name, data, err)
		}
		if err := ydec.Decode(new(yaml.Node)); !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("rules: %s: more than one YAML document", name)
		}
	}
	var rs RuleSet
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return &rs, nil // an empty file is an empty rule set
	}
	err := decodeRuleSet(doc.Content[0], &rs)
	if errors.Is(err, errFallback) {
		return parseViaJSON(name, data)
	}
	if err != nil {
		return nil, fmt.Errorf("rules: %s: %w", name, err)
	}
	return &rs, nil
}

// syntaxError is err, yaml.v3's for a document it cannot parse, named
// better where it can be: yaml.v3 gives the line where the enclosing
// block began (the campaigns: key's, for a fault deep in a 3 MB file), so
// the campaign entries are parsed one by one, and the first that fails
// alone is named, with the line its own error gives, counted in the file.
func syntaxError(name string, data []byte, err error) error {
	// Only a file named .json is taken as meant to be JSON: a YAML file
	// may be written in flow style, whose single quotes, comments and
	// plain scalars encoding/json would name as the fault instead of the
	// one yaml.v3 failed on. In a .json file they are not JSON either,
	// and naming the first of them is right.
	if strings.EqualFold(filepath.Ext(name), ".json") {
		if line, col, msg, ok := jsonSyntaxError(data, err); ok {
			return fmt.Errorf("rules: %s: json: line %d, column %d: %s", name, line, col, msg)
		}
	}
	// whole is the error for the whole document, when no campaign entry
	// can be named.
	whole := func() error {
		if _, msg := yamlLine(err); len(data) <= maxBreakSearch {
			if k := breakingLine(data, msg); k > 0 {
				return fmt.Errorf("rules: %s: yaml: line %d: %s%s", name, k, msg, indentHint(k))
			}
		}
		return fmt.Errorf("rules: %s: %w", name, err)
	}
	s, _, _, ok := cutCampaigns(data, nil)
	if !ok {
		return whole()
	}
	// first is the line each entry begins on, counted entry by entry:
	// counting from the file's start at each entry that fails alone
	// without naming a line (an alias of an anchor in an earlier entry)
	// was quadratic, 6.4 s for a 1.3 MB file of 256,000 such entries.
	first := 1 + bytes.Count(data[:s.head], []byte("\n"))
	for i, e := range s.entries {
		var n yaml.Node
		// Only a syntax error, which yaml.v3 gives a line, names an
		// entry: one alone may also fail for what it takes from others
		// (an alias of an anchor defined before it).
		if eerr := yaml.Unmarshal(e, &n); eerr != nil {
			l, msg := yamlLine(eerr)
			k := 0
			if len(e) <= maxBreakSearch {
				k = breakingLine(e, msg)
			}
			if k > 0 {
				return fmt.Errorf("rules: %s: campaigns[%d] (the entry from line %d): yaml: line %d: %s%s", name, i, first, first+k-1, msg, indentHint(first+k-1))
			}
			if l > 0 {
				return fmt.Errorf("rules: %s: campaigns[%d] (the entry from line %d): yaml: line %d: %s", name, i, first, first+l-1, msg)
			}
		}
		first += bytes.Count(e, []byte("\n"))
	}
	return whole()
}

// yamlLine splits an error of yaml.v3 into the line it names (0 for
// none) and its message.
func yamlLine(err error) (line int, msg string) {
	msg = strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		num, tail, _ := strings.Cut(rest, ": ")
		if l, err := strconv.Atoi(num); err == nil {
			return l, tail
		}
	}
	return 0, msg
}

// indentMessages are yaml.v3's messages for a line indented wrongly (a
// key deeper or shallower than its siblings, a list item out of line),
// which it gives at the line where the enclosing block began, often
// lines before the fault (or none, for the first line of what it
// parses).
var indentMessages = []string{
	"mapping values are not allowed in this context",
	"did not find expected key",
	"did not find expected '-' indicator",
	"block sequence entries are not allowed in this context",
}

// maxBreakSearch is the largest text breakingLine searches: a campaign
// entry that fails alone, or the whole document when none does. Its
// parses of prefixes, one per halving of the lines, add ~80 ms to a
// 64 KB file's error on a loaded 2-CPU machine, ~500 ms to a 256 KB
// one's, with the reload's lock held (a 2 MB entry, a long adomain
// list: 1.6 s, against 0.4 s to name the entry). A larger entry's or
// file's error keeps yaml.v3's line.
const maxBreakSearch = 64 << 10

// breakingLine returns, for text that yaml.v3 fails to parse with msg,
// one of indentMessages, the 1-based line at which it breaks: the first
// line with which the lines before it fail to parse with that message,
// found by bisection (the lines up to a faulty indentation parse, and
// none past it do, as text is read line by line). That is the line of
// the fault, the one after it (a key too shallow shows only at the next
// key) or the next key beside the faulty one (a block's first key too
// deep sets the block's depth, which the next key does not match). 0
// for another message.
func breakingLine(text []byte, msg string) int {
	if !slices.Contains(indentMessages, msg) {
		return 0
	}
	var ends []int // the offset past each line
	for i, b := range text {
		if b == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(ends) == 0 || ends[len(ends)-1] != len(text) {
		ends = append(ends, len(text))
	}
	fails := func(k int) bool { // the first k lines fail with msg
		var n yaml.Node
		err := yaml.Unmarshal(text[:ends[k-1]], &n)
		if err == nil {
			return false
		}
		_, m := yamlLine(err)
		return m == msg
	}
	lo, hi := 1, len(ends) // fails(hi) holds: text fails with msg
	for lo < hi {
		mid := lo + (hi-lo)/2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// indentHint is what follows the message of an error breakingLine
// located at line.
func indentHint(line int) string {
	return fmt.Sprintf(" (check the indentation of line %d and of the lines above it: each key as deep as the keys beside it, each list item's - as deep as the others)", line)
}

// jsonSyntaxError locates the fault of a document written as JSON (its
// first byte past white space is { or [) that yaml.v3, err, cannot
// parse: in a flow collection yaml.v3 names the line where the innermost
// collection began (a campaign's opening brace, or the file's first
// line), not the fault's, and no column. encoding/json stops at the
// fault's byte; it returns the fault's 1-based line and column (in
// characters) and encoding/json's message. YAML's flow style takes a
// trailing comma ([1, 2,] reads as [1, 2]) that JSON does not: those
// are blanked before the scan, so that it finds the fault yaml.v3 failed
// on. ok is false, leaving yaml.v3's message to stand, for a document
// not written as JSON, for one that ends too soon (yaml.v3's line of the
// collection left open says more than the end of the file), and when
// the scan's fault lies before yaml.v3's line (a document in YAML's flow
// style, which is not JSON before its fault: an unquoted key).
func jsonSyntaxError(data []byte, err error) (line, col int, msg string, ok bool) {
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	if len(trimmed) == 0 || (trimmed[0] != '{' && trimmed[0] != '[') {
		return 0, 0, "", false
	}
	// A byte order mark, which yaml.v3 reads as none (and editors do not
	// show), is no fault of JSON's either, nor a column.
	bom := 0
	if bytes.HasPrefix(data, []byte("\ufeff")) {
		bom = len("\ufeff")
	}
	var serr *json.SyntaxError
	if jerr := json.Unmarshal(blankTrailingCommas(data[bom:]), new(json.RawMessage)); !errors.As(jerr, &serr) {
		return 0, 0, "", false
	}
	// A document that ends too soon; its Offset, the length, is also
	// that of a fault in its last byte (a minified file's wrong closing
	// bracket), which is located.
	if serr.Error() == "unexpected end of JSON input" {
		return 0, 0, "", false
	}
	// Offset is the bytes read, the faulty one included.
	at := bom + max(int(serr.Offset)-1, 0)
	start := max(bytes.LastIndexByte(data[:at], '\n')+1, bom)
	line = 1 + bytes.Count(data[:start], []byte("\n"))
	col = 1 + utf8.RuneCount(data[start:at])
	rest, found := strings.CutPrefix(err.Error(), "yaml: line ")
	num, _, _ := strings.Cut(rest, ":")
	if l, cerr := strconv.Atoi(num); found && cerr == nil && line < l {
		return 0, 0, "", false
	}
	msg = serr.Error()
	if strings.HasSuffix(msg, " after object key:value pair") || strings.HasSuffix(msg, " after array element") {
		msg += " (a comma missing before it?)"
	}
	return line, col, msg, true
}

// blankTrailingCommas returns data with each comma that ends a JSON array
// or object (one after a value, followed by white space and ] or })
// replaced by a space, so that offsets into it are offsets into data;
// data itself when it has none.
func blankTrailingCommas(data []byte) []byte {
	out, copied := data, false
	inString, escaped := false, false
	var last byte // the last byte before b outside strings and white space
	for i, b := range data {
		if inString {
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
			continue
		}
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		case '"':
			inString = true
		case ',':
			// A comma after a value (not [, {, : or another comma)
			// that ] or } follows.
			j := i + 1
			for j < len(data) && (data[j] == ' ' || data[j] == '\t' || data[j] == '\r' || data[j] == '\n') {
				j++
			}
			if j < len(data) && (data[j] == ']' || data[j] == '}') && last != 0 && !strings.ContainsRune("[{:,", rune(last)) {
				if !copied {
					out, copied = bytes.Clone(data), true
				}
				out[i] = ' '
			}
		}
		last = b
	}
	return out
}

// parseViaJSON is Parse by the generic route: yaml.v3 decodes the
// document into maps and slices, which go through JSON into the structs,
// strict about unknown fields and types.
func parseViaJSON(name string, data []byte) (*RuleSet, error) {
	var doc any
	ydec := yaml.NewDecoder(bytes.NewReader(data))
	if err := ydec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("rules: %s: %w", name, err)
	}
	if err := ydec.Decode(new(any)); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("rules: %s: more than one YAML document", name)
	}
	var rs RuleSet
	if doc == nil {
		return &rs, nil // an empty file is an empty rule set
	}
	doc = jsonable(doc)
	// encoding/json matches names regardless of case; the walker, and the
	// proto, do not. Every key must be exactly a field name.
	if err := exactKeys(doc, ""); err != nil {
		return nil, fmt.Errorf("rules: %s: %w", name, err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("rules: %s: %w", name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rs); err != nil {
		return nil, fmt.Errorf("rules: %s: %w", name, describeJSONError(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("rules: %s: trailing data after the rule set", name)
	}
	return &rs, nil
}

// fieldNames holds every JSON field name of the rule-set types.
var fieldNames = func() map[string]bool {
	names := map[string]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" || names[name] {
				continue
			}
			names[name] = true
			walk(f.Type)
		}
	}
	walk(reflect.TypeFor[RuleSet]())
	return names
}()

// exactKeys reports the first mapping key in doc (a jsonable tree) that is
// not exactly a field name of the rule-set types, with its path.
func exactKeys(doc any, path string) error {
	switch v := doc.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			p := k
			if path != "" {
				p = path + "." + k
			}
			if !fieldNames[k] {
				if l := strings.ToLower(k); fieldNames[l] {
					return fmt.Errorf("%s: unknown field %q (field names are case-sensitive: %q)", p, k, l)
				}
				return fmt.Errorf("%s: unknown field %q", p, k)
			}
			if err := exactKeys(v[k], p); err != nil {
				return err
			}
		}
	case []any:
		for i, x := range v {
			if err := exactKeys(x, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonable turns YAML mappings with non-string keys into string-keyed ones.
func jsonable(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			v[k] = jsonable(x)
		}
		return v
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[fmt.Sprint(k)] = jsonable(x)
		}
		return m
	case []any:
		for i, x := range v {
			v[i] = jsonable(x)
		}
		return v
	}
	return v
}

// describeJSONError turns encoding/json's Go-flavoured messages into ones
// naming the rules field path.
func describeJSONError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: cannot use %s here, want %s", te.Field, te.Value, jsonKind(te.Type.Kind().String()))
	}
	if msg, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Errorf("unknown field %s", msg)
	}
	return err
}

func jsonKind(goKind string) string {
	switch goKind {
	case "float32", "float64", "int", "int32", "int64", "uint32", "uint64":
		return "a number"
	case "slice":
		return "a list"
	case "struct", "map":
		return "a mapping"
	case "bool":
		return "true or false"
	}
	return "a " + goKind
}

// Load reads a rules file, or every .yaml, .yml and .json file (in any
// case) of a directory (in name order, concatenating their campaigns and content rules),
// and validates the result. A missing directory or file is an error; an
// empty directory is an empty rule set.
func Load(path string) (*RuleSet, error) {
	files, err := ReadFiles(path)
	if err != nil {
		return nil, err
	}
	all, origins, err := ParseFilesLocated(files)
	if err != nil {
		return nil, err
	}
	if err := all.Validate(); err != nil {
		return nil, origins.Locate(err)
	}
	return all, nil
}

// File is one rules file as read from disk.
type File struct {
	Name string // the path it was read from
	// Data is the file's bytes; from [Parser.ReadFiles], valid until its
	// next call.
	Data    []byte
	ModTime time.Time
	// Sum is the content digest of Data; zero means not computed.
	// [Parser.ReadFiles] sets it for the files it does not read (for
	// those it reads, [Parser.Digest] covers them once parsed).
	Sum Digest
}

// ReadFiles reads what Load reads, without parsing: the file at path, or
// the .yaml, .yml and .json files (in any case) of the directory (not
// hidden ones), in name order. A path that is a symbolic link is followed.
func ReadFiles(path string) ([]File, error) { return readFiles(path, readFile) }

// readFiles is ReadFiles, reading each file with read.
func readFiles(path string, read func(name string) (File, error)) ([]File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	names := []string{path}
	if fi.IsDir() {
		ents, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("rules: %w", err)
		}
		names = names[:0]
		for _, e := range ents {
			if !e.IsDir() && IsFileName(e.Name()) {
				names = append(names, filepath.Join(path, e.Name()))
			}
		}
		slices.Sort(names)
	}
	files := make([]File, 0, len(names))
	for _, name := range names {
		f, err := read(name)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// IsFileName reports whether a directory entry called name (a base name)
// is one ReadFiles reads from a rules directory: .yaml, .yml or .json in
// any case (campaigns.YAML, as some editors and exports name it, is read,
// not skipped unseen), not hidden.
func IsFileName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return !strings.HasPrefix(name, ".")
	}
	return false
}

func readFile(name string) (File, error) { return readFileInto(name, nil) }

// readFileInto is readFile, reading into buf's memory when the file fits
// and is no less than half its capacity.
func readFileInto(name string, buf []byte) (File, error) {
	// Opening a named pipe waits for a writer, forever if none comes
	// (holding the reload, and every Apply, with it): anything but a
	// regular file is refused before it is opened.
	if fi, err := os.Stat(name); err == nil && !fi.Mode().IsRegular() {
		return File{}, notRegular(name, fi.Mode())
	}
	f, err := os.Open(name)
	if err != nil {
		return File{}, fmt.Errorf("rules: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return File{}, fmt.Errorf("rules: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return File{}, notRegular(name, fi.Mode())
	}
	if fi.Size() > MaxFileSize {
		return File{}, fmt.Errorf("rules: %s: %d bytes exceeds the %d-byte limit", name, fi.Size(), MaxFileSize)
	}
	// Read into a buffer of the size stat gave (one byte more to see the
	// file grow), growing only if it did.
	size := int(fi.Size()) + 1
	data := buf[:0]
	if cap(buf) < size || cap(buf) > 2*size {
		data = make([]byte, 0, size)
	}
	if size > 2*readPiece {
		if got, ok := readPieces(f, data[:size-1]); ok {
			return File{Name: name, Data: got, ModTime: fi.ModTime()}, nil
		}
		// The file changed size as it was read: read it again, in one
		// stream (ReadAt left the file's offset at 0).
	}
	for {
		n, err := f.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return File{}, fmt.Errorf("rules: %w", err)
		}
		if len(data) > MaxFileSize {
			return File{}, fmt.Errorf("rules: %s: more than the %d-byte limit", name, MaxFileSize)
		}
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
	}
	return File{Name: name, Data: data, ModTime: fi.ModTime()}, nil
}

// readPiece is the size of the pieces of a large file that readPieces
// reads at once.
const readPiece = 4 << 20

// readPieces reads f, of len(data) bytes by its stat, into data in pieces
// of readPiece bytes read at once, and reports whether it read exactly
// that many (false when the file shrank or grew meanwhile, or a read
// failed: the caller then reads it in one stream, which reports the
// error). Copying a 31 MB file out of the page cache takes ~3 ms on one
// CPU and ~1.8 ms in 4 MB pieces on two: most of a one-campaign change's
// read.
func readPieces(f *os.File, data []byte) ([]byte, bool) {
	n := (len(data) + readPiece - 1) / readPiece
	var short atomic.Bool
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			lo, hi := i*readPiece, min((i+1)*readPiece, len(data))
			if m, err := f.ReadAt(data[lo:hi], int64(lo)); m < hi-lo || (err != nil && !errors.Is(err, io.EOF)) {
				short.Store(true)
			}
		})
	}
	wg.Wait()
	if short.Load() {
		return nil, false
	}
	// Nothing past the end: the file did not grow.
	var one [1]byte
	if m, err := f.ReadAt(one[:], int64(len(data))); m != 0 || !errors.Is(err, io.EOF) {
		return nil, false
	}
	return data, true
}

// notRegular is the error for a rules file that is not a regular file.
func notRegular(name string, m fs.FileMode) error {
	kind := "not a regular file"
	switch {
	case m.IsDir():
		kind = "a directory"
	case m&fs.ModeNamedPipe != 0:
		kind = "a named pipe"
	case m&fs.ModeSocket != 0:
		kind = "a socket"
	case m&fs.ModeDevice != 0:
		kind = "a device"
	}
	return fmt.Errorf("rules: %s: is %s, not a regular file", name, kind)
}

// ParseFilesLocated parses every file and merges them in order, without
// validating, and returns where each file's campaigns landed in the
// merged set, so that validation errors can name
// the file and the campaign's index in it (see Origins.Locate).
func ParseFilesLocated(files []File) (*RuleSet, Origins, error) {
	return parseFiles(files, func(_ int, f File) (*RuleSet, error) { return Parse(f.Name, f.Data) })
}

// parseFiles merges the rule sets parse returns for files, in order,
// or returns the error of the first file (in order) that has one. The
// files are parsed on every CPU, parse(i, files[i]) concurrently with
// the others: a directory of a hundred files is otherwise a hundred
// small parses one after another, each too small to use more than one
// CPU for long.
func parseFiles(files []File, parse func(i int, f File) (*RuleSet, error)) (*RuleSet, Origins, error) {
	sets := make([]*RuleSet, len(files))
	errs := make([]error, len(files))
	par.For(len(files), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			sets[i], errs[i] = parse(i, files[i])
		}
	})
	if err := cmp.Or(errs...); err != nil {
		return nil, nil, err
	}
	var all RuleSet
	origins := make(Origins, len(files))
	n, cr := 0, [3]int{}
	for i, rs := range sets {
		origins[i] = Origin{File: files[i].Name, First: n, FirstContent: cr, Data: files[i].Data}
		n += len(rs.Campaigns)
		cr[0] += len(rs.ContentRules.BlockedCat)
		cr[1] += len(rs.ContentRules.BlockedAdomain)
		cr[2] += len(rs.ContentRules.ChannelMap)
	}
	switch {
	case len(sets) == 1 && n > 0:
		// One file's campaigns are the set's, not copied (10,000 are
		// 3 MB): the sets a Parser returns share them with the one it
		// remembers, all read-only.
		all.Campaigns = sets[0].Campaigns[:n:n]
	case n > 0:
		// Each file's campaigns to their place, on every CPU (100,000
		// campaigns are 31 MB).
		all.Campaigns = make([]Campaign, n)
		par.For(len(sets), 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				copy(all.Campaigns[origins[i].First:], sets[i].Campaigns)
			}
		})
	}
	for _, rs := range sets {
		all.Merge(&RuleSet{ContentRules: rs.ContentRules}) // the campaigns are in place
	}
	return &all, origins, nil
}

// Origin says that the campaigns of File start at index First of a merged
// rule set, and its content rules' blocked_cat, blocked_adomain and
// channel_map entries at the indexes of FirstContent, in that order.
// Data is the file's text, in which Locate finds the lines of errors
// (nil: Locate reads File when an error is in it, as for a file a
// Parser knew unchanged); it is the Data of the File parsed, and valid
// as long as that is.
type Origin struct {
	File         string
	First        int
	FirstContent [3]int
	Data         []byte
}

// Origins are the files of a merged rule set, in merge order.
type Origins []Origin

// contentLists are the merged lists of the content rules, in the order of
// Origin.FirstContent.
var contentLists = [3]string{"content_rules.blocked_cat[", "content_rules.blocked_adomain[", "content_rules.channel_map["}

// locate maps the path "campaigns[N]rest" of the merged set to
// "FILE: line L: campaigns[I]rest", I being the campaign's index in its
// file and L the line of the field (or of the innermost part of the path
// the file holds; left out when it cannot be told), and so the paths of
// the content rules' lists ("content_rules.channel_map[N]rest", ...).
// lines holds a lineFinder per origin, made as needed.
func (os Origins) locate(path string, lines []*lineFinder) (string, bool) {
	list, prefix := -1, "campaigns["
	idx, ok := strings.CutPrefix(path, prefix)
	for i := 0; !ok && i < len(contentLists); i++ {
		if idx, ok = strings.CutPrefix(path, contentLists[i]); ok {
			list, prefix = i, contentLists[i]
		}
	}
	if !ok {
		return "", false
	}
	idx, rest, ok := strings.Cut(idx, "]")
	if !ok {
		return "", false
	}
	n, err := strconv.Atoi(idx)
	if err != nil {
		return "", false
	}
	for j := len(os) - 1; j >= 0; j-- {
		first := os[j].First
		if list >= 0 {
			first = os[j].FirstContent[list]
		}
		if n >= first {
			local := fmt.Sprintf("%s%d]%s", prefix, n-first, rest)
			if lines[j] == nil {
				lines[j] = &lineFinder{name: os[j].File, data: os[j].Data}
			}
			if l := lines[j].line(local); l > 0 {
				return fmt.Sprintf("%s: line %d: %s", os[j].File, l, local), true
			}
			return os[j].File + ": " + local, true
		}
	}
	return "", false
}

// Locate rewrites the campaign and content-rules paths of err's
// validation errors from the merged set to the file and line they came
// from: "campaigns[1000].bid_cpm" becomes "broken.yaml: line 12:
// campaigns[0].bid_cpm" (with several files, the index is the
// campaign's in its file), and "content_rules.channel_map[3].channel"
// "house.yaml: line 4: content_rules.channel_map[0].channel". The lines
// are looked for only in the files that have errors. With no files (a
// set sent through the API), and for errors that are not
// ValidationErrors, it returns err unchanged.
func (os Origins) Locate(err error) error {
	var es ValidationErrors
	if len(os) == 0 || !errors.As(err, &es) {
		return err
	}
	lines := make([]*lineFinder, len(os))
	out := make(ValidationErrors, len(es))
	for i, e := range es {
		path, msg := e.Path, e.Msg
		if located, ok := os.locate(path, lines); ok {
			path = located
		}
		// "duplicate campaign id "a" (also campaigns[3])" names another
		// campaign of the merged set.
		if before, ref, ok := strings.Cut(msg, "(also "); ok {
			ref, after, _ := strings.Cut(ref, ")")
			if located, ok := os.locate(ref, lines); ok {
				msg = before + "(also " + located + ")" + after
			}
		}
		out[i] = &ValidationError{Path: path, Msg: msg}
	}
	return out
}

// Merge appends other's campaigns and content rules to rs.
func (rs *RuleSet) Merge(other *RuleSet) {
	rs.Campaigns = append(rs.Campaigns, other.Campaigns...)
	cr, o := &rs.ContentRules, &other.ContentRules
	cr.BlockedCat = append(cr.BlockedCat, o.BlockedCat...)
	cr.BlockedAdomain = append(cr.BlockedAdomain, o.BlockedAdomain...)
	cr.ChannelMap = append(cr.ChannelMap, o.ChannelMap...)
}

// Marshal encodes rs as YAML with the proto field names.
//
// yaml.v3's emitter queues every event of a document until the document
// ends (go-yaml/yaml#873): a 10,000-campaign set took seconds and
// allocated ~60 times its text. So a set is encoded campaign by campaign,
// each as a document of its own ("campaigns:\n  - id: ..."), whose text
// after its first line is that entry's text in the whole set's document;
// the content rules follow as the document's last key. The text is
// yaml.v3's for the whole set, byte for byte (TestMarshalByEntries).
func Marshal(rs *RuleSet) ([]byte, error) {
	if len(rs.Campaigns) == 0 {
		return marshalYAML(nil, rs)
	}
	const key = "campaigns:\n"
	var b []byte
	one := RuleSet{Campaigns: make([]Campaign, 1)}
	for i := range rs.Campaigns {
		one.Campaigns[0] = rs.Campaigns[i]
		n := len(b)
		var err error
		if b, err = marshalYAML(b, &one); err != nil {
			return nil, err
		}
		if i > 0 {
			if !bytes.HasPrefix(b[n:], []byte(key)) {
				return nil, fmt.Errorf("rules: unexpected YAML for campaign %d", i)
			}
			b = append(b[:n], b[n+len(key):]...)
		}
	}
	// The content rules, unless yaml.v3 leaves them out (omitempty).
	n := len(b)
	b, err := marshalYAML(b, &RuleSet{ContentRules: rs.ContentRules})
	if err != nil {
		return nil, err
	}
	if string(b[n:]) == "{}\n" {
		b = b[:n]
	}
	return b, nil
}

// marshalYAML appends rs encoded as one YAML document to b.
func marshalYAML(b []byte, rs *RuleSet) ([]byte, error) {
	var doc yaml.Node
	if err := doc.Encode(rs); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	plainFloats(&doc)
	buf := bytes.NewBuffer(b)
	enc := yaml.NewEncoder(buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	return buf.Bytes(), nil
}

// plainFloats writes the floats under n in plain decimal: yaml.v3 writes
// the shortest form, which is exponent notation from a million on (a
// total budget of 1000000 read "1e+06").
func plainFloats(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!float" && strings.ContainsAny(n.Value, "eE") {
		if f, err := strconv.ParseFloat(n.Value, 64); err == nil && !math.IsInf(f, 0) {
			n.Value = plain(f)
			n.Tag = "" // as it resolves: "1000000" is an int to YAML, and any number fits a float field
		}
	}
	for _, c := range n.Content {
		plainFloats(c)
	}
}

// MarshalJSON encodes rs as JSON with the proto field names: a valid
// proto JSON encoding of personad.v1.RuleSet.
// Markup stays as written: <, > and & are not escaped (they are valid in
// JSON strings, and escaping them costs time and bytes on every adm).
func MarshalJSON(rs *RuleSet) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(rs); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
