package bidder

import (
	"cmp"
	"context"
	"slices"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/personad/personad/engine"
	"github.com/personad/personad/ledger"
	personadpb "github.com/personad/personad/proto/personad/v1"
)

// reportsService implements personad.v1.Reports over the Server's ledger
// and the engine's current rules (for advertiser and currency).
type reportsService struct {
	personadpb.UnimplementedReportsServer
	s *Server
}

// Campaigns implements personad.v1.Reports/Campaigns.
func (rs *reportsService) Campaigns(ctx context.Context, req *personadpb.ReportsCampaignsRequest) (*personadpb.ReportsCampaignsResponse, error) {
	return rs.s.report(req.Campaign), nil
}

// report reads the ledger (atomics only: it never holds up bidding).
func (s *Server) report(only string) *personadpb.ReportsCampaignsResponse {
	now := s.cfg.Now()
	reps := s.cfg.Ledger.Report(now)
	byID := map[string]*engine.Campaign{}
	if r := s.eng.Rules(); r != nil {
		cs := r.Campaigns()
		for i := range cs {
			byID[cs[i].ID] = &cs[i]
		}
	}
	resp := &personadpb.ReportsCampaignsResponse{At: timestamppb.New(now)}
	if len(reps) > 0 {
		resp.Day = timestamppb.New(reps[0].Day)
		resp.TimeZone = reps[0].Day.Location().String()
	}
	for i := range reps {
		r := &reps[i]
		if only != "" && r.ID != only {
			continue
		}
		cr := reportToProto(r) // the currency the ledger recorded
		if c := byID[r.ID]; c != nil {
			cr.InRules, cr.Advertiser, cr.Currency = true, c.Advertiser, c.Currency
		}
		resp.Campaigns = append(resp.Campaigns, cr)
	}
	slices.SortFunc(resp.Campaigns, func(a, b *personadpb.CampaignReport) int {
		return cmp.Or(
			cmp.Compare(b.SpentTodayMicros, a.SpentTodayMicros),
			cmp.Compare(b.SpentTotalMicros, a.SpentTotalMicros),
			cmp.Compare(a.Cid, b.Cid))
	})
	return resp
}

func reportToProto(r *ledger.CampaignReport) *personadpb.CampaignReport {
	pacing := "even"
	if r.Pacing == ledger.PacingASAP {
		pacing = "asap"
	}
	return &personadpb.CampaignReport{
		Cid:                  r.ID,
		Currency:             r.Currency,
		SpentTodayMicros:     r.SpentTodayMicros,
		SettledTodayMicros:   r.SettledTodayMicros,
		ReservedMicros:       r.ReservedMicros,
		SpentTotalMicros:     r.TotalSpentMicros,
		SettledTotalMicros:   r.SettledTotalMicros,
		DailyBudgetMicros:    r.DailyBudgetMicros,
		TotalBudgetMicros:    r.TotalBudgetMicros,
		RemainingTodayMicros: r.RemainingTodayMicros,
		RemainingTotalMicros: r.RemainingTotalMicros,
		Pacing:               pacing,
		PacingRate:           r.PacingRate,
		LeasedTodayMicros:    r.LeasedTodayMicros,
		LeasedTotalMicros:    r.LeasedTotalMicros,
		CrashCountedMicros:   r.CrashCountedMicros,
		LateBilledMicros:     r.LateBilledMicros,
	}
}
