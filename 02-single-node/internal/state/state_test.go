package state

import (
	"math/big"
	"strings"
	"testing"

	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/geth-consensus/tutorial/02-single-node/internal/engine"
)

func payload(n uint64, parent common.Hash) *engine.Payload {
	return &engine.Payload{
		ExecutionPayload: &beacon.ExecutableData{Number: n, ParentHash: parent, BlockHash: common.BigToHash(new(big.Int).SetUint64(1000 + n)),
			Timestamp: 10 + n, BaseFeePerGas: big.NewInt(7), LogsBloom: make([]byte, 256), ExtraData: []byte{}, Transactions: [][]byte{}},
		VersionedHashes: []common.Hash{}, Requests: []hexutil.Bytes{},
	}
}

func TestCommitExtendsTheHeadAndSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	genesis := Head{Number: 0, Hash: common.HexToHash("0x99"), Timestamp: 0}
	if err := m.Init(genesis); err != nil {
		t.Fatal(err)
	}
	parent := genesis.Hash
	for n := uint64(1); n <= 3; n++ {
		p := payload(n, parent)
		if err := m.Commit(p); err != nil {
			t.Fatalf("commit %d: %v", n, err)
		}
		parent = p.ExecutionPayload.BlockHash
	}
	// A block that does not extend the head is refused: wrong number, wrong parent.
	for _, p := range []*engine.Payload{payload(5, parent), payload(4, common.HexToHash("0xbad"))} {
		if err := m.Commit(p); err == nil || !strings.Contains(err.Error(), "does not extend") {
			t.Fatalf("commit of block %d on %s: %v", p.ExecutionPayload.Number, p.ExecutionPayload.ParentHash, err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	head, ok, err := m.Head()
	if err != nil || !ok || head.Number != 3 || head.Hash != parent {
		t.Fatalf("head after reopen = %+v %v %v", head, ok, err)
	}
	p, err := m.Payload(2)
	if err != nil || p.ExecutionPayload.Number != 2 || p.VersionedHashes == nil || p.Requests == nil {
		t.Fatalf("payload 2 = %+v, %v (lists must stay non-nil for newPayload)", p, err)
	}
	if _, err := m.Payload(7); err == nil {
		t.Fatal("payload 7 found")
	}
	if err := m.Init(Head{Hash: common.HexToHash("0x42")}); err == nil || !strings.Contains(err.Error(), "another --data-dir") {
		t.Fatalf("init with another genesis: %v", err)
	}
	// Adopting a head from geth: the head moves, no payload appears.
	if err := m.Adopt(Head{Number: 10, Hash: common.HexToHash("0x10")}); err != nil {
		t.Fatal(err)
	}
	if h, _, _ := m.Head(); h.Number != 10 {
		t.Fatalf("head after adopt = %d", h.Number)
	}
	if _, err := m.HashAt(9); err == nil {
		t.Fatal("adopted region has a payload")
	}
}

func TestSecondOpenFailsInsteadOfHanging(t *testing.T) {
	dir := t.TempDir()
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "another instance") {
		t.Fatalf("second open: %v", err)
	}
}

// Rollback gives back the head block only: geth rejected it after it was
// stored. Anything else is refused.
func TestRollbackTakesBackTheHead(t *testing.T) {
	m, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	genesis := Head{Hash: common.HexToHash("0x99")}
	if err := m.Init(genesis); err != nil {
		t.Fatal(err)
	}
	p1 := payload(1, genesis.Hash)
	p2 := payload(2, p1.ExecutionPayload.BlockHash)
	for _, p := range []*engine.Payload{p1, p2} {
		if err := m.Commit(p); err != nil {
			t.Fatal(err)
		}
	}
	head := func(p *engine.Payload) Head {
		d := p.ExecutionPayload
		return Head{Number: d.Number, Hash: d.BlockHash, Timestamp: d.Timestamp}
	}
	if err := m.Rollback(head(p1), genesis); err == nil {
		t.Fatal("rolled back block 1 under head 2")
	}
	if err := m.Rollback(head(p2), head(p1)); err != nil {
		t.Fatal(err)
	}
	if h, _, _ := m.Head(); h != head(p1) {
		t.Fatalf("head after rollback %+v", h)
	}
	if _, err := m.Payload(2); err == nil {
		t.Fatal("payload 2 still stored")
	}
	if err := m.Commit(payload(2, p1.ExecutionPayload.BlockHash)); err != nil {
		t.Fatalf("block 2 again after the rollback: %v", err)
	}
}
