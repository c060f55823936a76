package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

var moneyCrashRounds = flag.Int("moneycrashrounds", 5, "rounds of TestCrashMoney (SIGKILL during bids and notices, restart, check budgets)")

// node is one personad process started by a test.
type node struct {
	t        *testing.T
	cmd      *exec.Cmd
	grpcAddr string
	httpAddr string
	conn     *grpc.ClientConn
	bidder   personadpb.BidderClient
	reports  personadpb.ReportsClient
	stderr   *syncBuffer
	exited   chan error
}

// startNode starts bin with args and waits for its addresses line.
func startNode(t *testing.T, bin string, args ...string) *node {
	t.Helper()
	n := &node{t: t, cmd: exec.Command(bin, args...), stderr: &syncBuffer{}, exited: make(chan error, 1)}
	n.cmd.Stderr = n.stderr
	stdout, err := n.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(stdout)
	n.grpcAddr, n.httpAddr = readAddrs(t, br)
	go func() {
		io.Copy(io.Discard, br) //nolint:errcheck // drain stdout until exit
		n.exited <- n.cmd.Wait()
	}()
	n.conn, err = grpc.NewClient(n.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	n.bidder = personadpb.NewBidderClient(n.conn)
	n.reports = personadpb.NewReportsClient(n.conn)
	t.Cleanup(func() { n.kill() })
	return n
}

// kill SIGKILLs the process (if it still runs) and waits for it.
func (n *node) kill() {
	if n.cmd.ProcessState != nil {
		return
	}
	n.cmd.Process.Kill() //nolint:errcheck // it may have exited already
	<-n.exited
	n.conn.Close()
	if n.t.Failed() {
		n.t.Logf("personad %s stderr:\n%s", n.grpcAddr, n.stderr.String())
	}
}

// stop SIGTERMs the process and waits for a clean exit.
func (n *node) stop() {
	n.t.Helper()
	n.conn.Close()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		n.t.Fatal(err)
	}
	select {
	case err := <-n.exited:
		if err != nil {
			n.t.Errorf("exit after SIGTERM: %v\n%s", err, n.stderr.String())
		}
	case <-time.After(30 * time.Second):
		n.t.Fatal("personad did not exit within 30s of SIGTERM")
	}
}

// report returns the node's report of campaign cid (zero when the ledger
// does not know it yet).
func (n *node) report(ctx context.Context, cid string) (*personadpb.CampaignReport, error) {
	resp, err := n.reports.Campaigns(ctx, &personadpb.ReportsCampaignsRequest{Campaign: cid})
	if err != nil {
		return nil, err
	}
	if len(resp.Campaigns) == 0 {
		return &personadpb.CampaignReport{Cid: cid}, nil
	}
	return resp.Campaigns[0], nil
}

// moneyRequest is a one-impression request of size w×h for a fresh user.
func moneyRequest(id string, w, h int32, tmax int32) *personadpb.BidRequest {
	return &personadpb.BidRequest{
		Id:   id,
		Imp:  []*personadpb.Imp{{Id: "1", Banner: &personadpb.Banner{W: w, H: h}}},
		Site: &personadpb.Site{Domain: "news.example"},
		User: &personadpb.User{Id: "u-" + id},
		Tmax: tmax,
	}
}

// noticeClient calls notice URLs as an exchange does.
var noticeClient = &http.Client{Timeout: 5 * time.Second}

// callNotice GETs u; it reports whether the server acknowledged (200).
func callNotice(u string) bool {
	resp, err := noticeClient.Get(u)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck // drain for keep-alive
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// crashBid is what the exchange side of the crash test knows of a bid.
type crashBid struct {
	price     int64 // per impression, micros
	billPrice int64 // per impression, micros, when a bill was sent
	lossSent  bool  // a loss was sent (acknowledged or not)
	billSent  bool
	billAcked bool
}

// TestCrashMoney SIGKILLs a real personad at random moments while clients
// bid and send win, billing and loss notices, restarts it on the same data
// dir, and checks after every restart that
//
//   - no budget is passed: reserved plus settled spend today ≤ daily
//     budget, all time ≤ total budget;
//   - every acknowledged bill is still settled;
//   - spend is never below what the exchange side knows was spent: every
//     bid that received no loss notice counts at least its bill price (if
//     a bill was sent) or its bid price. A restart never resets spend.
func TestCrashMoney(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	// 10 CPM: 10000 micros per impression; 2000 impressions a day, 3000
	// in all. The ledger leases 1.00 at a time, what a crash may cost.
	const (
		cid         = "crash-budget"
		daily       = 20_000_000
		total       = 30_000_000
		impressionM = 10_000
	)
	if err := os.WriteFile(rulesPath, []byte(`
campaigns:
  - id: `+cid+`
    bid_cpm: 10
    pacing: asap
    priority: 1
    budget: {daily: 20, total: 30}
    creatives: [{id: cr-crash, w: 300, h: 250, adm: "<b>${AUCTION_PRICE}</b>"}]
  - id: fallback
    bid_cpm: 0.5
    creatives: [{id: cr-fallback, w: 300, h: 250, adm: "<b>f</b>"}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	args := []string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", dataDir, "--rules", rulesPath}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 7))

	var (
		mu   sync.Mutex
		bids = map[string]*crashBid{} // by bid id
	)
	check := func(round int, n *node) *personadpb.CampaignReport {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rep, err := n.report(ctx, cid)
		if err != nil {
			t.Fatalf("round %d: report: %v", round, err)
		}
		mu.Lock()
		defer mu.Unlock()
		var acked, floor int64
		for _, b := range bids {
			if b.billAcked {
				acked += b.billPrice
			}
			switch {
			case b.lossSent: // released, or not yet: nothing is certain
			case b.billSent: // settled at the bill, or still reserved at the (higher) bid price
				floor += b.billPrice
			default:
				floor += b.price
			}
		}
		if rep.SpentTodayMicros > daily || rep.SpentTotalMicros > total {
			t.Errorf("round %d: over budget: today %d of %d, total %d of %d", round, rep.SpentTodayMicros, daily, rep.SpentTotalMicros, total)
		}
		if rep.SettledTotalMicros < acked {
			t.Errorf("round %d: settled %d < %d acknowledged in bills: a bill was lost", round, rep.SettledTotalMicros, acked)
		}
		if rep.SpentTotalMicros < floor {
			t.Errorf("round %d: spent %d < %d the exchange side knows of: spend went back", round, rep.SpentTotalMicros, floor)
		}
		t.Logf("round %d: %d bids so far; spent %d (today %d, settled %d, reserved %d, crash-counted %d); floor %d, acked bills %d",
			round, len(bids), rep.SpentTotalMicros, rep.SpentTodayMicros, rep.SettledTotalMicros, rep.ReservedMicros, rep.CrashCountedMicros, floor, acked)
		return rep
	}

	for round := range *moneyCrashRounds {
		n := startNode(t, bin, args...)
		check(round, n)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for g := range 4 {
			wr := rand.New(rand.NewPCG(seed+uint64(round), uint64(g)))
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					resp, err := n.bidder.Bid(ctx, moneyRequest(fmt.Sprintf("c%d-%d-%d", round, g, i), 300, 250, 200))
					if err != nil || len(resp.Seatbid) == 0 {
						continue
					}
					b := resp.Seatbid[0].Bid[0]
					if b.Cid != cid {
						continue
					}
					cb := &crashBid{price: impressionM}
					mu.Lock()
					bids[b.Id] = cb
					mu.Unlock()
					switch x := wr.IntN(10); {
					case x < 6: // won and billed at a clearing price up to the bid
						cpm := 1 + wr.IntN(10)
						mu.Lock()
						cb.billSent, cb.billPrice = true, int64(cpm)*1000
						mu.Unlock()
						p := strconv.Itoa(cpm)
						callNotice(strings.ReplaceAll(b.Nurl, "${AUCTION_PRICE}", p))
						if callNotice(strings.ReplaceAll(b.Burl, "${AUCTION_PRICE}", p)) {
							mu.Lock()
							cb.billAcked = true
							mu.Unlock()
						}
					case x < 8:
						mu.Lock()
						cb.lossSent = true
						mu.Unlock()
						callNotice(strings.ReplaceAll(b.Lurl, "${AUCTION_LOSS}", "102"))
					}
				}
			})
		}
		time.Sleep(time.Duration(100+r.IntN(400)) * time.Millisecond)
		n.kill()
		cancel()
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	n := startNode(t, bin, args...)
	rep := check(*moneyCrashRounds, n)
	if len(bids) == 0 {
		t.Fatal("no bid was ever made: the test checked nothing")
	}
	n.stop()
	t.Logf("after %d SIGKILLs: %d bids, spent %.2f of daily %.2f / total %.2f, %.2f counted at crash recovery",
		*moneyCrashRounds, len(bids), float64(rep.SpentTotalMicros)/1e6, float64(daily)/1e6, float64(total)/1e6, float64(rep.CrashCountedMicros)/1e6)
}
