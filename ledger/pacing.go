package ledger

import (
	"math"
	"sync"
)

// paceState is the even-pacing controller (see the package documentation).
// Only Tick steps it; mu also guards the profiles against checkpointing.
type paceState struct {
	l         *Ledger
	mu        sync.Mutex
	last      int64 // time of the last step, unix nanoseconds; 0 before the first
	global    paceProfile
	globalDay int32
	camps     []*paceCamp // by campaign key
}

// paceProfile learns the share of a day's traffic that falls in each hour.
type paceProfile struct {
	share   [24]float64 // smoothed, sums to 1 once learned
	learned bool
	today   [24]float64 // requests counted so far today, by hour
	// yesterday is the previous day's request total: the prior for
	// today's traffic level.
	yesterday float64
}

func (pp *paceProfile) todayTotal() float64 {
	var sum float64
	for _, v := range pp.today {
		sum += v
	}
	return sum
}

type paceCamp struct {
	paceProfile
	day      int32
	lastUsed int64 // today's spend at the previous step
	// spend and offered are exponentially decayed sums of spend and of
	// rate × requests; their ratio estimates the spend one request brings
	// at rate 1. A ratio of sums, not a mean of ratios: quiet intervals
	// with no spend count too, so the estimate is not biased upward when
	// traffic is thin.
	spend, offered float64
}

func (p *paceState) init(l *Ledger) { p.l = l }

func (p *paceState) camp(key uint32) *paceCamp {
	for int(key) >= len(p.camps) {
		p.camps = append(p.camps, nil)
	}
	if p.camps[key] == nil {
		p.camps[key] = &paceCamp{}
	}
	return p.camps[key]
}

func (p *paceState) setProfile(key uint32, prof *[24]float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp := &p.global
	if key != profileGlobal {
		pp = &p.camp(key).paceProfile
	}
	pp.share, pp.learned = *prof, true
}

func (p *paceState) each(f func(key uint32, prof *[24]float64)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.global.learned {
		f(profileGlobal, &p.global.share)
	}
	for k, c := range p.camps {
		if c != nil && c.learned {
			f(uint32(k), &c.share)
		}
	}
}

// learn folds the finished day's hourly counts into the profile.
func (pp *paceProfile) learn(alpha float64) (changed bool) {
	sum := pp.todayTotal()
	pp.yesterday = sum
	if sum > 0 {
		for h := range pp.share {
			s := pp.today[h] / sum
			if pp.learned {
				s = (1-alpha)*pp.share[h] + alpha*s
			}
			pp.share[h] = s
		}
		pp.learned, changed = true, true
	}
	pp.today = [24]float64{}
	return changed
}

// cum is the expected share of the day's traffic before fraction x of the
// day, under profile share (flat when nil).
func cum(share *[24]float64, x float64) float64 {
	x = min(max(x, 0), 1)
	if share == nil {
		return x
	}
	var total, acc float64
	for _, v := range share {
		total += v
	}
	if total <= 0 {
		return x
	}
	h := int(x * 24)
	for i := 0; i < h && i < 24; i++ {
		acc += share[i]
	}
	if h < 24 {
		acc += share[h] * (x*24 - float64(h))
	}
	return acc / total
}

func (p *paceState) maybeStep(now int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last != 0 && now-p.last < int64(p.l.cfg.ControlInterval) {
		return
	}
	p.step(now)
}

// step runs the controller once: it books the traffic counted since the
// last step, learns profiles at day boundaries, and sets each even
// campaign's pass-through rate for the next interval.
func (p *paceState) step(now int64) {
	l := p.l
	last := p.last
	p.last = now
	if last == 0 || now <= last {
		for _, c := range *l.campaigns.Load() {
			c.reqs.Swap(0)
			pc := p.camp(c.key)
			_, _, pc.day = l.days.bounds(now)
			pc.lastUsed, _ = on(c.dayUsed.Load(), pc.day)
		}
		return
	}
	dt := now - last
	start, end, day := l.days.bounds(now)
	mid := last + dt/2
	midStart, midEnd, midDay := l.days.bounds(mid)
	hour := min(23, int(float64(mid-midStart)/float64(midEnd-midStart)*24))
	length := float64(end - start)
	x0 := float64(now-start) / length
	x1 := min(1, float64(now+int64(l.cfg.ControlInterval)-start)/length)
	alpha := l.cfg.ProfileSmoothing

	var globalReqs float64
	camps := *l.campaigns.Load()
	reqs := make([]float64, len(camps))
	for i, c := range camps {
		reqs[i] = float64(c.reqs.Swap(0))
		globalReqs += reqs[i]
	}
	// The global profile is every campaign's prior until it has its own.
	if p.global.book(&p.globalDay, day, midDay, hour, globalReqs, alpha) && l.log != nil {
		g := &p.global
		l.log.append(recProfile, func(b []byte) []byte { return encProfile(b, profileGlobal, &g.share) })
	}
	for i, c := range camps {
		pc := p.camp(c.key)
		if pc.day != day {
			pc.lastUsed = 0
		}
		if pc.book(&pc.day, day, midDay, hour, reqs[i], alpha) && l.log != nil {
			l.log.append(recProfile, func(b []byte) []byte { return encProfile(b, c.key, &pc.share) })
		}
		lim := c.limits.Load()
		used, _ := on(c.dayUsed.Load(), day)
		spent := max(0, used-pc.lastUsed)
		pc.lastUsed = used
		if lim == nil || lim.Pacing != PacingEven || lim.DailyMicros <= 0 {
			continue
		}
		rem := lim.DailyMicros - used
		if rem <= 0 {
			continue
		}
		share := p.profileFor(pc)
		fNow, fNext := cum(share, x0), cum(share, x1)
		rate := c.Rate()
		pc.spend = (1-paceDecay)*pc.spend + float64(spent)
		pc.offered = (1-paceDecay)*pc.offered + rate*reqs[i]
		// The day's traffic level: today's requests so far over the share
		// of the day's traffic the profile expected by now, shrunk toward
		// yesterday's total early in the day.
		level := 0.0
		switch seen := pc.todayTotal(); {
		case pc.yesterday > 0 && fNow > 0:
			// Today's count over its expected share, and yesterday's
			// total, weighted by how many hours' worth of today's traffic
			// has been seen: hours are noisy one by one, while the day's
			// level moves too (a back-loaded profile leaves fNow small
			// for most of the day, so fNow itself is not the weight).
			n := effectiveHours(share, x0)
			w := n / (n + paceShrinkHours)
			level = w*seen/fNow + (1-w)*pc.yesterday
		case pc.yesterday > 0:
			level = pc.yesterday
		case fNow > 0:
			level = seen / fNow
		}
		if share == &priorProfile {
			// The prior's shape is only a guess: estimate the level from
			// the traffic of the current and previous hours, over the
			// prior's share of that span, so that its errors far from
			// now do not count.
			hNow := min(23, int(x0*24))
			h0 := max(0, hNow-paceRecentHours+1)
			seenRecent := 0.0
			for h := h0; h <= hNow; h++ {
				seenRecent += pc.today[h]
			}
			if fRecent := fNow - cum(share, float64(h0)/24); fRecent > 0 && seenRecent > 0 {
				level = seenRecent / fRecent
			}
		}
		remaining := level * (1 - fNow)
		if fNext-fNow > 0 {
			// At least the next interval's worth, so that the last
			// minutes of the day do not divide by ~0.
			remaining = max(remaining, level*(fNext-fNow))
		}
		next := rate
		switch {
		case pc.offered > 0 && pc.spend > 0 && remaining > 0:
			// Spend per request constant over the rest of the day: the
			// budget left over the spend the remaining traffic would
			// bring at rate 1. Spend then follows the traffic as it comes.
			next = float64(rem) / (pc.spend / pc.offered * remaining)
			next = min(max(next, rate/paceStepLimit), rate*paceStepLimit)
		case reqs[i] > 0:
			next = rate * 2 // nothing spent yet: open up
		}
		next = min(max(next, l.cfg.MinRate), 1)
		if next != rate {
			c.setRate(next)
			if l.log != nil {
				th := c.rate.Load()
				l.log.append(recRate, func(b []byte) []byte {
					b = le.AppendUint32(b, c.key)
					return le.AppendUint64(b, th)
				})
			}
		}
	}
}

// Controller gains: the decay per step of the spend-per-request estimate's
// sums (a window of about 20 intervals), and the most the rate may change
// in one step.
const (
	paceDecay     = 0.05
	paceStepLimit = 3.0
	// paceShrinkHours is the weight of yesterday's traffic level in
	// today's estimate, in hours of today's traffic: after n hours (see
	// effectiveHours) today's count has weight n / (n + paceShrinkHours).
	paceShrinkHours = 1.0
	// paceRecentHours is how many hours of today's traffic, the current
	// one included, estimate the day's level under the prior profile.
	paceRecentHours = 2
)

// book adds n requests counted over an interval whose midpoint is in
// hour of midDay, rolling the profile over to day first when day is new.
// It reports whether the profile learned a finished day.
func (pp *paceProfile) book(cur *int32, day, midDay int32, hour int, n, alpha float64) (learned bool) {
	if *cur == day {
		pp.today[hour] += n
		return false
	}
	if midDay != day { // the interval belongs to the day that just ended
		pp.today[hour] += n
		n = 0
	}
	if *cur != 0 {
		learned = pp.learn(alpha)
	} else {
		pp.today = [24]float64{}
	}
	*cur = day
	if n > 0 {
		pp.today[hour] += n
	}
	return learned
}

// effectiveHours is how many hours' worth of independent observations
// the traffic before fraction x of the day holds under profile share: the
// Kish effective sample size of the hours seen, weighted by their shares
// (the current hour by the part elapsed). Equal hours count one each; an
// hour with a tiny share next to a big one counts for little.
func effectiveHours(share *[24]float64, x float64) float64 {
	x = min(max(x, 0), 1)
	var sum, sq float64
	for h := range 24 {
		a := min(max(x*24-float64(h), 0), 1)
		if a == 0 {
			break
		}
		v := a * share[h]
		sum += v
		sq += v * v
	}
	if sq == 0 {
		return 0
	}
	return sum * sum / sq
}

func (p *paceState) profileFor(pc *paceCamp) *[24]float64 {
	switch {
	case pc.learned:
		return &pc.share
	case p.global.learned:
		return &p.global.share
	}
	return &priorProfile
}

// priorProfile is the traffic profile before any day is learned: a
// generic diurnal curve (in the ledger's day time zone) with a night floor
// and a broad afternoon peak. Only its shape matters, and only until the
// first day is learned: the day's level is estimated from the last
// paceRecentHours of today's traffic over the prior's share of them (see
// step).
var priorProfile = func() (share [24]float64) {
	var sum float64
	for h := range share {
		x := float64(h) + 0.5 - 14.5
		share[h] = 0.2 + math.Exp(-x*x/(2*4.5*4.5))
		sum += share[h]
	}
	for h := range share {
		share[h] /= sum
	}
	return share
}()
