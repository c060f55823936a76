package bidder

import (
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// An upload streams its ids as chunks of ~0.5–1 MB (personactl packs
// 32,768 ids into one ids_packed field), and proto.Unmarshal copies each
// chunk's ids_packed into a new slice: ~100 MB of garbage for 10M ids,
// which on a server with a small heap starts a collection every few
// hundred thousand ids, each with its stop-the-world pauses. Segments.Upload
// therefore receives into a few UploadRequests it recycles, and the
// server's codec decodes a chunk that holds only ids_packed into the
// slice the recycled message already has. The result is exactly
// proto.Unmarshal's (FuzzUnmarshalUploadRequest checks); any other shape
// — ids, unknown fields, a field repeated, malformed bytes — is left to
// proto.Unmarshal.

// Field numbers decoded by hand; TestUploadRequestFields checks them
// against the descriptors.
const (
	uploadChunkField     = 2 // UploadRequest.chunk
	uploadIDsPackedField = 2 // UploadChunk.ids_packed
)

// unmarshalUploadRequest is proto.Unmarshal(data, m), reusing the
// ids_packed slice m holds from an earlier message.
func unmarshalUploadRequest(data mem.BufferSlice, m *personadpb.UploadRequest) error {
	var b []byte
	if len(data) == 1 {
		b = data[0].ReadOnlyData()
	} else {
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		b = buf.ReadOnlyData()
	}
	packed, ok := packedOnly(b)
	if !ok {
		return proto.Unmarshal(b, m)
	}
	holder, _ := m.Msg.(*personadpb.UploadRequest_Chunk)
	var c *personadpb.UploadChunk
	if holder != nil {
		c = holder.Chunk
	}
	var reuse []byte
	if c != nil {
		reuse = c.IdsPacked[:0]
		proto.Reset(c)
	} else {
		c = &personadpb.UploadChunk{}
	}
	proto.Reset(m)
	c.IdsPacked = append(reuse, packed...)
	if holder == nil {
		holder = &personadpb.UploadRequest_Chunk{}
	}
	holder.Chunk = c
	m.Msg = holder
	return nil
}

// packedOnly returns the ids_packed payload of an UploadRequest's wire
// bytes b when b is exactly one chunk field holding exactly one non-empty
// ids_packed field; ok is false for anything else.
func packedOnly(b []byte) (packed []byte, ok bool) {
	chunk, ok := onlyBytesField(b, uploadChunkField)
	if !ok {
		return nil, false
	}
	packed, ok = onlyBytesField(chunk, uploadIDsPackedField)
	if !ok || len(packed) == 0 {
		return nil, false
	}
	return packed, true
}

// onlyBytesField returns the payload of b when b is one field num of the
// bytes wire type and nothing else.
func onlyBytesField(b []byte, num protowire.Number) ([]byte, bool) {
	n, typ, tagLen := protowire.ConsumeTag(b)
	if tagLen < 0 || n != num || typ != protowire.BytesType {
		return nil, false
	}
	v, vLen := protowire.ConsumeBytes(b[tagLen:])
	if vLen < 0 || tagLen+vLen != len(b) {
		return nil, false
	}
	return v, true
}
