package ledger

import (
	"testing"

	"github.com/personad/personad/rules"
)

// TestValidRulesAreAccepted: whatever rules.Validate accepts, the ledger
// accepts too, so a valid campaign is never refused (and so never fails
// closed) at the edges of the limits.
func TestValidRulesAreAccepted(t *testing.T) {
	rs := &rules.RuleSet{Campaigns: []rules.Campaign{{
		ID: "edge", BidCPM: rules.MaxBidCPM,
		Budget:       rules.Budget{Daily: rules.MaxDailyBudget, Total: rules.MaxTotalBudget},
		FrequencyCap: rules.FrequencyCap{Max: 1 << 30, Window: rules.MaxFrequencyWindow.String()},
		Creatives:    []rules.Creative{{ID: "c", W: 1, H: 1, Adm: "x"}},
	}}}
	if err := rs.Validate(); err != nil {
		t.Fatalf("edge campaign invalid: %v", err)
	}
	if _, err := LimitsFromRules(&rs.Campaigns[0]); err != nil {
		t.Errorf("valid rules refused by the ledger: %v", err)
	}
}
