// Package builder is the BlockBuilder: it asks geth for a block on a given
// parent and returns the payload, executed by geth (newPayload VALID) but not
// yet canonical. When to start it, how long to let geth fill it, and making
// it canonical once CometBFT decides it, are the caller's job (the app
// package): every validator must agree on the attributes, so they come from
// the chain, not from this node.
package builder

import (
	"context"
	"errors"
	"fmt"
	"time"

	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
)

// Engine is what the builder needs from geth.
type Engine interface {
	ForkchoiceUpdated(ctx context.Context, fc beacon.ForkchoiceStateV1, attrs *beacon.PayloadAttributes, headTime uint64) (*beacon.PayloadID, error)
	GetPayload(ctx context.Context, id beacon.PayloadID, timestamp uint64) (*engine.Payload, error)
}

// ErrNoPayloadID means geth answered forkchoiceUpdated VALID without a
// payload id: it already had a payload for these attributes on this head.
// The next attempt differs (new prevRandao), so a retry succeeds.
var ErrNoPayloadID = errors.New("forkchoiceUpdated answered VALID without a payloadId")

// Parent is the block to build on.
type Parent struct {
	Number    uint64
	Hash      common.Hash
	Timestamp uint64
}

// BlockBuilder builds blocks on geth.
type BlockBuilder struct {
	engine       Engine
	feeRecipient common.Address
}

// New returns a builder whose blocks pay priority fees to feeRecipient.
func New(e Engine, feeRecipient common.Address) *BlockBuilder {
	return &BlockBuilder{engine: e, feeRecipient: feeRecipient}
}

// Timestamp is the timestamp of the block on parent decided at CometBFT
// block time blockTime: its seconds, but strictly above the parent's, so
// that more than one block per second runs the chain's clock ahead of the
// wall clock. Every validator computes it from the same header.
func Timestamp(blockTime time.Time, parent Parent) uint64 {
	return max(uint64(blockTime.Unix()), parent.Timestamp+1)
}

// Attributes are what a payload is built with besides its parent.
type Attributes struct {
	Timestamp uint64
	// Random is the block's prevRandao: the value the EVM's PREVRANDAO
	// opcode returns.
	Random common.Hash
	// BeaconRoot is the parentBeaconBlockRoot of EIP-4788, which geth
	// stores in the beacon roots contract.
	BeaconRoot common.Hash
}

// Start has geth start building a payload on parent (forkchoiceUpdated
// with attributes, parent as head, safe and finalized). geth fills it from
// its pool until Fetch asks for it.
func (b *BlockBuilder) Start(ctx context.Context, parent Parent, attrs Attributes) (beacon.PayloadID, error) {
	fc := beacon.ForkchoiceStateV1{HeadBlockHash: parent.Hash, SafeBlockHash: parent.Hash, FinalizedBlockHash: parent.Hash}
	id, err := b.engine.ForkchoiceUpdated(ctx, fc, &beacon.PayloadAttributes{
		Timestamp:             attrs.Timestamp,
		Random:                attrs.Random,
		SuggestedFeeRecipient: b.feeRecipient,
		Withdrawals:           []*types.Withdrawal{}, // [] not null since Shanghai; no beacon chain, no withdrawals
		BeaconRoot:            &attrs.BeaconRoot,
	}, parent.Timestamp)
	if err != nil {
		return beacon.PayloadID{}, err
	}
	if id == nil {
		return beacon.PayloadID{}, ErrNoPayloadID
	}
	return *id, nil
}

// Fetch gets the payload Start began (getPayload, which stops geth's
// build) and checks that geth built it on parent.
func (b *BlockBuilder) Fetch(ctx context.Context, parent Parent, id beacon.PayloadID, attrs Attributes) (*engine.Payload, error) {
	p, err := b.engine.GetPayload(ctx, id, attrs.Timestamp)
	if err != nil {
		return nil, err
	}
	if p.ExecutionPayload.ParentHash != parent.Hash || p.ExecutionPayload.Number != parent.Number+1 {
		return nil, fmt.Errorf("geth built block %d on %s, asked for %d on %s", p.ExecutionPayload.Number, p.ExecutionPayload.ParentHash, parent.Number+1, parent.Hash)
	}
	p.BeaconRoot = attrs.BeaconRoot // getPayload does not return it
	return p, nil
}
