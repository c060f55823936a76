package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	personadpb "github.com/personad/personad/proto/personad/v1"
)

// Local validation of a rules directory names the file and the campaign's
// index in it, as the server does, not the index in the merged set.
func TestRulesValidateLocalDirectory(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", "campaigns:\n  - {id: a, bid_cpm: 1, creatives: [{id: a1, w: 300, h: 250, adm: x}]}\n")
	write("b.yaml", "campaigns:\n  - {id: b, bid_cpm: -1, creatives: [{id: b1, w: 300, h: 250, adm: x}]}\n")
	out, _, code := ctl(t, "127.0.0.1:1", "", false, "rules", "validate", "--local", dir)
	if code == 0 || !strings.Contains(out, "b.yaml: line 2: campaigns[0].bid_cpm") {
		t.Errorf("exit %d, output:\n%s\nwant an error at b.yaml: line 2: campaigns[0].bid_cpm", code, out)
	}
	// One campaign is '1 campaign', in the summary too.
	b := filepath.Join(dir, "b.yaml")
	out, _, code = ctl(t, "127.0.0.1:1", "", false, "rules", "validate", "--local", b)
	if code == 0 || !strings.HasSuffix(out, b+": invalid (1 campaign)\n") {
		t.Errorf("exit %d, output:\n%s\nwant it to end with %s: invalid (1 campaign)", code, out, b)
	}
}

// Validation errors name the file and the line of the field, also for a
// single file and for stdin, so that a planner finds campaigns[180] of a
// long file without counting entries.
func TestRulesValidateNamesFileAndLine(t *testing.T) {
	file := filepath.Join(t.TempDir(), "b2b.yaml")
	text := "campaigns:\n  - id: a\n    bid_cpm: 1\n    creatives: [{id: a1, w: 300, h: 250, adm: x}]\n  - id: b\n    bid_cpm: 2\n    budget: {daily: -200}\n    creatives:\n      - id: b1\n        w: 0\n        h: 250\n        adm: x\n"
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	want := "error: %[1]s: line 7: campaigns[1].budget.daily: -200 must be >= 0 and <= 100000000 (0: no daily limit)\n" +
		"error: %[1]s: line 10: campaigns[1].creatives[0].w: 0 must be > 0 and <= 10000\n"
	for _, tc := range []struct{ arg, stdin, name string }{{file, "", file}, {"-", text, "stdin"}} {
		for _, cmd := range []string{"validate", "apply"} {
			out, _, code := ctl(t, "127.0.0.1:1", tc.stdin, false, "rules", cmd, tc.arg)
			if w := fmt.Sprintf(want, tc.name); code == 0 || !strings.HasPrefix(out, w) {
				t.Errorf("rules %s %s: exit %d, output:\n%s\nwant it to start with\n%s", cmd, tc.arg, code, out, w)
			}
		}
	}
}

// Local validation warns of what can never deliver, such as a campaign
// whose flight has ended (it was "valid, 0 warnings"), and the set stays
// valid.
func TestRulesValidateLocalDelivery(t *testing.T) {
	file := filepath.Join(t.TempDir(), "q3.yaml")
	text := "campaigns:\n  - id: q3-2025\n    bid_cpm: 1\n    start: \"2025-07-01T00:00:00Z\"\n    end: \"2025-10-01T00:00:00Z\"\n    creatives: [{id: a1, w: 300, h: 250, adm: x}]\n"
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code := ctl(t, "127.0.0.1:1", "", false, "rules", "validate", "--local", file)
	want := "warning: " + file + ": line 5: campaigns[0].end: flight ended 2025-10-01T00:00:00Z: the campaign never bids; move end, or pause it (1 active campaign's flight has ended: q3-2025)\n"
	if code != 0 || !strings.HasPrefix(out, want) || !strings.HasSuffix(out, ", 1 warning (checked locally)\n") {
		t.Errorf("exit %d, output:\n%s\nwant exit 0 and\n%s…, 1 warning (checked locally)", code, out, want)
	}
}

// Local validation warns of a currency that is not ISO 4217, naming the
// file, and the set stays valid.
func TestRulesValidateLocalCurrency(t *testing.T) {
	dir := t.TempDir()
	for name, cur := range map[string]string{"a.yaml": "USD", "b.yaml": "UDS"} {
		text := "campaigns:\n  - {id: " + name[:1] + ", bid_cpm: 1, currency: " + cur + ", creatives: [{id: " + name[:1] + "1, w: 300, h: 250, adm: x}]}\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, _, code := ctl(t, "127.0.0.1:1", "", false, "rules", "validate", "--local", dir)
	want := "warning: " + filepath.Join(dir, "b.yaml") + `: line 2: campaigns[0].currency: "UDS" is not an ISO 4217 currency (1 campaign bids in it): only bid requests whose cur lists it can match
` + dir + `: valid, 2 campaigns, version `
	if code != 0 || !strings.HasPrefix(out, want) || !strings.HasSuffix(out, ", 1 warning (checked locally)\n") {
		t.Errorf("exit %d, output:\n%s\nwant exit 0 and\n%s…, 1 warning (checked locally)", code, out, want)
	}
}

// TestPrintDiff: a list is printed with its count, which may exceed the
// ids the server listed, and with the first of them.
func TestPrintDiff(t *testing.T) {
	var ids []string
	for i := range 25 {
		ids = append(ids, fmt.Sprintf("c%02d", i))
	}
	for _, tc := range []struct {
		name string
		d    *personadpb.RulesDiff
		want string
	}{
		{"counted", &personadpb.RulesDiff{CampaignsRemoved: ids, CampaignsRemovedCount: 40000, CreativesAdded: ids[:2], CreativesAddedCount: 2},
			"campaigns removed  40000: " + strings.Join(ids[:20], ", ") + ", ... (39980 more)\ncreatives added    2: c00, c01\n"},
		{"uncounted", &personadpb.RulesDiff{CampaignsAdded: ids, ContentRulesChanged: true},
			"campaigns added    25: " + strings.Join(ids[:20], ", ") + ", ... (5 more)\ncontent rules changed\n"},
		{"none", &personadpb.RulesDiff{}, "no changes\n"},
	} {
		var b strings.Builder
		printDiff(&b, tc.d)
		if b.String() != tc.want {
			t.Errorf("%s:\n%s\nwant:\n%s", tc.name, b.String(), tc.want)
		}
	}
}

// warningRules is a Rules server whose every answer warns at the second
// campaign of the set it is sent, as the server's segment warnings do.
type warningRules struct {
	personadpb.UnimplementedRulesServer
}

var mergedWarning = &personadpb.RuleProblem{Path: "campaigns[1].targeting.all[0].any[0]", Message: "no uploaded segment is title:cmoo"}

func (warningRules) Validate(context.Context, *personadpb.RulesValidateRequest) (*personadpb.RulesValidateResponse, error) {
	return &personadpb.RulesValidateResponse{Warnings: []*personadpb.RuleProblem{mergedWarning}, Version: "v", Campaigns: 2}, nil
}

func (warningRules) Apply(_ context.Context, req *personadpb.RulesApplyRequest) (*personadpb.RulesApplyResponse, error) {
	if !req.DryRun { // refused, as a currency change of a campaign that has spent is
		st, err := status.New(codes.InvalidArgument, "rules: 1 error").WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "campaigns[1].currency", Description: "EUR would change campaign b's currency"}},
		})
		if err != nil {
			return nil, err
		}
		return nil, st.Err()
	}
	return &personadpb.RulesApplyResponse{Warnings: []*personadpb.RuleProblem{mergedWarning}, Version: "v", DryRun: req.DryRun, Campaigns: 2}, nil
}

// The server's warnings about a rules directory name the file and the
// campaign's index in it, as local errors do, not the index in the
// merged set the server was sent.
func TestRulesDirectoryWarningsLocated(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"a.yaml": "campaigns:\n  - {id: a, bid_cpm: 1, creatives: [{id: a1, w: 300, h: 250, adm: x}]}\n",
		"b.yaml": "campaigns:\n  - {id: b, bid_cpm: 1, targeting: {all: [{facet: title, any: [cmoo]}]}, creatives: [{id: b1, w: 300, h: 250, adm: x}]}\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gs := grpc.NewServer()
	personadpb.RegisterRulesServer(gs, warningRules{})
	addr := serve(t, gs)
	want := "warning: " + filepath.Join(dir, "b.yaml") + ": line 2: campaigns[0].targeting.all[0].any[0]: no uploaded segment is title:cmoo\n"
	for _, args := range [][]string{{"validate", dir}, {"apply", "--dry-run", dir}} {
		out, stderr, code := ctl(t, addr, "", false, append([]string{"rules"}, args...)...)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("rules %s: exit %d, output:\n%s%s\nwant %q", strings.Join(args, " "), code, out, stderr, want)
		}
	}
	// So do the errors of a refusal.
	want = "error: " + filepath.Join(dir, "b.yaml") + ": line 2: campaigns[0].currency: EUR would change campaign b's currency\n"
	if out, stderr, code := ctl(t, addr, "", false, "rules", "apply", dir); code == 0 || !strings.Contains(out, want) {
		t.Errorf("rules apply: exit %d, output:\n%s%s\nwant %q", code, out, stderr, want)
	}
}
