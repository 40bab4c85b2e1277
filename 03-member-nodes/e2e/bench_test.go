package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

// BenchmarkSyncLagAndFailover runs two candidates and a member at a 250 ms
// block time and prints:
//
//   - member sync lag: for every block, the member's commit time in its own
//     PostgreSQL minus the leader's commit time in the cluster's (both
//     servers on this machine's clock; the member's forkchoiceUpdated
//     follows its commit within about a millisecond);
//   - failover: SIGKILL of the leader → the next block in the cluster store,
//     over several rounds, against the lease TTL.
func BenchmarkSyncLagAndFailover(b *testing.B) {
	const rounds = 5
	c := newCluster(b, 2, 1, func(cfg *config.Config) {
		cfg.BlockMode, cfg.BlockTime, cfg.MaxDrift, cfg.LogLevel = "block-time", 250*time.Millisecond, 10*time.Second, "info"
	})
	c.waitLeader(20*time.Second, nil)
	var failovers []time.Duration
	for range rounds {
		leader := c.waitLeader(20*time.Second, nil)
		c.waitHeads(c.clusterHead()+20, 60*time.Second)
		before := c.clusterHead()
		if err := leader.proc.Kill(); err != nil {
			b.Fatal(err)
		}
		killed := time.Now()
		eventually(b, 20*time.Second, func() error {
			if h := c.clusterHead(); h <= before+1 { // +1: a commit in flight at the kill
				return fmt.Errorf("cluster head %d", h)
			}
			return nil
		})
		failovers = append(failovers, time.Since(killed))
		c.start(leader)
	}
	member := c.members()[0]
	c.waitHeads(c.clusterHead(), 30*time.Second, member)

	ctx := context.Background()
	createdAt := func(st *state.Manager) map[uint64]time.Time {
		blocks, err := st.BlocksAfter(ctx, 0, 1000)
		if err != nil {
			b.Fatal(err)
		}
		out := map[uint64]time.Time{}
		for _, blk := range blocks {
			out[blk.Number] = blk.CreatedAt
		}
		return out
	}
	leaderAt, memberAt := createdAt(c.store), createdAt(openStore(b, member.cfg.PostgresURL))
	var lags []time.Duration
	for n, t0 := range leaderAt {
		if t1, ok := memberAt[n]; ok {
			lags = append(lags, t1.Sub(t0))
		}
	}
	slices.Sort(lags)
	slices.Sort(failovers)
	pct := func(d []time.Duration, p float64) time.Duration { return d[int(p*float64(len(d)-1))] }
	b.ReportMetric(float64(pct(lags, 0.5).Microseconds())/1000, "sync-lag-p50-ms")
	b.ReportMetric(float64(pct(lags, 0.99).Microseconds())/1000, "sync-lag-p99-ms")
	b.ReportMetric(float64(pct(failovers, 0.5).Milliseconds()), "failover-p50-ms")
	b.ReportMetric(float64(failovers[len(failovers)-1].Milliseconds()), "failover-max-ms")
	b.Logf("member sync lag over %d blocks: p50 %s, p99 %s, max %s", len(lags), pct(lags, 0.5), pct(lags, 0.99), lags[len(lags)-1])
	b.Logf("failover after SIGKILL of the leader, %d rounds (lease TTL %s, renew %s): %v",
		rounds, member.cfg.LeaseTTL, member.cfg.LeaseRenew, failovers)
}
