// Package envelope is the one transaction a CometBFT block carries: an
// execution payload, versioned so that the format can change with a fork.
//
//	byte 0     version (1)
//	bytes 1..  the payload as JSON (engine.Payload: executionPayload,
//	           expectedBlobVersionedHashes, parentBeaconBlockRoot,
//	           executionRequests), the same encoding geth's Engine API uses
//
// JSON costs space over a binary encoding but is what newPayload takes, so
// an envelope can be read and replayed by hand (`cometbft` RPC → base64 →
// curl to geth).
package envelope

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
)

// Version is the envelope format this app writes and reads.
const Version = 1

// MaxSize bounds an envelope: geth's 10 MiB RPC request limit, less room
// for the JSON-RPC wrapping of newPayload.
const MaxSize = 9 << 20

// ErrMalformed wraps every reason an envelope is refused.
var ErrMalformed = errors.New("malformed envelope")

// Encode wraps a payload.
func Encode(p *engine.Payload) ([]byte, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	if len(body)+1 > MaxSize {
		return nil, fmt.Errorf("payload of %d bytes exceeds the envelope limit of %d", len(body), MaxSize)
	}
	return append([]byte{Version}, body...), nil
}

// Decode unwraps an envelope and checks that the payload has what
// newPayload needs.
func Decode(tx []byte) (*engine.Payload, error) {
	switch {
	case len(tx) == 0:
		return nil, fmt.Errorf("%w: empty transaction", ErrMalformed)
	case len(tx) > MaxSize:
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(tx), MaxSize)
	case tx[0] != Version:
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformed, tx[0], Version)
	}
	var p engine.Payload
	if err := json.Unmarshal(tx[1:], &p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if p.ExecutionPayload == nil {
		return nil, fmt.Errorf("%w: no executionPayload", ErrMalformed)
	}
	if p.ExecutionPayload.Withdrawals == nil {
		return nil, fmt.Errorf("%w: withdrawals missing (want [] after Shanghai)", ErrMalformed)
	}
	if p.Requests == nil {
		return nil, fmt.Errorf("%w: executionRequests missing (want [] after Prague)", ErrMalformed)
	}
	return &p, nil
}
