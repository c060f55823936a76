package bidder

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/personad/personad/segments"
)

// TestLimitsInProto: the Bid rpc's comment in bidder.proto, which
// exchanges read, states DefaultConfig's request limits, so that a
// changed default cannot leave it stale.
func TestLimitsInProto(t *testing.T) {
	b, err := os.ReadFile("../proto/personad/v1/bidder.proto")
	if err != nil {
		t.Fatal(err)
	}
	// The comment as one line: its words may wrap anywhere.
	text := regexp.MustCompile(`\s*\n\s*//\s*`).ReplaceAllString(string(b), " ")
	l := DefaultConfig().Limits
	for _, want := range []string{
		fmt.Sprintf("at most %d imp,", l.MaxImps),
		fmt.Sprintf("%d banner.format per impression,", l.MaxFormats),
		fmt.Sprintf("%d user.data,", l.MaxData),
		fmt.Sprintf("%d segment entries in all of user.data,", l.MaxSegments),
		fmt.Sprintf("%d bcat,", l.MaxBCat),
		fmt.Sprintf("%d badv,", l.MaxBAdv),
		fmt.Sprintf("%d cur,", l.MaxCur),
		fmt.Sprintf("%d site.cat or app.cat entries;", l.MaxCat),
		fmt.Sprintf("strings of at most %d bytes", l.MaxString),
		fmt.Sprintf("but %d for site.page and device.ua;", l.MaxLongString),
		fmt.Sprintf("w and h at most %d.", l.MaxDimension),
		fmt.Sprintf("the limit of %d\")", l.MaxImps),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("bidder.proto's Bid comment lacks %q", want)
		}
	}
}

// TestSegmentsRequestsInProto: segments.proto states what List, Lookup
// and Delete refuse, as the handlers check it.
func TestSegmentsRequestsInProto(t *testing.T) {
	b, err := os.ReadFile("../proto/personad/v1/segments.proto")
	if err != nil {
		t.Fatal(err)
	}
	text := regexp.MustCompile(`\s*\n\s*//\s*`).ReplaceAllString(string(b), " ")
	for msg, wants := range map[string][]string{
		"ListRequest":   {"[a-z][a-z0-9_]{0,31} (INVALID_ARGUMENT naming \"facet\" otherwise)"},
		"LookupRequest": {fmt.Sprintf("1 to %d bytes (INVALID_ARGUMENT naming \"user_id\" otherwise)", segments.MaxIDLen), "found false"},
		"DeleteRequest": {"as in UploadHeader (INVALID_ARGUMENT naming \"facet\" or \"value\" otherwise; NOT_FOUND"},
	} {
		// The message's comment and body: from the end of the message
		// before to its own closing brace, at the start of a line.
		i := strings.Index(text, "message "+msg+" {")
		if i < 0 {
			t.Fatalf("segments.proto has no message %s", msg)
		}
		start := strings.LastIndex(text[:i], "\n}") + 1
		end := i + strings.Index(text[i:], "\n}")
		for _, want := range wants {
			if !strings.Contains(text[start:end], want) {
				t.Errorf("segments.proto's %s lacks %q", msg, want)
			}
		}
	}
}

// TestNoticesErrorsInProto: the Notices service's comment lists each
// field a notice is refused for, as TestNoticeErrors sees them refused.
func TestNoticesErrorsInProto(t *testing.T) {
	b, err := os.ReadFile("../proto/personad/v1/notices.proto")
	if err != nil {
		t.Fatal(err)
	}
	// One line, single-spaced: the codes' column is aligned.
	text := strings.Join(strings.Fields(regexp.MustCompile(`\s*\n\s*//\s*`).ReplaceAllString(string(b), " ")), " ")
	for _, want := range []string{
		"INVALID_ARGUMENT a missing, forged or malformed token,",
		"(or a bill's missing), a loss reason that is not a non-negative integer,",
		`naming the field: "price: \"-1\" is negative"`,
		"HTTP 405 for a method other than GET",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("notices.proto's Notices comment lacks %q", want)
		}
	}
}
