package bidder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/personad/personad/engine"
	"github.com/personad/personad/ledger"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

// HTTP paths of the notice endpoints (Handler, with a ledger).
const (
	PathNoticeWin  = "/notice/win"
	PathNoticeBill = "/notice/bill"
	PathNoticeLoss = "/notice/loss"
)

// noticeKind is win, bill or loss; also a metric label.
type noticeKind uint8

const (
	kindWin noticeKind = iota
	kindBill
	kindLoss
	numKinds
)

var kindNames = [numKinds]string{"win", "bill", "loss"}

// noticeURLs builds the nurl, burl and lurl of bids: the notice endpoints
// under the public base URL with the bid's signed token. The exchange
// substitutes ${AUCTION_PRICE} (the clearing price, CPM) and
// ${AUCTION_LOSS} (the loss reason code).
type noticeURLs struct {
	signer *ledger.Signer
	win    string // base + PathNoticeWin + "?t="
	bill   string
	loss   string
	size   int // the three URLs' length together
}

// lossBidWon is OpenRTB's loss reason code "Bid Won".
const lossBidWon = 0

const (
	macroPrice   = "${AUCTION_PRICE}"
	macroLoss    = "${AUCTION_LOSS}"
	noticePrice  = "&price=" + macroPrice
	noticeReason = "&reason=" + macroLoss
)

func newNoticeURLs(signer *ledger.Signer, base string) *noticeURLs {
	base = strings.TrimRight(base, "/")
	n := &noticeURLs{
		signer: signer,
		win:    base + PathNoticeWin + "?t=",
		bill:   base + PathNoticeBill + "?t=",
		loss:   base + PathNoticeLoss + "?t=",
	}
	tok := len(signer.Sign(0, 0)) // every token is the same length
	n.size = len(n.win) + len(n.bill) + len(n.loss) + 3*tok + 2*len(noticePrice) + len(noticeReason)
	return n
}

// urls returns the notice URLs of bid id at cpmMicros. The token signs
// the per-impression price the ledger reserved (engine.ImpressionMicros):
// the most a bill may settle.
func (n *noticeURLs) urls(id uint64, cpmMicros int64) (nurl, burl, lurl string) {
	// Built on the stack (unless the base URL is long), then one
	// allocation: the three URLs are substrings of one string.
	var buf [512]byte
	b := buf[:0]
	if n.size > len(buf) {
		b = make([]byte, 0, n.size)
	}
	b = append(b, n.win...)
	b = n.signer.AppendSign(b, id, engine.ImpressionMicros(cpmMicros))
	t := b[len(n.win):]
	b = append(b, noticePrice...)
	w := len(b)
	b = append(append(append(b, n.bill...), t...), noticePrice...)
	bl := len(b)
	b = append(append(append(b, n.loss...), t...), noticeReason...)
	all := string(b)
	return all[:w], all[w:bl], all[bl:]
}

// formatBidID is the OpenRTB bid id of a ledger bid: 16 hex digits.
func formatBidID(id uint64) string {
	const digits = "0123456789abcdef"
	var buf [16]byte
	for i := 15; i >= 0; i-- {
		buf[i] = digits[id&0xf]
		id >>= 4
	}
	return string(buf[:])
}

// notice is one win, bill or loss, as either wire received it.
type notice struct {
	kind   noticeKind
	token  string
	price  string // clearing price, CPM, as substituted for ${AUCTION_PRICE}
	reason string // loss reason, as substituted for ${AUCTION_LOSS}
}

// noticeResult is what a successful notice did.
type noticeResult struct {
	bid           uint64
	settledMicros int64 // bill: the per-impression spend settled
	// lossAsWin: a loss notice with reason 0 ("Bid Won"), taken as the
	// bid's win and counted as one.
	lossAsWin bool
}

// maxPriceCPM bounds a clearing price before conversion, so that the
// micro-unit arithmetic cannot overflow; any real bid is far below.
const maxPriceCPM = 1e9

// parseCPM parses a clearing price as the exchange substitutes it: a plain
// decimal number of currency units per 1000 impressions. It returns the
// price in CPM micro-units, read exactly from the decimal digits (no
// float): six decimals, as bid prices have, and a seventh digit of 5 or
// more rounds up. Digits past the sixth are an exchange's float noise
// ("4.5000000001"), which must not turn a price equal to the bid into one
// above it; the bill is then price / 1000 per impression, rounded up
// (engine.ImpressionMicros), and checked against the bid's reservation,
// which it never exceeds.
func parseCPM(s string) (int64, error) {
	switch {
	case s == "":
		return 0, &ValidationError{Path: "price", Msg: "required"}
	case strings.HasPrefix(s, "-"):
		return 0, &ValidationError{Path: "price", Msg: fmt.Sprintf("%q is negative", s)}
	case s == ".":
		return 0, &ValidationError{Path: "price", Msg: fmt.Sprintf("%q is not a decimal number", s)}
	}
	dot := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
		case c == '.' && !dot:
			dot = true
		default:
			return 0, &ValidationError{Path: "price", Msg: fmt.Sprintf("%q is not a decimal number", truncate(s, 64))}
		}
	}
	whole, frac, _ := strings.Cut(s, ".")
	whole = strings.TrimLeft(whole, "0")
	if len(whole) > 10 { // above maxPriceCPM, and the sum below could overflow
		return 0, &ValidationError{Path: "price", Msg: fmt.Sprintf("%q is above any bid", truncate(s, 64))}
	}
	var micros int64
	for i := 0; i < len(whole); i++ {
		micros = micros*10 + int64(whole[i]-'0')
	}
	for i := range 6 {
		micros *= 10
		if i < len(frac) {
			micros += int64(frac[i] - '0')
		}
	}
	if len(frac) > 6 && frac[6] >= '5' {
		micros++
	}
	if micros > maxPriceCPM*1e6 {
		return 0, &ValidationError{Path: "price", Msg: fmt.Sprintf("%q is above any bid", truncate(s, 64))}
	}
	return micros, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// errNoLedger is a notice to a server without a ledger (it made no bids a
// notice could name).
var errNoLedger = fmt.Errorf("bidder: notices: %w", ledger.ErrUnknownBid)

// handleNotice is the one path of every notice, on both wires: verify the
// token, check the price against the bid it signs, then apply the notice
// to the ledger. Every outcome is counted. A refusal (a forged token,
// an unknown bid, a bad price, a conflict) changes nothing; an error
// while the ledger waits for its record to be durable (the caller's
// context ended, the log failed) may come after the notice was applied,
// and a retry then answers only once its record is durable. A loss
// notice with reason 0 is counted as the win it is taken as, as the
// ledger counts it; one refused before its reason is read, as a loss.
func (s *Server) handleNotice(ctx context.Context, n *notice, w wire) (noticeResult, error) {
	res, err := s.applyNotice(ctx, n)
	kind := n.kind
	if res.lossAsWin {
		kind = kindWin
	}
	s.metrics.notice(w, kind, err)
	return res, err
}

func (s *Server) applyNotice(ctx context.Context, n *notice) (noticeResult, error) {
	l := s.cfg.Ledger
	if l == nil {
		return noticeResult{}, errNoLedger
	}
	name := kindNames[n.kind]
	if n.token == "" {
		return noticeResult{}, &ValidationError{Path: "token", Msg: "required"}
	}
	bid, bidPrice, err := l.Signer().Verify(n.token)
	if err != nil {
		return noticeResult{}, fmt.Errorf("bidder: %s notice: token: %w", name, err)
	}
	res := noticeResult{bid: bid}
	// An exchange that calls a notice URL without substituting a macro
	// sends the macro itself. A win's price and a loss's reason are
	// optional and move no money: such a notice is taken without them,
	// not refused, since a refused win would be forgotten (a won bid that
	// is never billed counts at its bid price when its reservation
	// expires; one whose win was refused, at nothing) and a refused loss
	// would hold its reservation until then. A bill needs its price.
	price, reason := n.price, n.reason
	switch {
	case n.kind == kindWin && price == macroPrice:
		price = ""
	case n.kind == kindBill && price == macroPrice:
		return res, &ValidationError{Path: "price", Msg: macroPrice + " was not substituted: a bill needs the clearing price"}
	case n.kind == kindLoss && reason == macroLoss:
		reason = ""
	}
	var clearing int64
	if n.kind == kindBill || price != "" {
		cpm, err := parseCPM(price)
		if err != nil {
			return res, err
		}
		clearing = engine.ImpressionMicros(cpm)
		if clearing > bidPrice {
			return res, fmt.Errorf("bidder: %s notice: bid %s: price: %s CPM (%d micros per impression) is above the bid (%d): %w",
				name, formatBidID(bid), price, clearing, bidPrice, ledger.ErrPrice)
		}
	}
	won := n.kind == kindWin
	if n.kind == kindLoss && reason != "" {
		r, err := strconv.ParseUint(reason, 10, 32)
		if err != nil || r > math.MaxInt32 {
			return res, &ValidationError{Path: "reason", Msg: fmt.Sprintf("%q is not an OpenRTB loss reason code", truncate(reason, 64))}
		}
		// Loss reason 0 is "Bid Won" (OpenRTB's loss reason codes): an exchange
		// that calls the lurl of every bid with its outcome says so. Taken
		// as a loss, the won bid would count nothing unless billed.
		won = r == lossBidWon
		res.lossAsWin = won
	}
	now := s.cfg.Now().UnixNano()
	switch {
	case won:
		err = l.Win(ctx, bid, now)
	case n.kind == kindBill:
		err = l.Bill(ctx, bid, clearing, now)
		res.settledMicros = clearing
	default:
		err = l.Loss(ctx, bid, now)
	}
	if err != nil {
		return res, refusedNotice(name, bid, err)
	}
	return res, nil
}

// refusedNotice is the error of a name notice for bid that the ledger
// refused with err. A log that could not take its record (a full or
// read-only disk) is told without its cause, which names the server's
// files and errno: the operator's to read (personad's "ledger log not
// durable" line, /healthz), not the exchange's.
func refusedNotice(name string, bid uint64, err error) error {
	if errors.Is(err, ledger.ErrNotDurable) {
		err = errNotDurable
	}
	return fmt.Errorf("bidder: %s notice: bid %s: %w", name, formatBidID(bid), err)
}

// errNotDurable is what an exchange is told of a notice the ledger's
// durable log could not take: not acknowledged, to be sent again.
var errNotDurable = fmt.Errorf("%w: not acknowledged; send the notice again", ledger.ErrNotDurable)

// noticesService implements personad.v1.Notices over the Server's ledger.
type noticesService struct {
	personadpb.UnimplementedNoticesServer
	s *Server
}

// Win implements personad.v1.Notices/Win.
func (ns *noticesService) Win(ctx context.Context, req *personadpb.WinRequest) (*personadpb.WinResponse, error) {
	res, err := ns.s.handleNotice(ctx, &notice{kind: kindWin, token: req.Token, price: req.Price}, wireGRPC)
	if err != nil {
		return nil, grpcError(err)
	}
	return &personadpb.WinResponse{Bid: formatBidID(res.bid)}, nil
}

// Bill implements personad.v1.Notices/Bill.
func (ns *noticesService) Bill(ctx context.Context, req *personadpb.BillRequest) (*personadpb.BillResponse, error) {
	res, err := ns.s.handleNotice(ctx, &notice{kind: kindBill, token: req.Token, price: req.Price}, wireGRPC)
	if err != nil {
		return nil, grpcError(err)
	}
	return &personadpb.BillResponse{Bid: formatBidID(res.bid), SettledMicros: res.settledMicros}, nil
}

// Loss implements personad.v1.Notices/Loss.
func (ns *noticesService) Loss(ctx context.Context, req *personadpb.LossRequest) (*personadpb.LossResponse, error) {
	res, err := ns.s.handleNotice(ctx, &notice{kind: kindLoss, token: req.Token, reason: req.Reason}, wireGRPC)
	if err != nil {
		return nil, grpcError(err)
	}
	return &personadpb.LossResponse{Bid: formatBidID(res.bid)}, nil
}

// noticeAnswer is the JSON body of an HTTP notice answer.
type noticeAnswer struct {
	Bid           string `json:"bid,omitempty"`
	SettledMicros int64  `json:"settled_micros,omitempty"`
	Error         string `json:"error,omitempty"`
	Field         string `json:"field,omitempty"`
}

// serveNoticeMethod answers a notice path's methods other than GET: 405
// with Allow: GET and the JSON error every notice answer has, counted as
// an invalid notice of its kind (as a bid path's wrong method counts as
// an invalid request). Nothing is settled.
func (s *Server) serveNoticeMethod(w http.ResponseWriter, r *http.Request, kind noticeKind) {
	s.metrics.notices[wireHTTP][kind][noticeInvalid].Inc()
	out, _ := json.Marshal(noticeAnswer{Error: fmt.Sprintf("bidder: method %s: want GET", r.Method)})
	w.Header().Set("Allow", http.MethodGet)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusMethodNotAllowed)
	w.Write(append(out, '\n'))
}

// serveNotice answers GET /notice/{win,bill,loss}?t=TOKEN&price=P&reason=R:
// 200 with {"bid": ...} when the notice is applied or was already, else
// the status of the error table (400, 404, 409, 503) with {"error": ...}.
func (s *Server) serveNotice(kind noticeKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			// The GET pattern also routes HEAD: a prefetch must not
			// settle money.
			s.serveNoticeMethod(w, r, kind)
			return
		}
		q := r.URL.Query()
		n := &notice{kind: kind, token: q.Get("t"), price: q.Get("price"), reason: q.Get("reason")}
		res, err := s.handleNotice(r.Context(), n, wireHTTP)
		var body noticeAnswer
		code := http.StatusOK
		if err != nil {
			_, code, _ = mapError(err)
			body.Error = err.Error()
			if code == http.StatusInternalServerError {
				body.Error = ErrInternal.Error()
			}
			var ve *ValidationError
			switch {
			case errors.As(err, &ve):
				body.Field = ve.Path
			case errors.Is(err, ledger.ErrPrice): // above the bid
				body.Field = "price"
			case errors.Is(err, ledger.ErrForged): // t, named as on the gRPC wire
				body.Field = "token"
			}
		} else {
			body.Bid, body.SettledMicros = formatBidID(res.bid), res.settledMicros
		}
		out, _ := json.Marshal(body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		w.Write(append(out, '\n'))
	}
}
