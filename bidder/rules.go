package bidder

import (
	"context"
	"errors"

	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/personad/personad/internal/rulespb"
	personadpb "github.com/personad/personad/proto/personad/v1"
	"github.com/personad/personad/reload"
	"github.com/personad/personad/rules"
)

// RulesManager is what the Rules service needs of the reload pipeline;
// *reload.Manager implements it.
type RulesManager interface {
	Validate(rs *rules.RuleSet) (errs, warnings rules.ValidationErrors, version string)
	Apply(rs *rules.RuleSet, opts reload.ApplyOptions) (*reload.Result, error)
	Status() reload.Status
}

// RulesService implements personad.v1.Rules over a RulesManager. It holds
// no state of its own and is safe for concurrent use.
type RulesService struct {
	personadpb.UnimplementedRulesServer
	m   RulesManager
	log *zap.Logger
}

// NewRulesService returns the Rules service; register it on the server
// from GRPCServer with RegisterRules.
func NewRulesService(m RulesManager, log *zap.Logger) *RulesService {
	if log == nil {
		log = zap.NewNop()
	}
	return &RulesService{m: m, log: log.Named("rules")}
}

// errNoRuleSet is a Validate or Apply without a rule set: an empty set
// would stop every campaign, so it must be sent explicitly (an empty
// rule_set message).
var errNoRuleSet = &ValidationError{Path: "rule_set", Msg: "required (send an empty RuleSet to remove every campaign)"}

// Validate implements personad.v1.Rules/Validate.
func (s *RulesService) Validate(ctx context.Context, req *personadpb.RulesValidateRequest) (*personadpb.RulesValidateResponse, error) {
	if req.RuleSet == nil {
		return nil, grpcError(errNoRuleSet)
	}
	rs := rulespb.FromProto(req.RuleSet)
	errs, warnings, version := s.m.Validate(rs)
	return &personadpb.RulesValidateResponse{
		Errors:    problemsToProto(errs),
		Warnings:  problemsToProto(warnings),
		Version:   version,
		Campaigns: int32(len(rs.Campaigns)),
	}, nil
}

// Apply implements personad.v1.Rules/Apply.
func (s *RulesService) Apply(ctx context.Context, req *personadpb.RulesApplyRequest) (*personadpb.RulesApplyResponse, error) {
	if req.RuleSet == nil {
		return nil, grpcError(errNoRuleSet)
	}
	origin := "api"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		origin = "api " + p.Addr.String()
	}
	res, err := s.m.Apply(rulespb.FromProto(req.RuleSet), reload.ApplyOptions{DryRun: req.DryRun, Origin: origin})
	if err != nil {
		return nil, rulesError(err)
	}
	resp := &personadpb.RulesApplyResponse{
		Version:         res.Version,
		PreviousVersion: res.PreviousVersion,
		Diff:            diffToProto(&res.Diff),
		Warnings:        problemsToProto(res.Warnings),
		DryRun:          res.DryRun,
		Unchanged:       res.Unchanged,
		Campaigns:       int32(res.Campaigns),
	}
	if !res.AppliedAt.IsZero() {
		resp.AppliedAt = timestamppb.New(res.AppliedAt)
	}
	return resp, nil
}

// Get implements personad.v1.Rules/Get.
func (s *RulesService) Get(ctx context.Context, req *personadpb.RulesGetRequest) (*personadpb.RulesGetResponse, error) {
	st := s.m.Status()
	resp := &personadpb.RulesGetResponse{
		Version:   st.Version,
		Source:    string(st.Source),
		Origin:    st.Origin,
		Campaigns: int32(st.Campaigns),
	}
	if !st.AppliedAt.IsZero() {
		resp.AppliedAt = timestamppb.New(st.AppliedAt)
	}
	if req.IncludeRuleSet && st.RuleSet != nil {
		resp.RuleSet = rulespb.ToProto(st.RuleSet)
	}
	if r := st.LastRejected; r != nil {
		resp.LastRejected = &personadpb.RulesRejection{
			At:     timestamppb.New(r.At),
			Source: string(r.Source),
			Origin: r.Origin,
			Errors: problemsToProto(r.Errors),
		}
	}
	return resp, nil
}

// rulesError is the status of a failed Apply: an invalid set is
// INVALID_ARGUMENT listing every error in the message and as
// google.rpc.BadRequest field violations; anything else goes through the
// package's error table.
func rulesError(err error) error {
	var es rules.ValidationErrors
	if !errors.As(err, &es) {
		return grpcError(err)
	}
	code, _ := mapError(err)
	st := status.New(code, err.Error())
	br := &errdetails.BadRequest{}
	for _, e := range es {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: e.Path, Description: e.Msg})
	}
	if withDetails, derr := st.WithDetails(br); derr == nil {
		st = withDetails
	}
	return st.Err()
}

func problemsToProto(es rules.ValidationErrors) []*personadpb.RuleProblem {
	if len(es) == 0 {
		return nil
	}
	out := make([]*personadpb.RuleProblem, len(es))
	for i, e := range es {
		out[i] = &personadpb.RuleProblem{Path: e.Path, Message: e.Msg}
	}
	return out
}

func diffToProto(d *reload.Diff) *personadpb.RulesDiff {
	return &personadpb.RulesDiff{
		CampaignsAdded:      d.CampaignsAdded,
		CampaignsChanged:    d.CampaignsChanged,
		CampaignsRemoved:    d.CampaignsRemoved,
		CreativesAdded:      d.CreativesAdded,
		CreativesChanged:    d.CreativesChanged,
		CreativesRemoved:    d.CreativesRemoved,
		ContentRulesChanged: d.ContentRulesChanged,
		// A count is at most rules.MaxCampaigns × rules.MaxCreativesPerCamp
		// (64 million): an int32.
		CampaignsAddedCount:   int32(d.Counts.CampaignsAdded),
		CampaignsChangedCount: int32(d.Counts.CampaignsChanged),
		CampaignsRemovedCount: int32(d.Counts.CampaignsRemoved),
		CreativesAddedCount:   int32(d.Counts.CreativesAdded),
		CreativesChangedCount: int32(d.Counts.CreativesChanged),
		CreativesRemovedCount: int32(d.Counts.CreativesRemoved),
	}
}
