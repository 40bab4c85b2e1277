package state

import (
	"testing"

	"github.com/ethereum/go-ethereum/common"
)

// BenchmarkCommit is the per-block cost of persisting a finalized block
// (one fsynced bbolt transaction) on this machine's disk.
func BenchmarkCommit(b *testing.B) {
	m, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if err := m.Init(Head{Hash: common.HexToHash("0x1")}); err != nil {
		b.Fatal(err)
	}
	parent := common.HexToHash("0x1")
	b.ResetTimer()
	for i := range b.N {
		p := payload(uint64(i+1), parent)
		if err := m.Commit(p); err != nil {
			b.Fatal(err)
		}
		parent = p.ExecutionPayload.BlockHash
	}
}
