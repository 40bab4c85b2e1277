//go:build !byzantine

package node

import (
	"errors"
	"log/slog"

	abci "github.com/cometbft/cometbft/abci/types"
)

// misbehave refuses --byzantine: a validator built without -tags byzantine
// has no way to misbehave.
func misbehave(app abci.Application, how string, _ *slog.Logger) (abci.Application, error) {
	if how != "" {
		return nil, errors.New("--byzantine: this binary was built without -tags byzantine (test builds only)")
	}
	return app, nil
}
