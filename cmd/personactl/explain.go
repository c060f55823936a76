package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// runExplain is `personactl explain [--all] [--campaign ID] [--json] [--keep] REQUEST.json`:
// it sends the bid request with ext.debug set and prints why each campaign
// did or did not bid. REQUEST.json is an OpenRTB 2.6 bid request, the same
// JSON the exchange sends ("-" reads stdin). --campaign with an id the
// rules do not have prints the rest and fails (exit 1), naming it. The
// request is decided as an
// exchange's is, so each bid it gets has reserved its price and counted
// against the user's frequency caps; unless --keep, a loss notice for each
// bid then releases both, and asking why spends nothing.
const usageExplain = "explain [--all | --campaign ID] [--json] [--keep] REQUEST.json|-"

func runExplain(ctx context.Context, g *globals, e env, args []string) error {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	all := fs.Bool("all", false, "list every campaign, not only those that reached the auction")
	campaign := fs.String("campaign", "", "list only this campaign id")
	asJSON := fs.Bool("json", false, "print the raw bid response as JSON")
	keep := fs.Bool("keep", false, "keep the bids, as an exchange's: their reservations and frequency counts stand until their notices come or they expire")
	setUsage(fs, usageExplain)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usagef("explain: want one request file")
	}
	req, err := readBidRequest(fs.Arg(0), e.stdin, e.stderr)
	if err != nil {
		return err
	}
	if req.Ext == nil {
		req.Ext = &personadpb.BidRequestExt{}
	}
	req.Ext.Debug = true

	var released error
	resp, err := unary(ctx, g, func(ctx context.Context, conn *grpc.ClientConn) (*personadpb.BidResponse, error) {
		resp, err := personadpb.NewBidderClient(conn).Bid(ctx, req)
		if err == nil && !*keep {
			released = releaseBids(ctx, personadpb.NewNoticesClient(conn), resp)
		}
		return resp, err
	})
	if err != nil {
		return callError("explain", err)
	}
	if *asJSON {
		out, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(resp)
		if err != nil {
			return err
		}
		if _, err = fmt.Fprintf(e.stdout, "%s\n", out); err != nil {
			return err
		}
	} else if err := printExplanation(e.stdout, req, resp, *all, *campaign); err != nil {
		return err
	}
	return released
}

// releaseBids sends a loss notice for each of resp's bids, with the token
// of its lurl, so that a bid made only to be explained holds no budget and
// no frequency count. A bid without an lurl holds neither (a server
// without a ledger). A bid that cannot be released does not stop the
// others': every failure is returned.
func releaseBids(ctx context.Context, notices personadpb.NoticesClient, resp *personadpb.BidResponse) error {
	var errs []error
	for _, sb := range resp.Seatbid {
		for _, b := range sb.Bid {
			if b.Lurl == "" {
				continue
			}
			u, err := url.Parse(b.Lurl)
			token := ""
			if err == nil {
				token = u.Query().Get("t")
			}
			if token == "" {
				errs = append(errs, fmt.Errorf("explain: bid %s (campaign %s) was not released: its lurl %q has no notice token", b.Id, b.Cid, b.Lurl))
				continue
			}
			if _, err := notices.Loss(ctx, &personadpb.LossRequest{Token: token}); err != nil {
				errs = append(errs, callError(fmt.Sprintf("explain: releasing bid %s (campaign %s) with a loss notice", b.Id, b.Cid), err))
			}
		}
	}
	return errors.Join(errs...)
}

// readBidRequest reads a bid request in OpenRTB JSON. Fields personad
// does not read (an exchange's own, or OpenRTB's it has no use for, such
// as imp.banner.mimes) are dropped, as the HTTP wire drops them, with a
// note naming the first on stderr, so that an exchange's real request
// can be explained as it is.
func readBidRequest(name string, stdin io.Reader, stderr io.Writer) (*personadpb.BidRequest, error) {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	var req personadpb.BidRequest
	strict := protojson.Unmarshal(data, &req)
	if strict == nil {
		return &req, nil
	}
	req.Reset()
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, &req); err != nil {
		return nil, fmt.Errorf("explain: %s is not an OpenRTB bid request: %v", name, err)
	}
	fmt.Fprintf(stderr, "note: %s has fields personad does not read, ignored as the HTTP wire ignores them (the first: %v)\n", name, strict)
	return &req, nil
}

// auctionStages reached the impression: shown by default.
var auctionStages = map[string]bool{"chosen": true, "outranked": true, "already_bid": true}

func printExplanation(w io.Writer, req *personadpb.BidRequest, resp *personadpb.BidResponse, all bool, campaign string) error {
	dbg := resp.GetExt().GetDebug()
	bids := 0
	for _, sb := range resp.Seatbid {
		bids += len(sb.Bid)
	}
	fmt.Fprintf(w, "request %s: %d bid(s) for %d impression(s)", resp.Id, bids, len(req.Imp))
	if bids == 0 {
		fmt.Fprintf(w, ", no bid (nbr %d: %s)", resp.Nbr, nbrText(resp.Nbr))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "rules %s, segments v%d, channel %s\n", dbg.GetRulesVersion(), dbg.GetSegmentsVersion(), dbg.GetChannel())
	fmt.Fprintf(w, "persona: %s\n", cmp.Or(strings.Join(dbg.GetPersona(), " "), "(none known)"))
	for _, sb := range resp.Seatbid {
		for _, b := range sb.Bid {
			fmt.Fprintf(w, "imp %s: %s / %s %dx%d at %.2f %s CPM\n", b.Impid, b.Cid, b.Crid, b.W, b.H, b.Price, resp.Cur)
		}
	}

	counts := map[string]int{}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	shown := 0
	for _, c := range dbg.GetCampaigns() {
		counts[c.Stage]++
		if campaign != "" && c.Cid != campaign || campaign == "" && !all && !auctionStages[c.Stage] {
			continue
		}
		if shown == 0 {
			fmt.Fprintln(tw, "\nSTAGE\tCAMPAIGN\tIMP\tCREATIVE\tDETAIL")
		}
		shown++
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Stage, c.Cid, cmp.Or(c.Impid, "-"), cmp.Or(c.Crid, "-"), c.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	stages := make([]string, 0, len(counts))
	for s := range counts {
		stages = append(stages, s)
	}
	slices.SortFunc(stages, func(a, b string) int { return cmp.Or(cmp.Compare(counts[b], counts[a]), cmp.Compare(a, b)) })
	var parts []string
	for _, s := range stages {
		parts = append(parts, fmt.Sprintf("%s %d", s, counts[s]))
	}
	if _, err := fmt.Fprintf(w, "\nstages: %s\n", strings.Join(parts, ", ")); err != nil {
		return err
	}
	if campaign != "" && shown == 0 {
		// The trace names every campaign of the rules, so an id it lacks
		// is not in them: most likely a typo, which an empty table would
		// have passed over in silence.
		if dbg.GetRulesVersion() == "" {
			return fmt.Errorf("explain: campaign %q: the server has no rules loaded", campaign)
		}
		return fmt.Errorf("explain: no campaign %q in rules %s (personactl rules get --yaml lists them)", campaign, dbg.GetRulesVersion())
	}
	return nil
}

// nbrText names the OpenRTB no-bid reasons personad answers.
func nbrText(nbr int32) string {
	switch nbr {
	case 0:
		return "unknown: campaigns target this persona but none could bid here"
	case 1:
		return "technical error or latency budget exhausted"
	case 2:
		return "invalid request"
	case 8:
		return "unmatched user"
	}
	return "see OpenRTB no-bid reason codes"
}
