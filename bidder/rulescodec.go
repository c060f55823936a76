package bidder

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/personad/personad/internal/par"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

// A Rules request for a large set is tens of megabytes (10,000 campaigns
// are ~33 MB), and proto.Unmarshal decodes it on one CPU (~40 ms). The
// server's codec is grpc-go's proto codec except for RulesApplyRequest
// and RulesValidateRequest: their rule set's campaigns are cut out of the
// wire bytes and decoded on every CPU, the rest as usual. The result is
// exactly proto.Unmarshal's (FuzzUnmarshalRulesRequest checks): fields
// and repeated entries keep their order, a message field that occurs
// twice merges, a field with another wire type than its declared one
// stays an unknown field, and any malformed input is left to
// proto.Unmarshal, so errors are its own.

// parallelDecodeMin is the smallest request worth decoding in parallel.
const parallelDecodeMin = 256 << 10

// serverCodec is the server's "proto" codec.
//
// grpc-go has one receive limit per server, and personad raises it for
// the rule sets of Rules/Validate and Rules/Apply (tens of megabytes) and
// the chunks of Segments/Upload (bounded by their id counts). Every other
// request is refused here, before it is decoded, when it is larger than
// maxMsg (Config.MaxRecvMsgSize, what the HTTP wire allows a bid request):
// a Bid, a notice, a lookup of 60 MB is RESOURCE_EXHAUSTED naming the
// limit, not decoded into as much again and then refused field by field.
// (It was still received whole: grpc-go reads a message before any
// handler can look at its length.)
type serverCodec struct {
	encoding.CodecV2
	maxMsg int
}

func newServerCodec(maxMsg int) serverCodec {
	return serverCodec{encoding.GetCodecV2(grpcproto.Name), maxMsg}
}

// Marshal encodes v; a Rules/Get answer (rulesGetReply) refers to its
// rule set's shared encoding rather than copying it.
func (c serverCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*rulesGetReply)
	if !ok {
		return c.CodecV2.Marshal(v)
	}
	head, err := proto.Marshal(r.resp)
	if err != nil {
		return nil, err
	}
	if r.set == nil {
		return mem.BufferSlice{mem.SliceBuffer(head)}, nil
	}
	// Fields may come in any order on the wire: rule_set last decodes
	// as the message proto.Marshal would have written.
	head = protowire.AppendTag(head, getRuleSetField, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(*r.set)))
	return mem.BufferSlice{mem.SliceBuffer(head), mem.NewBuffer(r.set, keepPool{})}, nil
}

// keepPool is the pool of a shared encoding's buffers: it takes nothing
// back. Each buffer made over the encoding refers to it until grpc-go has
// sent it and freed the buffer; the garbage collector then frees it.
type keepPool struct{}

func (keepPool) Get(length int) *[]byte { panic("bidder: keepPool gives no buffers") }
func (keepPool) Put(*[]byte)            {}

// largeRequest reports whether m is a request that may exceed maxMsg.
func largeRequest(m proto.Message) bool {
	switch m.(type) {
	case *personadpb.RulesApplyRequest, *personadpb.RulesValidateRequest, *personadpb.UploadRequest:
		return true
	}
	return false
}

func (c serverCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case decodeTarget: // malformed.go
		msg, errp := m.target()
		if n := data.Len(); n > c.maxMsg && !largeRequest(msg) {
			*errp = &LimitError{
				Path:  string(msg.ProtoReflect().Descriptor().Name()),
				Limit: fmt.Sprintf("%d bytes per message", c.maxMsg),
				Got:   fmt.Sprintf("%d bytes", n),
			}
			return nil
		}
		if err := c.Unmarshal(data, msg); err != nil {
			*errp = malformedError(msg, data.Materialize(), err)
		}
		return nil
	case *personadpb.UploadRequest:
		return unmarshalUploadRequest(data, m)
	case *personadpb.RulesApplyRequest, *personadpb.RulesValidateRequest:
		if data.Len() >= parallelDecodeMin {
			buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
			defer buf.Free()
			return unmarshalRulesRequest(buf.ReadOnlyData(), m.(rulesRequest))
		}
	}
	return c.CodecV2.Unmarshal(data, v)
}

// rulesRequest is a request whose field 1 is its RuleSet.
type rulesRequest interface {
	proto.Message
	GetRuleSet() *personadpb.RuleSet
}

// Field numbers of the messages cut by hand; TestRulesRequestFields
// checks them against the descriptors.
const (
	requestRuleSetField   = 1 // RulesApplyRequest.rule_set, RulesValidateRequest.rule_set
	ruleSetCampaignsField = 1 // RuleSet.campaigns
	getRuleSetField       = 6 // RulesGetResponse.rule_set
)

// unmarshalRulesRequest is proto.Unmarshal(b, m), the campaigns decoded
// on every CPU.
func unmarshalRulesRequest(b []byte, m rulesRequest) error {
	rest, sets, ok := cutField(b, requestRuleSetField)
	if !ok || len(sets) == 0 {
		return proto.Unmarshal(b, m)
	}
	// The rule set's own bytes: every occurrence, in order (they merge).
	var setRest []byte
	var campaigns [][]byte
	for _, s := range sets {
		r, cs, ok := cutField(s, ruleSetCampaignsField)
		if !ok {
			return proto.Unmarshal(b, m)
		}
		setRest = append(setRest, r...)
		campaigns = append(campaigns, cs...)
	}
	rs := &personadpb.RuleSet{}
	if err := proto.Unmarshal(setRest, rs); err != nil {
		return proto.Unmarshal(b, m)
	}
	slab := make([]personadpb.Campaign, len(campaigns))
	errs := make([]error, len(campaigns))
	par.For(len(campaigns), 64, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			errs[i] = proto.Unmarshal(campaigns[i], &slab[i])
		}
	})
	for _, err := range errs {
		if err != nil {
			return proto.Unmarshal(b, m)
		}
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return proto.Unmarshal(b, m)
	}
	rs.Campaigns = make([]*personadpb.Campaign, len(slab))
	for i := range slab {
		rs.Campaigns[i] = &slab[i]
	}
	switch m := m.(type) {
	case *personadpb.RulesApplyRequest:
		m.RuleSet = rs
	case *personadpb.RulesValidateRequest:
		m.RuleSet = rs
	}
	return nil
}

// cutField splits a message's wire bytes into the occurrences of field
// num with the bytes wire type (their payloads, in order) and everything
// else (in order). ok is false when b is not well-formed wire data.
func cutField(b []byte, num protowire.Number) (rest []byte, payloads [][]byte, ok bool) {
	rest = make([]byte, 0, 64)
	for len(b) > 0 {
		n, typ, tagLen := protowire.ConsumeTag(b)
		if tagLen < 0 {
			return nil, nil, false
		}
		valLen := protowire.ConsumeFieldValue(n, typ, b[tagLen:])
		if valLen < 0 {
			return nil, nil, false
		}
		if n == num && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[tagLen:])
			payloads = append(payloads, v)
		} else {
			rest = append(rest, b[:tagLen+valLen]...)
		}
		b = b[tagLen+valLen:]
	}
	return rest, payloads, true
}
