package engine

import (
	"cmp"
	"fmt"

	"github.com/personad/personad/rules"
)

// explain fills d.Persona and d.Trace after a decision: for every campaign
// in rank order, the stage that rejected it (evaluated exactly, without the
// index) or, per impression, that it was chosen, already bid elsewhere, or
// was outranked. It runs only for debug requests and may allocate.
func (e *Engine) explain(r *Rules, s *scratch, q *Query, d *Decision) {
	for _, t := range s.terms {
		d.Persona = append(d.Persona, r.terms[t].name)
	}
	won := make(map[*Campaign]int, len(d.Bids)) // campaign -> index in d.Bids
	byImp := make(map[int]*Bid, len(d.Bids))
	for i := range d.Bids {
		won[d.Bids[i].Campaign] = i
		byImp[d.Bids[i].Imp] = &d.Bids[i]
	}
	now := q.Now.UnixNano()
	for o := range r.campaigns {
		c := &r.campaigns[o]
		if d.NoBid == ReasonDeadline {
			d.Trace = append(d.Trace, Trace{Campaign: c.ID, Stage: StageDeadline, Detail: "latency budget exhausted"})
			continue
		}
		if st, detail := c.campaignStage(s, q, now, true); st != StageChosen {
			d.Trace = append(d.Trace, Trace{Campaign: c.ID, Stage: st, Detail: detail})
			continue
		}
		for i := range q.Imps {
			imp := &q.Imps[i]
			t := Trace{Campaign: c.ID, Imp: imp.ID}
			if b, ok := byImp[i]; ok && b.Campaign == c {
				t.Stage, t.Creative = StageChosen, b.Creative.ID
				t.Detail = fmt.Sprintf("bid %s %s", formatMicros(b.PriceMicros), c.Currency)
				d.Trace = append(d.Trace, t)
				continue
			}
			cr, st := c.impStage(s, q, imp)
			if st == StageChosen {
				for _, ms := range s.moneyStages {
					if ms.ordinal == uint32(o) && ms.imp == i {
						st = ms.stage
					}
				}
			}
			switch {
			case st != StageChosen:
				t.Stage, t.Detail = st, impDetail(st, c, q, imp, d.Channel)
				if st == StageFrequency && UserKey(q) == 0 {
					t.Detail = "no user id (buyeruid or user.id) to count its frequency cap by: a capped campaign does not bid for an unknown user"
				}
			case hasBid(won, c):
				t.Stage, t.Creative = StageAlreadyBid, cr.ID
				t.Detail = "bid on imp " + q.Imps[d.Bids[won[c]].Imp].ID
			default:
				t.Stage, t.Creative = StageOutranked, cr.ID
				if b, ok := byImp[i]; ok {
					t.Detail = "outranked by " + b.Campaign.ID + outrankedWhy(b.Campaign, c)
				}
			}
			d.Trace = append(d.Trace, t)
		}
	}
}

// outrankedWhy says which step of the choice put w, the winner of an
// impression, before c, which could have bid on it (DESIGN.md: lowest
// priority tier, then highest price, then more targeting.all clauses
// matched, then campaign id), as ": priority 5 before 10"; "" if w does
// not rank before c.
func outrankedWhy(w, c *Campaign) string {
	if compareRank(w.Priority, c.Priority, w.BidMicros, c.BidMicros, int32(w.clauseCount), int32(c.clauseCount), w.ID, c.ID) >= 0 {
		return ""
	}
	switch {
	case w.Priority != c.Priority:
		return fmt.Sprintf(": priority %d before %d", w.Priority, c.Priority)
	case w.BidMicros != c.BidMicros:
		return fmt.Sprintf(": bid %s over %s", formatMicros(w.BidMicros), formatMicros(c.BidMicros))
	case w.clauseCount != c.clauseCount:
		return fmt.Sprintf(": more targeting clauses matched, %d over %d", w.clauseCount, c.clauseCount)
	}
	return ": a tie on priority, bid and clauses matched; the lower id wins"
}

func hasBid(won map[*Campaign]int, c *Campaign) bool {
	_, ok := won[c]
	return ok
}

func impDetail(st Stage, c *Campaign, q *Query, imp *Imp, channel string) string {
	switch st {
	case StageSize:
		if len(imp.Sizes) == 0 {
			return "the impression offers no exact size (only flex formats)"
		}
		return fmt.Sprintf("no creative of size %v", imp.Sizes)
	case StageBlocked:
		if q.BCatForeign {
			return "the request's bcat is in a category taxonomy personad cannot read: every creative counts as blocked"
		}
		return "every creative of a matching size has a blocked category"
	case StageCreative:
		return fmt.Sprintf("no creative of a matching size for channel %q and this persona", channel)
	case StageFloor:
		return fmt.Sprintf("bid %s below floor %s", formatMicros(c.BidMicros), formatMicros(imp.FloorMicros))
	case StageCurrency:
		if imp.FloorMicros == 0 || cmp.Or(imp.FloorCur, rules.DefaultCurrency) == c.Currency {
			return "an earlier bid of this response is in another currency"
		}
		if imp.FloorCur == "" {
			return fmt.Sprintf("floor currency %s (bidfloorcur unset), campaign bids in %s", rules.DefaultCurrency, c.Currency)
		}
		return fmt.Sprintf("floor currency %s, campaign bids in %s", imp.FloorCur, c.Currency)
	case StageBudget:
		return "budget spent, or held back by even pacing"
	case StageFrequency:
		return "frequency cap reached for this user"
	}
	return ""
}

// formatMicros prints micro-units as a decimal amount.
func formatMicros(m int64) string {
	sign := ""
	if m < 0 {
		sign, m = "-", -m
	}
	return fmt.Sprintf("%s%d.%06d", sign, m/1e6, m%1e6)
}

func (s Size) String() string { return fmt.Sprintf("%dx%d", s.W, s.H) }
