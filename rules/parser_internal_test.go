package rules

import (
	"testing"
	"unsafe"
)

// TestParserRemembersMergedCampaigns: across files, a Parser remembers
// each file's campaigns as the merged set it returned holds them, the
// unchanged files' too, rather than the arrays the files were parsed
// into (which would stay alive beside the merged set's copy).
func TestParserRemembersMergedCampaigns(t *testing.T) {
	files := []File{
		{Name: "a.yaml", Data: []byte("campaigns: [{id: a1, bid_cpm: 1, creatives: [{id: ca, w: 1, h: 1, adm: x}]}]")},
		{Name: "b.yaml", Data: []byte("campaigns: [{id: b1, bid_cpm: 1, creatives: [{id: cb, w: 1, h: 1, adm: x}]}, {id: b2, bid_cpm: 2, creatives: [{id: cc, w: 1, h: 1, adm: x}]}]")},
		{Name: "c.json", Data: []byte(`{"content_rules": {"blocked_cat": ["IAB25"]}}`)},
	}
	p := NewParser()
	check := func(what string) {
		t.Helper()
		rs, origins, err := p.ParseFiles(files)
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range files {
			got := p.files[f.Name].rs.Campaigns
			if len(got) == 0 {
				continue
			}
			if want := &rs.Campaigns[origins[i].First]; unsafe.SliceData(got) != want {
				t.Errorf("%s: %s's campaigns are not the merged set's", what, f.Name)
			}
		}
	}
	check("first parse")
	files[1].Data = []byte("campaigns: [{id: b1, bid_cpm: 3, creatives: [{id: cb, w: 1, h: 1, adm: x}]}]")
	check("b changed, a unchanged")
}
