package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/personad/personad/bidder"
	"github.com/personad/personad/engine"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestIDReader(t *testing.T) {
	long := strings.Repeat("x", 257)
	huge := strings.Repeat("z", 3<<20) // over the reader's 1 MiB buffer
	for _, tc := range []struct {
		name, in, header string
		ids              []string
		invalid          []string
		err              string // the error that ends the reading, after ids
	}{
		{"plain", "u1\nu2\r\n  u3  \n\n# comment\nu4", "auto", []string{"u1", "u2", "u3", "u4"}, nil, ""},
		{"header auto", "user_id\nu1\nu2\n", "auto", []string{"u1", "u2"}, nil, ""},
		{"header auto not a header", "u1\nuser_id\n", "auto", []string{"u1", "user_id"}, nil, ""},
		{"header yes", "whatever\nu1\n", "yes", []string{"u1"}, nil, ""},
		// The header of a legacy-encoded export (Windows-1252 "Kundennr.",
		// "Größe": ö and ß are bytes that are not UTF-8) is, with --header
		// yes, the header, not an invalid line after which the first id
		// was taken for it.
		{"header yes invalid", "Gr\xf6\xdfe,Name\nu1\nu2\n", "yes", []string{"u1", "u2"}, nil, ""},
		{"header yes empty first field", ",name\nu1\n", "yes", []string{"u1"}, nil, ""},
		// Not of a file with old Mac line endings: its one line is all of it.
		{"header yes old mac", "id\ru1\ru2\r", "yes", nil,
			[]string{"line 1: line holds a carriage return: a file with old Mac line endings, CR alone (a spreadsheet's \"CSV (Macintosh)\")? save it with LF or CRLF line endings"}, ""},
		{"header no", "id\nu1\n", "no", []string{"id", "u1"}, nil, ""},
		{"csv", "# export\nUser_ID,title,score\nu1,cmo,3\n u2 , cfo,4\n\"u,3\",x\n\"u\"\"4\"\n", "auto", []string{"u1", "u2", "u,3", `u"4`}, nil, ""},
		{"comment after header", "# a\n\n id \nu1\n", "auto", []string{"u1"}, nil, ""},
		{"bad lines", "u1\n,cmo\n" + long + "\nu2\n\"x\"y\nu3\n", "auto", []string{"u1", "u2", "u3"},
			[]string{"line 2: empty user id", "line 3: user id is 257 bytes, the limit is 256", "line 5: text after a quoted field"}, ""},
		// A line that leaves a quoted field open, of any column, ends the
		// reading: a stray quote's, or a note's with line breaks (RFC 4180
		// allows them), the lines after it cannot be told from ids.
		{"csv over lines", "id,note\n\"ml-1\",\"multi\nline note\"\nml-2,x\n", "auto", nil, nil,
			"line 2 opens a quoted field that it does not close (a stray quote? a note with line breaks?): the lines after it cannot be told from ids; close or remove the quote, or upload the id column alone"},
		{"stray quote in the id", "u1\n  \"u2\nu3\nu4,\"\nu5\n", "auto", []string{"u1"}, nil, "line 2 opens a quoted field"},
		{"open at the end", "u1\nu2,\"note", "auto", []string{"u1"}, nil, "line 2 opens a quoted field"},
		{"quotes closed", "u1,\"a \"\"b\"\"\",\"\"\n\"u,2\" , \"x\"\n# \"comment\n", "auto", []string{"u1", "u,2"}, nil, ""},
		{"byte order mark", "\ufeffuser_id,name\nu1,x\n", "auto", []string{"u1"}, nil, ""},
		// A quote that opens no field is text: the lines after it are ids.
		{"stray quotes", "a\"b\nid,screen\nu1,12\" display\nu2,laptop\nu3,x\n", "no", []string{"a\"b", "id", "u1", "u2", "u3"}, nil, ""},
		{"header names", "Email Address,First Name\nu1,x\n", "auto", []string{"u1"}, nil, ""},
		// Lines over the 1 MiB buffer: one is invalid, unless it leaves a
		// quoted field open (an error, as a short one) or is a comment.
		{"long lines with a byte order mark", "\ufeff\"" + huge + "\",x\nu1\n\ufeff# " + huge + "\n", "no", []string{"u1"},
			[]string{"line 1: line is longer than 1 MiB; ids are 1 to 256 bytes", "line 3: line is longer than 1 MiB; ids are 1 to 256 bytes"}, ""},
		{"long lines", "u1\n" + huge + "\nu2\n# " + huge + "\nu3\n", "auto", []string{"u1", "u2", "u3"},
			[]string{"line 2: line is longer than 1 MiB; ids are 1 to 256 bytes"}, ""},
		{"long line open", "u1\nu2,\"" + huge + "\nu3\",x\nu4\n", "auto", []string{"u1"}, nil, "line 2 opens a quoted field"},
		{"256 bytes", strings.Repeat("y", 256) + "\n", "no", []string{strings.Repeat("y", 256)}, nil, ""},
		// A compressed or binary file, a CSV line with a tab, or text in
		// a legacy encoding (jos\xe9, José in Windows-1252, which a
		// spreadsheet's "CSV" saves), is not uploaded as ids no bid
		// request could match.
		{"binary and tsv", "u1\n\x1f\x8b\x08\x00K\xaf\xd25\n\x00bad\nu2\tAlice\n\"u\x7f\",x\njos\xe9\ncafé\n", "no", []string{"u1", "café"},
			[]string{"line 2: user id is not UTF-8 text (saved in a legacy encoding, such as Windows-1252? save it as CSV UTF-8; or a binary file?)", "line 3: user id holds the control character 0x00 (a binary or compressed file?)",
				"line 4: user id holds a tab (a file is read as tab-separated, TSV, when its first line has a tab before any comma; else as CSV)",
				"line 5: user id holds the control character 0x7f (a binary or compressed file?)", "line 6: user id is not UTF-8 text (saved in a legacy encoding, such as Windows-1252? save it as CSV UTF-8; or a binary file?)"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ir := newIDReader(strings.NewReader(tc.in), tc.header)
			ids, err := readIDsErr(ir)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.err)) {
				t.Errorf("error %v; want %q", err, tc.err)
			}
			if d := cmp.Diff(tc.ids, ids); d != "" {
				t.Errorf("ids (-want +got):\n%s", d)
			}
			var invalid []string
			for _, l := range ir.invalid {
				invalid = append(invalid, l.String())
			}
			if d := cmp.Diff(tc.invalid, invalid); d != "" {
				t.Errorf("invalid lines (-want +got):\n%s", d)
			}
			if ir.read != int64(len(tc.in)) && tc.err == "" {
				t.Errorf("read %d bytes, want %d", ir.read, len(tc.in))
			}
		})
	}
}

// TestCSVScanPieces: csvScan fed a line in pieces, cut anywhere (inside
// a "" too), ends as csvQuoted over the whole line.
func TestCSVScanPieces(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	const alphabet = "\"\", a\r"
	for range 20_000 {
		line := make([]byte, r.IntN(12))
		for i := range line {
			line[i] = alphabet[r.IntN(len(alphabet))]
		}
		want := csvQuoted(line)
		s := csvScan{start: true}
		for rest := line; len(rest) > 0; {
			n := 1 + r.IntN(len(rest))
			s.feed(rest[:n])
			rest = rest[n:]
		}
		if got := s.open(); got != want {
			t.Fatalf("%q: in pieces %t, whole %t", line, got, want)
		}
	}
}

// TestNextPerLine: next returns at every line, nil for one without an
// id, so that readChunks sees an invalid line, and can send what it has,
// before the next line is read (and perhaps waited for).
func TestNextPerLine(t *testing.T) {
	ir := newIDReader(strings.NewReader("user_id,name\na\n\n# c\n,bad\n\"q\"r\nb"), "auto")
	var got []string
	for {
		id, err := ir.next()
		if err != nil {
			break
		}
		got = append(got, string(id)+fmt.Sprintf("@%d", ir.line))
	}
	want := []string{"@1", "a@2", "@3", "@4", "@5", "@6", "b@7"}
	if !slices.Equal(got, want) {
		t.Errorf("next per call (id@line): %q; want %q", got, want)
	}
}

// TestReadChunksSlowInput: from input that comes slowly but steadily, a
// chunk goes out each time slowFlush has gone by since the last one was
// handed on and no whole line is left to read, not only when a chunk is
// full, whether the input comes a line or part of a line at a time;
// input that is all there is not cut into chunks by it.
func TestReadChunksSlowInput(t *testing.T) {
	// slow writes the ids u0…u(n-1) to a pipe as pieces cuts them, a
	// piece every gap, and returns the pipe's reader and the ids.
	slow := func(t *testing.T, n int, gap time.Duration, pieces func(string) []string) (io.Reader, []string) {
		pr, pw := io.Pipe()
		var all strings.Builder
		var want []string
		for i := range n {
			want = append(want, fmt.Sprint("u", i))
			fmt.Fprintf(&all, "u%d\n", i)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			defer pw.Close()
			for _, p := range pieces(all.String()) {
				if _, err := io.WriteString(pw, p); err != nil {
					return
				}
				time.Sleep(gap)
			}
		})
		t.Cleanup(func() {
			pr.Close()
			wg.Wait()
		})
		return pr, want
	}
	// read runs readChunks on in, taking each chunk after delay, checks
	// that the chunks hold the ids want in order, and returns how many
	// ids each held.
	read := func(t *testing.T, in io.Reader, want []string, slowFlush, delay time.Duration) (sizes []int) {
		t.Helper()
		o := &uploadOptions{chunkIDs: defaultChunkIDs, slowFlush: slowFlush}
		var prog progress
		var ids []string
		chunks := make(chan uploadChunk)
		errc := make(chan error, 1)
		go func() {
			defer close(chunks)
			errc <- readChunks(newIDReader(in, "no"), o, &prog, chunks, nil)
		}()
		for c := range chunks {
			if c.found {
				continue
			}
			ids = append(ids, strings.Split(strings.TrimSuffix(string(c.packed), "\n"), "\n")...)
			sizes = append(sizes, c.ids)
			time.Sleep(delay)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, want) {
			t.Errorf("ids %q; want %q", ids, want)
		}
		return sizes
	}
	lines := func(s string) []string { return strings.SplitAfter(strings.TrimSuffix(s, "\n"), "\n") }

	t.Run("a line at a time", func(t *testing.T) {
		in, want := slow(t, 30, 10*time.Millisecond, lines) // 300 ms
		sizes := read(t, in, want, 50*time.Millisecond, 0)
		if len(sizes) < 3 {
			t.Errorf("%d chunks (%v) from 300 ms of slow input; want one about every 50ms", len(sizes), sizes)
		}
	})
	t.Run("blocks cut mid-line", func(t *testing.T) {
		// As a block-buffered producer writes: blocks that end inside
		// a line, so some input is always left over after each.
		blocks := func(s string) []string {
			var bs []string
			for _, l := range lines(s) {
				if len(bs) == 0 {
					bs = append(bs, l[:2])
				} else {
					bs[len(bs)-1] += l[:2]
				}
				bs = append(bs, l[2:])
			}
			return bs
		}
		in, want := slow(t, 40, 10*time.Millisecond, blocks) // 400 ms
		sizes := read(t, in, want, 50*time.Millisecond, 0)
		if len(sizes) < 3 {
			t.Errorf("%d chunks (%v) from 400 ms of slow input in blocks; want one about every 50ms", len(sizes), sizes)
		}
	})
	t.Run("a slow sender", func(t *testing.T) {
		// The time is counted from when the sender took the last chunk,
		// not from when the reader offered it: a sender that takes
		// 100 ms does not get chunks of one id each.
		in, want := slow(t, 100, 5*time.Millisecond, lines) // 500 ms
		sizes := read(t, in, want, 50*time.Millisecond, 100*time.Millisecond)
		if s := slices.Sorted(slices.Values(sizes)); s[len(s)/2] < 3 {
			t.Errorf("chunks of %v ids; want a median of several (50 ms of input)", sizes)
		}
	})
	t.Run("input that is all there", func(t *testing.T) {
		// Read 4 KiB at a time, each read ending at a line's end: one
		// chunk while slowFlush has not gone by, and with no time at all
		// one per read, not one per line (CSV lines, which do not take
		// the plain lines' path: before each, a whole line is buffered).
		var plain, csv strings.Builder
		var wantPlain, want []string
		for i := range 5000 {
			wantPlain = append(wantPlain, fmt.Sprintf("u%06d", i))
			fmt.Fprintf(&plain, "u%06d\n", i) // 8 bytes
			want = append(want, fmt.Sprintf("u%04d", i))
			fmt.Fprintf(&csv, "u%04d,x\n", i)
		}
		if sizes := read(t, smallReads{strings.NewReader(plain.String())}, wantPlain, time.Second, 0); len(sizes) != 1 {
			t.Errorf("chunks of %v ids from 5000 lines there at once; want one chunk", sizes)
		}
		if sizes := read(t, smallReads{strings.NewReader(csv.String())}, want, time.Nanosecond, 0); len(sizes) > 40000/4096+1 {
			t.Errorf("%d chunks from 40000 bytes in reads of 4 KiB with slowFlush 1ns; want one per read", len(sizes))
		}
	})
}

// smallReads reads at most 4 KiB at a time from r.
type smallReads struct{ r io.Reader }

func (s smallReads) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 4<<10)]) }

// TestReadChunks: the chunks readChunks sends (plain lines copied in
// runs, every other line through next) hold exactly the ids next gives,
// in order, each chunk within the id and byte limits, with the same
// invalid lines and line numbers, whatever the chunk size.
func TestReadChunks(t *testing.T) {
	var in strings.Builder
	in.WriteString("user_id,score\n")
	for i := range 5000 {
		switch i % 97 {
		case 3:
			fmt.Fprintf(&in, "  u%d  \n", i) // trimmed
		case 5:
			fmt.Fprintf(&in, "u%d,cmo\n", i) // CSV
		case 7:
			fmt.Fprintf(&in, "\"u%d\"\r\n", i) // quoted, CRLF
		case 11:
			in.WriteString("# comment\n\n")
		case 13:
			in.WriteString(",empty\n") // invalid
		case 17:
			fmt.Fprintf(&in, "#u%d\n", i) // a comment, not an id
		case 19:
			fmt.Fprintf(&in, "u#%d\n", i) // plain
		case 23:
			in.WriteString(strings.Repeat("z", maxIDLen) + "\n") // longest plain id
		case 29:
			in.WriteString(strings.Repeat("z", maxIDLen+1) + "\n") // invalid
		case 31:
			fmt.Fprintf(&in, "u\u00e9%d\n", i) // not ASCII: through next
		case 37:
			fmt.Fprintf(&in, "u%d,\"a note, \"\"quoted\"\"\"\n", i) // CSV, quoted
		default:
			fmt.Fprintf(&in, "u%d\n", i)
		}
	}
	in.WriteString("last-without-newline")
	ref := newIDReader(strings.NewReader(in.String()), "auto")
	var want []string
	for {
		id, err := ref.next()
		if err != nil {
			break
		}
		if id != nil {
			want = append(want, string(id))
		}
	}
	for _, chunkIDs := range []int{1, 7, 1000, defaultChunkIDs} {
		ir := newIDReader(strings.NewReader(in.String()), "auto")
		o := &uploadOptions{chunkIDs: chunkIDs, skipInvalid: true}
		var prog progress
		chunks := make(chan uploadChunk)
		errc := make(chan error, 1)
		go func() {
			defer close(chunks)
			errc <- readChunks(ir, o, &prog, chunks, nil)
		}()
		var got []string
		found := 0
		for c := range chunks {
			if c.found {
				// Said once, before the first chunk.
				if found++; found > 1 || got != nil {
					t.Fatalf("chunk-ids %d: the first id said %d times, after %d ids", chunkIDs, found, len(got))
				}
				continue
			}
			ids := strings.Split(strings.TrimSuffix(string(c.packed), "\n"), "\n")
			if len(ids) != c.ids || c.ids > chunkIDs || len(c.packed) > chunkBytes+maxIDLen+1 {
				t.Fatalf("chunk-ids %d: a chunk of %d ids (%d counted), %d bytes", chunkIDs, len(ids), c.ids, len(c.packed))
			}
			got = append(got, ids...)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("chunk-ids %d: ids (-next +chunks):\n%s", chunkIDs, d)
		}
		if d := cmp.Diff(ref.invalid, ir.invalid, cmp.AllowUnexported(invalidLine{})); d != "" || ir.nbad != ref.nbad || ir.line != ref.line || ir.read != ref.read {
			t.Errorf("chunk-ids %d: %d invalid lines, %d lines, %d bytes; want %d, %d, %d; (-next +chunks):\n%s",
				chunkIDs, ir.nbad, ir.line, ir.read, ref.nbad, ref.line, ref.read, d)
		}
		if prog.ids.Load() != uint64(len(want)) {
			t.Errorf("chunk-ids %d: progress counted %d ids, want %d", chunkIDs, prog.ids.Load(), len(want))
		}
	}
}

// FuzzParseLine: no line crashes the parser, and an id it returns is
// 1 to 256 bytes with no line break.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{"u1", `"a""b",c`, ",x", "# c", `"`, " a , b "} {
		f.Add([]byte(s))
	}
	f.Add([]byte("\t\"a\"\tb"))
	f.Fuzz(func(t *testing.T, line []byte) {
		var scratch []byte
		for _, sep := range []byte{',', '\t'} { // CSV, TSV
			id, ok, msg := parseFields(line, sep, &scratch)
			if ok && (len(id) == 0 || len(id) > maxIDLen || bytes.IndexFunc(id, isControl) >= 0 || !utf8.Valid(id) || msg != "") {
				t.Fatalf("parseFields(%q, %q) = %q, %t, %q", line, sep, id, ok, msg)
			}
		}
	})
}

// FuzzIDReader: no input crashes the reader, and no line is dropped
// unsaid: until the reading ends (at the input's end, or at an error
// naming a line), each line is an id, or reported invalid, or blank or a
// # comment.
func FuzzIDReader(f *testing.F) {
	for _, s := range []string{"u1\nu2", "u1,\"a\"\"b\"\nu2\n", "\"u1\nu2\n\"u3\n", "u1,\"x\ny\"\nu2", "\ufeff# c\n\n,x\n", "u1\n\ufeff\nu2\n", "\x1f\x8bxy\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		lines := bytes.SplitAfter(in, []byte{'\n'})
		ir := newIDReader(bytes.NewReader(in), "no")
		if bytes.HasPrefix(in, gzipMagic) {
			// Read decompressed: its lines are not in's, and a stream
			// that does not decompress is an error of the input, no line's.
			for {
				if _, err := ir.next(); err != nil {
					return
				}
			}
		}
		for {
			bad := ir.nbad
			id, err := ir.next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				if !strings.HasPrefix(err.Error(), fmt.Sprintf("line %d ", ir.line)) {
					t.Fatalf("error %q names no line, or not line %d", err, ir.line)
				}
				return
			}
			line := bytes.TrimPrefix(lines[ir.line-1], []byte("\ufeff")) // of any line: exports put end to end
			if id == nil && ir.nbad == bad && !isComment(line) && len(bytes.TrimSpace(line)) > 0 && !emptyRow(bytes.TrimSpace(line), ir.sep) {
				t.Fatalf("line %d, %q, dropped: no id, not reported invalid", ir.line, line)
			}
		}
	})
}

func TestProgressLine(t *testing.T) {
	got := progressLine("title:cmo", 1000, 2_500_000, 250, 2*time.Second, false)
	want := "[=====               ]  25%  title:cmo  2.50M ids  1.25M ids/s  ETA 6s"
	if got != want {
		t.Errorf("progressLine = %q, want %q", got, want)
	}
	if got := progressLine("title:cmo", -1, 12345, 0, time.Second, false); got != "title:cmo  12.3k ids  12.3k ids/s" {
		t.Errorf("progressLine without a size = %q", got)
	}
	// Too early for a rate: the first frame, drawn at once.
	if got, want := progressLine("title:cmo", 1000, 1, 1, time.Millisecond, false), "[                    ]   0%  title:cmo  1 id"; got != want {
		t.Errorf("progressLine at the start = %q, want %q", got, want)
	}
	// The last frame of a short upload.
	if got, want := progressLine("title:cmo", 1000, 20_000, 1000, 100*time.Millisecond, true), "[====================] 100%  title:cmo  20.0k ids  200.0k ids/s  ETA 0s"; got != want {
		t.Errorf("progressLine at the end = %q, want %q", got, want)
	}
}

// server runs personad's gRPC services on a real loopback listener over
// a durable store in a temp dir.
func server(t *testing.T) (addr string, store *segments.Store) {
	t.Helper()
	return serverWithRules(t, "")
}

// serverWithRules is server with the rules in yaml live, if any.
func serverWithRules(t *testing.T, yaml string) (addr string, store *segments.Store) {
	t.Helper()
	addr, store, _ = serverWithMetrics(t, yaml)
	return addr, store
}

// serverWithMetrics is serverWithRules that also returns the registry of
// the server's metrics.
func serverWithMetrics(t *testing.T, yaml string) (addr string, store *segments.Store, reg *prometheus.Registry) {
	t.Helper()
	store, err := segments.Open(segments.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(engine.DefaultConfig(), store)
	if err != nil {
		t.Fatal(err)
	}
	if yaml != "" {
		eng.SetRules(compileRules(t, yaml, "v-test"))
	}
	cfg := bidder.DefaultConfig()
	cfg.Engine, cfg.Logger, cfg.Metrics = eng, zaptest.NewLogger(t), prometheus.NewRegistry()
	srv, err := bidder.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	scfg := bidder.DefaultSegmentsConfig()
	scfg.Store, scfg.Engine, scfg.Logger, scfg.Metrics = store, eng, cfg.Logger, cfg.Metrics
	ss, err := bidder.NewSegments(scfg)
	if err != nil {
		t.Fatal(err)
	}
	gs := srv.GRPCServer()
	bidder.RegisterSegments(gs, ss)
	t.Cleanup(func() { // after serve's, which stops gs
		ss.Close()
		eng.Close()
		store.Close()
	})
	return serve(t, gs), store, cfg.Metrics
}

// compileRules parses and compiles the rules in yaml as version.
func compileRules(t *testing.T, yaml, version string) *engine.Rules {
	t.Helper()
	rs, err := rules.Parse("test", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	compiled, err := engine.Compile(rs, version)
	if err != nil {
		t.Fatal(err)
	}
	return compiled
}

// serve serves gs on a local port until the test ends, and returns its
// address.
func serve(t *testing.T, gs *grpc.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		gs.Serve(lis) //nolint:errcheck // Stop ends it
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})
	return lis.Addr().String()
}

// ctl runs personactl with args and stdin, returning stdout, stderr and
// the exit code.
func ctl(t *testing.T, addr, stdin string, terminal bool, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	e := env{
		getenv: func(string) string { return "" },
		stdin:  strings.NewReader(stdin),
		stdout: &stdout, stderr: &stderr,
		isTerminal: terminal,
	}
	err := run(context.Background(), append([]string{"--addr", addr}, args...), e)
	if err != nil && !errors.Is(err, flag.ErrHelp) { // as main does
		fmt.Fprintf(&stderr, "personactl: %v\n", err)
	}
	return stdout.String(), stderr.String(), exitCode(err)
}

// TestUploadInputStalls: input that stalls for longer than --timeout
// ends the upload with a message saying so, and nothing applied; input
// that comes slowly but steadily does not; an upload that is off (an
// invalid line, the server's refusal, Ctrl-C) says why, whatever the
// input does next.
func TestUploadInputStalls(t *testing.T) {
	addr, store := server(t)
	// upload sends the lines one by one, each followed by its gap, to
	// personactl segments upload --value value, with ctx and args.
	upload := func(ctx context.Context, value string, lines []string, gaps []time.Duration, args ...string) (string, error) {
		pr, pw := io.Pipe()
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			defer pw.Close()
			for i, l := range lines {
				fmt.Fprintln(pw, l)
				select {
				case <-time.After(gaps[i]):
				case <-done:
					return
				}
			}
		})
		var stdout, stderr bytes.Buffer
		e := env{getenv: func(string) string { return "" }, stdin: pr, stdout: &stdout, stderr: &stderr}
		err := run(ctx, append([]string{"--addr", addr, "--timeout", "300ms",
			"segments", "upload", "--facet", "title", "--value", value, "--mode", "add"}, append(args, "-")...), e)
		close(done)
		pr.Close()
		wg.Wait()
		return stdout.String(), err
	}
	ids := func(value string, n int) []string {
		var l []string
		for i := range n {
			l = append(l, fmt.Sprintf("%s-%d", value, i))
		}
		return l
	}
	bg := context.Background()
	stall := []time.Duration{0, 2 * time.Second}

	const want = "segments upload title:stall: the input gave no ids for 300ms (--timeout: it stalled, or held none); nothing uploaded"
	if _, err := upload(bg, "stall", ids("stall", 2), stall); err == nil || err.Error() != want {
		t.Errorf("a stalled input: %v; want %q", err, want)
	}
	steady := make([]time.Duration, 12) // 1.2 s in all, a line every 100 ms
	for i := range steady {
		steady[i] = 100 * time.Millisecond
	}
	if out, err := upload(bg, "steady", ids("steady", 12), steady); err != nil || !strings.Contains(out, "ids=12 added=12") {
		t.Errorf("a slow, steady input: %q, %v; want its 12 ids uploaded", out, err)
	}
	// An invalid line: the rest is read to report it, untimed.
	slowly := []time.Duration{0, 0, 400 * time.Millisecond, 400 * time.Millisecond, 0}
	const wantBad = "segments upload title:bad: stdin has 1 invalid line; nothing uploaded (--skip-invalid uploads the rest):\n  line 2: "
	if _, err := upload(bg, "bad", []string{"bad-0", ",x", "bad-2", "bad-3", "bad-4"}, slowly); err == nil || !strings.HasPrefix(err.Error(), wantBad) {
		t.Errorf("an invalid line, then slow input: %v; want %q…", err, wantBad)
	}
	// The server refuses the header (a key over its limit): said at once.
	key := strings.Repeat("k", 300)
	const wantKey = "segments upload title:refused: InvalidArgument: "
	if _, err := upload(bg, "refused", ids("refused", 2), stall, "--key", key); err == nil || !strings.HasPrefix(err.Error(), wantKey) || !strings.Contains(err.Error(), "idempotency_key: is 300 bytes") {
		t.Errorf("a refused header, then a stall: %v; want %q…idempotency_key: is 300 bytes…", err, wantKey)
	}
	// Ctrl-C during a stall.
	ctx, cancel := context.WithCancelCause(bg)
	time.AfterFunc(100*time.Millisecond, func() { cancel(errors.New("interrupt signal received")) })
	const wantInt = "segments upload title:interrupted: interrupt signal received; nothing uploaded"
	if _, err := upload(ctx, "interrupted", ids("interrupted", 2), stall); err == nil || err.Error() != wantInt {
		t.Errorf("Ctrl-C: %v; want %q", err, wantInt)
	}
	for _, seg := range store.Current().Segments() {
		if seg.Value != "steady" {
			t.Errorf("upload of segment %s:%s was applied", seg.Facet, seg.Value)
		}
	}
}

// fakeSegments is a Segments server whose uploads do as mode says;
// ended is closed when one has ended.
type fakeSegments struct {
	personadpb.UnimplementedSegmentsServer
	mode   fakeMode
	ended  chan struct{}
	gotEnd atomic.Bool // the client's end of the stream arrived: a real server commits
	stop   func()      // fakeDiesAfterEnd's: stops the server
	fail   error       // fakeFailsAtEnd's answer to the end, and Delete's
}

// Delete answers f.fail.
func (f *fakeSegments) Delete(context.Context, *personadpb.DeleteRequest) (*personadpb.DeleteResponse, error) {
	return nil, f.fail
}

type fakeMode int

const (
	fakeReads        fakeMode = iota // reads until the stream ends, and answers nothing
	fakeStuck                        // takes the header, then reads nothing more
	fakeAnswersEarly                 // answers OK (version 7) to the header alone
	fakeSlowStart                    // as fakeReads, but waits 500 ms after the header
	fakeDiesAfterEnd                 // reads until the end, then stops without answering
	fakeDiesMidway                   // takes the header, then stops
	fakeOld                          // reads until the end, counts no ids (no ids_packed), answers
	fakeFailsAtEnd                   // reads until the end, then answers fail
)

func (f *fakeSegments) Upload(s personadpb.Segments_UploadServer) error {
	defer close(f.ended)
	switch f.mode {
	case fakeStuck:
		s.Recv() //nolint:errcheck // the header; the client's end is what counts
		<-s.Context().Done()
		return s.Context().Err()
	case fakeAnswersEarly:
		if _, err := s.Recv(); err != nil {
			return err
		}
		return s.SendAndClose(&personadpb.UploadResponse{Version: 7})
	case fakeSlowStart:
		if _, err := s.Recv(); err != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	case fakeDiesMidway:
		s.Recv() //nolint:errcheck // the header
		go f.stop()
		<-s.Context().Done()
		return s.Context().Err()
	}
	for {
		if _, err := s.Recv(); err != nil {
			f.gotEnd.Store(errors.Is(err, io.EOF))
			switch {
			case f.mode == fakeDiesAfterEnd:
				go f.stop()
				<-s.Context().Done()
				return s.Context().Err()
			case f.mode == fakeFailsAtEnd && errors.Is(err, io.EOF):
				return f.fail
			case f.mode == fakeOld && errors.Is(err, io.EOF):
				return s.SendAndClose(&personadpb.UploadResponse{Version: 12, Removed: 1000})
			}
			return err
		}
	}
}

// fakeServer serves f, with small flow-control windows, so that a client
// sending to a stuck f soon blocks.
func fakeServer(t *testing.T, f *fakeSegments) string {
	t.Helper()
	gs := grpc.NewServer(grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10))
	personadpb.RegisterSegmentsServer(gs, f)
	f.stop = gs.Stop
	return serve(t, gs)
}

// TestUploadServerStuck: an upload to a server that stopped reading (the
// send blocks), that never answers, or that cannot be reached (the
// connection never ready), ends after --timeout, or on Ctrl-C, saying
// which and whether the upload may have been applied, not as a bare
// "context canceled"; a server that answers before the end is said to
// have applied what it had.
func TestUploadServerStuck(t *testing.T) {
	var big strings.Builder
	for i := range 400_000 { // 7.2 MB: far more than the windows
		fmt.Fprintf(&big, "user-%012d\n", i)
	}
	// silent accepts connections and says nothing on them.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	})
	t.Cleanup(func() {
		silent.Close()
		wg.Wait()
		for _, c := range held {
			c.Close()
		}
	})
	const (
		stuck      = "segments upload title:v: the server took no chunk for 300ms (--timeout); nothing uploaded"
		noAnswer   = "segments upload title:v: no answer from the server 300ms (--timeout) after the last chunk; the upload may have been applied or not (with --key, the same upload again tells: it replays if it was)"
		interrupts = "segments upload title:v: interrupt signal received; nothing uploaded"
		unanswered = "segments upload title:v: interrupt signal received while waiting for the server's answer; the upload may have been applied or not (with --key, the same upload again tells: it replays if it was)"
	)
	for _, tc := range []struct {
		name  string
		mode  fakeMode // of the server; -1: silent
		in    string
		ctrlC bool // Ctrl-C after 200 ms, with --timeout 10s; else --timeout 300ms
		want  string
	}{
		{"sends stuck", fakeStuck, big.String(), false, stuck},
		{"sends stuck, Ctrl-C", fakeStuck, big.String(), true, interrupts},
		{"no answer", fakeStuck, "u1\nu2\n", false, noAnswer},
		{"no answer, Ctrl-C", fakeStuck, "u1\nu2\n", true, unanswered},
		{"never connected", -1, "u1\n", false, "segments upload title:v: could not reach the server at " + silent.Addr().String() + " in 300ms (--timeout); nothing uploaded"},
		{"never connected, Ctrl-C", -1, "u1\n", true, interrupts},
		{"answers early", fakeAnswersEarly, big.String(), false,
			"segments upload title:v: the server answered before the upload ended: it applied the 0 ids it had taken (version 7), not the rest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := silent.Addr().String()
			if tc.mode >= 0 {
				addr = fakeServer(t, &fakeSegments{mode: tc.mode, ended: make(chan struct{})})
			}
			ctx, timeout := context.Background(), "300ms"
			if tc.ctrlC {
				c, cancel := context.WithCancelCause(ctx)
				defer cancel(nil)
				time.AfterFunc(200*time.Millisecond, func() { cancel(errors.New("interrupt signal received")) })
				ctx, timeout = c, "10s"
			}
			e := env{getenv: func(string) string { return "" }, stdin: strings.NewReader(tc.in), stdout: io.Discard, stderr: io.Discard}
			start := time.Now()
			err := run(ctx, []string{"--addr", addr, "--timeout", timeout,
				"segments", "upload", "--facet", "title", "--value", "v", "--mode", "add", "-"}, e)
			if err == nil || err.Error() != tc.want {
				t.Errorf("%v; want %q", err, tc.want)
			}
			if took := time.Since(start); took < 150*time.Millisecond && tc.mode != fakeAnswersEarly {
				t.Errorf("ended after %v, before the timer or Ctrl-C could end it", took)
			}
		})
	}
}

// TestUploadAfterItsEnd: once the upload's end is sent, a server that
// drops the connection may have committed, and personactl says so; a
// server that counted other ids than were sent applied what it counted,
// and personactl says that.
func TestUploadAfterItsEnd(t *testing.T) {
	upload := func(mode fakeMode) error {
		f := &fakeSegments{mode: mode, ended: make(chan struct{})}
		e := env{getenv: func(string) string { return "" }, stdin: strings.NewReader("u1\nu2\n"), stdout: io.Discard, stderr: io.Discard}
		return run(context.Background(), []string{"--addr", fakeServer(t, f), "--timeout", "10s",
			"segments", "upload", "--facet", "title", "--value", "v", "--mode", "replace", "-"}, e)
	}
	const maybe = "; the upload may have been applied or not (with --key, the same upload again tells: it replays if it was)"
	if err := upload(fakeDiesAfterEnd); err == nil || !strings.HasPrefix(err.Error(), "segments upload title:v: Unavailable: ") || !strings.HasSuffix(err.Error(), maybe) {
		t.Errorf("a server gone after the end: %v; want Unavailable…%s", err, maybe)
	}
	const old = "segments upload title:v: sent 2 ids but the server counted 0, and applied the upload as that (version 12: added=0 removed=1000 cardinality=0); is personad older than personactl (ids_packed)?"
	if err := upload(fakeOld); err == nil || err.Error() != old {
		t.Errorf("an older server: %v; want %q", err, old)
	}
}

// TestUnavailableNotApplied: the server's UNAVAILABLE after the upload's
// end, or for a delete, carrying ErrorInfo NOT_APPLIED (a log write the
// disk refused, cut back) applied nothing, and personactl says so; without
// it (a failed fsync: a restart may apply the change) the outcome is
// unknown, and personactl says that.
func TestUnavailableNotApplied(t *testing.T) {
	const msg = "segments: upload title:v: segments: write-ahead log failed; change not applied: write wal-1.log: no space left on device"
	withInfo := func(reason string) error {
		st, err := status.New(codes.Unavailable, msg).WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "personad"})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	const (
		uploaded   = "segments upload title:v: Unavailable: " + msg
		deleted    = "segments delete title:v: Unavailable: " + msg
		maybe      = "; the upload may have been applied or not (with --key, the same upload again tells: it replays if it was)"
		maybeGone  = "; the segment may have been deleted or not (segments list tells)"
		notApplied = "; nothing uploaded"
	)
	for _, tc := range []struct {
		name               string
		fail               error
		wantUp, wantDelete string
	}{
		{"not applied", withInfo("NOT_APPLIED"), uploaded + notApplied, deleted},
		{"fsync failed", status.Error(codes.Unavailable, msg), uploaded + maybe, deleted + maybeGone},
		{"another reason", withInfo("SOMETHING_ELSE"), uploaded + maybe, deleted + maybeGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeServer(t, &fakeSegments{mode: fakeFailsAtEnd, ended: make(chan struct{}), fail: tc.fail})
			e := env{getenv: func(string) string { return "" }, stdin: strings.NewReader("u1\nu2\n"), stdout: io.Discard, stderr: io.Discard}
			err := run(context.Background(), []string{"--addr", addr, "--timeout", "10s",
				"segments", "upload", "--facet", "title", "--value", "v", "--mode", "replace", "-"}, e)
			if err == nil || err.Error() != tc.wantUp {
				t.Errorf("upload: %v; want %q", err, tc.wantUp)
			}
			err = run(context.Background(), []string{"--addr", addr, "--timeout", "10s",
				"segments", "delete", "--facet", "title", "--value", "v"}, e)
			if err == nil || err.Error() != tc.wantDelete {
				t.Errorf("delete: %v; want %q", err, tc.wantDelete)
			}
		})
	}
}

// TestConnectionLost: a server that cannot be reached, or that goes away
// before an upload's end is sent, applied nothing, and personactl says
// so; a delete whose answer is lost may have been applied, and
// personactl says that.
func TestConnectionLost(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	var big strings.Builder
	for i := range 400_000 {
		fmt.Fprintf(&big, "user-%012d\n", i)
	}
	midway := fakeServer(t, &fakeSegments{mode: fakeDiesMidway, ended: make(chan struct{})})
	for _, tc := range []struct {
		name, addr, in string
		args           []string
		prefix, suffix string
	}{
		{"upload, refused", closed, "u1\n", []string{"upload", "--facet", "title", "--value", "v", "-"},
			"segments upload title:v: Unavailable: ", "; nothing uploaded"},
		{"upload, gone midway", midway, big.String(), []string{"upload", "--facet", "title", "--value", "v", "-"},
			"segments upload title:v: Unavailable: ", "; nothing uploaded"},
		{"delete, refused", closed, "", []string{"delete", "--facet", "title", "--value", "v"},
			"segments delete title:v: Unavailable: ", "; the segment may have been deleted or not (segments list tells)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := env{getenv: func(string) string { return "" }, stdin: strings.NewReader(tc.in), stdout: io.Discard, stderr: io.Discard}
			err := run(context.Background(), append([]string{"--addr", tc.addr, "--timeout", "10s", "segments"}, tc.args...), e)
			if err == nil || !strings.HasPrefix(err.Error(), tc.prefix) || !strings.HasSuffix(err.Error(), tc.suffix) {
				t.Errorf("%v; want %q…%q", err, tc.prefix, tc.suffix)
			}
		})
	}
	if _, stderr, code := ctl(t, closed, "", false, "--timeout", "0s", "segments", "list"); code != 2 || !strings.Contains(stderr, "--timeout 0s: want a duration above 0") {
		t.Errorf("--timeout 0s: exit %d, %q; want a usage error", code, stderr)
	}
}

// TestUploadLateTimer: the idle timer's func runs late (as a busy
// scheduler may run it), after the upload went on. Its stream is ended all
// the same, and the upload is never reported as not applied while its end
// was sent (a server commits then), nor as uploaded when it was not.
func TestUploadLateTimer(t *testing.T) {
	// The timer's func waits a second, or until the subtest releases it,
	// and then says it is done. An upload reads the hook as it starts.
	hookDone := make(chan struct{}, 1)
	setHook := func() (release chan struct{}) {
		release = make(chan struct{})
		testHookIdleFired = func() {
			select {
			case <-time.After(time.Second):
			case <-release:
			}
			select {
			case hookDone <- struct{}{}:
			default: // a second firing, which nobody waits for
			}
		}
		return release
	}
	t.Cleanup(func() { testHookIdleFired = nil })
	waitHook := func(t *testing.T, release chan struct{}) {
		t.Helper()
		close(release)
		select {
		case <-hookDone:
		case <-time.After(10 * time.Second):
			t.Error("the idle timer never went off")
		}
	}
	const (
		stalled = "segments upload title:v: the input gave no ids for 400ms (--timeout: it stalled, or held none); nothing uploaded"
		stuck   = "segments upload title:v: the server took no chunk for 400ms (--timeout); nothing uploaded"
	)
	upload := func(f *fakeSegments, in io.Reader) error {
		e := env{getenv: func(string) string { return "" }, stdin: in, stdout: io.Discard, stderr: io.Discard}
		return run(context.Background(), []string{"--addr", fakeServer(t, f), "--timeout", "400ms",
			"segments", "upload", "--facet", "title", "--value", "v", "--mode", "add", "-"}, e)
	}
	t.Run("input ends after the timer went off", func(t *testing.T) {
		// Ids until 150 ms (sent then: --timeout/4 gone by), the end of
		// the input at 900 ms: the timer went off at 550, its func ends
		// the stream at 1550 (margins of 350 and 650 ms, for a loaded
		// machine).
		release := setHook()
		pr, pw := io.Pipe()
		var wg sync.WaitGroup
		wg.Go(func() {
			defer pw.Close()
			io.WriteString(pw, "u1\nu2\n") //nolint:errcheck // the test fails below if it did not
			time.Sleep(150 * time.Millisecond)
			io.WriteString(pw, "u3\n") //nolint:errcheck // as above
			time.Sleep(750 * time.Millisecond)
		})
		f := &fakeSegments{ended: make(chan struct{})}
		err := upload(f, pr)
		wg.Wait()
		<-f.ended
		waitHook(t, release)
		if err == nil || err.Error() != stalled {
			t.Errorf("%v; want %q", err, stalled)
		}
		if f.gotEnd.Load() {
			t.Error("the stream's end was sent")
		}
	})
	t.Run("a send ends after the timer went off", func(t *testing.T) {
		// The server reads nothing for 500 ms: a send blocks past the
		// timer (400 ms), then ends before its func has run (1400 ms).
		var big strings.Builder
		for i := range 400_000 {
			fmt.Fprintf(&big, "user-%012d\n", i)
		}
		release := setHook()
		f := &fakeSegments{mode: fakeSlowStart, ended: make(chan struct{})}
		err := upload(f, strings.NewReader(big.String()))
		<-f.ended
		waitHook(t, release) // its func would end the stream at 1400 ms
		if f.gotEnd.Load() && (err == nil || strings.Contains(err.Error(), "nothing uploaded")) {
			t.Errorf("the stream's end was sent, and the upload reported as %v", err)
		}
		if err == nil || err.Error() != stuck {
			t.Errorf("%v; want %q", err, stuck)
		}
	})
}

// TestUploadInvalidLineDiscards: the first invalid line ends the stream
// at once, so that the server drops the upload, though personactl reads
// on to the input's end to list the invalid lines, and says so when that
// takes more than a second.
func TestUploadInvalidLineDiscards(t *testing.T) {
	f := &fakeSegments{ended: make(chan struct{})}
	addr := fakeServer(t, f)
	pr, pw := io.Pipe()
	var early bool
	var wg sync.WaitGroup
	wg.Go(func() {
		defer pw.Close()
		io.WriteString(pw, "u1\n,bad\n") //nolint:errcheck // the test fails below if it did not
		select {
		case <-f.ended:
			early = true
		case <-time.After(5 * time.Second):
		}
		time.Sleep(1500 * time.Millisecond)
		io.WriteString(pw, "u3\n") //nolint:errcheck // as above
	})
	var stderr bytes.Buffer
	e := env{getenv: func(string) string { return "" }, stdin: pr, stdout: io.Discard, stderr: &stderr}
	err := run(context.Background(), []string{"--addr", addr,
		"segments", "upload", "--facet", "title", "--value", "bad", "--mode", "add", "-"}, e)
	wg.Wait()
	if !early {
		t.Error("the server's stream did not end while the input went on after an invalid line")
	}
	const want = "segments upload title:bad: stdin has 1 invalid line; nothing uploaded"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("upload: %v; want %q…", err, want)
	}
	const notice = "segments upload title:bad: stdin, line 2: empty user id; nothing will be uploaded (--skip-invalid uploads the rest); reading on to list the invalid lines\n"
	if stderr.String() != notice {
		t.Errorf("stderr %q; want %q", stderr.String(), notice)
	}
}

// TestStrayQuote: a line that leaves a quoted field open (a stray quote,
// in the id or another column, or a note with line breaks) refuses the
// upload, even with --skip-invalid, naming the line: as CSV, the lines
// after it, up to the next quote, would have been read into that field
// and not uploaded, and which of them are ids cannot be told. Nothing is
// applied: a --replace leaves the segment as it was.
func TestStrayQuote(t *testing.T) {
	addr, store := server(t)
	if _, stderr, code := ctl(t, addr, "g0\ng1\ng2\ng3\ng4\n", false, "segments", "upload", "--facet", "title", "--value", "q", "-"); code != 0 {
		t.Fatal(stderr)
	}
	const why = " opens a quoted field that it does not close (a stray quote? a note with line breaks?): the lines after it cannot be told from ids; close or remove the quote, or upload the id column alone (nothing uploaded)\n"
	for _, tc := range []struct{ name, in, line string }{
		{"two stray quotes", "g0\n\"g1\ng2\ng3\n\"g4\ng5\n", "2"},
		{"one to the end", "g0\n\"g1\ng2\ng3\ng4\n", "2"},
		{"in a note", "user_id,note\ng0,x\ng1,\"call\ng2,back\"\ng3,y\n", "3"},
		{"on the last line", "g0\ng1,\"note", "2"},
		{"on a long line", "g0\n\"g1" + strings.Repeat("x", 1100<<10) + "\ng2\"\ng3\n", "2"},
	} {
		for _, args := range [][]string{{"--replace", "--skip-invalid"}, {"--mode", "add"}} {
			_, stderr, code := ctl(t, addr, tc.in, false, append([]string{"segments", "upload", "--facet", "title", "--value", "q"}, append(args, "-")...)...)
			if want := "personactl: segments upload title:q: reading stdin: line " + tc.line + why; code != 1 || stderr != want {
				t.Errorf("%s %q: exit %d, %q; want exit 1, %q", tc.name, args, code, stderr, want)
			}
		}
	}
	if got := store.Current().Segment("title", "q"); got == nil || got.Users.GetCardinality() != 5 || store.Current().Version() != 1 {
		t.Errorf("title:q after the refused uploads: %v at version %d; want its 5 members at version 1", got, store.Current().Version())
	}
}

// TestUploadInputMistakes: a FILE that is a directory, a flag after
// FILE (the flag package stops at FILE), and a UTF-16 file (a
// spreadsheet's "Unicode text") are each refused with a message that
// names the mistake, and nothing is uploaded.
func TestUploadInputMistakes(t *testing.T) {
	addr, store := server(t)
	dir := t.TempDir()
	utf16 := func(s string, le bool) string { // with its byte order mark
		b := []byte{0xfe, 0xff}
		if le {
			b = []byte{0xff, 0xfe}
		}
		for _, r := range s {
			if le {
				b = append(b, byte(r), 0)
			} else {
				b = append(b, 0, byte(r))
			}
		}
		return string(b)
	}
	const isUTF16 = "personactl: segments upload title:cmo: reading stdin: line 1 starts with a UTF-16 byte order mark: the input is UTF-16 text; save it as UTF-8 (a spreadsheet's \"CSV UTF-8\") (nothing uploaded)\n"
	for _, tc := range []struct {
		name, in string
		args     []string
		code     int
		stderr   string
	}{
		{"a directory", "", []string{dir}, 1, "personactl: segments upload: " + dir + " is a directory, not a file of user ids\n"},
		{"a flag after FILE", "u1\n", []string{"-", "--replace"}, 2, "personactl: segments upload: --replace comes after FILE -: flags go before FILE\n"},
		{"UTF-16LE", utf16("user_id\r\nu1\r\nu2\r\n", true), []string{"--skip-invalid", "-"}, 1, isUTF16},
		{"UTF-16BE", utf16("u1\nu2\n", false), []string{"-"}, 1, isUTF16},
		// An Excel workbook (.xlsx) or a zip archive: as text, its lines
		// were invalid ("user id is 10262 bytes"), or with --skip-invalid
		// short runs of its bytes uploaded as ids.
		{"zip", "PK\x03\x04\x14\x00\x00\x00\x08\x00\nx1\nx2\n", []string{"--skip-invalid", "-"}, 1,
			"personactl: segments upload title:cmo: reading stdin: line 1 starts a zip archive, not text: an Excel workbook (.xlsx)? save it as CSV UTF-8; a .zip: unzip it, and upload the file of ids (nothing uploaded)\n"},
	} {
		args := append([]string{"segments", "upload", "--facet", "title", "--value", "cmo"}, tc.args...)
		if _, stderr, code := ctl(t, addr, tc.in, false, args...); code != tc.code || stderr != tc.stderr {
			t.Errorf("%s: exit %d, %q; want exit %d, %q", tc.name, code, stderr, tc.code, tc.stderr)
		}
	}
	if v := store.Current().Version(); v != 0 {
		t.Errorf("store version %d after refused uploads; want 0", v)
	}
}

// TestDeleteNamesCampaigns: segments delete warns of the live rules'
// campaigns that name the deleted segment: targeting it, excluding it,
// or choosing creatives by it.
func TestDeleteNamesCampaigns(t *testing.T) {
	addr, _ := serverWithRules(t, `
campaigns:
  - id: cmo-reach
    bid_cpm: 2
    targeting: {all: [{facet: title, any: [cmo, cfo]}]}
    creatives: [{id: a, w: 300, h: 250, adm: "<b>a</b>"}]
  - id: cmo-creative
    bid_cpm: 1
    creatives: [{id: b, w: 300, h: 250, adm: "<b>b</b>", persona: [{facet: title, any: [cmo]}]}]
  - id: no-cmos
    bid_cpm: 3
    status: paused
    targeting: {none: [{facet: title, any: [cmo]}]}
    creatives: [{id: c, w: 300, h: 250, adm: "<b>c</b>"}]
  - id: cfo-only
    bid_cpm: 1
    targeting: {all: [{facet: title, any: [cfo]}]}
    creatives: [{id: d, w: 300, h: 250, adm: "<b>d</b>"}]
`)
	for _, seg := range []string{"cmo", "cfo", "intern"} {
		if _, stderr, code := ctl(t, addr, "u1\nu2\n", false, "segments", "upload", "--facet", "title", "--value", seg, "-"); code != 0 {
			t.Fatalf("upload title:%s: %s", seg, stderr)
		}
	}
	for _, tc := range []struct{ value, stderr string }{
		{"cmo", "warning: campaign cmo-reach targets title:cmo: its former members are no longer reached by it\n" +
			"warning: campaign no-cmos (paused) excludes title:cmo: its former members are no longer kept out by it\n" +
			"warning: campaign cmo-creative chooses creatives by title:cmo: for its former members those creatives are no longer chosen by it\n" +
			"(rules v-test, unchanged; bid requests that carry title:cmo themselves still match it)\n"},
		{"cfo", "warning: campaigns cmo-reach, cfo-only target title:cfo: its former members are no longer reached by it\n" +
			"(rules v-test, unchanged; bid requests that carry title:cfo themselves still match it)\n"},
		{"intern", ""},
	} {
		stdout, stderr, code := ctl(t, addr, "", false, "segments", "delete", "--facet", "title", "--value", tc.value)
		if want := fmt.Sprintf("deleted title:%s removed=2 version=", tc.value); code != 0 || !strings.HasPrefix(stdout, want) || stderr != tc.stderr {
			t.Errorf("delete title:%s: %q, %q, exit %d; want %q…, %q, exit 0", tc.value, stdout, stderr, code, want, tc.stderr)
		}
	}
}

func TestCampaignList(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{
		{1, "c1"},
		{5, "c1, c2 (paused), c3, c4, c5"},
		{6, "c1, c2 (paused), c3, c4, c5 and 1 more"},
		{40, "c1, c2 (paused), c3, c4, c5 and 35 more"},
	} {
		var ids []string
		for i := range tc.n {
			ids = append(ids, fmt.Sprint("c", i+1))
		}
		if got := campaignList(ids, []string{"c2", "c6"}); got != tc.want {
			t.Errorf("campaignList of %d: %q; want %q", tc.n, got, tc.want)
		}
	}
}

// numbers hides the values that change from run to run.
var numbers = regexp.MustCompile(`took=\S+ ids_per_s=\S+|\d{4}-\d\d-\d\dT\S+Z`)

func TestSegmentsCommands(t *testing.T) {
	addr, store := server(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "cmos.csv")
	var csv strings.Builder
	csv.WriteString("# CMOs from the trade show\nuser_id,name\n")
	for i := range 100_000 {
		fmt.Fprintf(&csv, "u%07d,Person %d\n", i, i)
	}
	if err := os.WriteFile(file, []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		args   []string
		stdin  string
		out    string
		errOut string
		code   int
	}{
		{[]string{"segments", "upload", "--facet", "title", "--value", "cmo", "--chunk-ids", "1000", file}, "",
			"uploaded title:cmo mode=add ids=100000 added=100000 removed=0 unchanged=0 new_users=100000 invalid=0 cardinality=100000 version=1 replayed=false took ids_per_s\n", "", 0},
		{[]string{"segments", "upload", "--facet", "title", "--value", "cmo", "--mode", "remove", "-"}, "u0000001\nu0000002\nnobody\n",
			"uploaded title:cmo mode=remove ids=3 added=0 removed=2 unchanged=0 new_users=0 invalid=0 cardinality=99998 version=2 replayed=false took ids_per_s\n",
			"note: 1 of the 3 ids is repeated in the input or unknown to the server (in no segment), counted neither as removed nor as unchanged\n", 0},
		{[]string{"segments", "upload", "--facet", "industry", "--value", "fintech", "--replace", "--key", "k1", "-"}, "u0000001\nu0000009\n",
			"uploaded industry:fintech mode=replace ids=2 added=2 removed=0 unchanged=0 new_users=0 invalid=0 cardinality=2 version=3 replayed=false took ids_per_s\n", "", 0},
		{[]string{"segments", "upload", "--facet", "industry", "--value", "fintech", "--replace", "--key", "k1", "-"}, "u0000001\nu0000009\n",
			"uploaded industry:fintech mode=replace ids=2 added=2 removed=0 unchanged=0 new_users=0 invalid=0 cardinality=2 version=3 replayed=true took ids_per_s\n", "", 0},
		// The key again with other ids: the server refuses it (it keeps a
		// hash of each keyed upload's ids) and applies nothing.
		{[]string{"segments", "upload", "--facet", "industry", "--value", "fintech", "--replace", "--key", "k1", "-"}, "u0000003\n",
			"", "personactl: segments upload industry:fintech: FailedPrecondition: segments: idempotency key already used for a different upload: \"k1\" was replace industry:fintech of other ids, or of the same in another order (2 of them; a retry must send them as the first time); nothing uploaded\n", 1},
		// Invalid lines abort the upload by default, naming them.
		{[]string{"segments", "upload", "--facet", "industry", "--value", "fintech", "-"}, "u1\n,x\nu2\n" + strings.Repeat("z", 300) + "\n",
			"", "personactl: segments upload industry:fintech: stdin has 2 invalid lines; nothing uploaded (--skip-invalid uploads the rest):\n  line 2: empty user id\n  line 4: user id is 300 bytes, the limit is 256\n", 1},
		{[]string{"segments", "upload", "--facet", "industry", "--value", "fintech", "--skip-invalid", "-"}, "u1\n,x\nu2\n",
			"uploaded industry:fintech mode=add ids=2 added=2 removed=0 unchanged=0 new_users=2 invalid=1 cardinality=4 version=4 replayed=false took ids_per_s\n",
			"skipped 1 invalid line:\n  line 2: empty user id\n", 0},
		{[]string{"segments", "upload", "--facet", "Industry", "--value", "fintech", "-"}, "u1\n",
			"", "personactl: segments upload Industry:fintech: InvalidArgument: bidder: upload.header.facet: \"Industry\" must match [a-z][a-z0-9_]{0,31}; nothing uploaded\n", 1},
		{[]string{"segments", "list"}, "",
			"FACET     VALUE    CARDINALITY  VERSION  BYTES  UPDATED\nindustry  fintech  4            4        20     \ntitle     cmo      99998        2        28     \n",
			"2 segments, 100002 users, version 4\n", 0},
		{[]string{"segments", "lookup", "u0000009"}, "", "industry:fintech\ntitle:cmo\n", "", 0},
		{[]string{"segments", "lookup", " u0000009\t"}, "", "industry:fintech\ntitle:cmo\n", "", 0}, // trimmed, as upload trims ids
		{[]string{"segments", "lookup", " "}, "", "", "personactl: segments lookup: USER_ID is empty (surrounding spaces are not part of an id)\n", 2},
		{[]string{"segments", "lookup", "nobody"}, "", "", "personactl: segments lookup: user \"nobody\" is in no uploaded segment (unknown to the server, version 4)\n", 1},
		{[]string{"segments", "lookup", "-h"}, "", "", "usage: personactl segments lookup USER_ID (after -- when it begins with -)\n", 0},
		{[]string{"segments", "lookup", "--", "-x"}, "", "", "personactl: segments lookup: user \"-x\" is in no uploaded segment (unknown to the server, version 4)\n", 1},
		{[]string{"segments", "lookup", "a", "b"}, "", "", "personactl: usage: personactl segments lookup USER_ID\n", 2},
		{[]string{"segments", "delete", "--facet", "industry", "--value", "fintech"}, "", "deleted industry:fintech removed=4 version=5\n", "", 0},
		{[]string{"segments", "delete", "--facet", "industry", "--value", "fintech"}, "", "", "personactl: segments delete industry:fintech: NotFound: segments: no such segment: industry:fintech\n", 1},
		{[]string{"segments", "upload", "--facet", "title", "--value", "cmo", "a", "b"}, "", "", "personactl: segments upload: want one FILE (or - for stdin), got 2 arguments\n", 2},
		{[]string{"segments", "frobnicate"}, "", "", "personactl: segments: unknown subcommand \"frobnicate\" (want upload, list, lookup or delete)\n", 2},
	}
	for i, s := range steps {
		out, errOut, code := ctl(t, addr, s.stdin, false, s.args...)
		out = numbers.ReplaceAllStringFunc(out, func(m string) string {
			if strings.HasPrefix(m, "took") {
				return "took ids_per_s"
			}
			return ""
		})
		if out != s.out || errOut != s.errOut || code != s.code {
			t.Errorf("step %d: personactl %s:\nstdout %q\nstderr %q\nexit %d\nwant\nstdout %q\nstderr %q\nexit %d",
				i, strings.Join(s.args, " "), out, errOut, code, s.out, s.errOut, s.code)
		}
	}
	if v := store.Current().Version(); v != 5 {
		t.Errorf("store version %d, want 5", v)
	}
}

// TestUploadAddNothing: an add or remove upload whose FILE holds no id
// sends nothing (an add would create the segment empty, from a mistyped
// --value say), unless --allow-empty; a first line that reads like a
// header but is uploaded as an id is named in a note.
func TestUploadAddNothing(t *testing.T) {
	addr, store := server(t)
	for _, mode := range []string{"add", "remove"} {
		out, errOut, code := ctl(t, addr, "# nothing yet\n", false, "segments", "upload", "--facet", "title", "--value", "cmoo", "--mode", mode, "-")
		want := "segments upload title:cmoo: stdin holds no user id; nothing uploaded"
		if mode == "add" {
			want += " (--allow-empty sends it: it creates the segment, empty, where there is none)"
		}
		want += "\n"
		if code != 0 || out != "" || errOut != want {
			t.Errorf("%s of nothing: exit %d, stdout %q, stderr %q; want 0, nothing, %q", mode, code, out, errOut, want)
		}
	}
	if n := store.Current().Len(); n != 0 {
		t.Errorf("%d segments after uploads of nothing, want 0", n)
	}
	if _, errOut, code := ctl(t, addr, "", false, "segments", "upload", "--facet", "title", "--value", "cmo", "--allow-empty", "-"); code != 0 {
		t.Fatalf("--allow-empty: exit %d, %s", code, errOut)
	}
	if store.Current().Segment("title", "cmo") == nil {
		t.Error("an add of nothing with --allow-empty did not create the segment")
	}
	_, errOut, code := ctl(t, addr, "Full Name,Company\nu1,Acme\n", false, "segments", "upload", "--facet", "title", "--value", "cmo", "-")
	if want := "note: the first line, \"Full Name\", was uploaded as a user id; if it is a header, --header yes skips it\n"; code != 0 || errOut != want {
		t.Errorf("a header-like first line: exit %d, stderr %q; want 0, %q", code, errOut, want)
	}
	// A first line of one word above ids with digits: the ids after it
	// are plain lines, which appendPlain took without next's look at
	// the first of them, and the note was lost.
	_, errOut, code = ctl(t, addr, "name\nu1\nu2\n", false, "segments", "upload", "--facet", "title", "--value", "cmo", "-")
	if want := "note: the first line, \"name\", was uploaded as a user id; if it is a header, --header yes skips it\n"; code != 0 || errOut != want {
		t.Errorf("a first line of one word: exit %d, stderr %q; want 0, %q", code, errOut, want)
	}
}

// TestUploadNothingSent: an upload that sends no id (its input holds
// none: empty, comments or a header only, every line invalid and
// skipped; its first line is invalid; it cannot be read) never opens a
// stream, so the server counts and logs no upload, rather than an
// aborted one; an empty upload sent with --allow-empty is an upload of 0
// ids, counted ok.
func TestUploadNothingSent(t *testing.T) {
	addr, store, reg := serverWithMetrics(t, "")
	dir := t.TempDir()
	// outcomes is personad_segment_uploads_total, by outcome.
	outcomes := func() string {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() == "personad_segment_uploads_total" {
				for _, m := range mf.GetMetric() {
					n[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
		return fmt.Sprintf("ok=%g invalid=%g aborted=%g failed=%g ", n["ok"], n["invalid"], n["aborted"], n["failed"])
	}
	for _, tc := range []struct {
		name, in string
		args     []string
		code     int
	}{
		{"empty add", "", []string{"--mode", "add"}, 0},
		{"comments only remove", "# nothing\n\n# yet\n", []string{"--mode", "remove"}, 0},
		{"header only replace", "user_id,email\r\n", []string{"--replace"}, 1},
		{"every line skipped", ",a\n\"\",b\n", []string{"--skip-invalid"}, 0},
		{"first line invalid", ",a\nu1\n", nil, 1},
		{"a directory", "", []string{dir}, 1},
	} {
		args := append([]string{"segments", "upload", "--facet", "title", "--value", "cmo"}, tc.args...)
		if len(tc.args) == 0 || tc.args[len(tc.args)-1] != dir {
			args = append(args, "-")
		}
		if _, stderr, code := ctl(t, addr, tc.in, false, args...); code != tc.code {
			t.Errorf("%s: exit %d, %q; want exit %d", tc.name, code, stderr, tc.code)
		}
		if got, want := outcomes(), "ok=0 invalid=0 aborted=0 failed=0 "; got != want {
			t.Errorf("after %s: uploads %s; want %s", tc.name, got, want)
		}
	}
	if store.Current().Len() != 0 {
		t.Errorf("%d segments after uploads of nothing; want 0", store.Current().Len())
	}
	if stdout, stderr, code := ctl(t, addr, "# none\n", false, "segments", "upload", "--facet", "title", "--value", "cmo", "--allow-empty", "-"); code != 0 || !strings.HasPrefix(stdout, "uploaded title:cmo mode=add ids=0 ") {
		t.Errorf("--allow-empty: exit %d, %q, %q; want an upload of 0 ids", code, stdout, stderr)
	}
	if got, want := outcomes(), "ok=1 invalid=0 aborted=0 failed=0 "; got != want {
		t.Errorf("after --allow-empty: uploads %s; want %s", got, want)
	}
}

// TestUploadProgress: on a terminal the progress bar is drawn on stderr;
// elsewhere stderr stays quiet.
func TestUploadProgress(t *testing.T) {
	addr, _ := server(t)
	var in strings.Builder
	for i := range 300_000 {
		fmt.Fprintf(&in, "p%07d\n", i)
	}
	_, quiet, code := ctl(t, addr, in.String(), false, "segments", "upload", "--facet", "title", "--value", "cfo", "--chunk-ids", "100", "-")
	if code != 0 || quiet != "" {
		t.Errorf("not a terminal: exit %d, stderr %q; want 0 and nothing", code, quiet)
	}
	_, bar, code := ctl(t, addr, in.String(), true, "segments", "upload", "--facet", "title", "--value", "cfo", "--chunk-ids", "100", "-")
	if code != 0 || !strings.Contains(bar, "title:cfo  ") || !strings.Contains(bar, "ids/s") {
		t.Errorf("terminal: exit %d, stderr %q; want a progress bar", code, bar)
	}
}

// TestUploadReplaceNothing: a replace upload whose FILE holds no id (empty,
// comments and a header only, or every line invalid and skipped) is
// refused and changes nothing, rather than emptying the segment; with
// --allow-empty it empties it.
func TestUploadReplaceNothing(t *testing.T) {
	addr, store := server(t)
	cardinality := func() uint64 {
		for _, s := range store.Current().Segments() {
			if s.Facet == "title" && s.Value == "cmo" {
				return s.Users.GetCardinality()
			}
		}
		return 0
	}
	if _, errOut, code := ctl(t, addr, "u1\nu2\n", false, "segments", "upload", "--facet", "title", "--value", "cmo", "-"); code != 0 {
		t.Fatalf("upload: exit %d, %s", code, errOut)
	}
	version := store.Current().Version()
	for _, tc := range []struct{ name, stdin string }{
		{"empty", ""},
		{"header only", "# exported 2026-11-27\nuser_id,email\n\n"},
		{"every line skipped", ",a\n,b\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := ctl(t, addr, tc.stdin, false, "segments", "upload", "--facet", "title", "--value", "cmo", "--replace", "--skip-invalid", "-")
			want := "personactl: segments upload title:cmo: stdin holds no user id, and a replace would empty the segment; nothing uploaded (--allow-empty empties it)\n"
			if code != 1 || !strings.HasSuffix(errOut, want) {
				t.Errorf("exit %d, stderr %q; want 1, ending %q", code, errOut, want)
			}
			if n, v := cardinality(), store.Current().Version(); n != 2 || v != version {
				t.Errorf("title:cmo has %d users at version %d, want 2 at %d", n, v, version)
			}
		})
	}
	if _, errOut, code := ctl(t, addr, "", false, "segments", "upload", "--facet", "title", "--value", "cmo", "--replace", "--allow-empty", "-"); code != 0 {
		t.Fatalf("--allow-empty: exit %d, %s", code, errOut)
	}
	if n := cardinality(); n != 0 {
		t.Errorf("after --allow-empty title:cmo has %d users, want 0", n)
	}
}

func TestLooksLikeHeader(t *testing.T) {
	for line, want := range map[string]bool{
		"Full Name,Company\n": true, "email,first_name\n": true, "u1,John Smith\n": false,
		"abc-def,Acme Corp\n": true, // words only: a note, harmless when wrong
		"u1\n":                false, "u00000042,cmo\n": false, "John 42,Acme\n": false, "name\n": false,
	} {
		if got := looksLikeHeader([]byte(line)); got != want {
			t.Errorf("looksLikeHeader(%q) = %t, want %t", line, got, want)
		}
	}
}

// TestHeaderNote: --header auto uploads a first line it does not know for
// a header as an id, and keeps it for a note when it reads like one: a
// CSV line of words, or one word (no digit) followed by an id with one.
func TestHeaderNote(t *testing.T) {
	for _, tc := range []struct{ in, header, first string }{
		{"Full Name,Company\nu1,Acme\n", "auto", "Full Name"},
		{"name\nu00000042\nu00000043\n", "auto", "name"},
		{"Customer Name\n12345\n", "auto", "Customer Name"},
		{"alice\nbob\n", "auto", ""}, // words all: ids of that kind
		{"name\n", "auto", ""},
		{"u1\nu2\n", "auto", ""},
		{"name\n# u1\n\nu2\n", "auto", "name"}, // comments and blanks between
		{"name\nu1\n", "no", ""},
		{"user_id\nu1\n", "auto", ""}, // a known header: skipped, no note
	} {
		ir := newIDReader(strings.NewReader(tc.in), tc.header)
		ids := readIDs(ir)
		if ir.first != tc.first {
			t.Errorf("%q --header %s: note for %q, want %q (ids %q)", tc.in, tc.header, ir.first, tc.first, ids)
		}
	}
}

// readIDs reads ir to its end, or its first error, and returns the ids.
func readIDs(ir *idReader) []string {
	ids, _ := readIDsErr(ir)
	return ids
}

// readIDsErr reads ir to its end, or its first error, and returns the ids
// and that error (nil at the end).
func readIDsErr(ir *idReader) ([]string, error) {
	var ids []string
	for {
		id, err := ir.next()
		if errors.Is(err, io.EOF) {
			return ids, nil
		}
		if err != nil {
			return ids, err
		}
		if id != nil {
			ids = append(ids, string(id))
		}
	}
}

// TestSemicolonSeparated: a file separated by semicolons (a CSV as
// spreadsheets save it in many locales) whose header names an id column
// is refused, even with --skip-invalid: its lines are no comma CSV, so
// each would be uploaded whole ("u1;Acme"), an id no bid request carries.
func TestSemicolonSeparated(t *testing.T) {
	addr, store := server(t)
	for _, args := range [][]string{
		{"--replace"},
		{"--skip-invalid"},
		{"--header", "yes"},
	} {
		args = append([]string{"segments", "upload", "--facet", "title", "--value", "cmo"}, append(args, "-")...)
		_, stderr, code := ctl(t, addr, "\ufeffUser_ID;Company\r\nu1;Acme\r\nu2;Initech\r\n", false, args...)
		const want = `personactl: segments upload title:cmo: reading stdin: line 1, "User_ID;Company", is the header of a file separated by semicolons, not commas: each of its lines would be uploaded whole, semicolons and all, as one id; save the file with commas, or the ids alone (nothing uploaded)` + "\n"
		if code != 1 || stderr != want {
			t.Errorf("%q: exit %d, %q; want exit 1, %q", args, code, stderr, want)
		}
	}
	if n := store.Current().Len(); n != 0 {
		t.Errorf("%d segments after refused uploads, want 0", n)
	}
	// A header of names that personactl does not know is one all the
	// same: before, "Kundennummer;E-Mail" and "123;a@b.de" were uploaded
	// as ids.
	for _, in := range []string{"Kundennummer;E-Mail\n123;a@b.de\n", "\"Kunden-Nr.\"; \"Straße\" ;Ort\n1;x;y\n", "\"user_id\";\"company\"\n1;x\n"} {
		ir := newIDReader(strings.NewReader(in), "auto")
		if ids, err := readIDsErr(ir); err == nil || !strings.Contains(err.Error(), "is the header of a file separated by semicolons") {
			t.Errorf("%q: ids %q, error %v; want the header refused", in, ids, err)
		}
	}
	// Without a header, or told there is none, a semicolon is part of an
	// id; so it is of a first line with a digit in each of its fields.
	for _, tc := range []struct{ in, header string }{{"u1;a\nu2\n", "auto"}, {"id;x\nu2\n", "no"}, {"Kundennummer;E-Mail\nu2\n", "no"}, {"a;b2\nu2\n", "auto"}, {";\nu2\n", "auto"}, {"# a;b\nu1;x\nu2\n", "auto"}} {
		ir := newIDReader(strings.NewReader(tc.in), tc.header)
		if ids := readIDs(ir); len(ids) != 2 {
			t.Errorf("%q --header %s: ids %q, want 2", tc.in, tc.header, ids)
		}
	}
}

// TestArgumentsNotUTF8: an argument that gRPC must send as a string and
// is not UTF-8 text is refused naming it, before any call: the client
// failed to marshal it, "Internal: grpc: error while marshaling", which
// reads as the server's fault and names no argument.
func TestArgumentsNotUTF8(t *testing.T) {
	addr, store := server(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"segments", "upload", "--facet", "title", "--value", "cmo", "--key", "k\xff1", "-"}, `segments upload: --key "k\xff1" is not UTF-8 text`},
		{[]string{"segments", "upload", "--facet", "title", "--value", "cm\xe9", "-"}, `segments upload: --value "cm\xe9" is not UTF-8 text`},
		{[]string{"segments", "lookup", "u\xff1"}, `segments lookup: USER_ID "u\xff1" is not UTF-8 text (bid requests carry only UTF-8 ids, and lookups send only those)`},
		{[]string{"segments", "delete", "--facet", "titl\xe9", "--value", "cmo"}, `segments delete: --facet "titl\xe9" is not UTF-8 text`},
		{[]string{"segments", "list", "--facet", "titl\xe9"}, `segments list: --facet "titl\xe9" is not UTF-8 text`},
	} {
		_, stderr, code := ctl(t, addr, "u1\n", false, tc.args...)
		if want := "personactl: " + tc.want + "\n"; code != 2 || stderr != want {
			t.Errorf("%q: exit %d, %q; want exit 2, %q", tc.args, code, stderr, want)
		}
	}
	if v := store.Current().Version(); v != 0 {
		t.Errorf("store version %d, want 0", v)
	}
}

// TestUploadReplaceAllSkipped: a --replace --skip-invalid whose every
// line is invalid is refused, as a replace of nothing is, and names the
// lines it skipped, as an add of them does: the file held ids, none valid
// (a binary file, say), which "holds no user id" alone does not tell, and
// its hint, --allow-empty, would empty the segment.
func TestUploadReplaceAllSkipped(t *testing.T) {
	addr, store := server(t)
	if _, errOut, code := ctl(t, addr, "u1\nu2\n", false, "segments", "upload", "--facet", "title", "--value", "cmo", "-"); code != 0 {
		t.Fatalf("upload: exit %d, %s", code, errOut)
	}
	_, errOut, code := ctl(t, addr, "u\x003\n,u4\n", false, "segments", "upload", "--facet", "title", "--value", "cmo", "--replace", "--skip-invalid", "-")
	const want = "skipped 2 invalid lines:\n" +
		"  line 1: user id holds the control character 0x00 (a binary or compressed file?)\n" +
		"  line 2: empty user id\n" +
		"personactl: segments upload title:cmo: stdin holds no user id, and a replace would empty the segment; nothing uploaded (--allow-empty empties it)\n"
	if code != 1 || errOut != want {
		t.Errorf("exit %d, stderr %q; want 1, %q", code, errOut, want)
	}
	if n := store.Current().Segment("title", "cmo").Users.GetCardinality(); n != 2 {
		t.Errorf("title:cmo has %d users, want 2", n)
	}
}

// TestUploadGzip: gzip-compressed input (ids.csv.gz, as CRMs export it,
// or gzip's output on stdin) is read decompressed; before, each of its
// "lines" was invalid ("not UTF-8 text"), and with --skip-invalid a
// short run of compressed bytes could be uploaded as an id. A damaged or
// truncated one is refused, naming the compression, and changes nothing.
func TestUploadGzip(t *testing.T) {
	addr, store := server(t)
	gz := func(s string) []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write([]byte(s)) //nolint:errcheck // a bytes.Buffer
		zw.Close()
		return b.Bytes()
	}
	var csv strings.Builder
	csv.WriteString("\ufeffuser_id,name\r\n")
	for i := range 20_000 {
		fmt.Fprintf(&csv, "z%05d,\"Smith, J\"\r\n", i)
	}
	csv.WriteString("\"z,last\",x") // no final newline
	data := gz(csv.String())
	file := filepath.Join(t.TempDir(), "ids.csv.gz")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	upload := "segments upload --facet title --value cmo"
	for _, tc := range []struct {
		args, stdin string
		out, errOut string
		code        int
	}{
		{upload + " --replace " + file, "", "uploaded title:cmo mode=replace ids=20001 added=20001 removed=0 unchanged=0 new_users=20001 invalid=0 cardinality=20001 version=1\n", "", 0},
		{upload + " --mode remove -", string(gz("z00007\n")), "uploaded title:cmo mode=remove ids=1 added=0 removed=1 unchanged=0 new_users=0 invalid=0 cardinality=20000 version=2\n", "", 0},
		{"segments lookup z,last", "", "title:cmo\n", "", 0},
		{upload + " --skip-invalid -", string(data[:len(data)/2]), "",
			"personactl: segments upload title:cmo: reading stdin: the input is gzip-compressed, and does not decompress (damaged, or cut short?): unexpected EOF (nothing uploaded)\n", 1},
		{upload + " -", "\x1f\x8bnot gzip\n", "",
			"personactl: segments upload title:cmo: reading stdin: the input is gzip-compressed, and does not decompress (damaged, or cut short?): gzip: invalid header (nothing uploaded)\n", 1},
	} {
		out, errOut, code := ctl(t, addr, tc.stdin, false, strings.Fields(tc.args)...)
		if i := strings.Index(out, " replayed="); i >= 0 {
			out = out[:i] + "\n"
		}
		if out != tc.out || errOut != tc.errOut || code != tc.code {
			t.Errorf("personactl %s:\nstdout %q\nstderr %q\nexit %d\nwant\nstdout %q\nstderr %q\nexit %d", tc.args, out, errOut, code, tc.out, tc.errOut, tc.code)
		}
	}
	if v := store.Current().Version(); v != 2 {
		t.Errorf("store version %d, want 2", v)
	}
	// The progress bar measures the compressed bytes read against the
	// file's size.
	ir := newIDReader(bytes.NewReader(data), "auto")
	if ids := readIDs(ir); len(ids) != 20_001 || ir.consumed() != int64(len(data)) {
		t.Errorf("%d ids, %d bytes consumed; want 20001, %d", len(ids), ir.consumed(), len(data))
	}
}

// TestUploadRepeatedIDs: ids repeated in a file are counted once, so the
// summary's added and unchanged fell short of its ids with no word why
// (ids=4 added=2 unchanged=0); a note now says what became of the rest.
func TestUploadRepeatedIDs(t *testing.T) {
	addr, _ := server(t)
	for _, tc := range []struct {
		args, stdin, out, errOut string
	}{
		{"", "d1\nd2\nd1\nd1\n", "mode=add ids=4 added=2 removed=0 unchanged=0", "note: 2 of the 4 ids repeat ids before them in the input, counted once\n"},
		{"--replace", "d2\nd3\nd3\n", "mode=replace ids=3 added=1 removed=1 unchanged=1", "note: 1 of the 3 ids repeats an id before it in the input, counted once\n"},
		{"--mode remove", "d2\nd2\nnobody\nd1\n", "mode=remove ids=4 added=0 removed=1 unchanged=1",
			"note: 2 of the 4 ids are repeated in the input or unknown to the server (in no segment), counted neither as removed nor as unchanged\n"},
		{"", "d2\nd4\n", "mode=add ids=2 added=2 removed=0 unchanged=0", ""},
	} {
		args := append(append([]string{"segments", "upload", "--facet", "title", "--value", "dup"}, strings.Fields(tc.args)...), "-")
		out, errOut, code := ctl(t, addr, tc.stdin, false, args...)
		if code != 0 || !strings.Contains(out, " "+tc.out+" ") || errOut != tc.errOut {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 0, %q, %q", tc.args, code, out, errOut, tc.out, tc.errOut)
		}
	}
}

// TestSpreadsheetNumbers: a long numeric id that a spreadsheet shows, and
// saves, in scientific notation (1.23457E+11) has lost its digits: it was
// uploaded as an id no user has; it is now an invalid line, named, on the
// fast path for plain lines as on the slow one.
func TestSpreadsheetNumbers(t *testing.T) {
	for _, tc := range []struct {
		id  string
		sci bool
	}{
		{"1.23457E+11", true}, {"4E+15", true}, {"9,87654E+12", true}, {"1.2e+20", true},
		{"1", false}, {"1E", false}, {"1E+", false}, {"1.E+11", false}, {"12.3E+11", false}, {"1.23E-05", false},
		{"1.23E+11x", false}, {"3e81", false}, {"a1.2E+11", false}, {"u1", false},
	} {
		if got := sciNumber([]byte(tc.id)); got != tc.sci {
			t.Errorf("sciNumber(%q) = %t, want %t", tc.id, got, tc.sci)
		}
	}
	addr, store := server(t)
	var in strings.Builder
	in.WriteString("user_id,name\n")
	for i := range 1000 {
		fmt.Fprintf(&in, "%d\n", 100000+i)
	}
	in.WriteString("1.23457E+11\n\"4.5679E+11\",x\n")
	_, errOut, code := ctl(t, addr, in.String(), false, "segments", "upload", "--facet", "title", "--value", "cmo", "-")
	const want = "personactl: segments upload title:cmo: stdin has 2 invalid lines; nothing uploaded (--skip-invalid uploads the rest):\n" +
		"  line 1002: user id 1.23457E+11 is a number a spreadsheet rounded (scientific notation): the id is lost; format the id column as text, and export it again\n" +
		"  line 1003: user id 4.5679E+11 is a number a spreadsheet rounded (scientific notation): the id is lost; format the id column as text, and export it again\n"
	if code != 1 || errOut != want {
		t.Errorf("exit %d, stderr %q; want exit 1, %q", code, errOut, want)
	}
	if v := store.Current().Version(); v != 0 {
		t.Errorf("store version %d after a refused upload, want 0", v)
	}
}

// TestConcatenatedExports: exports put end to end (cat a.csv b.csv) repeat
// the header, each after a UTF-8 byte order mark when the exports had
// one: "\ufeffuser_id" and "user_id" were uploaded as user ids; a line
// that is the skipped header again is now skipped, a byte order mark
// starting any line dropped, on the fast path for plain lines as on the
// slow one.
func TestConcatenatedExports(t *testing.T) {
	addr, _ := server(t)
	var plain strings.Builder
	for _, part := range []string{"a", "b"} {
		plain.WriteString("user_id\n")
		for i := range 1000 {
			fmt.Fprintf(&plain, "%s%d\n", part, i)
		}
	}
	for _, tc := range []struct{ name, in, header string }{
		{"csv with byte order marks", "\ufeffuser_id,name\r\nu1,a\r\n\ufeffuser_id,name\r\nu2,b\r\n", "user_id,name"},
		{"plain", plain.String(), "user_id"},
	} {
		out, errOut, code := ctl(t, addr, tc.in, false, "segments", "upload", "--facet", "title", "--value", "cmo", "-")
		if code != 0 || !strings.Contains(out, " invalid=0 ") || errOut != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 0, no note", tc.name, code, out, errOut)
		}
		for _, id := range []string{"user_id", "\ufeffuser_id"} {
			if _, errOut, code := ctl(t, addr, "", false, "segments", "lookup", id); code != 1 || !strings.Contains(errOut, "in no uploaded segment") {
				t.Errorf("%s: segments lookup %q: exit %d, %q; want the header in no segment", tc.name, id, code, errOut)
			}
		}
	}
	// Told there is no header, the first line is an id, and so is the
	// same line later.
	ir := newIDReader(strings.NewReader("user_id\nu1\nuser_id\n"), "no")
	if ids := readIDs(ir); !slices.Equal(ids, []string{"user_id", "u1", "user_id"}) {
		t.Errorf("--header no: ids %q", ids)
	}
}

// TestInvalidLinesMore: of more invalid lines than it names, the error
// (and --skip-invalid's summary) says how many it leaves out; it listed
// five under "has 7 invalid lines", which read as a list cut short.
func TestInvalidLinesMore(t *testing.T) {
	addr, store := server(t)
	in := "u1\n" + strings.Repeat(",x\n", 7) + "u2\n"
	lines := "  line 2: empty user id\n  line 3: empty user id\n  line 4: empty user id\n  line 5: empty user id\n  line 6: empty user id\n  and 2 more\n"
	_, errOut, code := ctl(t, addr, in, false, "segments", "upload", "--facet", "title", "--value", "cmo", "-")
	if want := "personactl: segments upload title:cmo: stdin has 7 invalid lines; nothing uploaded (--skip-invalid uploads the rest):\n" + lines; code != 1 || errOut != want {
		t.Errorf("exit %d, stderr %q; want exit 1, %q", code, errOut, want)
	}
	if v := store.Current().Version(); v != 0 {
		t.Errorf("store version %d after a refused upload, want 0", v)
	}
	_, errOut, code = ctl(t, addr, in, false, "segments", "upload", "--facet", "title", "--value", "cmo", "--skip-invalid", "-")
	if want := "skipped 7 invalid lines:\n" + lines; code != 0 || errOut != want {
		t.Errorf("--skip-invalid: exit %d, stderr %q; want exit 0, %q", code, errOut, want)
	}
}

// TestTabSeparated: a tab-separated export (a spreadsheet's "Text (Tab
// delimited)", a CRM's TSV) was refused line by line, "user id holds a
// tab"; a file whose first line has a tab before any comma is now read as
// TSV, its first column the id, quoted as in CSV, commas being text.
func TestTabSeparated(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		ids      []string
		invalid  []string
		err      string
	}{
		{"tsv", "\ufeff# export\r\nuser_id\temail\tnote\r\nt1\ta@b\t\r\n\"t,2\"\tc@d\r\n \"t\"\"3\" \t\"Smith, J\"\r\nt4\r\n\tno id\r\nt5 \t x\r\n",
			[]string{"t1", "t,2", `t"3`, "t4", "t5"}, []string{"line 7: empty user id"}, ""},
		{"tsv without a header", "a1\tx\nb,2\ty\n", []string{"a1", "b,2"}, nil, ""},
		{"tsv open quote", "id\tnote\nt1\t\"multi\nline\"\nt2\tx\n", nil, nil, "line 2 opens a quoted field"},
		// A comma first: CSV, whose later fields may hold tabs.
		{"csv with tabs", "id,note\nu1,a\tb\nu2\tx,y\n", []string{"u1"},
			[]string{"line 3: user id holds a tab (a file is read as tab-separated, TSV, when its first line has a tab before any comma; else as CSV)"}, ""},
	} {
		ir := newIDReader(strings.NewReader(tc.in), "auto")
		ids, err := readIDsErr(ir)
		var invalid []string
		for _, l := range ir.invalid {
			invalid = append(invalid, l.String())
		}
		if !slices.Equal(ids, tc.ids) || !slices.Equal(invalid, tc.invalid) || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: ids %q, invalid %q, error %v; want %q, %q, %q", tc.name, ids, invalid, err, tc.ids, tc.invalid, tc.err)
		}
	}
	addr, _ := server(t)
	var in strings.Builder
	in.WriteString("Contact ID\tEmail\tCompany\n")
	for i := range 1000 {
		fmt.Fprintf(&in, "c%04d\tp%d@example.com\tAcme, Inc.\n", i, i)
	}
	out, errOut, code := ctl(t, addr, in.String(), false, "segments", "upload", "--facet", "title", "--value", "cmo", "-")
	if code != 0 || !strings.Contains(out, " ids=1000 added=1000 ") || errOut != "" {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1000 ids added", code, out, errOut)
	}
	if out, _, code := ctl(t, addr, "", false, "segments", "lookup", "c0999"); code != 0 || out != "title:cmo\n" {
		t.Errorf("segments lookup c0999: exit %d, %q", code, out)
	}
}

// TestHeaderSpellings: an id column's name as exports spell it, "E-Mail",
// "ContactID", "Lead ID", is a header with --header auto; before, only
// the spellings listed were ("e_mail" and "contactid" were not), and
// "E-Mail" above a list of addresses was uploaded as a user id, without
// a note (no address holds a digit to tell it from them).
func TestHeaderSpellings(t *testing.T) {
	for _, in := range []string{
		"E-Mail\nhans@example.de\nanna@example.de\n",
		"ContactID,Name\nhans@example.de,Hans\nanna@example.de,Anna\n",
		"Lead ID\tCompany\nhans@example.de\tAcme\nanna@example.de\tInitech\n",
		"\"USER.ID\"\nhans@example.de\nanna@example.de\n",
		"Email_SHA256\nhans@example.de\nanna@example.de\n",
	} {
		ir := newIDReader(strings.NewReader(in), "auto")
		if ids := readIDs(ir); !slices.Equal(ids, []string{"hans@example.de", "anna@example.de"}) || ir.first != "" {
			t.Errorf("%q: ids %q, note %q; want the header skipped", in, ids, ir.first)
		}
	}
	// An id that is no column's name stays an id.
	ir := newIDReader(strings.NewReader("hans\nanna\n"), "auto")
	if ids := readIDs(ir); len(ids) != 2 {
		t.Errorf("ids %q, want 2", ids)
	}
}

// TestOldMacLineEndings: a file whose lines end in a carriage return
// alone (a spreadsheet's "CSV (Macintosh)") is one line; it was refused
// as "user id holds a carriage return" only when that line was at most
// 256 bytes: a longer one read "user id is 1399 bytes", one over 1 MiB
// "line is longer than 1 MiB", neither saying why. Each now names the
// line endings.
func TestOldMacLineEndings(t *testing.T) {
	addr, store := server(t)
	for _, n := range []int{5, 100, 150_000} {
		var in strings.Builder
		for i := range n {
			fmt.Fprintf(&in, "p%07d\r", i)
		}
		_, errOut, code := ctl(t, addr, in.String(), false, "segments", "upload", "--facet", "title", "--value", "cmo", "-")
		if code != 1 || !strings.Contains(errOut, "\n  line 1: ") || !strings.Contains(errOut, "carriage return") || !strings.Contains(errOut, "old Mac line endings") {
			t.Errorf("%d ids: exit %d, stderr %q; want exit 1, line 1 named for its line endings", n, code, errOut)
		}
	}
	// A CSV or TSV with CR line endings is one line too, whose first
	// field is the first id, or the header, or a comment: the other ids
	// went without a word (u1 alone uploaded, or nothing, exit 0).
	for _, in := range []string{
		"u1,a\ru2,b\ru3,c\r",
		"user_id,name\ru1,a\ru2,b\r",
		"user_id\tname\ru1\ta\ru2\tb\r",
		"# export\ru1\ru2\r",
	} {
		_, errOut, code := ctl(t, addr, in, false, "segments", "upload", "--facet", "title", "--value", "cmo", "-")
		if code != 1 || !strings.Contains(errOut, "\n  line 1: ") || !strings.Contains(errOut, "old Mac line endings") {
			t.Errorf("%q: exit %d, stderr %q; want exit 1, line 1 named for its line endings", in, code, errOut)
		}
	}
	if v := store.Current().Version(); v != 0 {
		t.Errorf("store version %d after refused uploads, want 0", v)
	}
}

// TestEmptyRows: a spreadsheet exports the formatted rows below its data
// as separators alone (",,,"); each was an invalid line, "empty user
// id", which refused the whole upload; they are now blank lines. A row
// with a cell filled in but not the id's is still invalid.
func TestEmptyRows(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"csv", "user_id,name,company\r\nu1,a,b\r\n,,\r\n , ,\r\n,\t,\r\n", "u1"},
		{"tsv", "user_id\tname\nu1\ta\n\t\t\n \t \n", "u1"},
	} {
		ir := newIDReader(strings.NewReader(tc.in), "auto")
		if ids := readIDs(ir); !slices.Equal(ids, []string{tc.want}) || ir.nbad != 0 {
			t.Errorf("%s: ids %q, invalid %v; want %q alone", tc.name, ids, ir.invalid, tc.want)
		}
	}
	ir := newIDReader(strings.NewReader("u1,a\n,,x\n"), "auto")
	if ids := readIDs(ir); len(ids) != 1 || ir.nbad != 1 {
		t.Errorf("a row with no id: ids %q, invalid %v; want it invalid", ids, ir.invalid)
	}
}

// TestIDColumnNotFirst: a CRM export whose id column is not the first
// ("First Name,Last Name,Email") uploaded its first column, first names,
// as user ids, with only a note that the header line was uploaded too; a
// header whose first column is no id column's name and a later one is
// is now refused, naming both, even with --skip-invalid. --header yes
// (the first column holds the ids) uploads the file as before.
func TestIDColumnNotFirst(t *testing.T) {
	addr, store := server(t)
	for _, tc := range []struct{ in, want string }{
		{"First Name,Last Name,Email\r\nJohn,Smith,john@example.com\r\n",
			`line 1 is a header whose id column, "Email", is column 3, not the first, "First Name", which is what is uploaded: move the id column first, or upload it alone; if the first column holds the ids, --header yes skips this line`},
		{"\"Company\"\t\"Contact ID\"\nAcme\tc1\n",
			`line 1 is a header whose id column, "Contact ID", is column 2, not the first, "Company", which is what is uploaded: move the id column first, or upload it alone; if the first column holds the ids, --header yes skips this line`},
	} {
		for _, flags := range [][]string{nil, {"--skip-invalid"}} {
			args := append(append([]string{"segments", "upload", "--facet", "title", "--value", "cmo"}, flags...), "-")
			_, errOut, code := ctl(t, addr, tc.in, false, args...)
			if want := "personactl: segments upload title:cmo: reading stdin: " + tc.want + " (nothing uploaded)\n"; code != 1 || errOut != want {
				t.Errorf("%q %q: exit %d, %q; want exit 1, %q", tc.in, flags, code, errOut, want)
			}
		}
	}
	if v := store.Current().Version(); v != 0 {
		t.Errorf("store version %d after refused uploads, want 0", v)
	}
	ir := newIDReader(strings.NewReader("First Name,Email\nJohn,john@example.com\n"), "yes")
	if ids := readIDs(ir); !slices.Equal(ids, []string{"John"}) {
		t.Errorf("--header yes: ids %q, want John", ids)
	}
	// No id column named: uploaded, with the note.
	ir = newIDReader(strings.NewReader("Full Name,Company\nu1,x\n"), "auto")
	if ids := readIDs(ir); len(ids) != 2 || ir.first != "Full Name" {
		t.Errorf("no id column: ids %q, note %q", ids, ir.first)
	}
}

// TestSniffWaitsForNoMore: looking for a gzip or zip header at the start
// of the input asks for no more bytes than the shortest id line holds,
// so that a slow pipe's first id, "ab\n", is read at once, not held back
// until a fourth byte comes (a zip header's length). Before, next blocked
// here, and the test would hang until its timeout.
func TestSniffWaitsForNoMore(t *testing.T) {
	pr, pw := io.Pipe()
	more := make(chan struct{})
	go func() {
		pw.Write([]byte("ab\n")) //nolint:errcheck // read below
		<-more
		pw.Close()
	}()
	ir := newIDReader(pr, "no")
	id, err := ir.next()
	close(more)
	if string(id) != "ab" || err != nil {
		t.Errorf("next() = %q, %v; want ab", id, err)
	}
	if _, err := ir.next(); !errors.Is(err, io.EOF) {
		t.Errorf("then %v, want EOF", err)
	}
}

// FuzzPlainPath: the same input gives the same ids, invalid lines, line
// count and bytes read whether next reads every line or readChunks lets
// appendPlain take the plain ones, whatever --header says.
func FuzzPlainPath(f *testing.F) {
	for _, s := range []string{
		"user_id\nu1\nuser_id\nu2\n", "id\n1.23457E+11\nu1\n", "u1\n\ufeffu2\n#c\nu3", "a,b\nu1\n,,\nu2\r\nu3\n",
		"name\nu1\nu2\n", "x\ty\nu1\nu2,z\n", "\ufeffemail\na@b.c\nemail\nc@d.e\n",
	} {
		f.Add([]byte(s), uint8(0))
	}
	f.Fuzz(func(t *testing.T, in []byte, mode uint8) {
		if bytes.HasPrefix(in, gzipMagic) {
			return // read decompressed: as random bytes, it ends at once
		}
		header := []string{"auto", "yes", "no"}[mode%3]
		ref := newIDReader(bytes.NewReader(in), header)
		var want []string
		var wantErr error
		for {
			id, err := ref.next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					wantErr = err
				}
				break
			}
			if id != nil {
				want = append(want, string(id))
			}
		}
		for _, chunkIDs := range []int{1, 3, defaultChunkIDs} {
			ir := newIDReader(bytes.NewReader(in), header)
			o := &uploadOptions{chunkIDs: chunkIDs, skipInvalid: true}
			chunks := make(chan uploadChunk)
			errc := make(chan error, 1)
			go func() {
				defer close(chunks)
				errc <- readChunks(ir, o, new(progress), chunks, nil)
			}()
			var got []string
			for c := range chunks {
				if c.packed != nil {
					got = append(got, strings.Split(strings.TrimSuffix(string(c.packed), "\n"), "\n")...)
				}
			}
			err := <-errc
			if wantErr != nil {
				// The ids before an error are read, not sent: compare the errors.
				if err == nil || err.Error() != wantErr.Error() {
					t.Fatalf("%s, chunk-ids %d: error %v, want %v", header, chunkIDs, err, wantErr)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s, chunk-ids %d: %v", header, chunkIDs, err)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Fatalf("%s, chunk-ids %d: ids (-next +chunks):\n%s", header, chunkIDs, d)
			}
			if d := cmp.Diff(ref.invalid, ir.invalid, cmp.AllowUnexported(invalidLine{})); d != "" || ir.nbad != ref.nbad || ir.line != ref.line || ir.read != ref.read || ir.first != ref.first {
				t.Fatalf("%s, chunk-ids %d: %d invalid, %d lines, %d bytes, first %q; want %d, %d, %d, %q (-next +chunks):\n%s",
					header, chunkIDs, ir.nbad, ir.line, ir.read, ir.first, ref.nbad, ref.line, ref.read, ref.first, d)
			}
		}
	})
}
