// Package pacesim is a deterministic pacing simulator: it replays days of
// diurnal bid traffic against a real in-memory ledger.Ledger, driving its
// clock by hand (Config.Manual, Ledger.Tick), so 24 hours run in seconds.
// It reports what the issue asks of budget pacing: delivery ratio,
// overspend, pacing error (normalised RMSE of hourly spend against the
// plan: the daily budget spread over the hours in proportion to the
// campaign's traffic), early exhaustion and frequency-cap violations. The
// load harness exposes it as `personabench pace`.
package pacesim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/personad/personad/ledger"
)

// Config sizes a simulation. Start from DefaultConfig.
type Config struct {
	Seed      uint64
	Campaigns int
	// WarmupDays are simulated before the measured day, so the controller
	// has learned traffic profiles (it keeps learning on the measured day).
	WarmupDays int
	// ImpressionsPerDay is the mean number of impressions a campaign's
	// daily budget buys.
	ImpressionsPerDay float64
	// SupplyMin and SupplyMax bound each campaign's supply ratio: the
	// spend its traffic would bring at pass-through rate 1 over its daily
	// budget. Campaigns under 1 cannot deliver and are reported apart.
	SupplyMin, SupplyMax float64
	// WinRate is the chance a bid wins; a win is billed at 50-100% of the
	// bid, a loss is released.
	WinRate float64
	// CappedShare of the campaigns have a frequency cap.
	CappedShare float64
	Users       int
	Workers     int
	Step        time.Duration // the controller interval and the time step
	// DayWobble is the standard deviation of the log of a day's traffic
	// level around the campaign's usual; HourWobble the same for each hour
	// around the day's curve.
	DayWobble, HourWobble float64
}

// DefaultConfig is the scenario: 1,000 campaigns; three warm-up
// days, so that the measured day's traffic profiles are learned from more
// than one noisy day.
func DefaultConfig() Config {
	return Config{
		Seed:              1,
		Campaigns:         1000,
		WarmupDays:        3,
		ImpressionsPerDay: 10000,
		SupplyMin:         0.7,
		SupplyMax:         5,
		WinRate:           0.5,
		CappedShare:       0.3,
		Users:             2_000_000,
		Workers:           runtime.GOMAXPROCS(0),
		Step:              time.Minute,
		DayWobble:         0.15,
		HourWobble:        0.1,
	}
}

// DayReport is the measurements of one simulated day.
type DayReport struct {
	Day int
	// Over the campaigns whose supply suffices on the day (supply ratio
	// times the day's traffic level >= 1.1):
	Sufficient        int
	DeliveryMean      float64 // settled / daily budget
	DeliveryMin       float64
	DeliveryP05       float64
	BelowDeliveryGoal int     // campaigns under 98% delivery
	PacingErrorMean   float64 // per-campaign NRMSE of hourly spend vs plan
	PacingErrorP50    float64
	PacingErrorP90    float64
	PacingErrorMax    float64
	PacingAboveGoal   int // campaigns whose pacing error is over 10%
	// OpenLoopNoiseMean is the mean pacing error of a pacer that knew the
	// day in advance and held one rate all day: the hourly noise of
	// thinning the hour's requests by pass-through and win, and of
	// clearing prices (see measure). It scales the error to the campaigns'
	// size; a feedback controller, which answers a lucky or unlucky
	// stretch within the hour, can come in under it.
	OpenLoopNoiseMean float64
	AggregatePacing   float64 // NRMSE of the summed hourly spend vs summed plan
	EarlyExhaustion   int     // spent 99% of the budget before 22:00
	// Over all campaigns:
	MaxOverspend        float64 // max over campaigns of (spend - budget) / budget, >= 0
	Overspent           int     // campaigns above their daily budget
	FrequencyViolations int     // impressions past a cap within its window
	Impressions         int64
	Requests            int64
	SupplyLimited       int // campaigns with supply ratio < 1.1
	SupplyLimitedMean   float64
}

// Report is a simulation's result: one DayReport per simulated day, the
// last being the measured one.
type Report struct {
	Days    []DayReport
	Elapsed time.Duration
}

// String renders the measured day.
func (r Report) String() string {
	d := r.Days[len(r.Days)-1]
	return fmt.Sprintf("day %d: %d campaigns with enough supply: delivery mean %.2f%% min %.2f%% p05 %.2f%% (%d under 98%%); "+
		"pacing error mean %.2f%% p50 %.2f%% p90 %.2f%% max %.2f%% (%d over 10%%; open-loop noise %.2f%%, aggregate %.2f%%); early exhaustion %d; "+
		"overspend max %.3f%% (%d campaigns over); frequency violations %d; %d impressions from %d requests; "+
		"%d supply-limited campaigns delivered %.1f%%; simulated %d day(s) in %v",
		d.Day, d.Sufficient, 100*d.DeliveryMean, 100*d.DeliveryMin, 100*d.DeliveryP05, d.BelowDeliveryGoal,
		100*d.PacingErrorMean, 100*d.PacingErrorP50, 100*d.PacingErrorP90, 100*d.PacingErrorMax, d.PacingAboveGoal, 100*d.OpenLoopNoiseMean, 100*d.AggregatePacing,
		d.EarlyExhaustion, 100*d.MaxOverspend, d.Overspent, d.FrequencyViolations, d.Impressions, d.Requests,
		d.SupplyLimited, 100*d.SupplyLimitedMean, len(r.Days), r.Elapsed.Round(time.Millisecond))
}

type campaign struct {
	lc     *ledger.Campaign
	budget int64   // micros
	price  int64   // micros per impression
	supply float64 // usual supply ratio
	// daySupply is the supply ratio of the simulated day: supply times
	// the day's traffic level.
	daySupply float64
	perDay    float64 // requests per day
	shift     float64 // hours the traffic curve is shifted
	amp       float64
	capMax    int32
	capWin    time.Duration
	rng       *rand.Rand
	hourReqs  [24]float64
	hourBill  [24]int64
	spent     int64
	exhaust   int64 // unix nanos when 99% was reached; 0: never
	served    map[uint64][]int64
	viol      int
	imps      int64
	reqs      int64
}

// curve is the relative traffic at hour-of-day h (fractional) for a
// campaign whose audience is shifted by shift hours: a business-hours
// bell over a night floor.
func curve(h, shift, amp float64) float64 {
	x := math.Mod(h-shift+24, 24)
	return 0.15 + amp*math.Exp(-(x-14)*(x-14)/(2*3.5*3.5)) + 0.2*amp*math.Exp(-(x-20)*(x-20)/(2*1.5*1.5))
}

func poisson(rng *rand.Rand, mean float64) int {
	if mean <= 0 {
		return 0
	}
	if mean > 30 {
		return max(0, int(math.Round(mean+math.Sqrt(mean)*rng.NormFloat64())))
	}
	l, k, p := math.Exp(-mean), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// Simulate runs cfg and reports every day. It is deterministic for a
// given Config except for Elapsed.
func Simulate(cfg Config) (Report, error) {
	r, _, err := simulate(cfg)
	return r, err
}

func simulate(cfg Config) (Report, []*campaign, error) {
	start := time.Now()
	lcfg := ledger.DefaultConfig()
	lcfg.Manual = true
	lcfg.ControlInterval = cfg.Step
	lcfg.Retention = time.Minute
	lcfg.MaxFrequencyEntries = 64 << 20
	lcfg.NoticeKey = []byte("pacesim pacesim pacesim!")
	day0 := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)
	clock := day0
	lcfg.Clock = func() time.Time { return clock }
	l, err := ledger.New(lcfg)
	if err != nil {
		return Report{}, nil, err
	}
	defer l.Close()

	seed := rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15))
	camps := make([]*campaign, cfg.Campaigns)
	for i := range camps {
		c := &campaign{
			budget: int64(20+seed.Float64()*280) * 1_000_000,
			price:  int64(3000 + seed.Float64()*9000), // CPM $3-12
			supply: cfg.SupplyMin + seed.Float64()*(cfg.SupplyMax-cfg.SupplyMin),
			shift:  seed.Float64()*6 - 3,
			amp:    0.5 + seed.Float64()*1.5,
			rng:    rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1)),
			served: map[uint64][]int64{},
		}
		// Scale the budget so it buys about ImpressionsPerDay.
		c.budget = int64(cfg.ImpressionsPerDay*(0.5+seed.Float64())) * c.price
		// Expected spend per request at rate 1: win rate × mean clearing (75% of bid).
		c.perDay = c.supply * float64(c.budget) / (cfg.WinRate * 0.75 * float64(c.price))
		lim := ledger.Limits{DailyMicros: c.budget, Pacing: ledger.PacingEven}
		if seed.Float64() < cfg.CappedShare {
			c.capMax = int32(1 + seed.IntN(12))
			c.capWin = []time.Duration{time.Hour, 6 * time.Hour, 24 * time.Hour}[seed.IntN(3)]
			lim.CapMax, lim.CapWindow = c.capMax, c.capWin
		}
		if c.lc, err = l.Campaign(fmt.Sprintf("camp-%04d", i), lim); err != nil {
			return Report{}, nil, err
		}
		camps[i] = c
	}
	workers := max(1, cfg.Workers)
	steps := int(24 * time.Hour / cfg.Step)
	var rep Report
	ctx := context.Background()
	for d := 0; d <= cfg.WarmupDays; d++ {
		// Today's traffic wobbles around the curve, by the day and by the hour.
		for _, c := range camps {
			c.hourReqs, c.hourBill, c.spent, c.exhaust, c.viol, c.imps, c.reqs = [24]float64{}, [24]int64{}, 0, 0, 0, 0, 0
		}
		wobble := make([][24]float64, len(camps))
		var norm = make([]float64, len(camps))
		for i, c := range camps {
			// The day's traffic level wobbles too: yesterday is a guide
			// to today, not a promise.
			level := math.Exp(cfg.DayWobble * c.rng.NormFloat64())
			c.daySupply = c.supply * level
			for h := range 24 {
				wobble[i][h] = math.Exp(cfg.HourWobble * c.rng.NormFloat64())
			}
			var sum float64
			for s := range steps {
				h := float64(s) * 24 / float64(steps)
				sum += curve(h, c.shift, c.amp) * wobble[i][int(h)]
			}
			norm[i] = sum / level
		}
		dayStart := day0.Add(time.Duration(d) * 24 * time.Hour)
		for s := range steps {
			stepStart := dayStart.Add(time.Duration(s) * cfg.Step)
			h := float64(s) * 24 / float64(steps)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < len(camps); i += workers {
						c := camps[i]
						mean := c.perDay * curve(h, c.shift, c.amp) * wobble[i][int(h)] / norm[i]
						c.run(l, ctx, cfg, poisson(c.rng, mean), stepStart, int(h))
					}
				}()
			}
			wg.Wait()
			clock = stepStart.Add(cfg.Step)
			l.Tick(clock)
		}
		rep.Days = append(rep.Days, measure(d, camps, dayStart))
	}
	rep.Elapsed = time.Since(start)
	return rep, camps, nil
}

// run plays n requests of one step for c.
func (c *campaign) run(l *ledger.Ledger, ctx context.Context, cfg Config, n int, stepStart time.Time, hour int) {
	c.hourReqs[hour] += float64(n)
	c.reqs += int64(n)
	base := stepStart.UnixNano()
	for j := range n {
		now := base + int64(cfg.Step)*int64(j)/int64(n)
		if !c.lc.Allow(now, c.price, c.rng.Uint64()) {
			continue
		}
		// Skewed users: a few are seen often, which is what caps are for.
		u := c.rng.Float64()
		user := uint64(u*u*float64(cfg.Users)) + 1
		if !l.FrequencyOK(c.lc, user, now) {
			continue
		}
		bid := l.NewBidID()
		if _, err := l.Reserve(c.lc, bid, user, c.price, now); err != nil {
			continue
		}
		if c.rng.Float64() >= cfg.WinRate {
			l.Loss(ctx, bid, now)
			continue
		}
		clear := c.price * int64(50+c.rng.IntN(51)) / 100
		if err := l.Bill(ctx, bid, clear, now); err != nil {
			panic(err)
		}
		c.hourBill[hour] += clear
		c.spent += clear
		c.imps++
		if c.exhaust == 0 && c.spent*100 >= c.budget*99 {
			c.exhaust = now
		}
		if c.capMax > 0 {
			ts := c.served[user]
			k := 0
			for _, t := range ts {
				if t > now-int64(c.capWin) {
					ts[k] = t
					k++
				}
			}
			ts = append(ts[:k], now)
			if len(ts) > int(c.capMax) {
				c.viol++
			}
			c.served[user] = ts
		}
	}
}

func measure(d int, camps []*campaign, dayStart time.Time) DayReport {
	r := DayReport{Day: d + 1, DeliveryMin: math.Inf(1)}
	var deliveries, errs []float64
	var aggSpend, aggPlan [24]float64
	var limited, floors float64
	for _, c := range camps {
		r.Impressions += c.imps
		r.Requests += c.reqs
		r.FrequencyViolations += c.viol
		if over := float64(c.spent-c.budget) / float64(c.budget); over > 0 {
			r.Overspent++
			r.MaxOverspend = max(r.MaxOverspend, over)
		}
		delivery := float64(c.spent) / float64(c.budget)
		if c.daySupply < 1.1 {
			r.SupplyLimited++
			limited += delivery
			continue
		}
		r.Sufficient++
		deliveries = append(deliveries, delivery)
		if delivery < 0.98 {
			r.BelowDeliveryGoal++
		}
		if c.exhaust != 0 && c.exhaust < dayStart.Add(22*time.Hour).UnixNano() {
			r.EarlyExhaustion++
		}
		var reqs float64
		for _, v := range c.hourReqs {
			reqs += v
		}
		var se, planSum float64
		for h := range 24 {
			plan := float64(c.budget) * c.hourReqs[h] / reqs
			diff := float64(c.hourBill[h]) - plan
			se += diff * diff
			planSum += plan
			aggPlan[h] += plan
			aggSpend[h] += float64(c.hourBill[h])
		}
		errs = append(errs, math.Sqrt(se/24)/(planSum/24))
		// The plan follows the hour's requests, so only the thinning is
		// noise: each request spends a clearing price c with probability
		// q (pass-through × win), so the hour's spend has variance over
		// mean E[c²]/E[c] − q·E[c]; clearing prices are uniform on
		// [0.5, 1] × price, so E[c²]/E[c] = 7/9 price and E[c] = 3/4 price.
		q := float64(c.spent) / (reqs * 0.75 * float64(c.price))
		floors += math.Sqrt((7.0/9 - 0.75*q) * float64(c.price) / (planSum / 24))
	}
	if r.SupplyLimited > 0 {
		r.SupplyLimitedMean = limited / float64(r.SupplyLimited)
	}
	if len(deliveries) > 0 {
		slices.Sort(deliveries)
		slices.Sort(errs)
		for i := range deliveries {
			r.DeliveryMean += deliveries[i] / float64(len(deliveries))
			r.PacingErrorMean += errs[i] / float64(len(errs))
		}
		r.DeliveryMin = deliveries[0]
		r.DeliveryP05 = deliveries[len(deliveries)*5/100]
		r.PacingErrorP50 = errs[len(errs)/2]
		r.PacingErrorP90 = errs[len(errs)*9/10]
		r.PacingErrorMax = errs[len(errs)-1]
		r.PacingAboveGoal = len(errs) - sort.SearchFloat64s(errs, 0.10+1e-12)
		r.OpenLoopNoiseMean = floors / float64(len(errs))
	}
	var se, planSum float64
	for h := range 24 {
		diff := aggSpend[h] - aggPlan[h]
		se += diff * diff
		planSum += aggPlan[h]
	}
	if planSum > 0 {
		r.AggregatePacing = math.Sqrt(se/24) / (planSum / 24)
	}
	return r
}
