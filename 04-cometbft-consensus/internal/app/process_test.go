package app

import (
	"slices"
	"testing"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/metrics"
)

// Every reason ProcessProposal rejects for starts at 0 in
// gethcl_process_proposal_total, so that the first rejection is an
// increase the ProposalsRejected alert sees.
func TestRejectReasonsArePrecreated(t *testing.T) {
	for _, r := range []string{reasonMalformed, reasonMismatch, reasonInvalid, reasonSyncing, reasonUnavailable} {
		if !slices.Contains(metrics.RejectReasons, r) {
			t.Errorf("reject reason %q is not in metrics.RejectReasons", r)
		}
	}
}
