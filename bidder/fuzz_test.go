package bidder

import (
	"testing"
	"time"

	"github.com/personad/personad/engine"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

// FuzzBidRequest: any bytes, decoded as a JSON BidRequest (or the path of
// the field it does not decode at), validated and translated, and
// answered with every kind of no-bid, never panic; a
// request that validates translates into a Query the engine can trust.
func FuzzBidRequest(f *testing.F) {
	for _, seed := range []string{
		`{"id":"r","imp":[{"id":"1","banner":{"format":[{"w":300,"h":250}]}}],"site":{"domain":"a.com"},"user":{"buyeruid":"u1"}}`,
		`{"id":"r","imp":[{"id":"1","banner":{"w":728,"h":90},"bidfloor":1.25,"bidfloorcur":"EUR"},{"id":"2","banner":{"w":300,"h":250}}],"app":{"bundle":"b","ext":{"channel":"Mobile"}},"bcat":["IAB25"],"badv":["x.com"],"cur":["USD"],"tmax":80,"ext":{"debug":true}}`,
		`{"id":"r","imp":[{"id":"1","banner":{"w":1,"h":1}}],"user":{"data":[{"segment":[{"id":"title:cmo"},{"name":"Industry","value":"FinTech"},{"id":"::"}]}]}}`,
		`{"id":"r","imp":[{"id":"1","banner":{"w":300,"h":250},"bidfloor":"NaN"}]}`,
		`{"id":"r","imp":[{"id":"1","banner":{"w":300,"h":250},"bidfloor":"Infinity"}]}`,
		`{"id":"r","imp":[{"id":"1","banner":{"format":[{"w":0,"h":250}]}}]}`,
		`{"id":"r","imp":[{"id":"1"},{"id":"1"}],"site":{},"app":{}}`,
		`{"id":"r","imp":[{"id":"1","banner":{"w":300,"h":250},"bidfloor":1e308}],"tmax":-5,"test":3,"regs":{"coppa":2},"device":{"devicetype":99}}`,
		`{}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(seed))
	}
	l := DefaultConfig().Limits
	now := time.Unix(1_780_000_000, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &personadpb.BidRequest{}
		if err := unmarshalJSON.Unmarshal(data, req); err != nil {
			decodeErrorPath(data, err) // the HTTP answer's field: must not panic
			return
		}
		err := validate(req, &l)
		if err != nil {
			if _, ok := err.(*ValidationError); !ok {
				t.Fatalf("validate returned %T, want *ValidationError", err)
			}
			return
		}
		var q engine.Query
		translate(req, now, &q)
		if len(q.Imps) != len(req.Imp) {
			t.Fatalf("%d imps translated from %d", len(q.Imps), len(req.Imp))
		}
		for _, imp := range q.Imps {
			if len(imp.Sizes) == 0 {
				t.Fatalf("imp %q has no size", imp.ID)
			}
			for _, s := range imp.Sizes {
				if s.W <= 0 || s.H <= 0 || s.W > l.MaxDimension || s.H > l.MaxDimension {
					t.Fatalf("imp %q size %v out of range", imp.ID, s)
				}
			}
			if imp.FloorMicros < 0 {
				t.Fatalf("imp %q floor %d out of range", imp.ID, imp.FloorMicros)
			}
		}
		for _, r := range []engine.Reason{engine.ReasonNone, engine.ReasonUnmatchedUser, engine.ReasonNoEligible, engine.ReasonDeadline, engine.ReasonNoRules} {
			resp := buildResponse(req, &engine.Decision{NoBid: r}, "personad", nil)
			if resp.Id != req.Id || len(resp.Seatbid) != 0 {
				t.Fatalf("no-bid response %v", resp)
			}
			if _, err := marshalJSON.Marshal(resp); err != nil {
				t.Fatal(err)
			}
		}
	})
}
