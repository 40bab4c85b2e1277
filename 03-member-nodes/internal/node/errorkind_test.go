package node

import (
	"slices"
	"testing"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/metrics"
)

// Every kind errorKind names starts at 0 in gethcl_errors_total: a kind
// added here and not there would be a series the dashboards lack until the
// first such error.
func TestErrorKindsArePrecreated(t *testing.T) {
	for _, k := range append(errorKinds, struct {
		err  error
		kind string
	}{nil, errorKind(nil)}) {
		if !slices.Contains(metrics.ErrorKinds, k.kind) {
			t.Errorf("error kind %q is not in metrics.ErrorKinds", k.kind)
		}
	}
}
