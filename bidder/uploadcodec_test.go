package bidder

import (
	"bytes"
	"testing"
	"unsafe"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// TestUploadRequestFields: the field numbers uploadcodec.go decodes by
// hand are the descriptors'.
func TestUploadRequestFields(t *testing.T) {
	f := (&personadpb.UploadRequest{}).ProtoReflect().Descriptor().Fields().ByName("chunk")
	if f == nil || int(f.Number()) != uploadChunkField || f.Message().FullName() != "personad.v1.UploadChunk" {
		t.Errorf("UploadRequest.chunk is %v, want field %d of type UploadChunk", f, uploadChunkField)
	}
	f = (&personadpb.UploadChunk{}).ProtoReflect().Descriptor().Fields().ByName("ids_packed")
	if f == nil || int(f.Number()) != uploadIDsPackedField || f.Kind().String() != "bytes" || f.IsList() {
		t.Errorf("UploadChunk.ids_packed is %v, want bytes field %d", f, uploadIDsPackedField)
	}
}

// decodeUpload runs the server codec's Unmarshal on data, cut into
// buffers of at most split bytes (0: one buffer), into m.
func decodeUpload(data []byte, split int, m *personadpb.UploadRequest) error {
	var bs mem.BufferSlice
	for rest := data; len(rest) > 0 || bs == nil; {
		n := len(rest)
		if split > 0 {
			n = min(n, split)
		}
		bs = append(bs, mem.SliceBuffer(bytes.Clone(rest[:n])))
		rest = rest[n:]
	}
	return newServerCodec(DefaultConfig().MaxRecvMsgSize).Unmarshal(bs, m)
}

func marshalUpload(t testing.TB, m *personadpb.UploadRequest) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUploadCodecReuses: a packed chunk is decoded into the memory of the
// message's previous one, and exactly as proto.Unmarshal decodes it.
func TestUploadCodecReuses(t *testing.T) {
	m := &personadpb.UploadRequest{}
	first := marshalUpload(t, packed("u1\nu2\nu3\n"))
	if err := decodeUpload(first, 0, m); err != nil {
		t.Fatal(err)
	}
	mem1 := unsafe.SliceData(m.GetChunk().GetIdsPacked())
	second := marshalUpload(t, packed("v1\nv2"))
	if err := decodeUpload(second, 0, m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetChunk().GetIdsPacked(); string(got) != "v1\nv2" {
		t.Fatalf("ids_packed %q, want %q", got, "v1\nv2")
	}
	if unsafe.SliceData(m.GetChunk().GetIdsPacked()) != mem1 {
		t.Error("the second chunk was not decoded into the first one's memory")
	}
	if !proto.Equal(m, packed("v1\nv2")) {
		t.Errorf("decoded %v, want %v", m, packed("v1\nv2"))
	}
	// A chunk with ids is proto.Unmarshal's to decode; the message holds
	// it alone afterwards.
	if err := decodeUpload(marshalUpload(t, chunk("a", "b")), 0, m); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(m, chunk("a", "b")) {
		t.Errorf("decoded %v, want %v", m, chunk("a", "b"))
	}
}

// FuzzUnmarshalUploadRequest: the server codec decodes any bytes as
// proto.Unmarshal does, into a fresh message or one that held an earlier
// chunk, from one buffer or several: the same error or none, and the
// same message.
func FuzzUnmarshalUploadRequest(f *testing.F) {
	f.Add(marshalUpload(f, packed("u1\nu2\n")), uint8(0))
	f.Add(marshalUpload(f, packed("u1\nu2\n")), uint8(3))
	f.Add(marshalUpload(f, chunk("u1", "u2")), uint8(0))
	f.Add(marshalUpload(f, both([]string{"u1"}, "u2\nu3")), uint8(2))
	f.Add(marshalUpload(f, header("title", "cmo", modeAdd, "k")), uint8(0))
	f.Add(append(marshalUpload(f, packed("a")), marshalUpload(f, packed("b"))...), uint8(0)) // chunk twice: merged
	f.Add([]byte{0x12, 0x03, 0x12, 0x01, 'x', 0x08, 0x01}, uint8(0))                         // a trailing unknown field
	f.Add([]byte{0x12, 0x02, 0x12, 0x00}, uint8(0))                                          // empty ids_packed
	f.Add([]byte{0x12, 0x04, 0x12, 0x03, 'x'}, uint8(1))                                     // cut short
	f.Add([]byte{0x92, 0x00, 0x03, 0x12, 0x01, 'x'}, uint8(0))                               // a tag in two bytes
	codec := encoding.GetCodecV2(grpcproto.Name)
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		for _, prev := range [][]byte{nil, marshalUpload(t, packed("earlier\nchunk")), marshalUpload(t, chunk("x"))} {
			want := &personadpb.UploadRequest{}
			werr := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, want)
			got := &personadpb.UploadRequest{}
			if prev != nil {
				if err := decodeUpload(prev, 0, got); err != nil {
					t.Fatal(err)
				}
			}
			gerr := decodeUpload(data, int(split), got)
			if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
				t.Fatalf("error %v, proto.Unmarshal's %v", gerr, werr)
			}
			if werr != nil {
				continue
			}
			opts := proto.MarshalOptions{Deterministic: true}
			wb, err1 := opts.Marshal(want)
			gb, err2 := opts.Marshal(got)
			if err1 != nil || err2 != nil || !bytes.Equal(wb, gb) || !proto.Equal(want, got) {
				t.Fatalf("decoded differently:\n got  %v\n want %v", got, want)
			}
		}
	})
}
