// Package envelope is the one transaction a CometBFT block carries: an
// execution payload and what newPayload needs besides it, in one canonical
// binary encoding.
//
//	byte 0     version (2)
//	bytes 1..  an RLP list: the execution payload's fields in the order of
//	           the Engine API's ExecutionPayloadV3 (parentHash ...
//	           excessBlobGas), then expectedBlobVersionedHashes,
//	           parentBeaconBlockRoot and executionRequests
//
// RLP is the encoding geth keeps blocks in, so an envelope is about as big
// as the block it carries (version 1's hex JSON was twice that, and could
// not carry a full block). Every payload has exactly one envelope: geth's
// RLP decoder refuses non-canonical integers and sizes and trailing bytes,
// and Decode re-encodes what it read and refuses an envelope whose bytes
// differ. A proposer can therefore neither pad a block nor vary its bytes
// (ABCI++ asks ProcessProposal to be a function of the proposal: two
// encodings of one payload would be two proposals of one block).
package envelope

import (
	"bytes"
	"errors"
	"fmt"
	"math/big"

	cmttypes "github.com/cometbft/cometbft/types"
	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/params"
	"github.com/ethereum/go-ethereum/rlp"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/engine"
)

// Version is the envelope format this app writes and reads.
const Version = 2

// MaxSize bounds an envelope: the largest block geth may build or accept
// since Osaka (EIP-7934, params.MaxBlockSize: 8 MiB of RLP), plus what the
// envelope carries beside the block (at most a few kilobytes: a versioned
// hash per blob, the beacon root, the execution requests the system
// contracts' per-block limits allow). A bigger envelope carries a block
// geth must refuse.
const MaxSize = params.MaxBlockSize + overhead

// overhead is the room MaxSize leaves beside the block.
const overhead = 64 << 10

// BlockMaxBytes is the least CometBFT consensus parameter block.max_bytes
// that carries every envelope, on a chain of up to validators validators
// whose blocks may hold evidence bytes of evidence (evidence.max_bytes):
// MaxSize and its framing as the block's one transaction, CometBFT's
// header and overhead, a commit with every validator's signature, and the
// evidence. Any more only lets a proposer push more through the network.
func BlockMaxBytes(validators int, evidence int64) int64 {
	return MaxSize + txFraming + cmttypes.MaxOverheadForBlock + cmttypes.MaxHeaderBytes + cmttypes.MaxCommitBytes(validators) + evidence
}

// MaxValidators is the most validators whose commit a block of
// blockMaxBytes (block.max_bytes; -1 is CometBFT's 100 MB) still carries
// beside the largest envelope and evidence bytes of evidence: the bound of
// BlockMaxBytes, the other way round (at most CometBFT's MaxVotesCount).
// 0 when not even one fits.
func MaxValidators(blockMaxBytes, evidence int64) int {
	if blockMaxBytes == -1 {
		blockMaxBytes = cmttypes.MaxBlockSizeBytes
	}
	n := 0
	for n < cmttypes.MaxVotesCount && BlockMaxBytes(n+1, evidence) <= blockMaxBytes {
		n++
	}
	return n
}

// txFraming is what a transaction costs in a block's data beyond its bytes:
// a protobuf tag and a length of up to 5 bytes.
const txFraming = 6

// ErrMalformed wraps every reason an envelope is refused.
var ErrMalformed = errors.New("malformed envelope")

// wire is the RLP layout of an envelope after its version byte. Fields are
// never added to it: a fork that changes the payload gets a new version.
type wire struct {
	ParentHash      common.Hash
	FeeRecipient    common.Address
	StateRoot       common.Hash
	ReceiptsRoot    common.Hash
	LogsBloom       []byte
	Random          common.Hash
	Number          uint64
	GasLimit        uint64
	GasUsed         uint64
	Timestamp       uint64
	ExtraData       []byte
	BaseFeePerGas   *big.Int
	BlockHash       common.Hash
	Transactions    [][]byte
	Withdrawals     []*types.Withdrawal
	BlobGasUsed     uint64
	ExcessBlobGas   uint64
	VersionedHashes []common.Hash
	BeaconRoot      common.Hash
	Requests        [][]byte
}

// Encode wraps a payload. It refuses a payload this version cannot carry
// (before Cancun, or from Amsterdam on) and one over MaxSize.
func Encode(p *engine.Payload) ([]byte, error) {
	d := p.ExecutionPayload
	switch {
	case d == nil:
		return nil, errors.New("envelope: no execution payload")
	case d.BlobGasUsed == nil || d.ExcessBlobGas == nil:
		return nil, errors.New("envelope: a payload without blobGasUsed and excessBlobGas (before Cancun) has no envelope version")
	case d.BlockAccessList != nil || d.SlotNumber != nil:
		return nil, errors.New("envelope: an Amsterdam payload (block access list, slot number) needs a new envelope version")
	}
	requests := make([][]byte, len(p.Requests))
	for i, r := range p.Requests {
		requests[i] = r
	}
	body, err := rlp.EncodeToBytes(&wire{
		ParentHash: d.ParentHash, FeeRecipient: d.FeeRecipient, StateRoot: d.StateRoot, ReceiptsRoot: d.ReceiptsRoot,
		LogsBloom: d.LogsBloom, Random: d.Random, Number: d.Number, GasLimit: d.GasLimit, GasUsed: d.GasUsed,
		Timestamp: d.Timestamp, ExtraData: d.ExtraData, BaseFeePerGas: d.BaseFeePerGas, BlockHash: d.BlockHash,
		Transactions: d.Transactions, Withdrawals: d.Withdrawals, BlobGasUsed: *d.BlobGasUsed, ExcessBlobGas: *d.ExcessBlobGas,
		VersionedHashes: p.VersionedHashes, BeaconRoot: p.BeaconRoot, Requests: requests,
	})
	if err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	if len(body)+1 > MaxSize {
		return nil, fmt.Errorf("envelope: payload of %d bytes exceeds the envelope limit of %d", len(body), MaxSize)
	}
	return append([]byte{Version}, body...), nil
}

// Decode unwraps an envelope. It refuses anything but the one encoding of a
// payload Encode writes, and a payload whose fields geth would refuse as
// malformed rather than judge.
func Decode(tx []byte) (*engine.Payload, error) {
	switch {
	case len(tx) == 0:
		return nil, fmt.Errorf("%w: empty transaction", ErrMalformed)
	case len(tx) > MaxSize:
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(tx), MaxSize)
	case tx[0] != Version:
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformed, tx[0], Version)
	}
	var w wire
	if err := rlp.DecodeBytes(tx[1:], &w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case len(w.LogsBloom) != types.BloomByteLength:
		return nil, fmt.Errorf("%w: logsBloom of %d bytes, want %d", ErrMalformed, len(w.LogsBloom), types.BloomByteLength)
	case len(w.ExtraData) > int(params.MaximumExtraDataSize):
		return nil, fmt.Errorf("%w: extraData of %d bytes, at most %d", ErrMalformed, len(w.ExtraData), params.MaximumExtraDataSize)
	}
	requests := make([]hexutil.Bytes, len(w.Requests))
	for i, r := range w.Requests {
		requests[i] = r
	}
	p := &engine.Payload{
		ExecutionPayload: &beacon.ExecutableData{
			ParentHash: w.ParentHash, FeeRecipient: w.FeeRecipient, StateRoot: w.StateRoot, ReceiptsRoot: w.ReceiptsRoot,
			LogsBloom: w.LogsBloom, Random: w.Random, Number: w.Number, GasLimit: w.GasLimit, GasUsed: w.GasUsed,
			Timestamp: w.Timestamp, ExtraData: w.ExtraData, BaseFeePerGas: w.BaseFeePerGas, BlockHash: w.BlockHash,
			Transactions: w.Transactions, Withdrawals: w.Withdrawals, BlobGasUsed: &w.BlobGasUsed, ExcessBlobGas: &w.ExcessBlobGas,
		},
		VersionedHashes: w.VersionedHashes, BeaconRoot: w.BeaconRoot, Requests: requests,
	}
	// newPayload needs lists, never null: [] when there are none.
	if p.ExecutionPayload.Transactions == nil {
		p.ExecutionPayload.Transactions = [][]byte{}
	}
	if p.ExecutionPayload.Withdrawals == nil {
		p.ExecutionPayload.Withdrawals = []*types.Withdrawal{}
	}
	if p.VersionedHashes == nil {
		p.VersionedHashes = []common.Hash{}
	}
	again, err := Encode(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !bytes.Equal(again, tx) {
		return nil, fmt.Errorf("%w: not the canonical encoding of its payload (%d bytes, canonical %d)", ErrMalformed, len(tx), len(again))
	}
	return p, nil
}
