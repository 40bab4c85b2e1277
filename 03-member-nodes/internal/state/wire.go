package state

import (
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
)

// BlockJSON is a stored block on the wire: everything a member needs to
// verify it (signer, epoch, parent) and apply it (the payload for newPayload).
type BlockJSON struct {
	Number     hexutil.Uint64 `json:"number"`
	Hash       common.Hash    `json:"hash"`
	ParentHash common.Hash    `json:"parentHash"`
	Timestamp  hexutil.Uint64 `json:"timestamp"`
	Leader     string         `json:"leader"`
	Run        string         `json:"run"`
	Epoch      hexutil.Uint64 `json:"epoch"`
	Signature  hexutil.Bytes  `json:"signature,omitempty"`
	// Cosignatures: see Block.Cosignatures.
	Cosignatures []hexutil.Bytes `json:"cosignatures,omitempty"`
	Payload      *engine.Payload `json:"payload,omitempty"`
	// CommittedAt is when the serving node's store committed the block.
	CommittedAt time.Time `json:"committedAt"`
}

// NewBlockJSON encodes a stored block for the wire.
func NewBlockJSON(b *Block) BlockJSON {
	j := BlockJSON{Number: hexutil.Uint64(b.Number), Hash: b.Hash, ParentHash: b.ParentHash, Timestamp: hexutil.Uint64(b.Timestamp),
		Leader: b.LeaderID, Run: b.Run, Epoch: hexutil.Uint64(b.Epoch), Signature: b.Signature, Payload: b.Payload, CommittedAt: b.CreatedAt}
	for _, sig := range b.Cosignatures {
		j.Cosignatures = append(j.Cosignatures, sig)
	}
	return j
}

// Block converts a block read from the wire back to the store's type.
func (j BlockJSON) Block() *Block {
	b := &Block{Number: uint64(j.Number), Hash: j.Hash, ParentHash: j.ParentHash, Timestamp: uint64(j.Timestamp),
		Payload: j.Payload, LeaderID: j.Leader, Run: j.Run, Epoch: uint64(j.Epoch), Signature: j.Signature, CreatedAt: j.CommittedAt}
	for _, sig := range j.Cosignatures {
		b.Cosignatures = append(b.Cosignatures, sig)
	}
	return b
}
