package bidder

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/personad/personad/bench/world"
	"github.com/personad/personad/internal/rulespb"
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

// TestMalformedProtobufPlanners: the planners' services answer a request
// that is not valid protobuf as Bid does, INVALID_ARGUMENT naming the
// field, not grpc-go's INTERNAL: Segments' unary methods and Upload (a
// malformed message changes nothing and is counted invalid), Rules
// (a large Apply too, decoded in parallel) and Reports.
func TestMalformedProtobufPlanners(t *testing.T) {
	notUTF8 := func(m proto.Message, s string) []byte {
		t.Helper()
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		bad := []byte(s)
		bad[len(bad)-1] = 0xff
		if !bytes.Contains(b, []byte(s)) {
			t.Fatalf("%q is not in the encoded %T", s, m)
		}
		return bytes.Replace(b, []byte(s), bad, 1)
	}
	check := func(what string, err error, path string) {
		t.Helper()
		st := status.Convert(err)
		if want := "bidder: " + path + ": not valid protobuf: "; st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), want) {
			t.Errorf("%s: %v, want InvalidArgument %q…", what, err, want)
		}
	}

	sh := newSegHarness(t, zaptest.NewLogger(t))
	check("List", invoke(sh.conn, personadpb.Segments_List_FullMethodName,
		notUTF8(&personadpb.ListRequest{Facet: "title"}, "title"), &personadpb.ListResponse{}), "facet")
	check("Lookup", invoke(sh.conn, personadpb.Segments_Lookup_FullMethodName,
		[]byte{0x0a, 0x09, 'u'}, &personadpb.LookupResponse{}), "user_id")
	check("Delete", invoke(sh.conn, personadpb.Segments_Delete_FullMethodName,
		notUTF8(&personadpb.DeleteRequest{Facet: "title", Value: "cmo"}, "cmo"), &personadpb.DeleteResponse{}), "value")

	upload := func(msgs ...[]byte) error {
		t.Helper()
		s, err := sh.conn.NewStream(t.Context(), &personadpb.Segments_ServiceDesc.Streams[0],
			personadpb.Segments_Upload_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if err := s.SendMsg(m); err != nil {
				break // the server has answered; RecvMsg has its status
			}
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		return s.RecvMsg(&personadpb.UploadResponse{})
	}
	marshal := func(m proto.Message) []byte {
		t.Helper()
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	hdr := marshal(header("title", "malformed", personadpb.UploadMode_UPLOAD_MODE_REPLACE, ""))
	good := marshal(chunk("u1", "u2"))
	check("Upload, header", upload(notUTF8(header("title", "malformed", personadpb.UploadMode_UPLOAD_MODE_REPLACE, ""), "malformed")),
		"upload.header.value")
	check("Upload, chunk", upload(hdr, good, notUTF8(chunk("u3", "u4"), "u4")), "upload.chunk[1].ids[1]")
	check("Upload, chunk cut short", upload(hdr, good[:len(good)-1]), "upload.chunk[0]")
	check("Upload, bad tag", upload(hdr, append(bytes.Clone(good), 0x80)), "upload.chunk[0]")
	if got := sh.uploads("invalid"); got != 4 {
		t.Errorf("invalid uploads counted = %v, want 4", got)
	}
	// Nothing was applied; the same connection still uploads.
	if err := upload(hdr, good); err != nil {
		t.Fatalf("valid upload: %v", err)
	}
	list, err := sh.seg.List(t.Context(), &personadpb.ListRequest{Facet: "title"})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list.Segments, func(s *personadpb.SegmentInfo) bool { return s.Value == "malformed" })
	if i < 0 || list.Segments[i].Cardinality != 2 || list.Segments[i].Version != 1 {
		t.Errorf("title:malformed after four malformed uploads and one of 2 ids: %v, want 2 ids at version 1", list.Segments)
	}

	rh := newRulesHarness(t)
	check("Rules/Get", invoke(rh.conn, personadpb.Rules_Get_FullMethodName,
		[]byte{0x08}, &personadpb.RulesGetResponse{}), "include_rule_set")
	cfg := world.ReferenceConfig()
	cfg.Campaigns = 200
	rs, err := world.GenerateRules(cfg)
	if err != nil {
		t.Fatal(err)
	}
	large := notUTF8(&personadpb.RulesApplyRequest{RuleSet: rulespb.ToProto(rs)}, rs.Campaigns[150].ID)
	if len(large) < parallelDecodeMin {
		t.Fatalf("request of %d bytes, want at least %d to take the parallel decode", len(large), parallelDecodeMin)
	}
	check("Rules/Apply, large", invoke(rh.conn, personadpb.Rules_Apply_FullMethodName,
		large, &personadpb.RulesApplyResponse{}), "rule_set.campaigns[150].id")
	check("Rules/Validate", invoke(rh.conn, personadpb.Rules_Validate_FullMethodName,
		[]byte{0x0a, 0x02, 0x0a, 0x05}, &personadpb.RulesValidateResponse{}), "rule_set.campaigns[0]")
	if got := rh.mgr.Status().Version; got != generation(0).Version() {
		t.Errorf("rules version after malformed applies %s, want the first %s", got, generation(0).Version())
	}

	l := newLedger(t, "")
	defer l.Close()
	mh := newMoneyHarness(t, moneyRules, l)
	defer mh.close()
	check("Reports/Campaigns", invoke(mh.conn, personadpb.Reports_Campaigns_FullMethodName,
		notUTF8(&personadpb.ReportsCampaignsRequest{Campaign: "c1"}, "c1"), &personadpb.ReportsCampaignsResponse{}), "campaign")
}

// TestOversizeRequestRefusedUndecoded: personad raises grpc-go's one
// receive limit for rule sets (cmd/personad: 64 MiB), which let every
// other method take requests that large too: a Bid with a 60 MB id was
// decoded whole, then refused by validation ("id: 62914560 bytes exceeds
// the limit of 256"), and 16 of them at once took personad to 3 GB. Now a
// request of any other method over Config.MaxRecvMsgSize is
// RESOURCE_EXHAUSTED naming the limit, undecoded, and a Bid so refused is
// counted invalid; a rule set over it is still taken.
func TestOversizeRequestRefusedUndecoded(t *testing.T) {
	const raised = 8 << 20
	limit := DefaultConfig().MaxRecvMsgSize
	h := newRulesHarnessOpts(t, grpc.MaxRecvMsgSize(raised))

	big := request(userCMO)
	big.Id = strings.Repeat("x", limit) // the message is a few bytes more
	raw, err := proto.Marshal(big)
	if err != nil {
		t.Fatal(err)
	}
	err = invoke(h.conn, personadpb.Bidder_Bid_FullMethodName, raw, &personadpb.BidResponse{})
	want := fmt.Sprintf("bidder: BidRequest: %d bytes exceeds the limit of %d bytes per message", len(raw), limit)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != want {
		t.Errorf("Bid of %d bytes: %v, want ResourceExhausted %q", len(raw), err, want)
	}
	if got := testutil.ToFloat64(h.server.metrics.requests[wireGRPC][outcomeInvalid]); got != 1 {
		t.Errorf("invalid gRPC bid requests counted = %v, want 1", got)
	}
	get, err := proto.Marshal(&personadpb.RulesGetRequest{IncludeRuleSet: true})
	if err != nil {
		t.Fatal(err)
	}
	get = protowire.AppendTag(get, 99, protowire.BytesType) // an unknown field of limit bytes
	get = protowire.AppendBytes(get, make([]byte, limit))
	err = invoke(h.conn, personadpb.Rules_Get_FullMethodName, get, &personadpb.RulesGetResponse{})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.HasPrefix(st.Message(), "bidder: RulesGetRequest: ") {
		t.Errorf("Rules/Get of %d bytes: %v, want ResourceExhausted naming RulesGetRequest", len(get), err)
	}

	// A rule set over the limit is decoded and checked as before.
	rs := generation(1)
	rs.Campaigns[0].Creatives[0].Adm = "<b>" + strings.Repeat("y", limit) + "</b>"
	vr, err := h.rules.Validate(t.Context(), &personadpb.RulesValidateRequest{RuleSet: rulespb.ToProto(rs)})
	if err != nil {
		t.Fatalf("Validate of a set over %d bytes: %v", limit, err)
	}
	if vr.Campaigns != int32(len(rs.Campaigns)) {
		t.Errorf("Validate counted %d campaigns, want %d", vr.Campaigns, len(rs.Campaigns))
	}

	// The same connection still bids.
	if resp, err := h.bid.Bid(t.Context(), request(userCMO)); err != nil || len(resp.Seatbid) != 1 {
		t.Errorf("valid Bid after the refusals: %v, %v; want a bid", resp, err)
	}
}
