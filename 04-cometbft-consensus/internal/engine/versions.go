package engine

import (
	"fmt"

	"github.com/ethereum/go-ethereum/params"
	"github.com/ethereum/go-ethereum/params/forks"
)

// Methods are the Engine API method names for payloads of one fork.
type Methods struct {
	Fork              forks.Fork
	ForkchoiceUpdated string
	GetPayload        string
	NewPayload        string
}

// MethodsAt returns the method versions for a payload with this timestamp,
// the way geth's simulated beacon does (eth/catalyst/simulated_beacon.go).
// The wrong version is answered with -38005 "Unsupported fork".
func MethodsAt(cfg *params.ChainConfig, timestamp uint64) (Methods, error) {
	fork := cfg.LatestFork(timestamp)
	m := func(fcu, get, newp int) (Methods, error) {
		return Methods{fork,
			fmt.Sprintf("engine_forkchoiceUpdatedV%d", fcu),
			fmt.Sprintf("engine_getPayloadV%d", get),
			fmt.Sprintf("engine_newPayloadV%d", newp)}, nil
	}
	switch fork {
	case forks.Osaka, forks.BPO1, forks.BPO2:
		return m(3, 5, 4)
	case forks.Prague:
		return m(3, 4, 4)
	case forks.Cancun:
		return m(3, 3, 3)
	case forks.Shanghai:
		return m(2, 2, 2)
	}
	// Amsterdam (and BPO3+, which geth serves with the Amsterdam methods)
	// adds a slot number and block access lists; before Shanghai there were
	// no withdrawals.
	return Methods{}, fmt.Errorf("%w: %s at timestamp %d (this CL speaks Shanghai through Osaka/BPO2)", ErrUnsupportedFork, fork, timestamp)
}
