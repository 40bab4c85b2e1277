package state

import (
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// BenchmarkCommit is the per-block cost of persisting a finalized block (one
// fsynced bbolt transaction) on this machine's disk. Each iteration commits
// 1,000 blocks, so `-benchtime 1x` (as make bench runs it) still measures.
func BenchmarkCommit(b *testing.B) {
	const perIteration = 1000
	m, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	parent := common.HexToHash("0x1")
	if err := m.Init(Head{Hash: parent}); err != nil {
		b.Fatal(err)
	}
	next := uint64(1)
	start := time.Now()
	for range b.N {
		for range perIteration {
			p := payload(next, parent)
			if err := m.Commit(p); err != nil {
				b.Fatal(err)
			}
			parent, next = p.ExecutionPayload.BlockHash, next+1
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N*perIteration)/1000, "ms/commit")
}
