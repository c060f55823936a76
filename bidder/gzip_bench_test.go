package bidder

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"runtime"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// BenchmarkGzipAnswer compresses answers of the OpenRTB JSON wire with
// the compressors considered for them (gzip.go): the demo world's bid
// answer (testdata/demo-answer.json, 1106 bytes, notice URLs included),
// prefixes of it around gzipMinSize, and a JSON error. gzbytes is the
// compressed size, writer-B the memory a writer holds. Compare the
// compressors with benchstat -col /zip.
func BenchmarkGzipAnswer(b *testing.B) {
	demo, err := os.ReadFile("testdata/demo-answer.json")
	if err != nil {
		b.Fatal(err)
	}
	bodies := []struct {
		name string
		body []byte
	}{
		{"demo", demo},
		{"300B", demo[:300]},
		{"200B", demo[:200]},
		{"150B", demo[:150]},
		{"error", []byte(`{"error":"bidder: imp[0].banner.format[2].w: must be > 0","field":"imp[0].banner.format[2].w","nbr":2}` + "\n")},
	}
	type resetWriter interface {
		io.WriteCloser
		Reset(io.Writer)
	}
	zips := []struct {
		name string
		new  func() resetWriter
	}{
		{"std-1", func() resetWriter { w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed); return w }},
		{"std-6", func() resetWriter { w, _ := gzip.NewWriterLevel(io.Discard, gzip.DefaultCompression); return w }},
		{"klauspost-1", func() resetWriter { w, _ := kgzip.NewWriterLevel(io.Discard, kgzip.BestSpeed); return w }},
		{"klauspost-6", func() resetWriter { w, _ := kgzip.NewWriterLevel(io.Discard, kgzip.DefaultCompression); return w }},
		{"klauspost-stateless", func() resetWriter {
			w, _ := kgzip.NewWriterLevel(io.Discard, kgzip.StatelessCompression)
			return w
		}},
	}
	for _, body := range bodies {
		for _, z := range zips {
			b.Run("body="+body.name+"/zip="+z.name, func(b *testing.B) {
				// writer-B: what a writer takes, made and used once
				// (what each pooled writer holds).
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				zw := z.new()
				zw.Write(body.body)
				zw.Close()
				runtime.ReadMemStats(&after)
				var out bytes.Buffer
				b.SetBytes(int64(len(body.body)))
				b.ReportAllocs()
				for b.Loop() {
					out.Reset()
					zw.Reset(&out)
					zw.Write(body.body)
					zw.Close()
				}
				b.ReportMetric(float64(out.Len()), "gzbytes")
				b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc), "writer-B")
			})
		}
	}
}
