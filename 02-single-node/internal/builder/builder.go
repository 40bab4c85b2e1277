// Package builder is the BlockBuilder: it asks geth for a block on a given
// parent and returns the payload, executed by geth (newPayload VALID) but not
// yet canonical. Making it canonical and durable is the caller's job (the
// node package), because the order of "persist" and "forkchoiceUpdated" is
// what keeps a crash from losing a finalized block.
package builder

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/geth-consensus/tutorial/02-single-node/internal/engine"
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
	now          func() time.Time
}

// New returns a builder whose blocks pay priority fees to feeRecipient.
func New(e Engine, feeRecipient common.Address, now func() time.Time) *BlockBuilder {
	return &BlockBuilder{engine: e, feeRecipient: feeRecipient, now: now}
}

// Timestamp is the timestamp of the next block on parent: wall-clock
// seconds, but strictly above the parent's, so that more than one block per
// second runs the chain's clock ahead of the wall clock.
func (b *BlockBuilder) Timestamp(parent Parent) uint64 {
	return max(uint64(b.now().Unix()), parent.Timestamp+1)
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

// Build starts a payload on parent, gives geth `wait` to fill it, and
// fetches it. Nothing changes on geth's canonical chain.
func (b *BlockBuilder) Build(ctx context.Context, parent Parent, wait time.Duration) (*engine.Payload, error) {
	// parentBeaconBlockRoot: there is no beacon chain. We use the parent's
	// execution block hash: unique per block, and derivable from the
	// payload alone, so a follower that replays a payload never needs it
	// sent separately.
	attrs := Attributes{Timestamp: b.Timestamp(parent), BeaconRoot: parent.Hash}
	// prevRandao: 32 bytes from crypto/rand, unpredictable to everyone but
	// this node (the parent hash would be known in advance by anyone).
	if _, err := rand.Read(attrs.Random[:]); err != nil {
		return nil, err
	}
	id, err := b.Start(ctx, parent, attrs)
	if err != nil {
		return nil, err
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	return b.Fetch(ctx, parent, id, attrs)
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
