package segments

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

var benchUploadIDs = flag.Int("uploadids", 1<<20, "ids per upload in BenchmarkStoreUpload")

// BenchmarkStoreUpload uploads -uploadids new ids, then the same ids again
// (known: in the order they were first uploaded, and shuffled), to a
// durable store already holding 1M users, in chunks as the gRPC service
// hands them over: the server side of an upload without the network, with
// the expected id count personactl sends. It reports ids/s and the time
// spent adding chunks (which interns new ids) and committing. Known ids
// in their first order continue runs of users (Upload.lookup); shuffled,
// each is a lookup at a random place in the dictionary's table.
func BenchmarkStoreUpload(b *testing.B) {
	n := *benchUploadIDs
	const chunk = 32 << 10
	for _, name := range []string{"new", "known", "known-shuffled"} {
		known := name != "new"
		b.Run(name, func(b *testing.B) {
			st := openStore(b, b.TempDir())
			base := NewBuilder()
			base.Grow(1_000_000)
			for i := range 1_000_000 {
				base.Intern(demoID(i))
			}
			st.Publish(base.BuildAt(1, testTime))
			order := make([]int, n)
			for i := range order {
				order[i] = i
			}
			packed := func(r int) [][]byte {
				var chunks [][]byte
				for c := 0; c < n; c += chunk {
					var p []byte
					for _, i := range order[c:min(c+chunk, n)] {
						p = fmt.Appendf(p, "r%03d-%09d\n", r, i)
					}
					chunks = append(chunks, p)
				}
				return chunks
			}
			round := 0
			pre := packed(0)
			var add, commit time.Duration
			upload := func(chunks [][]byte) {
				t0 := time.Now()
				u, err := st.NewUpload("title", fmt.Sprint("v", round%4), Add, "")
				if err != nil {
					b.Fatal(err)
				}
				u.Expect(uint64(n)) // as personactl's expected_ids asks
				for _, p := range chunks {
					if _, _, err := u.AddPacked(p); err != nil {
						b.Fatal(err)
					}
				}
				t1 := time.Now()
				if _, err := st.Commit(u); err != nil {
					b.Fatal(err)
				}
				add += t1.Sub(t0)
				commit += time.Since(t1)
			}
			if known {
				upload(pre)
				add, commit = 0, 0
				if name == "known-shuffled" {
					rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
					pre = packed(0)
				}
			}
			for b.Loop() {
				b.StopTimer()
				chunks := pre
				if !known {
					round++
					chunks = packed(round)
				}
				b.StartTimer()
				upload(chunks)
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "ids/s")
			b.ReportMetric(add.Seconds()/float64(b.N), "add-s/op")
			b.ReportMetric(commit.Seconds()/float64(b.N), "commit-s/op")
		})
	}
}
