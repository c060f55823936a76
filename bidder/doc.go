// Package bidder is personad's wire: the exchange-facing gRPC service
// (personad.v1.Bidder) and the OpenRTB 2.6 JSON endpoint over HTTP
// (POST /openrtb2/bid), both answering through one [Server].
//
// A request goes through four steps, the same on both wires:
//
//  1. Validate: a malformed request is rejected whole with a
//     [*ValidationError] naming the field path ("imp[0].banner.format[2].w");
//     the gRPC edge answers INVALID_ARGUMENT, the HTTP edge 400. Limits on
//     counts, sizes, floors and string lengths are in [Limits].
//  2. Translate the OpenRTB message into the engine's own compact
//     [engine.Query]: persona facts from user.data[].segment[], channel,
//     sizes, floors in integer micro-units. Query and Decision are per-request
//     scratch from a private sync.Pool, reset before they go back.
//  3. Decide within one deadline: min(tmax − NetworkMargin, MaxBudget), and
//     never later than the caller's own deadline. A budget that is already
//     spent is a no-bid (nbr 1) without asking the engine. With a ledger
//     that shares frequency counts through Redis, the user's counts are
//     read first ([ledger.Ledger.WarmFrequency]), for at most half the
//     time left (and redisledger's FetchWait), so that the decision,
//     which does no I/O, finds them; with the embedded ledger that step
//     costs nothing.
//  4. Answer: one seat with at most one bid per impression, or a no-bid with
//     an OpenRTB no-bid reason (see [NoBidReason] for the table). A request
//     with ext.debug gets ext.debug: for every campaign, the stage that
//     rejected it or that it was chosen.
//
// The OpenRTB HTTP wire answers 200 with a JSON BidResponse on a bid and
// 204 No Content on a no-bid, with the reason in the X-Personad-Nbr header;
// a debug request's no-bid is 200 with the BidResponse (nbr and ext.debug) so
// that the explanation has a body. Invalid input is 400 with a JSON body
// {"error": "...", "field": "imp[0].banner", "nbr": 2}.
//
// With a ledger (Config.Ledger), every bid is a reservation: its OpenRTB
// id is the ledger's bid id (16 hex digits) and its nurl, burl and lurl
// carry an HMAC token that names the bid and its price. Win, billing and
// loss notices arrive as those URLs (GET /notice/win, /notice/bill,
// /notice/loss) or as personad.v1.Notices calls, and take one path
// (notices.go): verify the token, check the clearing price (a decimal CPM,
// converted to per-impression micro-units, never above the bid), apply it
// to the ledger. A forged token, unknown bid or bad price is an error that
// changes nothing, counted in personad_notices_total (an unavailable
// ledger's error may come after the notice was applied: a retry tells). A
// notice whose record the ledger's log cannot take yet (ledger.ErrNotDurable:
// a full or read-only disk) is UNAVAILABLE / 503 "not acknowledged; send the
// notice again", without the file and errno, which are the operator's
// (personad's log, /healthz). personad.v1.Reports reads the ledger for
// planners.
//
// [Server.GRPCServer] assembles the gRPC server (Bidder, grpc.health.v1,
// server reflection, panic recovery, transport limits) and [Server.Handler]
// the HTTP mux (/openrtb2/bid, notices, /healthz, /metrics). /healthz is 200
// "ok" while serving, with a "degraded: " line while the ledger's log cannot
// be written and one for each Config.Degraded check that fails (personad's:
// the segment store's log). Nothing is logged per request on the success
// path, and no user id is ever logged.
package bidder
