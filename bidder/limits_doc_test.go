package bidder

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
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
