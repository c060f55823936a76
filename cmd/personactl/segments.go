package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// The usage lines of the segments subcommands, for their -h and the
// group's.
const (
	usageUpload = "segments upload --facet F --value V [--replace | --mode add|remove|replace] [--key K]\n" +
		"    [--skip-invalid] [--header auto|yes|no] [--allow-empty] [--chunk-ids N] FILE|-"
	usageList   = "segments list [--facet F]"
	usageLookup = "segments lookup USER_ID (after -- when it begins with -)"
	usageDelete = "segments delete --facet F --value V"
)

var segmentsUsage = []string{usageUpload, usageList, usageLookup, usageDelete}

// runSegments is `personactl segments upload|list|lookup|delete`.
func runSegments(ctx context.Context, g *globals, e env, args []string) error {
	if len(args) == 0 {
		groupUsage(e.stderr, "segments", segmentsUsage)
		return usagef("segments: want a subcommand: upload, list, lookup or delete")
	}
	if isHelp(args[0]) {
		groupUsage(e.stderr, "segments", segmentsUsage)
		return flag.ErrHelp
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "upload":
		return runUpload(ctx, g, e, args)
	case "list":
		return runList(ctx, g, e, args)
	case "lookup":
		return runLookup(ctx, g, e, args)
	case "delete":
		return runDelete(ctx, g, e, args)
	}
	return unknownSub(e.stderr, "segments", sub, "upload, list, lookup or delete", segmentsUsage)
}

// Chunking of uploads: a chunk is sent when it holds chunkIDs ids or
// chunkBytes bytes of ids, whichever comes first, so that a message stays
// under gRPC's default 1 MiB limit even for 256-byte ids (each id costs
// its length plus up to 3 bytes of protobuf framing): personad takes up
// to 64 MiB, a server built on the bidder package with gRPC's defaults 1
// MiB.
const (
	defaultChunkIDs = 32 << 10
	maxChunkIDs     = 64 << 10 // the server's default MaxChunkIDs
	chunkBytes      = 768 << 10
	// maxReported is how many invalid lines the error or summary names.
	maxReported = 5
	maxIDLen    = 256
)

// uploadOptions are the flags of `segments upload`.
type uploadOptions struct {
	facet, value string
	mode         personadpb.UploadMode
	key          string
	header       string // auto, yes, no
	skipInvalid  bool
	allowEmpty   bool
	chunkIDs     int
	file         string
	// slowFlush: when the input is slow to come (a pipe from a slow
	// export), a chunk is also sent once this long has gone by since the
	// last one was handed on (queued for the sender) and no whole line is
	// left in what the reader has read, so
	// that the idle timers (--timeout here, the server's upload idle
	// timeout) measure how long the input stalls, not how long a chunk
	// takes to fill (a steady 500 ids/s took 65 s to fill one). 0: only
	// full chunks. runUpload makes it a quarter of --timeout, at most 1 s.
	slowFlush time.Duration
}

func parseUpload(e env, args []string) (*uploadOptions, error) {
	o := &uploadOptions{}
	fs := flag.NewFlagSet("segments upload", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&o.facet, "facet", "", "persona facet, e.g. title (required)")
	fs.StringVar(&o.value, "value", "", "facet value, e.g. cmo (required)")
	replace := fs.Bool("replace", false, "make the segment exactly these users (same as --mode replace)")
	mode := fs.String("mode", "add", "add (join the segment), remove (leave it) or replace")
	fs.StringVar(&o.key, "key", "", "idempotency key: a retry with the same key is not applied twice")
	fs.StringVar(&o.header, "header", "auto", "whether the first id line is a header: auto (when it reads id, user_id, uid, buyeruid, …), yes or no")
	fs.BoolVar(&o.skipInvalid, "skip-invalid", false, "skip invalid lines (reported in the summary) instead of uploading nothing")
	fs.BoolVar(&o.allowEmpty, "allow-empty", false, "send an upload without any id: a replace empties the segment, an add creates it empty (otherwise a replace is refused and an add or remove sends nothing: an empty or header-only FILE is more often a mistake)")
	fs.IntVar(&o.chunkIDs, "chunk-ids", defaultChunkIDs, "ids per message (at most 65536)")
	fs.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: personactl "+usageUpload+"\n\n"+
			"One user id per line; blank lines (separators alone, too: ,,,) and lines starting with # are\n"+
			"skipped; of a CSV line, the first column is the id (of a TSV file, whose first line has a tab\n"+
			"before any comma, the first tab-separated column). A quoted field must end on its line: a line\n"+
			"that leaves one open (a stray quote, or a note with line breaks) refuses the upload, naming the\n"+
			"line, even with --skip-invalid, as which of the lines after it are ids cannot be told; so does\n"+
			"the header of a file separated by semicolons (user_id;name, Kundennr.;Name), one whose id\n"+
			"column is not the first (Name,Email), and a UTF-16 file (save it as UTF-8). A line whose id\n"+
			"holds a control character (a CSV's tab too), is not UTF-8 text or is a number in scientific\n"+
			"notation (1.23457E+11, a spreadsheet's rounding) is invalid, as is a line holding a carriage\n"+
			"return (CR line endings, \"CSV (Macintosh)\": save with LF). A UTF-8 byte order mark is\n"+
			"skipped, and so is the header line where it comes again (exports put end to end).\n"+
			"Gzip-compressed input (ids.csv.gz) is read decompressed; a zip archive (an Excel workbook) is\n"+
			"refused. Input with no id sends nothing (see --allow-empty). Flags go before FILE. With --key,\n"+
			"a retry of the same upload (after a timeout, say) replays the first one's result; the key with\n"+
			"other ids (or another segment or mode) is an error, and applies nothing.\n"+
			"\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, usageError{err}
	}
	switch {
	case fs.NArg() > 1 && strings.HasPrefix(fs.Arg(1), "-") && fs.Arg(1) != "-":
		// The flag package stops at the first argument that is no flag.
		return nil, usagef("segments upload: %s comes after FILE %s: flags go before FILE", fs.Arg(1), fs.Arg(0))
	case fs.NArg() != 1:
		return nil, usagef("segments upload: want one FILE (or - for stdin), got %d arguments", fs.NArg())
	case o.facet == "" || o.value == "":
		return nil, usagef("segments upload: --facet and --value are required")
	case o.chunkIDs <= 0 || o.chunkIDs > maxChunkIDs:
		return nil, usagef("segments upload: --chunk-ids %d must be 1 to %d", o.chunkIDs, maxChunkIDs)
	case o.header != "auto" && o.header != "yes" && o.header != "no":
		return nil, usagef("segments upload: --header %q must be auto, yes or no", o.header)
	}
	if err := checkText("segments upload", "--facet", o.facet, "--value", o.value, "--key", o.key); err != nil {
		return nil, err
	}
	o.file = fs.Arg(0)
	switch *mode {
	case "add":
		o.mode = personadpb.UploadMode_UPLOAD_MODE_ADD
	case "remove":
		o.mode = personadpb.UploadMode_UPLOAD_MODE_REMOVE
	case "replace":
		o.mode = personadpb.UploadMode_UPLOAD_MODE_REPLACE
	default:
		return nil, usagef("segments upload: --mode %q must be add, remove or replace", *mode)
	}
	if *replace {
		if *mode != "add" && *mode != "replace" {
			return nil, usagef("segments upload: --replace contradicts --mode %s", *mode)
		}
		o.mode = personadpb.UploadMode_UPLOAD_MODE_REPLACE
	}
	return o, nil
}

// checkText refuses the first of pairs (a name, then its argument) whose
// argument is not UTF-8 text, naming it: a gRPC string must be, and the
// client fails to send one that is not with "Internal: grpc: error while
// marshaling", which names no argument and reads as the server's fault.
func checkText(cmd string, pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if !utf8.ValidString(pairs[i+1]) {
			return usagef("%s: %s %q is not UTF-8 text", cmd, pairs[i], pairs[i+1])
		}
	}
	return nil
}

func modeName(m personadpb.UploadMode) string {
	return strings.ToLower(strings.TrimPrefix(m.String(), "UPLOAD_MODE_"))
}

// invalidLine is a line that holds no valid id.
type invalidLine struct {
	line int
	msg  string
}

func (l invalidLine) String() string { return fmt.Sprintf("line %d: %s", l.line, l.msg) }

// idReader reads user ids from a planner's file: one per line, blank lines
// and # comments skipped, surrounding spaces trimmed; a line with a comma
// is a CSV record whose first field (quoted or not) is the id; the first
// id line may be a header (see isHeader). A UTF-8 byte order mark at the
// start is skipped.
//
// A quoted field must end on its line. CSV lets one go on over line
// breaks, so a stray quote would read the lines after it, up to the next
// quote, into one field: ids lost without a word. A line that leaves a
// quoted field open is therefore an error that ends the reading (see
// openQuoteError): which of the lines after it are ids, and which a
// note's, cannot be told.
// It is not safe for concurrent use.
type idReader struct {
	r       *bufio.Reader
	header  string // auto, yes, no
	line    int
	started bool  // past the first id line
	read    int64 // bytes consumed
	invalid []invalidLine
	nbad    int
	field   []byte // an unquoted CSV field
	// first is the first id line, when --header auto took it as an id
	// although it reads like a header (see looksLikeHeader), for a note.
	first string
	// word is a first id line of one field that is a word (no digit):
	// a header such as "name" when the next id holds a digit.
	word string
	// sep separates a line's fields: ',' (CSV), or '\t' (TSV) when the
	// input's first line that is not blank or a comment has a tab before
	// any comma (sepChosen: that line was read).
	sep       byte
	sepChosen bool
	// headerLine is the header line skipped, trimmed: the same line
	// later is skipped too, the header of exports put end to end.
	headerLine string
	// sniffed: the input was checked for a gzip header; src, for
	// gzip-compressed input, counts the compressed bytes read.
	sniffed bool
	src     *countReader
}

// countReader counts the bytes read through it. It is not safe for
// concurrent use.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// gzipMagic starts every gzip stream; zipMagic a zip archive, such as an
// Excel workbook (.xlsx).
var (
	gzipMagic = []byte{0x1f, 0x8b}
	zipMagic  = []byte{'P', 'K', 0x03, 0x04}
)

// errZip is input that is a zip archive: as text, each of its "lines"
// would be invalid ("user id is 10262 bytes"), none said why, and with
// --skip-invalid a short run of its bytes could be uploaded as an id.
var errZip = errors.New("line 1 starts a zip archive, not text: an Excel workbook (.xlsx)? save it as CSV UTF-8; a .zip: unzip it, and upload the file of ids")

// sniff, before the first line, looks for a gzip header: input exported
// compressed (ids.csv.gz, or gzip's output on a pipe) is read
// decompressed. Read as it is, each of its "lines" would be invalid, or,
// with --skip-invalid, a short run of bytes uploaded as an id.
func (ir *idReader) sniff() error {
	ir.sniffed = true
	// A short peek's error, if any, is the next read's. Two bytes first,
	// no more than the shortest id line holds: a peek waits for what it
	// asks, and a slow pipe's first id is not held back for more.
	magic, _ := ir.r.Peek(len(gzipMagic))
	if bytes.Equal(magic, zipMagic[:2]) {
		if magic, _ = ir.r.Peek(len(zipMagic)); bytes.Equal(magic, zipMagic) {
			return errZip
		}
	}
	if !bytes.Equal(magic, gzipMagic) {
		return nil
	}
	ir.src = &countReader{r: ir.r}
	zr, err := gzip.NewReader(ir.src)
	if err != nil {
		return gzipError{err}
	}
	ir.r = bufio.NewReaderSize(gzipReader{zr}, 1<<20)
	return nil
}

// gzipReader reads a gzip stream, naming the compression in its errors:
// a damaged or truncated file's, for one.
type gzipReader struct{ zr *gzip.Reader }

func (g gzipReader) Read(p []byte) (int, error) {
	n, err := g.zr.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = gzipError{err}
	}
	return n, err
}

type gzipError struct{ err error }

func (e gzipError) Error() string {
	return fmt.Sprintf("the input is gzip-compressed, and does not decompress (damaged, or cut short?): %v", e.err)
}

func (e gzipError) Unwrap() error { return e.err }

// consumed is how many bytes of the input have been read: compressed
// bytes for gzip-compressed input, for a progress bar against its size.
func (ir *idReader) consumed() int64 {
	if ir.src != nil {
		return ir.src.n
	}
	return ir.read
}

func newIDReader(r io.Reader, header string) *idReader {
	return &idReader{r: bufio.NewReaderSize(r, 1<<20), header: header, sep: ','}
}

// next reads a line and returns its id, valid until the following call;
// nil for a line that holds none (blank, a comment, the header, invalid:
// recorded, the first maxReported of them); or io.EOF. A line that leaves
// a quoted field open is an error (openQuoteError). It reads one line,
// so that its caller sees each invalid line as it comes and can send
// what it holds before it waits for more.
func (ir *idReader) next() ([]byte, error) {
	if !ir.sniffed {
		if err := ir.sniff(); err != nil {
			return nil, err
		}
	}
	raw, err := ir.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// A line longer than the buffer is no id: skip the rest of it,
		// following its quotes.
		ir.line++
		ir.read += int64(len(raw))
		if ir.line == 1 {
			if utf16BOM(raw) {
				return nil, errUTF16
			}
			raw = bytes.TrimPrefix(raw, []byte("\ufeff")) // a UTF-8 byte order mark
		}
		comment := isComment(raw)
		cr := bytes.IndexByte(bytes.TrimRight(raw, "\r"), '\r') >= 0 // one before its last byte
		q := csvScan{start: true, sep: ir.sep}
		q.feed(raw)
		for errors.Is(err, bufio.ErrBufferFull) {
			raw, err = ir.r.ReadSlice('\n')
			q.feed(raw)
			ir.read += int64(len(raw))
		}
		switch {
		case comment:
		case q.open():
			return nil, ir.openQuoteError()
		case cr:
			ir.bad("line is longer than 1 MiB, and holds carriage returns: " + oldMac)
		default:
			ir.bad("line is longer than 1 MiB; ids are 1 to 256 bytes")
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		return nil, nil
	}
	if len(raw) == 0 && err != nil {
		return nil, err
	}
	ir.read += int64(len(raw))
	ir.line++
	if ir.line == 1 && utf16BOM(raw) {
		return nil, errUTF16
	}
	// A UTF-8 byte order mark: of the file, or on a later line, of one of
	// several exports put end to end (cat a.csv b.csv).
	raw = bytes.TrimPrefix(raw, []byte("\ufeff"))
	trimmed := bytes.TrimSpace(raw)
	comment := len(trimmed) > 0 && trimmed[0] == '#' // isComment(raw)
	if ir.headerLine != "" && string(trimmed) == ir.headerLine {
		return nil, nil // the header again, of another export put after the first
	}
	if !ir.sepChosen && !comment && len(trimmed) > 0 {
		ir.sepChosen = true
		if t := bytes.IndexByte(raw, '\t'); t >= 0 {
			if c := bytes.IndexByte(raw, ','); c < 0 || t < c {
				ir.sep = '\t'
			}
		}
	}
	if !comment && quotedOpen(raw, ir.sep) {
		return nil, ir.openQuoteError()
	}
	if line := trimmed; !ir.started && ir.header != "no" && !comment && semicolonHeader(line) {
		// Refused, even with --skip-invalid: every line after it
		// would be a valid id, and none the one meant. The whole line is
		// looked at, not its first CSV field: a header of quoted names
		// ("id";"name") has none.
		return nil, fmt.Errorf("line %d, %q, is the header of a file separated by semicolons, not commas: each of its lines would be uploaded whole, semicolons and all, as one id; save the file with commas, or the ids alone",
			ir.line, line)
	}
	id, ok, msg := parseFields(raw, ir.sep, &ir.field)
	if !ir.started && ir.header == "yes" && msg != "" && !innerCR(raw) {
		// --header yes: the first line that is not blank or a comment
		// is the header, whatever its first field holds (an empty cell,
		// a name in a legacy encoding). Counted invalid instead, it
		// would leave the first id to be taken for the header. A line
		// with carriage returns inside is not skipped: of a file with
		// old Mac line endings it is the whole file, and its message
		// says so.
		ir.started, ir.headerLine = true, string(trimmed)
		return nil, nil
	}
	if msg != "" {
		ir.bad(msg)
		return nil, nil
	}
	if !ok {
		return nil, nil
	}
	if !ir.started {
		ir.started = true
		if ir.header == "yes" || ir.header == "auto" && isHeader(id) {
			ir.headerLine = string(trimmed)
			return nil, nil
		}
		switch {
		case ir.header != "auto":
		case looksLikeHeaderSep(raw, ir.sep):
			if col, name := idColumn(raw, ir.sep); col > 1 {
				// Refused, even with --skip-invalid: every line after it
				// would upload its first column, names, say, as ids.
				return nil, fmt.Errorf("line %d is a header whose id column, %q, is column %d, not the first, %q, which is what is uploaded: move the id column first, or upload it alone; if the first column holds the ids, --header yes skips this line",
					ir.line, name, col, id)
			}
			ir.first = string(id)
		case bytes.IndexByte(raw, ir.sep) < 0 && isWord(id):
			ir.word = string(id)
		}
		return id, nil
	}
	if ir.word != "" {
		if bytes.ContainsAny(id, "0123456789") {
			ir.first = ir.word
		}
		ir.word = ""
	}
	return id, nil
}

// errUTF16 is input that starts with a UTF-16 byte order mark, as
// spreadsheets save "Unicode text": each of its lines would be invalid
// (a NUL byte in every other one), none said why.
var errUTF16 = errors.New("line 1 starts with a UTF-16 byte order mark: the input is UTF-16 text; save it as UTF-8 (a spreadsheet's \"CSV UTF-8\")")

// utf16BOM reports whether the first line starts with a UTF-16 byte
// order mark.
func utf16BOM(first []byte) bool {
	return bytes.HasPrefix(first, []byte{0xff, 0xfe}) || bytes.HasPrefix(first, []byte{0xfe, 0xff})
}

// openQuoteError is the error of the line just read, which leaves a
// quoted field open. It is not an invalid line that --skip-invalid could
// skip: as CSV, the lines after it, up to the next quote, would be the
// rest of that field, and as lines of their own, ids; a stray quote
// makes them ids, a note with line breaks the field's, and which it is
// cannot be told.
func (ir *idReader) openQuoteError() error {
	return fmt.Errorf("line %d opens a quoted field that it does not close (a stray quote? a note with line breaks?): the lines after it cannot be told from ids; close or remove the quote, or upload the id column alone",
		ir.line)
}

// lineBuffered reports whether a whole line is buffered: whether the
// next line can be had without reading (and perhaps waiting for) input.
func (ir *idReader) lineBuffered() bool {
	b, _ := ir.r.Peek(ir.r.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

// appendPlain appends to dst the plain lines at the head of what ir has
// buffered, newlines included, as long as fewer than maxIDs ids and
// maxBytes bytes have been appended, and returns how many. A plain line is
// an id as it is, with nothing to trim, unquote or split: 1 to 256 bytes
// of printable ASCII other than comma and double quote, not starting with
// #, followed by a newline. That is nearly every line of a typical file,
// and next gives every other line the same id would: appendPlain is next
// without a call, a trim and an append per line. It reads nothing new.
func (ir *idReader) appendPlain(dst []byte, maxIDs, maxBytes int) ([]byte, int) {
	if ir.word != "" {
		return dst, 0 // next looks at the id after a first line of one word
	}
	b, _ := ir.r.Peek(ir.r.Buffered())
	end, k := 0, 0
	header := ir.headerLine
	for k < maxIDs && end < maxBytes {
		line := b[end:]
		i := bytes.IndexByte(line, '\n')
		if i <= 0 || i > maxIDLen || line[0] == '#' || !isPlain(line[:i]) ||
			// sciNumber's own first test, here to spare nearly every
			// line a call: a separator or an exponent second.
			(line[1] == '.' || line[1]|0x20 == 'e') && sciNumber(line[:i]) ||
			len(header) == i && string(line[:i]) == header {
			break
		}
		end += i + 1
		k++
	}
	if end > 0 {
		dst = append(dst, b[:end]...)
		ir.r.Discard(end) //nolint:errcheck // the bytes are buffered
		ir.read += int64(end)
		ir.line += k
	}
	return dst, k
}

// plainByte marks the bytes a plain line (see appendPlain) may hold.
var plainByte = func() (t [256]bool) {
	for c := '!'; c <= '~'; c++ {
		t[c] = c != ',' && c != '"'
	}
	return t
}()

func isPlain(line []byte) bool {
	for _, c := range line {
		if !plainByte[c] {
			return false
		}
	}
	return true
}

func (ir *idReader) bad(msg string) { ir.badAt(ir.line, msg) }

// badAt records line as invalid, for msg.
func (ir *idReader) badAt(line int, msg string) {
	ir.nbad++
	if len(ir.invalid) < maxReported {
		ir.invalid = append(ir.invalid, invalidLine{line, msg})
	}
}

// innerCR reports whether a raw line holds a carriage return before its
// end: a file with old Mac line endings, CR alone, read as one line.
func innerCR(raw []byte) bool {
	return bytes.IndexByte(bytes.TrimSpace(bytes.TrimRight(raw, "\r\n")), '\r') >= 0
}

// parseFields returns the id on one raw line, its first field, the fields
// separated by sep (',' or '\t'); ok is false for a blank or comment line,
// msg says why a line is invalid. The id may alias raw or *scratch.
func parseFields(raw []byte, sep byte, scratch *[]byte) (id []byte, ok bool, msg string) {
	line := bytes.TrimRight(raw, "\r\n")
	t := bytes.TrimSpace(line)
	if innerCR(raw) {
		// Of the whole line, not its id alone, and before a comment's
		// check: a file with CR line endings is one line, and its first
		// field a CSV's first id, or its header, or a comment: the other
		// ids would go without a word.
		return nil, false, "line holds a carriage return: " + oldMac
	}
	if len(t) == 0 || t[0] == '#' || emptyRow(t, sep) {
		return nil, false, ""
	}
	trim := bytes.TrimSpace
	if sep == '\t' {
		// Not the tabs: "\tx" is an empty first field.
		trim = func(b []byte) []byte { return bytes.TrimLeftFunc(b, isSpaceNotTab) }
	}
	line = trim(line)
	if line[0] == '"' {
		// A quoted CSV field: "" is a quote inside it.
		f := (*scratch)[:0]
		i := 1
		for {
			j := bytes.IndexByte(line[i:], '"')
			if j < 0 { // next refuses such a line before: see openQuoteError
				return nil, false, "the quoted user id is not closed on its line"
			}
			f = append(f, line[i:i+j]...)
			i += j + 1
			if i < len(line) && line[i] == '"' {
				f = append(f, '"')
				i++
				continue
			}
			break
		}
		*scratch = f
		if rest := trim(line[i:]); len(rest) > 0 && rest[0] != sep && len(bytes.TrimSpace(rest)) > 0 {
			return nil, false, "text after a quoted field"
		}
		id = bytes.TrimSpace(f)
	} else {
		id = bytes.TrimSpace(line)
		if i := bytes.IndexByte(line, sep); i >= 0 {
			id = bytes.TrimSpace(line[:i])
		}
	}
	switch {
	case len(id) == 0:
		return nil, false, "empty user id"
	case len(id) > maxIDLen:
		return nil, false, fmt.Sprintf("user id is %d bytes, the limit is %d", len(id), maxIDLen)
	case !utf8.Valid(id):
		// No bid request could carry it: both wires' strings are UTF-8.
		return nil, false, "user id is not UTF-8 text (saved in a legacy encoding, such as Windows-1252? save it as CSV UTF-8; or a binary file?)"
	case sciNumber(id):
		return nil, false, fmt.Sprintf("user id %s is a number a spreadsheet rounded (scientific notation): the id is lost; format the id column as text, and export it again", id)
	}
	if i := bytes.IndexFunc(id, isControl); i >= 0 {
		if id[i] == '\t' {
			return nil, false, "user id holds a tab (a file is read as tab-separated, TSV, when its first line has a tab before any comma; else as CSV)"
		}
		return nil, false, fmt.Sprintf("user id holds the control character 0x%02x (a binary or compressed file?)", id[i])
	}
	return id, true, ""
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// oldMac says what a carriage return inside a line means.
const oldMac = "a file with old Mac line endings, CR alone (a spreadsheet's \"CSV (Macintosh)\")? save it with LF or CRLF line endings"

func isSpaceNotTab(r rune) bool { return r != '\t' && unicode.IsSpace(r) }

// emptyRow reports whether a trimmed line is separators alone (",,,"):
// a spreadsheet's row with no cell filled in, as it exports the rows
// below its data that were ever formatted. It is a blank line, not an
// empty id.
func emptyRow(t []byte, sep byte) bool {
	for _, c := range t {
		if c != sep && c != ' ' && c != '\t' {
			return false
		}
	}
	return true
}

// sciNumber reports whether id is a number as a spreadsheet shows a long
// one, in scientific notation, and saves it so: 1.23457E+11 for
// 123456789012. The digits it dropped are lost, and no user has the id it
// leaves.
func sciNumber(id []byte) bool {
	// At once for nearly every id (appendPlain asks of each line): a
	// digit, then a separator or the exponent.
	if len(id) < 4 || id[0] < '0' || id[0] > '9' {
		return false
	}
	switch id[1] {
	case '.', ',', 'E', 'e':
	default:
		return false
	}
	i, digits := 0, func(i int) int {
		for i < len(id) && id[i] >= '0' && id[i] <= '9' {
			i++
		}
		return i
	}
	if i = digits(0); i != 1 || i == len(id) {
		return false // one digit before the decimal separator, and more
	}
	if id[i] == '.' || id[i] == ',' {
		if j := digits(i + 1); j > i+1 {
			i = j
		} else {
			return false
		}
	}
	if i+2 >= len(id) || id[i] != 'E' && id[i] != 'e' || id[i+1] != '+' {
		return false
	}
	return digits(i+2) == len(id)
}

// csvQuoted follows a line's CSV quoting and reports whether it ends
// inside a quoted field.
func csvQuoted(line []byte) bool { return quotedOpen(line, ',') }

// quotedOpen is csvQuoted of a line whose fields sep separates.
func quotedOpen(line []byte, sep byte) bool {
	s := csvScan{start: true, sep: sep}
	s.feed(line)
	return s.open()
}

// csvScan follows a line's CSV quoting, fed in pieces. A quote opens a
// quoted field only at the start of a field (after spaces), and "" inside
// one is a quote: a quote elsewhere, as in 12" display, is text.
type csvScan struct {
	in    bool // inside a quoted field
	start bool // at the start of a field
	quote bool // in a quoted field, the last byte was a quote: "" or its end
	sep   byte // the field separator; 0 is ','
}

func (s *csvScan) feed(b []byte) {
	for _, c := range b {
		if s.quote {
			s.quote = false
			if c == '"' {
				continue // "" is a quote
			}
			s.in = false // the field ended before c
		}
		switch {
		case s.in:
			s.quote = c == '"'
		case c == ',' && s.sep == 0, c == s.sep:
			s.start = true
		case c == '"' && s.start:
			s.in, s.start = true, false
		case c != ' ':
			s.start = false
		}
	}
}

// open reports whether what was fed ends inside a quoted field.
func (s *csvScan) open() bool { return s.in && !s.quote }

// isComment reports whether a raw line is a # comment.
func isComment(raw []byte) bool {
	line := bytes.TrimSpace(raw)
	return len(line) > 0 && line[0] == '#'
}

// headerNames are the first-column names that make the first id line a
// header with --header auto, compared in lower case without spaces, _,
// - and . ("User ID", "user_id", "E-Mail", "ContactID"): an export
// spells them as it likes.
var headerNames = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range []string{
		"id", "ids", "user", "users", "user_id", "uid", "buyeruid", "buyer_uid", "external_id",
		"customer_id", "email", "maid", "device_id", "email_address", "hashed_email", "contact_id",
		"cookie_id", "idfa", "gaid", "aaid", "ifa", "user_uid",
		"emails", "e_mail_address", "lead_id", "record_id", "member_id", "account_id", "person_id",
		"subscriber_id", "visitor_id", "profile_id", "client_id", "advertising_id", "mobile_ad_id",
		"email_sha256", "sha256_email", "email_md5", "md5_email", "email_hash",
	} {
		m[squashName(n)] = true
	}
	return m
}()

// squashName is name in lower case without spaces, _, - and .
func squashName(name string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '_', '-', '.':
			return -1
		}
		return unicode.ToLower(r)
	}, name)
}

func isHeader(id []byte) bool { return headerNames[squashName(string(id))] }

// semicolonHeader reports whether a first id line is the header of a
// file separated by semicolons, as spreadsheets save a CSV in many
// locales: a known id column name before its first semicolon
// ("user_id;company"), or column names alone, whatever they are
// ("Kundennummer;E-Mail"): no user id reads so.
func semicolonHeader(id []byte) bool {
	name, _, ok := bytes.Cut(id, []byte{';'})
	if !ok {
		return false
	}
	if isHeader(bytes.Trim(bytes.TrimSpace(name), `"`)) {
		return true
	}
	for f := range bytes.SplitSeq(id, []byte{';'}) {
		if !isName(bytes.Trim(bytes.TrimSpace(f), `"`)) {
			return false
		}
	}
	return true
}

// isName reports whether f reads like a column's name: letters (of any
// script), with spaces, _, -, . and / between them, and no digit.
func isName(f []byte) bool {
	letters := false
	for _, r := range string(f) {
		switch {
		case unicode.IsLetter(r):
			letters = true
		case r == ' ', r == '_', r == '-', r == '.', r == '/':
		default:
			return false
		}
	}
	return letters
}

// looksLikeHeader reports whether a first id line that isHeader did not
// take as a header still reads like one: a CSV line whose first field is
// words (letters, spaces, _ and -, no digit) holding a space, or whose
// every field is such a word: "Email Address,First Name". User ids are
// rarely like that; personactl uploads the line all the same, and says so.
func looksLikeHeader(raw []byte) bool { return looksLikeHeaderSep(raw, ',') }

// looksLikeHeaderSep is looksLikeHeader of a line whose fields sep
// separates.
func looksLikeHeaderSep(raw []byte, sep byte) bool {
	line := bytes.TrimSpace(raw)
	if bytes.IndexByte(line, sep) < 0 {
		return false
	}
	words := true
	fields := bytes.Split(line, []byte{sep})
	for _, f := range fields {
		words = words && isWord(bytes.Trim(bytes.TrimSpace(f), `"`))
	}
	first := bytes.Trim(bytes.TrimSpace(fields[0]), `"`)
	return words || isWord(first) && bytes.IndexByte(first, ' ') >= 0
}

// idColumn returns the 1-based column, and its name, of the first field
// of a header line that is a known id column's name (see isHeader); 0
// when none is.
func idColumn(raw []byte, sep byte) (int, string) {
	for i, f := range bytes.Split(bytes.TrimSpace(raw), []byte{sep}) {
		if f = bytes.Trim(bytes.TrimSpace(f), `"`); isHeader(f) {
			return i + 1, string(f)
		}
	}
	return 0, ""
}

// isWord reports whether f is words: letters, spaces, _ and -, no digit.
func isWord(f []byte) bool {
	for _, c := range f {
		switch {
		case c == ' ', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// uploadChunk is one message's ids, packed as the ids_packed field wants
// them: each followed by a newline. A chunk costs one allocation however
// many ids it holds, and the server resolves it without a string per id.
type uploadChunk struct {
	packed []byte
	ids    int
	// invalid: no ids, but the input's first invalid line, so the upload
	// is off unless --skip-invalid; sent once, at the first.
	invalid *invalidLine
	// found: no ids, but the input holds one: the stream is opened, so
	// that the server checks the header while the chunk fills. Sent
	// once, as the first id is read, before any chunk.
	found bool
}

// What an upload waits for, which names a stall past --timeout.
const (
	phaseConnecting = iota // the connection, or the header's send
	phaseReading           // ids from the input
	phaseSending           // a send, held by the server's flow control
	phaseAnswering         // the server's answer, its end sent
)

// refused reports whether err is a refusal by the server's handler, which
// applied nothing, or dial's usage error (nothing sent), rather than a
// transport's failure, after which the server may have committed. An
// UNAVAILABLE is a refusal only with the server's word for it (notApplied):
// after a failed fsync, as after a lost connection, the change may be
// applied all the same.
func refused(err error) bool {
	if errors.As(err, new(usageError)) { // dial's (--addr): nothing was sent
		return true
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.ResourceExhausted,
		codes.AlreadyExists, codes.PermissionDenied, codes.Unauthenticated, codes.OutOfRange, codes.Unimplemented:
		return true
	case codes.Unavailable:
		return notApplied(err)
	}
	return false
}

// notApplied reports whether err's status carries personad's ErrorInfo of
// reason NOT_APPLIED: a change whose write-ahead log record the disk
// refused, cut back, so that it is applied neither now nor after a restart
// (see the Segments service's proto comment).
func notApplied(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Reason == "NOT_APPLIED" && ei.Domain == "personad" {
			return true
		}
	}
	return false
}

// testHookIdleFired, when set (by tests), runs first in the upload's idle
// timer's func: a delay there stands in for the scheduler's.
var testHookIdleFired func()

// errDiscarded ends the stream of an upload found bad midway.
var errDiscarded = errors.New("segments upload: discarded")

// progress is what the progress bar shows; the reader goroutine writes it.
type progress struct {
	ids  atomic.Uint64
	read atomic.Int64
}

func runUpload(ctx context.Context, g *globals, e env, args []string) error {
	o, err := parseUpload(e, args)
	if err != nil {
		return err
	}
	in, size, name := e.stdin, int64(-1), "stdin"
	if o.file != "-" {
		f, err := os.Open(o.file)
		if err != nil {
			return fmt.Errorf("segments upload: %w", err)
		}
		defer f.Close()
		fi, err := f.Stat()
		switch {
		case err != nil:
		case fi.IsDir():
			return fmt.Errorf("segments upload: %s is a directory, not a file of user ids", o.file)
		case fi.Mode().IsRegular():
			size = fi.Size()
		}
		in, name = f, o.file
	}
	conn, err := g.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	o.slowFlush = min(time.Second, g.timeout/4)

	seg := o.facet + ":" + o.value
	// The stream's context: the idle timer ends it with its cause, and an
	// upload found bad midway is discarded with it at once (the server
	// drops a cancelled upload) while the input is still read to report
	// it. ctx itself ends only from outside (Ctrl-C).
	sctx, endStream := context.WithCancelCause(ctx)
	defer endStream(nil)
	discard := func() { endStream(errDiscarded) }
	// --timeout bounds each idle period: it restarts with every message,
	// and says what it waited for.
	const maybe = "the upload may have been applied or not (with --key, the same upload again tells: it replays if it was)"
	stalls := [...]error{
		phaseConnecting: fmt.Errorf("segments upload %s: could not reach the server at %s in %v (--timeout); nothing uploaded", seg, g.addr, g.timeout),
		phaseReading:    fmt.Errorf("segments upload %s: the input gave no ids for %v (--timeout: it stalled, or held none); nothing uploaded", seg, g.timeout),
		phaseSending:    fmt.Errorf("segments upload %s: the server took no chunk for %v (--timeout); nothing uploaded", seg, g.timeout),
		phaseAnswering:  fmt.Errorf("segments upload %s: no answer from the server %v (--timeout) after the last chunk; %s", seg, g.timeout, maybe),
	}
	var phase atomic.Int32 // what the upload waits for: a phase*
	phase.Store(phaseReading)
	// The hook is read here, not in the timer's func, which may outlive
	// the upload (and the test that set it).
	hook := testHookIdleFired
	idle := time.AfterFunc(g.timeout, func() {
		err := stalls[phase.Load()]
		if hook != nil {
			hook()
		}
		endStream(err)
	})
	defer idle.Stop()
	answering := func() bool { return phase.Load() == phaseAnswering }
	// ended reports a stream that ended from this side, by Ctrl-C or the
	// idle timer, rather than the call's own "context canceled".
	ended := func() error {
		switch c := context.Cause(ctx); {
		case c != nil && answering():
			return fmt.Errorf("segments upload %s: %w while waiting for the server's answer; %s", seg, c, maybe)
		case c != nil:
			return fmt.Errorf("segments upload %s: %w; nothing uploaded", seg, c)
		}
		return context.Cause(sctx) // one of stalls
	}
	// fail reports err, which ended the call: the server's status, or,
	// when this side ended the stream (the timer, Ctrl-C), why; and what
	// was applied. Before the upload's end is sent, nothing is (a server
	// commits at the end); after, only the server's refusal is sure to
	// have applied nothing: a broken connection may have come after the
	// commit.
	fail := func(err error) error {
		switch {
		case sctx.Err() != nil && (status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled)):
			return ended()
		case !answering() || refused(err): // a refusal applies nothing, whenever it comes
			return fmt.Errorf("%w; nothing uploaded", callError("segments upload "+seg, err))
		}
		return fmt.Errorf("%w; %s", callError("segments upload "+seg, err), maybe)
	}
	// timerFired is called when the idle timer has gone off (Stop or Reset
	// found it no longer pending): it waits for the timer's func, which
	// may not have run yet, to end the stream, and reports why.
	timerFired := func() error {
		<-sctx.Done()
		return ended()
	}

	resp := new(personadpb.UploadResponse)
	// answeredEarly reports the answer, err, that came before the end of
	// the upload was sent.
	answeredEarly := func(err error) error {
		if err == nil { // a server that does not do as it should
			return fmt.Errorf("segments upload %s: the server answered before the upload ended: it applied the %d ids it had taken (version %d), not the rest", seg, resp.Ids, resp.Version)
		}
		return fail(err) // a refusal, or a stuck send ended by the timer or Ctrl-C
	}

	start := time.Now()
	ir := newIDReader(in, o.header)
	header := &personadpb.UploadHeader{
		Facet: o.facet, Value: o.value, Mode: o.mode, IdempotencyKey: o.key,
		ExpectedIds: estimateIDs(ir.r, size), // before the reader goroutine reads ir
	}
	// The upload's stream is opened once the input is found to hold an
	// id (or at the end, for an empty upload that --allow-empty sends),
	// not before: input with no id to send (empty, comments or a header
	// only, an invalid line first), which personactl does not send, or a
	// file that cannot be read, then never reaches the server, which
	// would count it as an aborted upload. The connection is made
	// meanwhile.
	conn.Connect()
	var stream personadpb.Segments_UploadClient
	var answer chan error // the server's answer, once the stream is open
	openStream := func() error {
		phase.Store(phaseConnecting)
		s, err := personadpb.NewSegmentsClient(conn).Upload(sctx)
		if err != nil {
			return fail(err) // while connecting, say
		}
		if err := s.Send(&personadpb.UploadRequest{Msg: &personadpb.UploadRequest_Header{Header: header}}); err != nil {
			if errors.Is(err, io.EOF) { // the call ended: its answer tells why
				return answeredEarly(s.RecvMsg(resp))
			}
			return fail(err)
		}
		stream = s
		// The answer is awaited from the header on: a server that
		// refuses it or a chunk ends the call at once, whatever the
		// input does.
		answer = make(chan error, 1)
		go func() { answer <- s.RecvMsg(resp) }()
		return nil
	}

	// The reader goroutine parses and chunks while this one sends.
	var prog progress
	chunks := make(chan uploadChunk, 4)
	var readErr error
	var wg sync.WaitGroup
	stopRead := make(chan struct{})
	wg.Go(func() {
		defer close(chunks)
		readErr = readChunks(ir, o, &prog, chunks, stopRead)
	})
	stopBar := startProgress(e, seg, size, &prog, start)
	// Past this, an early return does not wait for the reader: it may be
	// blocked on the input for good; it ends at its next chunk, or with
	// the process.
	defer close(stopRead)
	defer stopBar()

	var sent uint64
	var early chan error         // the server's answer before the input ended, once open
	done := sctx.Done()          // the stream's end, from this side
	var firstBad *invalidLine    // the first invalid line, once the reader found it
	var slowBad <-chan time.Time // then, when reading on is slow to end
	for reading := true; reading; {
		select {
		case c, ok := <-chunks:
			switch {
			case !ok:
				reading = false
			case c.invalid != nil:
				// An invalid line aborts the upload: discard it now,
				// and read on, untimed, to report the invalid lines (the
				// reader sends no chunk after this).
				idle.Stop()
				discard()
				early, done = nil, ctx.Done()
				firstBad, slowBad = c.invalid, time.After(time.Second)
			case c.found:
				if !idle.Reset(g.timeout) { // the wait for input is over
					return timerFired() // it went off first: the stream is ended
				}
				if err := openStream(); err != nil {
					return err
				}
				early = answer
				phase.Store(phaseReading)
			default:
				phase.Store(phaseSending)
				if err := stream.Send(&personadpb.UploadRequest{Msg: &personadpb.UploadRequest_Chunk{Chunk: &personadpb.UploadChunk{IdsPacked: c.packed}}}); err != nil {
					if errors.Is(err, io.EOF) { // the call ended: its answer tells why
						return answeredEarly(<-answer)
					}
					return fail(err)
				}
				phase.Store(phaseReading)
				sent += uint64(c.ids)
				if !idle.Reset(g.timeout) {
					return timerFired() // during the send: the stream is ended
				}
			}
		case err := <-early:
			return answeredEarly(err)
		case <-slowBad:
			// The rest of the input is slow to come (or never ends):
			// say why the upload waits for it.
			stopBar()
			fmt.Fprintf(e.stderr, "segments upload %s: %s, line %d: %s; nothing will be uploaded (--skip-invalid uploads the rest); reading on to list the invalid lines\n",
				seg, name, firstBad.line, firstBad.msg)
		case <-done:
			return ended()
		}
	}
	wg.Wait()
	stopBar()

	switch {
	case readErr != nil:
		return fmt.Errorf("segments upload %s: reading %s: %w (nothing uploaded)", seg, name, readErr)
	case ir.nbad > 0 && !o.skipInvalid:
		return fmt.Errorf("segments upload %s: %s has %d invalid %s; nothing uploaded (--skip-invalid uploads the rest):\n  %s",
			seg, name, ir.nbad, plural(ir.nbad, "line", "lines"), joinInvalid(ir.invalid, ir.nbad, "\n  "))
	case sent == 0 && !o.allowEmpty:
		// A replace would empty the segment, an add only create it
		// empty (from a mistyped --value, say), a remove do nothing.
		if ir.nbad > 0 {
			fmt.Fprintf(e.stderr, "skipped %d invalid %s:\n  %s\n", ir.nbad, plural(ir.nbad, "line", "lines"), joinInvalid(ir.invalid, ir.nbad, "\n  "))
		}
		if o.mode == personadpb.UploadMode_UPLOAD_MODE_REPLACE {
			return fmt.Errorf("segments upload %s: %s holds no user id, and a replace would empty the segment; nothing uploaded (--allow-empty empties it)", seg, name)
		}
		hint := ""
		if o.mode == personadpb.UploadMode_UPLOAD_MODE_ADD {
			hint = " (--allow-empty sends it: it creates the segment, empty, where there is none)"
		}
		fmt.Fprintf(e.stderr, "segments upload %s: %s holds no user id; nothing uploaded%s\n", seg, name, hint)
		return nil
	}
	if !idle.Stop() {
		// The timer went off after the last chunk: the stream is ended,
		// and its end is not sent, so nothing is applied.
		return timerFired()
	}
	if ctx.Err() != nil { // Ctrl-C: the stream is ended, its end not sent
		return ended()
	}
	if stream == nil { // an empty upload, sent with --allow-empty
		idle.Reset(g.timeout)
		if err := openStream(); err != nil {
			return err
		}
		if !idle.Stop() {
			return timerFired() // it went off as the header went out
		}
	}
	phase.Store(phaseAnswering)
	idle.Reset(g.timeout)
	if err := stream.CloseSend(); err != nil {
		return fail(err)
	}
	if err := <-answer; err != nil {
		return fail(err)
	}
	took := time.Since(start)
	switch {
	case resp.Replayed && resp.Ids != sent:
		// A key a server remembers from before it compared ids (or an
		// older server) replays whatever ids come: a retry sends the same.
		return fmt.Errorf("segments upload %s: key %q was already used, by an upload of %d ids (version %d); these %d ids were not applied (a new upload needs a new --key)",
			seg, o.key, resp.Ids, resp.Version, sent)
	case resp.Ids != sent && !resp.Replayed:
		// A server older than ids_packed ignores the field.
		return fmt.Errorf("segments upload %s: sent %d ids but the server counted %d, and applied the upload as that (version %d: added=%d removed=%d cardinality=%d); is personad older than personactl (ids_packed)?",
			seg, sent, resp.Ids, resp.Version, resp.Added, resp.Removed, resp.Cardinality)
	}
	fmt.Fprintf(e.stdout, "uploaded %s mode=%s ids=%d added=%d removed=%d unchanged=%d new_users=%d invalid=%d cardinality=%d version=%d replayed=%t took=%.3fs ids_per_s=%.0f\n",
		seg, modeName(o.mode), resp.Ids, resp.Added, resp.Removed, resp.Unchanged, resp.NewUsers, ir.nbad,
		resp.Cardinality, resp.Version, resp.Replayed, took.Seconds(), float64(resp.Ids)/max(took.Seconds(), 1e-9))
	if ir.nbad > 0 {
		fmt.Fprintf(e.stderr, "skipped %d invalid %s:\n  %s\n", ir.nbad, plural(ir.nbad, "line", "lines"), joinInvalid(ir.invalid, ir.nbad, "\n  "))
	}
	if ir.first != "" {
		fmt.Fprintf(e.stderr, "note: the first line, %q, was uploaded as a user id; if it is a header, --header yes skips it\n", ir.first)
	}
	// ids counts every id sent; added (or removed) and unchanged, each
	// distinct id once: the rest are repeats, which the summary alone
	// leaves to be worked out (ids=4 added=2 unchanged=0).
	if note := otherIDs(o.mode, resp); note != "" {
		fmt.Fprintln(e.stderr, "note: "+note)
	}
	return nil
}

// otherIDs says what became of the ids of an applied upload that the
// summary's added, removed and unchanged do not count: ids repeated in
// the input, counted once, and in a remove, ids the server does not
// know (which are in no segment). "" when there are none.
func otherIDs(mode personadpb.UploadMode, r *personadpb.UploadResponse) string {
	counted := r.Added + r.Unchanged
	if mode == personadpb.UploadMode_UPLOAD_MODE_REMOVE {
		counted = r.Removed + r.Unchanged
	}
	if counted >= r.Ids {
		return ""
	}
	n := r.Ids - counted
	if mode == personadpb.UploadMode_UPLOAD_MODE_REMOVE {
		return fmt.Sprintf("%d of the %d ids %s repeated in the input or unknown to the server (in no segment), counted neither as removed nor as unchanged",
			n, r.Ids, plural(int(min(n, 2)), "is", "are"))
	}
	return fmt.Sprintf("%d of the %d ids %s in the input, counted once",
		n, r.Ids, plural(int(min(n, 2)), "repeats an id before it", "repeat ids before them"))
}

// estimateIDs guesses how many lines a regular file of size bytes holds
// from the lines in its first 64 KiB, which r buffers, for the upload
// header's expected_ids; 0 when it cannot tell (size < 0: stdin or a
// pipe, which it does not wait for).
func estimateIDs(r *bufio.Reader, size int64) uint64 {
	if size <= 0 {
		return 0
	}
	head, _ := r.Peek(int(min(size, 64<<10))) // short on an error, which next() reports
	// Of gzip-compressed input, the compressed size does not tell.
	if len(head) == 0 || bytes.HasPrefix(head, gzipMagic) {
		return 0
	}
	lines := bytes.Count(head, []byte{'\n'})
	if head[len(head)-1] != '\n' {
		lines++
	}
	return uint64(float64(size) * float64(lines) / float64(len(head)))
}

// readChunks reads ids from ir into chunks until EOF, stop, or the first
// invalid line when invalid lines abort the upload (the rest of the file
// is still read, to report the first few invalid lines and count them).
func readChunks(ir *idReader, o *uploadOptions, prog *progress, chunks chan<- uploadChunk, stop <-chan struct{}) error {
	// Each chunk gets a buffer of its own: gRPC may still read a sent
	// message after Send returns.
	newBuf := func() []byte { return make([]byte, 0, chunkBytes+maxIDLen+1) }
	buf, n := newBuf(), 0
	last := time.Now() // the last chunk handed on
	send := func(c uploadChunk) bool {
		select {
		case chunks <- c:
			last = time.Now()
			return true
		case <-stop:
			return false
		}
	}
	flush := func() bool {
		if n == 0 {
			return true
		}
		c := uploadChunk{packed: buf, ids: n}
		buf, n = newBuf(), 0
		return send(c)
	}
	found := false // the input's first id was read, and said
	sayFound := func() bool {
		if found {
			return true
		}
		found = true
		select { // not a chunk: last stays
		case chunks <- uploadChunk{found: true}:
			return true
		case <-stop:
			return false
		}
	}
	for {
		if ir.started && (ir.nbad == 0 || o.skipInvalid) {
			var k int
			if buf, k = ir.appendPlain(buf, o.chunkIDs-n, chunkBytes-len(buf)); k > 0 {
				if !sayFound() {
					return nil
				}
				n += k
				prog.ids.Add(uint64(k))
				prog.read.Store(ir.consumed())
				if n == o.chunkIDs || len(buf) >= chunkBytes {
					if !flush() {
						return nil
					}
				}
				continue
			}
		}
		if n > 0 && o.slowFlush > 0 && !ir.lineBuffered() && time.Since(last) >= o.slowFlush {
			if !flush() { // the next read may wait: send what is here
				return nil
			}
		}
		bad := ir.nbad
		id, err := ir.next()
		prog.read.Store(ir.consumed())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if ir.nbad > 0 && !o.skipInvalid {
			// The upload is off: keep reading only to report, and send
			// nothing more (the ids held back are dropped).
			if bad == 0 {
				buf, n = buf[:0], 0
				if first := ir.invalid[0]; !send(uploadChunk{invalid: &first}) {
					return nil
				}
			}
			continue
		}
		if id == nil {
			continue // a line with no id
		}
		if !sayFound() {
			return nil
		}
		buf = append(buf, id...)
		buf = append(buf, '\n')
		n++
		prog.ids.Add(1)
		if n == o.chunkIDs || len(buf) >= chunkBytes {
			if !flush() {
				return nil
			}
		}
	}
	flush() // nothing, when the upload is off: its ids were dropped
	return nil
}

// joinInvalid lists ls, the first of n invalid lines, and says how many
// more there are.
func joinInvalid(ls []invalidLine, n int, sep string) string {
	s := make([]string, len(ls), len(ls)+1)
	for i, l := range ls {
		s[i] = l.String()
	}
	if n > len(ls) {
		s = append(s, fmt.Sprintf("and %d more", n-len(ls)))
	}
	return strings.Join(s, sep)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// startProgress draws a progress bar on stderr when it is a terminal: at
// once, then four times a second, and a last frame (ending the line) when
// the returned func is first called. Elsewhere it draws nothing.
func startProgress(e env, seg string, size int64, p *progress, start time.Time) func() {
	if !e.isTerminal {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		draw := func(last bool) {
			fmt.Fprintf(e.stderr, "\r%-79s", progressLine(seg, size, p.ids.Load(), p.read.Load(), time.Since(start), last))
		}
		draw(false)
		for {
			select {
			case <-done:
				draw(true)
				fmt.Fprintln(e.stderr)
				return
			case <-t.C:
				draw(false)
			}
		}
	})
	return sync.OnceFunc(func() { close(done); wg.Wait() })
}

// rateAfter is how long an upload runs before its progress bar shows a
// rate and an ETA (the last frame always does): from the first few ids
// they would be far off.
const rateAfter = 500 * time.Millisecond

// progressLine is one frame of the progress bar; last is the frame drawn
// when the upload ends.
func progressLine(seg string, size int64, ids uint64, read int64, el time.Duration, last bool) string {
	rated := last || el >= rateAfter
	s := fmt.Sprintf("%s  %s %s", seg, humanCount(float64(ids)), plural(int(min(ids, 2)), "id", "ids"))
	if rated {
		s += fmt.Sprintf("  %s ids/s", humanCount(float64(ids)/max(el.Seconds(), 1e-9)))
	}
	if size > 0 {
		frac := min(float64(read)/float64(size), 1)
		const width = 20
		n := int(frac * width)
		s = fmt.Sprintf("[%s%s] %3.0f%%  %s", strings.Repeat("=", n), strings.Repeat(" ", width-n), 100*frac, s)
		if frac > 0 && rated {
			eta := time.Duration(float64(el) * (1 - frac) / frac).Round(time.Second)
			s += "  ETA " + eta.String()
		}
	}
	return s
}

func humanCount(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.2fG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func runList(ctx context.Context, g *globals, e env, args []string) error {
	fs := flag.NewFlagSet("segments list", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	setUsage(fs, usageList)
	facet := fs.String("facet", "", "only the segments of this facet")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 {
		return usagef("segments list: unexpected argument %q", fs.Arg(0))
	}
	if err := checkText("segments list", "--facet", *facet); err != nil {
		return err
	}
	resp, err := unary(ctx, g, func(ctx context.Context, conn *grpc.ClientConn) (*personadpb.ListResponse, error) {
		return personadpb.NewSegmentsClient(conn).List(ctx, &personadpb.ListRequest{Facet: *facet})
	})
	if err != nil {
		return callError("segments list", err)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FACET\tVALUE\tCARDINALITY\tVERSION\tBYTES\tUPDATED")
	for _, s := range resp.Segments {
		updated := "-"
		if s.Updated != nil {
			updated = s.Updated.AsTime().UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", s.Facet, s.Value, s.Cardinality, s.Version, s.Bytes, updated)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "%d %s, %d users, version %d\n", len(resp.Segments), plural(len(resp.Segments), "segment", "segments"), resp.Users, resp.Version)
	return nil
}

func runLookup(ctx context.Context, g *globals, e env, args []string) error {
	fs := flag.NewFlagSet("segments lookup", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	setUsage(fs, usageLookup)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		return usagef("usage: personactl segments lookup USER_ID")
	}
	id := strings.TrimSpace(fs.Arg(0)) // as upload trims each line's id
	if !utf8.ValidString(id) {
		return usagef("segments lookup: USER_ID %q is not UTF-8 text (bid requests carry only UTF-8 ids, and lookups send only those)", id)
	}
	if id == "" {
		return usagef("segments lookup: USER_ID is empty (surrounding spaces are not part of an id)")
	}
	resp, err := unary(ctx, g, func(ctx context.Context, conn *grpc.ClientConn) (*personadpb.LookupResponse, error) {
		return personadpb.NewSegmentsClient(conn).Lookup(ctx, &personadpb.LookupRequest{UserId: id})
	})
	if err != nil {
		return callError("segments lookup", err)
	}
	if !resp.Found {
		return fmt.Errorf("segments lookup: user %q is in no uploaded segment (unknown to the server, version %d)", id, resp.Version)
	}
	for _, s := range resp.Segments {
		fmt.Fprintf(e.stdout, "%s:%s\n", s.Facet, s.Value)
	}
	if len(resp.Segments) == 0 {
		fmt.Fprintf(e.stderr, "user %q is known but in no segment (version %d)\n", id, resp.Version)
	}
	return nil
}

func runDelete(ctx context.Context, g *globals, e env, args []string) error {
	fs := flag.NewFlagSet("segments delete", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	setUsage(fs, usageDelete)
	facet := fs.String("facet", "", "persona facet (required)")
	value := fs.String("value", "", "facet value (required)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 || *facet == "" || *value == "" {
		return usagef("usage: personactl %s", usageDelete)
	}
	if err := checkText("segments delete", "--facet", *facet, "--value", *value); err != nil {
		return err
	}
	resp, err := unary(ctx, g, func(ctx context.Context, conn *grpc.ClientConn) (*personadpb.DeleteResponse, error) {
		return personadpb.NewSegmentsClient(conn).Delete(ctx, &personadpb.DeleteRequest{Facet: *facet, Value: *value})
	})
	seg := *facet + ":" + *value
	if err != nil {
		if !refused(err) { // the connection's failure, or --timeout: the answer may be what was lost
			return fmt.Errorf("%w; the segment may have been deleted or not (segments list tells)", callError("segments delete "+seg, err))
		}
		return callError("segments delete "+seg, err)
	}
	fmt.Fprintf(e.stdout, "deleted %s removed=%d version=%d\n", seg, resp.Removed, resp.Version)
	// Each warning names the campaigns, with a verb for one or several.
	warn := func(ids []string, one, many, rest string) {
		switch {
		case len(ids) == 1:
			fmt.Fprintf(e.stderr, "warning: campaign %s %s %s: %s\n", campaignList(ids, resp.CampaignsPaused), one, seg, rest)
		case len(ids) > 1:
			fmt.Fprintf(e.stderr, "warning: campaigns %s %s %s: %s\n", campaignList(ids, resp.CampaignsPaused), many, seg, rest)
		}
	}
	warn(resp.CampaignsTargeting, "targets", "target", "its former members are no longer reached by it")
	warn(resp.CampaignsExcluding, "excludes", "exclude", "its former members are no longer kept out by it")
	warn(resp.CampaignsPersonalizing, "chooses creatives by", "choose creatives by", "for its former members those creatives are no longer chosen by it")
	if len(resp.CampaignsTargeting)+len(resp.CampaignsExcluding)+len(resp.CampaignsPersonalizing) > 0 {
		fmt.Fprintf(e.stderr, "(rules %s, unchanged; bid requests that carry %s themselves still match it)\n", resp.RulesVersion, seg)
	}
	return nil
}

// campaignList names the first few of ids, those in paused marked so,
// and how many more there are.
func campaignList(ids, paused []string) string {
	const shown = 5
	named := make([]string, 0, min(len(ids), shown))
	for _, id := range ids[:min(len(ids), shown)] {
		if slices.Contains(paused, id) {
			id += " (paused)"
		}
		named = append(named, id)
	}
	list := strings.Join(named, ", ")
	if len(ids) > shown {
		list += fmt.Sprintf(" and %d more", len(ids)-shown)
	}
	return list
}
