package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/segments"
)

var crashRounds = flag.Int("crashrounds", 20, "rounds of TestCrashDuringUploads (SIGKILL during uploads, restart, verify)")

// crashUpload is upload k of the crash test: segment title:crash-k replaced
// with n users, half of them shared with upload k-1, so that every upload
// both finds and adds users in the dictionary.
func crashUpload(k int) (value string, ids []string) {
	n := 500 + k%7*250
	for i := range n {
		ids = append(ids, fmt.Sprintf("cu%07d", k*n/2+i))
	}
	return fmt.Sprintf("crash-%d", k), ids
}

// TestCrashDuringUploads SIGKILLs a real personad at random moments while
// two clients stream uploads, then checks the data dir: every
// acknowledged upload is there in full, and an unacknowledged one is
// either there in full or not at all. The next round restarts the binary
// on the same data dir (recovering what the kill left) and goes on.
func TestCrashDuringUploads(t *testing.T) {
	bin := buildBinary(t)
	rulesPath, err := filepath.Abs("testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	var (
		mu    sync.Mutex
		acked = map[int]bool{} // upload k was acknowledged
		tried = map[int]bool{} // upload k was started
	)
	next := 0
	for round := range *crashRounds {
		cmd := exec.Command(bin, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--data-dir", dataDir, "--rules", rulesPath)
		stderr := &syncBuffer{}
		cmd.Stderr = stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		grpcAddr, _ := readAddrs(t, stdout)
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		client := personadpb.NewSegmentsClient(conn)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for ctx.Err() == nil {
					mu.Lock()
					k := next
					next++
					tried[k] = true
					mu.Unlock()
					value, ids := crashUpload(k)
					stream, err := client.Upload(ctx)
					if err != nil {
						return
					}
					stream.Send(&personadpb.UploadRequest{Msg: &personadpb.UploadRequest_Header{Header: &personadpb.UploadHeader{
						Facet: "title", Value: value, Mode: personadpb.UploadMode_UPLOAD_MODE_REPLACE,
					}}})
					for c := range slices.Chunk(ids, 200) {
						stream.Send(&personadpb.UploadRequest{Msg: &personadpb.UploadRequest_Chunk{Chunk: &personadpb.UploadChunk{Ids: c}}})
					}
					if _, err := stream.CloseAndRecv(); err != nil {
						return
					}
					mu.Lock()
					acked[k] = true
					mu.Unlock()
				}
			})
		}
		time.Sleep(time.Duration(r.IntN(60_000)) * time.Microsecond)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait() //nolint:errcheck // killed: the status says so
		cancel()
		wg.Wait()
		conn.Close()
		if t.Failed() {
			t.Logf("personad stderr:\n%s", stderr.String())
			return
		}

		// The data dir as the next start will find it.
		st, err := segments.Open(segments.Config{Dir: filepath.Join(dataDir, "segments")})
		if err != nil {
			t.Fatalf("round %d: reopening after SIGKILL: %v\npersonad stderr:\n%s", round, err, stderr.String())
		}
		snap := st.Current()
		nAcked := 0
		for k := range next {
			value, ids := crashUpload(k)
			seg := snap.Segment("title", value)
			if seg == nil {
				if acked[k] {
					t.Errorf("round %d: acknowledged upload %d lost", round, k)
				}
				continue
			}
			nAcked++
			if got := seg.Users.GetCardinality(); got != uint64(len(ids)) {
				t.Errorf("round %d: upload %d (acknowledged %t) has %d of %d users", round, k, acked[k], got, len(ids))
				continue
			}
			for _, id := range ids {
				if u, ok := snap.User(id); !ok || !seg.Users.Contains(u) {
					t.Errorf("round %d: upload %d (acknowledged %t) lacks user %s", round, k, acked[k], id)
					break
				}
			}
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d uploads started, %d acknowledged, %d present", round, len(tried), len(acked), nAcked)
		if t.Failed() {
			t.Logf("personad stderr:\n%s", stderr.String())
			return
		}
	}
	if len(acked) == 0 {
		t.Error("no upload was ever acknowledged: the test checked nothing")
	}
	if _, err := os.Stat(filepath.Join(dataDir, "segments")); err != nil {
		t.Fatal(err)
	}
}
