package main

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkReadChunks reads a file of ids as an upload does (readChunks
// into chunks), without the server: plain numeric ids (a CRM's), hex
// hashes (SHA-256 of emails), and a CSV of the ids and a second column,
// which the slow path reads. It reports ids/s.
func BenchmarkReadChunks(b *testing.B) {
	const n = 1 << 20
	for _, tc := range []struct {
		name string
		line func(i int) string
	}{
		{"numeric", func(i int) string { return fmt.Sprintf("%d\n", 100000000000+i*7919) }},
		{"sha256", func(i int) string { return fmt.Sprintf("%064x\n", uint64(i)*0x9e3779b97f4a7c15) }},
		{"csv", func(i int) string { return fmt.Sprintf("u%d,Acme Corp\n", i) }},
	} {
		var in bytes.Buffer
		in.WriteString("user_id\n")
		for i := range n {
			in.WriteString(tc.line(i))
		}
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(in.Len()))
			for b.Loop() {
				ir := newIDReader(bytes.NewReader(in.Bytes()), "auto")
				o := &uploadOptions{chunkIDs: defaultChunkIDs}
				chunks := make(chan uploadChunk, 4)
				errc := make(chan error, 1)
				go func() {
					defer close(chunks)
					errc <- readChunks(ir, o, new(progress), chunks, nil)
				}()
				ids := 0
				for c := range chunks {
					ids += c.ids
				}
				if err := <-errc; err != nil || ids != n {
					b.Fatalf("%d ids, %v; want %d", ids, err, n)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "ids/s")
		})
	}
}
