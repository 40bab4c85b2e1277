package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/loadgen"
)

// A standby candidate hears every pending transaction the leader does; the
// blocks it applies take them out again, so once a stream is included it
// holds next to nothing (it used to keep every hash it ever heard), and,
// promoted, it leads on at once.
func TestStandbyForgetsIncludedTransactions(t *testing.T) {
	c := newCluster(t, 2, 0, nil)
	leader := c.waitLeader(20*time.Second, nil)
	standby := c.candidates()[0]
	if standby == leader {
		standby = c.candidates()[1]
	}
	c.waitHeads(3, 30*time.Second)
	r := steadyLoad(t, leader, 200, 10*time.Second)
	t.Logf("%d transfers at 200/s included in %d blocks", r.Included, r.Blocks)
	const tracked = "gethcl_tracked_transactions"
	// Included hashes are kept 10-20 s to recognise late announcements.
	eventually(t, 40*time.Second, func() error {
		if n := standby.metric(tracked); n < 0 || n > 50 {
			return fmt.Errorf("the standby tracks %v transactions, %d were sent and included", n, r.Sent)
		}
		return nil
	})
	if err := leader.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	at := c.clusterHead()
	c.failover(leader, at, time.Now(), "the leader's SIGKILL")
	c.start(leader)
	c.waitHeads(c.clusterHead()+5, 30*time.Second)
	c.stopNodes()
	c.checkInvariants()
}

// steadyLoad sends rate transfers a second for d to cn's geth and waits
// for every one to be included.
func steadyLoad(t testing.TB, cn *clusterNode, rate float64, d time.Duration) loadgen.Result {
	t.Helper()
	r, err := sendSteady(cn, rate, d)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// sendSteady is steadyLoad for another goroutine than the test's: it
// returns what went wrong.
func sendSteady(cn *clusterNode, rate float64, d time.Duration) (loadgen.Result, error) {
	keys, err := loadgen.ParseKeys(loadgen.DevKeys[5:])
	if err != nil {
		return loadgen.Result{}, err
	}
	g, err := loadgen.New(context.Background(), cn.geth.RPCURL(), keys)
	if err != nil {
		return loadgen.Result{}, err
	}
	defer g.Close()
	r, err := g.Steady(context.Background(), rate, d, 60*time.Second)
	if err == nil && r.Pending() != 0 {
		err = fmt.Errorf("%d of %d transfers never included", r.Pending(), r.Sent)
	}
	return r, err
}
