package rules

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestMayRepeat: equal hashes are found wherever they are, zeros (empty
// ids) never count, and distinct hashes pass even when they share a slot.
func TestMayRepeat(t *testing.T) {
	for _, tc := range []struct {
		hashes []uint64
		want   bool
	}{
		{nil, false},
		{[]uint64{0, 0, 0}, false},
		{[]uint64{1, 2, 3}, false},
		{[]uint64{1, 1 << 40, 2 << 40, 3}, false}, // one slot, probed past
		{[]uint64{5, 0, 5}, true},
		{[]uint64{1, 1 << 40, 2 << 40, 1 << 40}, true},
		{[]uint64{idHash("a"), idHash("b"), idHash(""), idHash("")}, false},
		{[]uint64{idHash("a"), idHash("b"), idHash("a")}, true},
	} {
		if got := mayRepeat(tc.hashes); got != tc.want {
			t.Errorf("mayRepeat(%v) = %v, want %v", tc.hashes, got, tc.want)
		}
	}
}

// TestDeliveryWarnings: what a valid set holds that can never deliver —
// ended flights (one warning, naming them; paused campaigns and flights
// still running left out), a frequency cap's window without a max, a
// creative written only for channels its campaign does not run on — is
// warned of at its path; the rest draws nothing.
func TestDeliveryWarnings(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	rs, err := Parse("t.yaml", []byte(`
campaigns:
  - {id: running, bid_cpm: 1, end: "2027-01-01T00:00:00Z", frequency_cap: {max: 3, window: 24h}, creatives: [{id: c0, w: 1, h: 1, adm: x}]}
  - {id: last-year, bid_cpm: 1, start: "2025-01-01T00:00:00Z", end: "2025-12-31T00:00:00Z", creatives: [{id: c1, w: 1, h: 1, adm: x}]}
  - {id: paused-old, status: paused, bid_cpm: 1, end: "2025-12-31T00:00:00Z", creatives: [{id: c2, w: 1, h: 1, adm: x}]}
  - {id: this-morning, bid_cpm: 1, end: "2026-11-29T12:00:00+01:00", creatives: [{id: c3, w: 1, h: 1, adm: x}]}
  - {id: tonight-new-year, bid_cpm: 1, end: "2027-01-01T00:00:00+14:00", creatives: [{id: c4, w: 1, h: 1, adm: x}]}
  - {id: uncapped, bid_cpm: 1, frequency_cap: {window: 24h}, creatives: [{id: c5, w: 1, h: 1, adm: x}]}
  - id: email-only
    bid_cpm: 1
    targeting: {channels: [email, social]}
    creatives:
      - {id: c6, w: 1, h: 1, channels: [web], adm: x}
      - {id: c7, w: 1, h: 1, channels: [web, social], adm: x}
      - {id: c8, w: 1, h: 1, adm: x}
  - {id: any-channel, bid_cpm: 1, creatives: [{id: c9, w: 1, h: 1, channels: [web], adm: x}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Validate(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range rs.DeliveryWarnings(now) {
		got = append(got, w.Error())
	}
	want := []string{
		`campaigns[1].end: flight ended 2025-12-31T00:00:00Z: the campaign never bids; move end, or pause it (2 active campaigns' flights have ended: last-year, this-morning)`,
		`campaigns[5].frequency_cap.max: not set, so the window 24h caps nothing (max 0 is no cap): set the impressions a user may see per window, or remove frequency_cap`,
		`campaigns[6].creatives[0].channels: none of [web] is a channel of the campaign (targeting.channels [email, social]): the creative never serves`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	// On New Year's Eve at noon UTC, the flight that ended at midnight in
	// UTC+14 (10:00 UTC), in a year yet to come in UTC, has ended too.
	if ws := rs.DeliveryWarnings(time.Date(2026, 12, 31, 12, 0, 0, 0, time.UTC)); len(ws) == 0 || !strings.Contains(ws[0].Msg, "(3 active campaigns' flights have ended: last-year, this-morning, tonight-new-year)") {
		t.Errorf("a day later: %v, want tonight-new-year's flight ended too", ws)
	}
}

// TestDeliveryWarningsHouseRules: a campaign whose advertiser domain the
// house rules block (a subdomain too), or whose every creative has a
// blocked category (a subcategory too, the campaign's cat for a creative
// without its own), never bids, and a creative with a blocked category
// never serves: each is warned of at the domain or category, by the
// engine's own test (CategoryBlocks, DomainBlocks). A paused campaign is
// not.
func TestDeliveryWarningsHouseRules(t *testing.T) {
	rs, err := Parse("t.yaml", []byte(`
campaigns:
  - {id: shop, bid_cpm: 1, adomain: [ok.example, Shop.BadCo.example], creatives: [{id: c0, w: 1, h: 1, adm: x}]}
  - {id: not-a-subdomain, bid_cpm: 1, adomain: [notbadco.example], creatives: [{id: c1, w: 1, h: 1, adm: x}]}
  - id: all-blocked
    bid_cpm: 1
    cat: [IAB25-3]
    creatives:
      - {id: c2, w: 1, h: 1, adm: x}
      - {id: c3, w: 1, h: 1, cat: [IAB1, iab26], adm: x}
  - id: one-blocked
    bid_cpm: 1
    cat: [IAB19]
    creatives:
      - {id: c4, w: 1, h: 1, adm: x}
      - {id: c5, w: 1, h: 1, cat: [IAB19, IAB26-1], adm: x}
      - {id: c6, w: 1, h: 1, cat: [IAB250], adm: x}
  - {id: paused, status: paused, bid_cpm: 1, adomain: [badco.example], creatives: [{id: c7, w: 1, h: 1, adm: x}]}
content_rules:
  blocked_cat: [IAB25, IAB26]
  blocked_adomain: [badco.example]
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Validate(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range rs.DeliveryWarnings(time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)) {
		got = append(got, w.Error())
	}
	want := []string{
		`campaigns[0].adomain[1]: "Shop.BadCo.example" is blocked by content_rules.blocked_adomain "badco.example": the campaign never bids`,
		`campaigns[2].cat[0]: "IAB25-3" is blocked by content_rules.blocked_cat "IAB25": the campaign never bids (content_rules.blocked_cat blocks a category of each of its creatives)`,
		`campaigns[3].creatives[1].cat[1]: "IAB26-1" is blocked by content_rules.blocked_cat "IAB26": creative c5 never serves`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}
