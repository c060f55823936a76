package bidder

import (
	"context"
	"fmt"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// A request message that is not valid protobuf (truncated wire data, a
// string field that is not UTF-8) fails in the codec, and grpc-go turns
// any codec error into INTERNAL before a handler or interceptor runs
// (rpc_util.go recv, v1.85), uncounted. So every personad service is
// registered with handlers of its own (same services, same methods) that
// decode into a decoded[T]: the server codec keeps its decoding error
// there instead of failing, and the handler answers INVALID_ARGUMENT
// naming the field; Bid and the notices count it as the HTTP wire counts
// an undecodable body. Segments/Upload, a client stream, receives each
// message into a lenientMsg, the same way (recvLenient). The messages are
// decoded exactly as before, by the server codec (rulescodec.go).

// decodeTarget is a request the server codec decodes without failing:
// the error, if any, is kept in the request.
type decodeTarget interface {
	target() (proto.Message, *error)
}

// decoded is one request message and its decoding error.
type decoded[T any, PT interface {
	*T
	proto.Message
}] struct {
	msg T
	err error
}

func (d *decoded[T, PT]) target() (proto.Message, *error) { return PT(&d.msg), &d.err }

// lenientMsg is a message its caller owns (a stream's, received into
// again and again) and its decoding error.
type lenientMsg struct {
	msg proto.Message
	err error
}

func (d *lenientMsg) target() (proto.Message, *error) { return d.msg, &d.err }

// recvLenient is stream.RecvMsg(m), but a message that is not valid
// protobuf is the *ValidationError naming where (malformedError), not
// grpc-go's INTERNAL. stream must be served by a server from GRPCServer,
// whose codec knows decodeTarget.
func recvLenient(stream grpc.ServerStream, m proto.Message) error {
	in := lenientMsg{msg: m}
	if err := stream.RecvMsg(&in); err != nil {
		return err
	}
	return in.err
}

// lenientHandler is a unary handler like protoc-gen-go-grpc's, whose
// request is decoded into a decoded[T]: a malformed one is answered by
// malformed (given the codec's *ValidationError, from malformedError)
// instead of the codec's INTERNAL, without calling interceptors or the
// method.
func lenientHandler[T any, PT interface {
	*T
	proto.Message
}](fullMethod string, call func(srv any, ctx context.Context, req PT) (any, error), malformed func(srv any, err error) error) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := new(decoded[T, PT])
		if err := dec(in); err != nil {
			return nil, err
		}
		req := PT(&in.msg)
		if in.err != nil {
			return nil, malformed(srv, in.err)
		}
		if interceptor == nil {
			return call(srv, ctx, req)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: fullMethod}
		return interceptor(ctx, req, info, func(ctx context.Context, req any) (any, error) {
			return call(srv, ctx, req.(PT))
		})
	}
}

// withHandlers returns a copy of desc whose named methods have the given
// handlers.
func withHandlers(desc grpc.ServiceDesc, handlers map[string]grpc.MethodHandler) *grpc.ServiceDesc {
	desc.Methods = append([]grpc.MethodDesc(nil), desc.Methods...)
	for i, m := range desc.Methods {
		if h, ok := handlers[m.MethodName]; ok {
			desc.Methods[i].Handler = h
			delete(handlers, m.MethodName)
		}
	}
	if len(handlers) > 0 {
		panic(fmt.Sprintf("bidder: %s has no methods %v", desc.ServiceName, handlers))
	}
	return &desc
}

// bidderDesc is personad.v1.Bidder with Bid decoded leniently.
var bidderDesc = withHandlers(personadpb.Bidder_ServiceDesc, map[string]grpc.MethodHandler{
	"Bid": lenientHandler(personadpb.Bidder_Bid_FullMethodName,
		func(srv any, ctx context.Context, req *personadpb.BidRequest) (any, error) {
			return srv.(personadpb.BidderServer).Bid(ctx, req)
		},
		func(srv any, err error) error {
			srv.(*Server).metrics.requests[wireGRPC][outcomeInvalid].Inc()
			return grpcError(err)
		}),
})

// noticesDesc is personad.v1.Notices with every method decoded
// leniently.
var noticesDesc = withHandlers(personadpb.Notices_ServiceDesc, map[string]grpc.MethodHandler{
	"Win": lenientHandler(personadpb.Notices_Win_FullMethodName,
		func(srv any, ctx context.Context, req *personadpb.WinRequest) (any, error) {
			return srv.(personadpb.NoticesServer).Win(ctx, req)
		}, malformedNotice(kindWin)),
	"Bill": lenientHandler(personadpb.Notices_Bill_FullMethodName,
		func(srv any, ctx context.Context, req *personadpb.BillRequest) (any, error) {
			return srv.(personadpb.NoticesServer).Bill(ctx, req)
		}, malformedNotice(kindBill)),
	"Loss": lenientHandler(personadpb.Notices_Loss_FullMethodName,
		func(srv any, ctx context.Context, req *personadpb.LossRequest) (any, error) {
			return srv.(personadpb.NoticesServer).Loss(ctx, req)
		}, malformedNotice(kindLoss)),
})

// segmentsDesc is personad.v1.Segments with its unary methods decoded
// leniently; Upload receives leniently itself (recvLenient).
var segmentsDesc = withHandlers(personadpb.Segments_ServiceDesc, map[string]grpc.MethodHandler{
	"List": lenientHandler(personadpb.Segments_List_FullMethodName,
		func(srv any, ctx context.Context, req *personadpb.ListRequest) (any, error) {
			return srv.(personadpb.SegmentsServer).List(ctx, req)
		}, malformedRequest),
	"Lookup": lenientHandler(personadpb.Segments_Lookup_FullMethodName,
		func(srv any, ctx context.Context, req *personadpb.LookupRequest) (any, error) {
			return srv.(personadpb.SegmentsServer).Lookup(ctx, req)
		}, malformedRequest),
	"Delete": lenientHandler(personadpb.Segments_Delete_FullMethodName,
		func(srv any, ctx context.Context, req *personadpb.DeleteRequest) (any, error) {
			return srv.(personadpb.SegmentsServer).Delete(ctx, req)
		}, malformedRequest),
})

// rulesDesc is personad.v1.Rules with every method decoded leniently.
var rulesDesc = withHandlers(personadpb.Rules_ServiceDesc, map[string]grpc.MethodHandler{
	"Validate": lenientHandler(personadpb.Rules_Validate_FullMethodName,
		func(srv any, ctx context.Context, req *personadpb.RulesValidateRequest) (any, error) {
			return srv.(personadpb.RulesServer).Validate(ctx, req)
		}, malformedRequest),
	"Apply": lenientHandler(personadpb.Rules_Apply_FullMethodName,
		func(srv any, ctx context.Context, req *personadpb.RulesApplyRequest) (any, error) {
			return srv.(personadpb.RulesServer).Apply(ctx, req)
		}, malformedRequest),
	"Get": lenientHandler(personadpb.Rules_Get_FullMethodName,
		func(srv any, ctx context.Context, req *personadpb.RulesGetRequest) (any, error) {
			// The answer shares the rule set's encoding (rules.go).
			return srv.(*RulesService).getReply(ctx, req)
		}, malformedRequest),
})

// reportsDesc is personad.v1.Reports with every method decoded
// leniently.
var reportsDesc = withHandlers(personadpb.Reports_ServiceDesc, map[string]grpc.MethodHandler{
	"Campaigns": lenientHandler(personadpb.Reports_Campaigns_FullMethodName,
		func(srv any, ctx context.Context, req *personadpb.ReportsCampaignsRequest) (any, error) {
			return srv.(personadpb.ReportsServer).Campaigns(ctx, req)
		}, malformedRequest),
})

// RegisterSegments registers s on gs, a server from GRPCServer, as
// personad.v1.Segments: a request that is not valid protobuf is
// INVALID_ARGUMENT naming the field.
func RegisterSegments(gs *grpc.Server, s *Segments) { gs.RegisterService(segmentsDesc, s) }

// RegisterRules registers s on gs, a server from GRPCServer, as
// personad.v1.Rules: a request that is not valid protobuf is
// INVALID_ARGUMENT naming the field.
func RegisterRules(gs *grpc.Server, s *RulesService) { gs.RegisterService(rulesDesc, s) }

// malformedRequest answers a malformed request of a method that counts
// none.
func malformedRequest(_ any, err error) error { return grpcError(err) }

func malformedNotice(k noticeKind) func(srv any, err error) error {
	return func(srv any, err error) error {
		srv.(*noticesService).s.metrics.notice(wireGRPC, k, err)
		return grpcError(err)
	}
}

// malformedError describes why b, m's wire bytes, did not decode: a
// *ValidationError whose path is the field that failed, as the HTTP wire
// names it ("user.data[0].segment[1].id"), or the message's name when no
// field is to blame. It walks the bytes again, only on this error path.
func malformedError(m proto.Message, b []byte, err error) error {
	md := m.ProtoReflect().Descriptor()
	path, _ := wirePath(b, md)
	if path == "" {
		path = string(md.Name())
	}
	return &ValidationError{Path: path, Msg: fmt.Sprintf("not valid protobuf: %v", err)}
}

// wirePath finds the first field of b, a message of md, that does not
// decode: wire data cut short or malformed, or a string that is not
// UTF-8. It returns its path and true, or "", true when the fault is in b
// itself rather than in one of its fields, or false when it finds none.
// A repeated field's index counts its entries in b.
func wirePath(b []byte, md protoreflect.MessageDescriptor) (string, bool) {
	seen := map[protowire.Number]int{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", true
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		name := ""
		if fd != nil {
			name = string(fd.Name())
			if fd.IsList() {
				name = fmt.Sprintf("%s[%d]", name, seen[num])
				seen[num]++
			}
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return name, true
		}
		if fd != nil && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			switch fd.Kind() {
			case protoreflect.StringKind:
				if !utf8.Valid(v) {
					return name, true
				}
			case protoreflect.MessageKind:
				if p, ok := wirePath(v, fd.Message()); ok {
					if p == "" {
						return name, true
					}
					return name + "." + p, true
				}
			}
		}
		b = b[n:]
	}
	return "", false
}
