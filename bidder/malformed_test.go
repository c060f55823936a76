package bidder

import (
	"bytes"
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// rawCodec sends a request's bytes as given ([]byte), so that a test can
// send what no protobuf library would encode, and decodes answers as
// protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

func (rawCodec) Name() string { return "proto" }

// invoke calls method with raw as the request's wire bytes.
func invoke(conn *grpc.ClientConn, method string, raw []byte, resp proto.Message) error {
	return conn.Invoke(context.Background(), method, raw, resp, grpc.ForceCodecV2(rawCodec{}))
}

// TestMalformedProtobuf: a gRPC request that is not valid protobuf (a
// string that is not UTF-8, wire data cut short) is INVALID_ARGUMENT
// naming the field, as on the HTTP wire, and counted as invalid, for Bid
// and the notices; it had been grpc-go's INTERNAL "failed to unmarshal",
// before any handler, and counted nowhere.
func TestMalformedProtobuf(t *testing.T) {
	l := newLedger(t, "")
	defer l.Close()
	h := newMoneyHarness(t, moneyRules, l)
	defer h.close()
	req := moneyRequest("m1")
	req.User.Data = []*personadpb.Data{{Segment: []*personadpb.Segment{{Id: "title:cmo"}, {Id: "title:cmX"}}}}
	valid, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	notUTF8 := bytes.Replace(valid, []byte("title:cmX"), []byte("title:\xff\xfe\xfd"), 1)

	for _, tc := range []struct {
		name    string
		raw     []byte
		path    string
		invalid float64 // personad_bid_requests_total{wire="grpc",outcome="invalid"} after
	}{
		{"not UTF-8", notUTF8, "user.data[0].segment[1].id", 1},
		{"cut short", valid[:len(valid)-4], "user", 2}, // tmax (3 bytes) and a byte of user
		{"bad tag", append(bytes.Clone(valid), 0x80), "BidRequest", 3},
	} {
		err := invoke(h.conn, personadpb.Bidder_Bid_FullMethodName, tc.raw, &personadpb.BidResponse{})
		st := status.Convert(err)
		if want := "bidder: " + tc.path + ": not valid protobuf: "; st.Code() != codes.InvalidArgument || !bytes.HasPrefix([]byte(st.Message()), []byte(want)) {
			t.Errorf("%s: %v, want InvalidArgument %q…", tc.name, err, want)
		}
		if got := testutil.ToFloat64(h.srv.metrics.requests[wireGRPC][outcomeInvalid]); got != tc.invalid {
			t.Errorf("%s: invalid gRPC bid requests counted = %v, want %v", tc.name, got, tc.invalid)
		}
	}

	// The same connection still bids: valid bytes through the same codec.
	var resp personadpb.BidResponse
	if err := invoke(h.conn, personadpb.Bidder_Bid_FullMethodName, valid, &resp); err != nil || len(resp.Seatbid) != 1 {
		t.Fatalf("valid request: %v, %v; want a bid", &resp, err)
	}

	tok := token(t, resp.Seatbid[0].Bid[0].Burl)
	bill, err := proto.Marshal(&personadpb.BillRequest{Token: tok, Price: "1.5X"})
	if err != nil {
		t.Fatal(err)
	}
	bill = bytes.Replace(bill, []byte("1.5X"), []byte("1.5\xff"), 1)
	err = invoke(h.conn, personadpb.Notices_Bill_FullMethodName, bill, &personadpb.BillResponse{})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() != "bidder: price: not valid protobuf: "+decodeError(t, bill, &personadpb.BillRequest{}) {
		t.Errorf("bill, price not UTF-8: %v, want InvalidArgument naming price", err)
	}
	loss := []byte{0x0a, 0x05, 'a'} // token: 5 bytes announced, 1 sent
	err = invoke(h.conn, personadpb.Notices_Loss_FullMethodName, loss, &personadpb.LossResponse{})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument {
		t.Errorf("loss cut short: %v, want InvalidArgument", err)
	}
	for _, c := range []struct {
		k noticeKind
		o noticeOutcome
	}{{kindBill, noticeBadPrice}, {kindLoss, noticeInvalid}} {
		if got := testutil.ToFloat64(h.srv.metrics.notices[wireGRPC][c.k][c.o]); got != 1 {
			t.Errorf("%s notices counted %s = %v, want 1", kindNames[c.k], noticeOutcomeNames[c.o], got)
		}
	}
}

// decodeError is proto.Unmarshal's error for b.
func decodeError(t *testing.T, b []byte, m proto.Message) string {
	t.Helper()
	err := proto.Unmarshal(b, m)
	if err == nil {
		t.Fatal("the bytes decode")
	}
	return err.Error()
}
