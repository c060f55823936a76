package bidder

import (
	"context"
	"net"
	"net/http/httptest"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/personad/personad/engine"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/rules"
	"github.com/personad/personad/segments"
)

// testRules is the small world of the end-to-end tests: a CMO campaign
// with a persona variant, a coordinator campaign, and a fintech campaign
// that wins when the CMO one is blocked.
const testRules = `
campaigns:
  - id: acme-cmo
    advertiser: acme
    adomain: [acme.com]
    priority: 5
    bid_cpm: 4.50
    cat: [IAB19]
    targeting:
      all:
        - {facet: title, any: [cmo, vp-marketing]}
    creatives:
      - id: cr-acme-cmo
        w: 300
        h: 250
        persona:
          - {facet: title, any: [cmo]}
        adm: "<div>For CMOs ${AUCTION_PRICE}</div>"
      - id: cr-acme-generic
        w: 300
        h: 250
        adm: "<div>For marketers ${AUCTION_PRICE}</div>"
  - id: beta-coord
    advertiser: beta
    adomain: [beta.io]
    bid_cpm: 2.00
    cat: [IAB3]
    targeting:
      all:
        - {facet: title, any: [marketing-coordinator]}
    creatives:
      - {id: cr-beta-300, w: 300, h: 250, adm: "<div>beta 300</div>"}
      - {id: cr-beta-728, w: 728, h: 90, adm: "<div>beta 728</div>"}
  - id: gamma-fintech
    advertiser: gamma
    adomain: [gamma.com]
    bid_cpm: 1.00
    cat: [IAB13]
    targeting:
      all:
        - {facet: industry, any: [fintech]}
    creatives:
      - {id: cr-gamma, w: 300, h: 250, adm: "<div>gamma</div>"}
content_rules:
  blocked_adomain: [badco.example]
`

// Users of the test world.
const (
	userCMO    = "u00000001" // title:cmo, industry:fintech
	userVP     = "u00000002" // title:vp-marketing
	userCoord  = "u00000003" // title:marketing-coordinator
	userChurny = "u00000004" // pain_point:churn only: no campaign targets it
)

func testSegments() *segments.Store {
	b := segments.NewBuilder()
	b.Add("title", "cmo", userCMO)
	b.Add("industry", "fintech", userCMO)
	b.Add("title", "vp-marketing", userVP)
	b.Add("title", "marketing-coordinator", userCoord)
	b.Add("pain_point", "churn", userChurny)
	return segments.NewStore(b.Build(7))
}

// compileRules compiles a rules document.
func compileRules(t *testing.T, doc string) *engine.Rules {
	t.Helper()
	rs, err := rules.Parse("test.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Validate(); err != nil {
		t.Fatal(err)
	}
	r, err := engine.Compile(rs, "test-v1")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// newTestServer returns a Server over the test segments; with doc != "" its
// rules are compiled and loaded.
func newTestServer(t *testing.T, doc string) *Server {
	t.Helper()
	eng, err := engine.New(engine.Config{PersonaCacheSize: 0}, testSegments())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	if doc != "" {
		eng.SetRules(compileRules(t, doc))
	}
	cfg := DefaultConfig()
	cfg.Engine = eng
	cfg.Logger = zaptest.NewLogger(t)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// harness runs a Server's gRPC server over bufconn and its HTTP handler on
// an httptest server.
type harness struct {
	srv    *Server
	conn   *grpc.ClientConn
	client personadpb.BidderClient
	http   *httptest.Server
}

func newHarness(t *testing.T, doc string) *harness {
	t.Helper()
	s := newTestServer(t, doc)
	conn, stop := serveBufconn(t, s.GRPCServer(), 1<<20)
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		hs.Close()
		stop()
	})
	return &harness{srv: s, conn: conn, client: personadpb.NewBidderClient(conn), http: hs}
}

// serveBufconn serves gs over an in-memory listener of bufSize bytes. It
// returns a client connection to it, and stop, which closes the
// connection, stops gs and waits for it (once, however often called).
func serveBufconn(tb testing.TB, gs *grpc.Server, bufSize int) (*grpc.ClientConn, func()) {
	tb.Helper()
	lis := bufconn.Listen(bufSize)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := gs.Serve(lis); err != nil {
			tb.Errorf("Serve: %v", err)
		}
	}()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		gs.Stop()
		<-done
		tb.Fatal(err)
	}
	var once sync.Once
	return conn, func() {
		once.Do(func() {
			conn.Close()
			gs.Stop()
			<-done
		})
	}
}

// request returns a valid one-impression request for a user on a site.
func request(buyeruid string) *personadpb.BidRequest {
	return &personadpb.BidRequest{
		Id: "req-1",
		Imp: []*personadpb.Imp{{
			Id:     "1",
			Banner: &personadpb.Banner{Format: []*personadpb.Format{{W: 300, H: 250}}},
		}},
		Site: &personadpb.Site{Domain: "news.example"},
		User: &personadpb.User{Buyeruid: buyeruid},
		Tmax: 100,
	}
}
