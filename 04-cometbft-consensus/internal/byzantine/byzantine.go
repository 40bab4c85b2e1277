// Package byzantine is a proposer that misbehaves on purpose, for the tests
// that check the other validators refuse what it proposes. Only a binary
// built with -tags byzantine can use it (internal/node/byzantine_on.go):
// the validator a user builds carries none of it.
package byzantine

import (
	"context"
	"log/slog"

	abci "github.com/cometbft/cometbft/abci/types"
	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/envelope"
)

// Ways to misbehave.
const (
	Invalid = "invalid" // payloads geth finds INVALID: a wrong state root, correctly hashed
	Pad     = "pad"     // envelopes 4 KiB longer than their payload's encoding
	Params  = "params"  // payloads geth's Engine API refuses (-32602): an empty execution request
)

// Proposer wraps an honest app and corrupts the proposals it makes.
type Proposer struct {
	abci.Application
	How string
	Log *slog.Logger
}

// New wraps app; how is Invalid, Pad or Params (the configuration checks it).
func New(app abci.Application, how string, log *slog.Logger) *Proposer {
	log.Warn("BYZANTINE: this validator proposes corrupted payloads (a test build)", "how", how)
	return &Proposer{Application: app, How: how, Log: log}
}

// PrepareProposal proposes what the honest app would, corrupted.
func (b *Proposer) PrepareProposal(ctx context.Context, req *abci.RequestPrepareProposal) (*abci.ResponsePrepareProposal, error) {
	res, err := b.Application.PrepareProposal(ctx, req)
	if err != nil || len(res.Txs) != 1 {
		return res, err
	}
	tx := res.Txs[0]
	switch b.How {
	case Pad:
		tx = append(tx[:len(tx):len(tx)], make([]byte, 4<<10)...) // the same payload, 4 KiB heavier
	case Invalid, Params:
		p, err := envelope.Decode(tx)
		if err != nil {
			return res, nil
		}
		if b.How == Params {
			p.Requests = []hexutil.Bytes{{0}} // a request of type 0 and no data: geth's validateRequests refuses it
		} else {
			Corrupt(p)
		}
		if tx, err = envelope.Encode(p); err != nil {
			return res, nil
		}
	}
	b.Log.Warn("BYZANTINE: proposing a corrupted envelope", "height", req.Height, "how", b.How)
	return &abci.ResponsePrepareProposal{Txs: [][]byte{tx}}, nil
}

// Corrupt makes a payload that is well formed and correctly hashed but
// invalid: a state root geth cannot reach by executing it.
func Corrupt(p *engine.Payload) {
	d := *p.ExecutionPayload
	d.StateRoot = common.Hash{0xba, 0xd}
	d.BlockHash = common.Hash{}
	requests := make([][]byte, len(p.Requests))
	for i, r := range p.Requests {
		requests[i] = r
	}
	if b, err := beacon.ExecutableDataToBlockNoHash(d, p.VersionedHashes, &p.BeaconRoot, requests); err == nil {
		d.BlockHash = b.Hash()
	}
	p.ExecutionPayload = &d
}
