package bidder

import (
	"context"
	"errors"
	"sync"
	"weak"

	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
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

// RulesService implements personad.v1.Rules over a RulesManager. It is
// safe for concurrent use; its only state is the encoding of the live
// rule set that Rules/Get answers share (encodedSet).
type RulesService struct {
	personadpb.UnimplementedRulesServer
	m   RulesManager
	log *zap.Logger

	setMu sync.Mutex // serialises encoding a rule set for Get
	set   *sharedSet // guarded by setMu
}

// sharedSet is the wire encoding of one version's RuleSet message, held
// weakly: it lives as long as an answer being sent refers to it.
type sharedSet struct {
	version string
	enc     weak.Pointer[[]byte]
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

// Get implements personad.v1.Rules/Get. The gRPC server answers it
// through getReply instead, which encodes the same message.
func (s *RulesService) Get(ctx context.Context, req *personadpb.RulesGetRequest) (*personadpb.RulesGetResponse, error) {
	st := s.m.Status()
	resp := getResponse(st)
	if req.IncludeRuleSet && st.RuleSet != nil {
		resp.RuleSet = rulespb.ToProto(st.RuleSet)
	}
	return resp, nil
}

// rulesGetReply is a Rules/Get answer as the server codec encodes it
// (rulescodec.go): resp, and the rule set's shared encoding, appended to
// it as the field rule_set.
type rulesGetReply struct {
	resp *personadpb.RulesGetResponse // without RuleSet
	set  *[]byte                      // nil: no rule_set
}

// getReply is Get for the gRPC server. A rule set is encoded once per
// version and shared by the answers being sent: a client that asks for
// it again and again and never reads the answers holds one copy of the
// set in the server, not one per request (a 10,000-campaign set is ~27
// MB encoded; 100 such requests held 2.6 GB, as long as the connection
// lived).
func (s *RulesService) getReply(ctx context.Context, req *personadpb.RulesGetRequest) (*rulesGetReply, error) {
	st := s.m.Status()
	r := &rulesGetReply{resp: getResponse(st)}
	if req.IncludeRuleSet && st.RuleSet != nil {
		set, err := s.encodedSet(st)
		if err != nil {
			return nil, err
		}
		r.set = set
	}
	return r, nil
}

// encodedSet returns the RuleSet message of st's rule set, encoded: the
// one an answer being sent still holds, else a new one.
func (s *RulesService) encodedSet(st reload.Status) (*[]byte, error) {
	s.setMu.Lock()
	defer s.setMu.Unlock()
	if e := s.set; e != nil && e.version == st.Version {
		if b := e.enc.Value(); b != nil {
			return b, nil
		}
	}
	b, err := proto.Marshal(rulespb.ToProto(st.RuleSet))
	if err != nil {
		s.log.Error("encoding the rule set for Get", zap.Error(err))
		return nil, grpcError(ErrInternal)
	}
	p := &b
	s.set = &sharedSet{version: st.Version, enc: weak.Make(p)}
	return p, nil
}

// getResponse is Get's answer for st, without the rule set.
func getResponse(st reload.Status) *personadpb.RulesGetResponse {
	resp := &personadpb.RulesGetResponse{
		Version:   st.Version,
		Source:    string(st.Source),
		Origin:    st.Origin,
		Campaigns: int32(st.Campaigns),
	}
	if !st.AppliedAt.IsZero() {
		resp.AppliedAt = timestamppb.New(st.AppliedAt)
	}
	if r := st.LastRejected; r != nil {
		resp.LastRejected = &personadpb.RulesRejection{
			At:     timestamppb.New(r.At),
			Source: string(r.Source),
			Origin: r.Origin,
			Errors: problemsToProto(r.Errors),
		}
	}
	return resp
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
	code, _, _ := mapError(err)
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
