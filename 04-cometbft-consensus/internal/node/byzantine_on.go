//go:build byzantine

package node

import (
	"log/slog"

	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/byzantine"
)

// misbehave wraps the app in a Byzantine proposer when --byzantine asks
// for one: a test build (-tags byzantine) only.
func misbehave(app abci.Application, how string, log *slog.Logger) (abci.Application, error) {
	if how == "" {
		return app, nil
	}
	return byzantine.New(app, how, log), nil
}
