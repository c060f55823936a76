package bidder

import (
	"slices"

	"github.com/personad/personad/engine"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/rules"
)

// OpenRTB 2.6 no-bid reason codes (list 5.24) personad answers with.
const (
	NbrUnknown        int32 = 0
	NbrTechnicalError int32 = 1
	NbrInvalidRequest int32 = 2
	NbrUnmatchedUser  int32 = 8
)

// NoBidReason maps the engine's reason for a no-bid to the OpenRTB nbr, the
// one table both wires use:
//
//	engine reason        nbr  why
//	unmatched_user        8   no campaign's targeting admits this persona
//	                          (on any channel)
//	no_eligible           0   campaigns target the persona, but none could bid
//	                          here (status, flight, channel, currency, blocks,
//	                          size, creative, floor, budget, frequency):
//	                          OpenRTB has no closer code than "unknown"
//	deadline              1   the latency budget ran out: a technical error
//	no_rules              1   no rule set loaded: the server is not ready
//	anything else         0
//
// A budget already spent before the decision (tmax below the network
// margin) is also 1. An invalid request (2) never reaches the engine: the
// gRPC wire answers INVALID_ARGUMENT and the HTTP wire 400 with nbr 2 in
// its JSON body.
func NoBidReason(r engine.Reason) int32 {
	switch r {
	case engine.ReasonUnmatchedUser:
		return NbrUnmatchedUser
	case engine.ReasonDeadline, engine.ReasonNoRules:
		return NbrTechnicalError
	}
	return NbrUnknown
}

// buildResponse turns a decision into the OpenRTB response. Bid slices
// (adomain, cat) share the compiled rules' read-only arrays: the response
// must not be modified. A bid the ledger reserved (Bid.ID != 0) is named
// by its ledger id and, with n, carries its signed notice URLs.
func buildResponse(req *personadpb.BidRequest, d *engine.Decision, seat string, n *noticeURLs) *personadpb.BidResponse {
	resp := &personadpb.BidResponse{Id: req.Id}
	if len(d.Bids) > 0 {
		// One response has one currency: the engine bids only in a
		// currency the request accepts and in one per decision, its first
		// bid's (compiled campaigns carry their effective currency). A bid
		// is never dropped here: it may hold a ledger reservation.
		cur := d.Bids[0].Campaign.Currency
		if cur == "" {
			cur = rules.DefaultCurrency
		}
		bids := make([]*personadpb.Bid, 0, len(d.Bids))
		for i := range d.Bids {
			b := &d.Bids[i]
			impid := req.Imp[b.Imp].Id
			id := bidID(req.Id, impid)
			var nurl, burl, lurl string
			if b.ID != 0 {
				id = formatBidID(b.ID)
				if n != nil {
					nurl, burl, lurl = n.urls(b.ID, b.PriceMicros)
				}
			}
			bids = append(bids, &personadpb.Bid{
				Id:      id,
				Impid:   impid,
				Price:   microsToCPM(b.PriceMicros),
				Adm:     b.Creative.Adm,
				Adomain: slices.Clip(b.Campaign.Adomain),
				Crid:    b.Creative.ID,
				Cid:     b.Campaign.ID,
				Cat:     slices.Clip(b.Creative.Cat),
				W:       b.Creative.W,
				H:       b.Creative.H,
				Nurl:    nurl,
				Burl:    burl,
				Lurl:    lurl,
			})
		}
		resp.Seatbid = []*personadpb.SeatBid{{Bid: bids, Seat: seat}}
		resp.Cur = cur
	} else {
		resp.Nbr = NoBidReason(d.NoBid)
	}
	if req.GetExt().GetDebug() {
		resp.Ext = &personadpb.BidResponseExt{Debug: debugInfo(d)}
	}
	return resp
}

// noBidResponse answers a no-bid decided before the engine ran, for a
// request without ext.debug (Server.expired answers one with it).
func noBidResponse(req *personadpb.BidRequest, nbr int32) *personadpb.BidResponse {
	return &personadpb.BidResponse{Id: req.Id, Nbr: nbr}
}

// debugInfo copies the decision's explanation: d is pooled scratch, so
// nothing of its slices may escape.
func debugInfo(d *engine.Decision) *personadpb.Debug {
	dbg := &personadpb.Debug{
		RulesVersion:    d.RulesVersion,
		SegmentsVersion: d.SegmentsVersion,
		Channel:         d.Channel,
		Persona:         slices.Clone(d.Persona),
	}
	if len(d.Trace) > 0 {
		dbg.Campaigns = make([]*personadpb.CampaignDecision, len(d.Trace))
		for i, t := range d.Trace {
			dbg.Campaigns[i] = &personadpb.CampaignDecision{
				Cid:    t.Campaign,
				Impid:  t.Imp,
				Stage:  t.Stage.String(),
				Detail: t.Detail,
				Crid:   t.Creative,
			}
		}
	}
	return dbg
}

// bidID names a bid made without a ledger: 16 hex digits of FNV-1a over the request id and the
// impression id. Impression ids are unique within a request, so bid ids are
// unique within a response, and the same request always gets the same ids
// (an exchange's retry is recognisable by its notices).
func bidID(reqID, impID string) string {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(reqID); i++ {
		h = (h ^ uint64(reqID[i])) * prime
	}
	// Separator: 0xff never occurs in UTF-8 (proto strings are UTF-8), so
	// ("ab", "c") and ("a", "bc") hash different inputs.
	h = (h ^ 0xff) * prime
	for i := 0; i < len(impID); i++ {
		h = (h ^ uint64(impID[i])) * prime
	}
	return formatBidID(h)
}
