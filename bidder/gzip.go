package bidder

import (
	"io"
	"strings"
	"sync"

	kgzip "github.com/klauspost/compress/gzip"
)

// Compressed answers of the OpenRTB JSON wire (OpenRTB 2.6 §2.4: an
// exchange that sends Accept-Encoding: gzip is answered with
// Content-Encoding: gzip).
//
// The compressor is klauspost/compress's stateless gzip: a bid answer is
// one Write, so a compressor that keeps no window between Writes loses
// nothing. Its Writer holds some 14 KB, and takes ~270 KB of scratch
// from klauspost's own pools only while it compresses; compress/gzip's
// Writer holds 1.2 MB at BestSpeed (klauspost's BestSpeed 0.8 MB), in
// gzipWriters once per answer compressed at the same time. On the demo
// world's bid answer (1106 bytes, testdata/demo-answer.json) it took 30%
// less time than compress/gzip at BestSpeed (11.4 against 16.4 µs on the
// project's loaded 2-core VM) for the same 609 bytes; compress/gzip's
// default level made it 22 bytes smaller (587) for 70% more time than
// BestSpeed, as it clears 640 KB of tables at each Reset
// (BenchmarkGzipAnswer, BENCHMARKS.md §1).

// gzipMinSize is the smallest answer worth compressing: below it gzip
// saves a few bytes or adds some (a 103-byte JSON error became 106, a
// 150-byte prefix of the demo answer 147, 200 bytes 194, 300 bytes 256:
// the 18 bytes of gzip's header and trailer and a Huffman table that does
// not pay back on a short text) for the microseconds compressing costs.
const gzipMinSize = 256

// gzipWriters recycles the answers' compressors; each is reset to
// io.Discard before it is put back, so that the pool holds no
// ResponseWriter.
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := kgzip.NewWriterLevel(io.Discard, kgzip.StatelessCompression)
	return zw
}}

// writeGzip writes body to w compressed with gzip. The caller has set
// Content-Encoding.
func writeGzip(w io.Writer, body []byte) error {
	zw := gzipWriters.Get().(*kgzip.Writer)
	zw.Reset(w)
	_, err := zw.Write(body)
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	zw.Reset(io.Discard)
	gzipWriters.Put(zw)
	return err
}

// acceptsGzip reports whether an Accept-Encoding header (its values, one
// per header line) accepts a gzip answer, as RFC 9110 §12.5.3 reads it:
// a comma-separated list of codings, each with an optional weight
// ";q=" from 0 to 1 (default 1), case-insensitive. gzip (or x-gzip, its
// alias) takes the weight of its own entry, else that of "*", else it
// is not accepted; a weight of 0 refuses it ("gzip;q=0", or "*;q=0"
// without a gzip entry). It is also not chosen when the client weighs
// identity (its own entry, else "*") above it: "identity, gzip;q=0.5"
// prefers the answer uncompressed. An entry whose weight does not parse
// is ignored. No header accepts nothing: the answer is not compressed.
func acceptsGzip(values []string) bool {
	gzipQ, starQ, identityQ := -1, -1, -1 // thousandths; -1: not listed
	for _, v := range values {
		for v != "" {
			var entry string
			entry, v, _ = strings.Cut(v, ",")
			coding, params, _ := strings.Cut(entry, ";")
			coding = strings.TrimSpace(coding)
			q, ok := weight(params)
			if !ok {
				continue
			}
			switch {
			case strings.EqualFold(coding, "gzip"), strings.EqualFold(coding, "x-gzip"):
				gzipQ = max(gzipQ, q)
			case coding == "*":
				starQ = max(starQ, q)
			case strings.EqualFold(coding, "identity"):
				identityQ = max(identityQ, q)
			}
		}
	}
	if gzipQ < 0 {
		gzipQ = starQ
	}
	if identityQ < 0 {
		identityQ = starQ
	}
	return gzipQ > 0 && gzipQ >= identityQ
}

// weight reads the weight among a coding's parameters (";q=0.5"), in
// thousandths: 1000 when there is none, ok false when it does not parse
// as RFC 9110's qvalue (0 to 1, at most three decimals).
func weight(params string) (q int, ok bool) {
	q = 1000
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		name, val, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		return parseQ(strings.TrimSpace(val))
	}
	return q, true
}

// parseQ parses a qvalue: "0", "1", or either followed by "." and up to
// three digits, "1" only by zeros.
func parseQ(s string) (int, bool) {
	if s == "" || (s[0] != '0' && s[0] != '1') {
		return 0, false
	}
	q := int(s[0]-'0') * 1000
	if len(s) == 1 {
		return q, true
	}
	if s[1] != '.' || len(s) > 5 {
		return 0, false
	}
	scale := 100
	for _, c := range []byte(s[2:]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		q += int(c-'0') * scale
		scale /= 10
	}
	if q > 1000 {
		return 0, false
	}
	return q, true
}
