package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/personad/personad/ledger/pacesim"
)

// cmdPace runs the deterministic pacing simulator (package
// ledger/pacesim) and prints each simulated day, the last being the
// measured one. It needs no server: it drives a real in-memory ledger.
func cmdPace(_ context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := pacesim.DefaultConfig()
	fs := flag.NewFlagSet("personabench pace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	setUsage(fs, "pace")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "simulation seed (the same seed gives the same days)")
	fs.IntVar(&cfg.Campaigns, "campaigns", cfg.Campaigns, "even-paced campaigns")
	fs.IntVar(&cfg.WarmupDays, "warmup-days", cfg.WarmupDays, "days simulated before the measured one, for the controller to learn traffic profiles")
	fs.Float64Var(&cfg.ImpressionsPerDay, "impressions", cfg.ImpressionsPerDay, "mean impressions a campaign's daily budget buys")
	fs.Float64Var(&cfg.DayWobble, "day-wobble", cfg.DayWobble, "log-normal sigma of a day's traffic level around the campaign's usual")
	fs.Float64Var(&cfg.HourWobble, "hour-wobble", cfg.HourWobble, "log-normal sigma of each hour's traffic around the day's curve")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case cfg.Campaigns <= 0:
		return usagef("pace: --campaigns must be > 0")
	case cfg.WarmupDays < 0:
		return usagef("pace: --warmup-days must be >= 0")
	case cfg.ImpressionsPerDay <= 0:
		return usagef("pace: --impressions must be > 0")
	case cfg.DayWobble < 0 || cfg.HourWobble < 0:
		return usagef("pace: wobbles must be >= 0")
	}
	rep, err := pacesim.Simulate(cfg)
	if err != nil {
		return err
	}
	if *jsonOut {
		return writeJSON(stdout, rep)
	}
	for _, d := range rep.Days[:len(rep.Days)-1] {
		fmt.Fprintf(stdout, "warm-up day %d: pacing error mean %.2f%%, delivery mean %.2f%%\n",
			d.Day, 100*d.PacingErrorMean, 100*d.DeliveryMean)
	}
	_, err = fmt.Fprintln(stdout, rep)
	return err
}
