package engine

import (
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
)

// ContentHash is the hash of the block p's fields make, whatever hash p
// claims: a signature over a block hash covers the payload only once the
// hash is recomputed from it.
func ContentHash(p *Payload) (common.Hash, error) {
	requests := make([][]byte, len(p.Requests))
	for i, r := range p.Requests {
		requests[i] = r
	}
	beaconRoot := p.BeaconRoot
	block, err := engine.ExecutableDataToBlockNoHash(*p.ExecutionPayload, p.VersionedHashes, &beaconRoot, requests)
	if err != nil {
		return common.Hash{}, err
	}
	return block.Hash(), nil
}

// ErrNotRebuildable means a block's payload cannot be rebuilt from what
// geth's RPC serves of it.
var ErrNotRebuildable = errors.New("payload cannot be rebuilt from RPC")

// PayloadOf rebuilds the payload that makes block b, from what geth's RPC
// serves of it (BlockByNumber): a block with execution-layer requests
// (deposits, withdrawal or consolidation requests since Prague), which RPC
// does not return, is ErrNotRebuildable, named by the hash check.
func PayloadOf(b *types.Block) (*Payload, error) {
	var requests [][]byte
	if b.Header().RequestsHash != nil {
		requests = [][]byte{} // none: RPC does not serve them
	}
	env := engine.BlockToExecutableData(b, new(big.Int), nil, requests)
	p := &Payload{ExecutionPayload: env.ExecutionPayload}
	if b.Header().ParentBeaconRoot != nil {
		p.BeaconRoot = *b.Header().ParentBeaconRoot
		p.VersionedHashes = []common.Hash{}
		for _, tx := range b.Transactions() {
			p.VersionedHashes = append(p.VersionedHashes, tx.BlobHashes()...)
		}
	}
	if requests != nil {
		p.Requests = []hexutil.Bytes{}
	}
	hash, err := ContentHash(p)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w: %v", b.NumberU64(), ErrNotRebuildable, err)
	}
	if hash != b.Hash() {
		return nil, fmt.Errorf("block %d %s: %w: its fields hash to %s (execution requests?)", b.NumberU64(), b.Hash(), ErrNotRebuildable, hash)
	}
	return p, nil
}
