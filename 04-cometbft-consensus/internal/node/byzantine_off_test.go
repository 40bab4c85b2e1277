//go:build !byzantine

package node

import (
	"log/slog"
	"strings"
	"testing"

	abci "github.com/cometbft/cometbft/abci/types"
)

// A validator built for users cannot misbehave: --byzantine is refused
// with the reason, and without it the app is used as is.
func TestByzantineNeedsATestBuild(t *testing.T) {
	app := abci.NewBaseApplication()
	if _, err := misbehave(app, "invalid", slog.Default()); err == nil || !strings.Contains(err.Error(), "-tags byzantine") {
		t.Fatalf("--byzantine=invalid in a user build: err = %v, want one naming -tags byzantine", err)
	}
	got, err := misbehave(app, "", slog.Default())
	if err != nil || got != abci.Application(app) {
		t.Fatalf("no --byzantine: %v, %v; want the app itself", got, err)
	}
}
