package syncer

import (
	"errors"
	"math/big"
	"testing"

	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/signer"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

func TestVerify(t *testing.T) {
	chainID := big.NewInt(1337)
	leader, err := signer.LoadKey("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := crypto.GenerateKey()
	other, err := signer.LoadKey(common.Bytes2Hex(crypto.FromECDSA(otherKey)))
	if err != nil {
		t.Fatal(err)
	}
	v, err := signer.NewVerifier([]common.Address{leader.Address})
	if err != nil {
		t.Fatal(err)
	}
	tip := Tip{Number: 9, Hash: common.HexToHash("0x09"), Epoch: 2}
	// good builds a block on tip signed by s; mutate changes it afterwards.
	good := func(s *signer.Signer, epoch uint64, mutate func(*state.Block)) *state.Block {
		d := beacon.ExecutableData{Number: 10, ParentHash: tip.Hash, Timestamp: 100, GasLimit: 30_000_000, BaseFeePerGas: big.NewInt(7),
			LogsBloom: make([]byte, 256), ExtraData: []byte{}, Transactions: [][]byte{}, Withdrawals: []*types.Withdrawal{},
			BlobGasUsed: new(uint64), ExcessBlobGas: new(uint64)}
		p := &engine.Payload{ExecutionPayload: &d, VersionedHashes: []common.Hash{}, Requests: []hexutil.Bytes{}, BeaconRoot: tip.Hash}
		hash, err := engine.ContentHash(p)
		if err != nil {
			t.Fatal(err)
		}
		d.BlockHash = hash
		b := &state.Block{Number: 10, Hash: hash, ParentHash: tip.Hash, Timestamp: 100, Epoch: epoch, LeaderID: "leader-1", Payload: p}
		sig, err := s.Sign(signer.Header{ChainID: chainID, Number: b.Number, Hash: b.Hash, ParentHash: b.ParentHash, Epoch: b.Epoch, Leader: b.LeaderID})
		if err != nil {
			t.Fatal(err)
		}
		b.Signature = sig
		if mutate != nil {
			mutate(b)
		}
		return b
	}
	if err := Verify(chainID, v, tip, good(leader, 2, nil)); err != nil {
		t.Fatalf("a good block: %v", err)
	}
	if err := Verify(chainID, v, tip, good(leader, 3, nil)); err != nil {
		t.Fatalf("a block from the next epoch: %v", err)
	}
	for _, tc := range []struct {
		name   string
		block  *state.Block
		reason string
	}{
		{"gap", good(leader, 2, func(b *state.Block) { b.Number = 11 }), "number"},
		{"wrong parent", good(leader, 2, func(b *state.Block) { b.ParentHash = common.HexToHash("0xbad") }), "parent"},
		{"deposed leader", good(leader, 1, nil), "epoch"},
		{"no payload", good(leader, 2, func(b *state.Block) { b.Payload = nil }), "payload"},
		{"payload of another block", good(leader, 2, func(b *state.Block) { b.Payload.ExecutionPayload.BlockHash = common.HexToHash("0x11") }), "payload"},
		{"tampered hash", good(leader, 2, func(b *state.Block) {
			b.Hash = common.HexToHash("0x1f")
			b.Payload.ExecutionPayload.BlockHash = b.Hash
		}), "payload"},
		{"other transactions under the genuine hash and signature", good(leader, 2, func(b *state.Block) {
			b.Payload.ExecutionPayload.Transactions = [][]byte{{0x02, 0xc0}}
		}), "payload"},
		{"tampered leader id", good(leader, 2, func(b *state.Block) { b.LeaderID = "leader-2" }), "signature"},
		{"tampered epoch", good(leader, 2, func(b *state.Block) { b.Epoch = 5 }), "signature"},
		{"not a leader", good(other, 2, nil), "signature"},
		{"garbage signature", good(leader, 2, func(b *state.Block) { b.Signature = []byte{1, 2, 3} }), "signature"},
	} {
		err := Verify(chainID, v, tip, tc.block)
		var r *Rejection
		if !errors.Is(err, ErrRejected) || !errors.As(err, &r) || r.Reason != tc.reason {
			t.Errorf("%s: %v, want a %q rejection", tc.name, err, tc.reason)
		}
	}
}
