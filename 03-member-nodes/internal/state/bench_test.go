package state

import (
	"context"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/geth-consensus/tutorial/devnet"
)

// BenchmarkCommit is the per-block cost of the leader's fenced commit (one
// PostgreSQL transaction: lock the fencing row, check the head, insert) on a
// local PostgreSQL. Each iteration commits 1,000 blocks, so `-benchtime 1x`
// (as make bench runs it) still measures.
func BenchmarkCommit(b *testing.B) {
	const perIteration = 1000
	n := devnet.StartT(b, devnet.Config{Postgres: 1})
	ctx := context.Background()
	m, err := Open(ctx, n.Postgres[0].URL(), Limits{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	parent := common.HexToHash("0x9e")
	if err := m.Init(ctx, Head{Hash: parent}); err != nil {
		b.Fatal(err)
	}
	next := uint64(1)
	start := time.Now()
	for range b.N {
		for range perIteration {
			blk := block(next, parent, "leader", 1)
			if err := m.Commit(ctx, blk); err != nil {
				b.Fatal(err)
			}
			parent, next = blk.Hash, next+1
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N*perIteration)/1000, "ms/commit")
}
