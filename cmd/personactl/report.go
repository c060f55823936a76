package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// runReport is `personactl report [--campaign ID] [--json]`: every
// campaign's spend, budgets, what remains and how it paces, from
// personad.v1.Reports/Campaigns, largest spend today first.
const usageReport = "report [--campaign ID] [--json]"

func runReport(ctx context.Context, g *globals, e env, args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	campaign := fs.String("campaign", "", "report only this campaign id")
	asJSON := fs.Bool("json", false, "print the report as JSON (amounts in micro-units)")
	setUsage(fs, usageReport)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return usagef("report: unexpected argument %q", fs.Arg(0))
	}
	resp, err := unary(ctx, g, func(ctx context.Context, conn *grpc.ClientConn) (*personadpb.ReportsCampaignsResponse, error) {
		return personadpb.NewReportsClient(conn).Campaigns(ctx, &personadpb.ReportsCampaignsRequest{Campaign: *campaign})
	})
	if err != nil {
		return callError("report", err)
	}
	if *asJSON {
		out, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true, EmitUnpopulated: true}.Marshal(resp)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "%s\n", out)
		return err
	}
	if *campaign != "" && len(resp.Campaigns) == 0 {
		// The ledger holds every campaign of the live rules, spent or
		// not, and those it recorded spend for: this is a typo, or a
		// campaign long gone.
		return fmt.Errorf("report: no campaign %q in the live rules or the ledger (personactl report lists them all)", *campaign)
	}
	return printReport(e.stdout, resp)
}

// printReport writes the report as a table. Amounts are in currency units
// (the JSON form has exact micro-units).
func printReport(w io.Writer, resp *personadpb.ReportsCampaignsResponse) error {
	day := "-"
	if resp.Day != nil {
		loc, err := time.LoadLocation(resp.TimeZone)
		if err != nil {
			loc = time.UTC
		}
		day = resp.Day.AsTime().In(loc).Format("2006-01-02") + " " + resp.TimeZone
	}
	fmt.Fprintf(w, "budget day %s, %d %s, largest spend today first\n\n", day, len(resp.Campaigns), plural(len(resp.Campaigns), "campaign", "campaigns"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "CAMPAIGN\tCUR\tTODAY\tDAILY\tLEFT TODAY\tSETTLED\tRESERVED\tTOTAL\tBUDGET\tLEFT\tPACING\tRATE\t")
	for _, c := range resp.Campaigns {
		id := c.Cid
		if !c.InRules {
			id += " (removed)"
		}
		cur := c.Currency
		if cur == "" {
			cur = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			id, cur,
			money(c.SpentTodayMicros), limit(c.DailyBudgetMicros), left(c.RemainingTodayMicros),
			money(c.SettledTodayMicros), money(c.ReservedMicros),
			money(c.SpentTotalMicros), limit(c.TotalBudgetMicros), left(c.RemainingTotalMicros),
			c.Pacing, rate(c))
	}
	return tw.Flush()
}

// money formats micro-units as currency units: at least two decimals,
// more when the amount has them (one impression often costs less than a
// cent).
func money(micros int64) string {
	sign := ""
	if micros < 0 {
		sign, micros = "-", -micros
	}
	s := fmt.Sprintf("%s%d.%06d", sign, micros/1e6, micros%1e6)
	for s[len(s)-1] == '0' && s[len(s)-3] != '.' {
		s = s[:len(s)-1]
	}
	return s
}

// limit is a budget, "-" for none (0).
func limit(micros int64) string {
	if micros == 0 {
		return "-"
	}
	return money(micros)
}

// left is what remains of a budget, "-" for no budget (-1).
func left(micros int64) string {
	if micros < 0 {
		return "-"
	}
	return money(micros)
}

// rate is even pacing's pass-through rate as a percentage; asap
// campaigns are not throttled.
func rate(c *personadpb.CampaignReport) string {
	if c.Pacing != "even" {
		return "-"
	}
	return strconv.FormatFloat(c.PacingRate*100, 'f', 1, 64) + "%"
}
