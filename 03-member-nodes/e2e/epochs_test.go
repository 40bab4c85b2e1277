package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/election"
	"github.com/geth-consensus/tutorial/devnet"
)

// At most one producer per fencing epoch, whatever Redis says: the epoch
// is claimed in the cluster store, by instance id and run.

// Redis restarted empty hands one epoch to two candidates. The first to
// be granted it freezes (the -tags faults hook: internal/state/fault_on.go)
// between its lease and its fence; Redis restarts empty, and its counter,
// floored at the newest epoch the store has seen, hands the same epoch to
// another candidate, which claims it and leads. Resumed, the first finds
// the epoch claimed and steps down without writing a block.
func TestRedisRestartHandsOutAnEpochTwice(t *testing.T) {
	trigger := filepath.Join(t.TempDir(), "freeze")
	t.Setenv("STAGE3_FAULT_STOP_IN_FENCE", trigger) // every process inherits it; only a leader's own fence counts
	c := newCluster(t, 3, 1, nil)
	c.waitHeads(5, 30*time.Second)
	old := c.waitLeader(20*time.Second, nil)
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := old.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	var frozen *clusterNode
	eventually(t, 30*time.Second, func() error {
		for _, cn := range c.candidates() {
			if cn != old && stopped(cn.proc.Pid()) {
				frozen = cn
				return nil
			}
		}
		return errors.New("no candidate frozen before its fence yet")
	})
	ctx := context.Background()
	rdb := redisClient(t, c.net.Redis)
	holder, epoch, ok, err := election.Current(ctx, rdb, frozen.cfg.ClusterID)
	if err != nil || !ok || holder != frozen.cfg.InstanceID {
		t.Fatalf("lease %s %d %v %v; want %s's", holder, epoch, ok, err, frozen.cfg.InstanceID)
	}
	if cl, ok := claimsIn(t, c.store)[epoch]; ok {
		t.Fatalf("%s froze in its fence, but %s", frozen.cfg.InstanceID, cl)
	}
	if err := c.net.Redis.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := c.net.Redis.Start(); err != nil {
		t.Fatal(err)
	}
	// The third candidate is granted the same epoch and claims it.
	eventually(t, 30*time.Second, func() error {
		cl, ok := claimsIn(t, c.store)[epoch]
		if !ok || cl.Leader == frozen.cfg.InstanceID {
			return fmt.Errorf("epoch %d claimed: %v %+v", epoch, ok, cl)
		}
		return nil
	})
	at := c.clusterHead()
	if err := frozen.proc.Resume(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		log, err := os.ReadFile(frozen.proc.LogPath)
		if err != nil || !strings.Contains(string(log), fmt.Sprintf("epoch %d of %s", epoch, frozen.cfg.InstanceID)) ||
			!strings.Contains(string(log), "the epoch is claimed by") {
			return fmt.Errorf("%s has not logged its refused claim on epoch %d (%v)", frozen.cfg.InstanceID, epoch, err)
		}
		return nil
	})
	c.start(old)
	c.waitHeads(at+5, 30*time.Second)
	c.stopNodes()
	c.checkInvariants()
}

// Two processes started with one --instance-id (the third candidate runs
// as leader-1 too, with its key): the second to announce itself stays out
// of the election and not ready, saying why, while the first runs; once
// the first is gone, the second takes the id over.
func TestDuplicateInstanceID(t *testing.T) {
	c := newCluster(t, 3, 1, func(cfg *config.Config) {
		if cfg.InstanceID == "leader-3" {
			cfg.InstanceID, cfg.SignerKey = "leader-1", devnet.DevKeys[1]
		}
	})
	twins := []*clusterNode{c.nodes[0], c.nodes[2]}
	var first, second *clusterNode
	eventually(t, 30*time.Second, func() error {
		var refused []*clusterNode
		for _, cn := range twins {
			if code, body := cn.get("/readyz"); code == http.StatusServiceUnavailable && strings.Contains(body, "instance id in use") {
				refused = append(refused, cn)
			}
		}
		if len(refused) != 1 {
			return fmt.Errorf("%d of the two leader-1 processes refused", len(refused))
		}
		second = refused[0]
		first = twins[0]
		if first == second {
			first = twins[1]
		}
		return nil
	})
	c.waitHeads(5, 30*time.Second)
	holdsFor(t, 3*time.Second, func() error {
		if st, ok := second.status(); ok && st.Role == "leader" {
			return errors.New("the second leader-1 process leads")
		}
		return nil
	})
	// The first one gone, the id is the second's within the directory TTL.
	if err := first.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if code, body := second.get("/readyz"); code != http.StatusOK {
			return fmt.Errorf("the second leader-1 process: %d %s", code, body)
		}
		return nil
	})
	c.waitHeads(c.clusterHead()+5, 30*time.Second, second)
	c.start(first) // now the duplicate
	eventually(t, 30*time.Second, func() error {
		if code, body := first.get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "instance id in use") {
			return fmt.Errorf("the restarted leader-1 process: %d %s", code, body)
		}
		return nil
	})
	c.waitHeads(c.clusterHead()+5, 30*time.Second)
	c.stopNodes()
	c.checkInvariants()
}

// Two clusters on one Redis (with a password, as every test's), each under
// its own --cluster-id: both elect a leader and make blocks, each member
// follows only its own cluster's leader and rejects nothing, and every key
// in Redis belongs to one cluster or the other.
func TestTwoClustersShareRedis(t *testing.T) {
	a := newCluster(t, 1, 1, func(cfg *config.Config) { cfg.ClusterID = "alpha" })
	b := newCluster(t, 1, 1, func(cfg *config.Config) {
		cfg.ClusterID, cfg.RedisURL, cfg.InstanceID = "beta", a.net.Redis.URL(), "b-"+cfg.InstanceID
	})
	for _, c := range []*cluster{a, b} {
		c.waitHeads(20, 30*time.Second)
		leader := c.waitLeader(10*time.Second, nil)
		for _, m := range c.members() {
			if st, ok := m.status(); !ok || st.Leader != leader.cfg.InstanceID {
				t.Fatalf("%s of cluster %s follows %+v; its leader is %s", m.cfg.InstanceID, m.cfg.ClusterID, st, leader.cfg.InstanceID)
			}
		}
	}
	keys, err := redisClient(t, a.net.Redis).Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var alpha, beta int
	for _, k := range keys {
		switch {
		case strings.HasPrefix(k, "alpha:"):
			alpha++
		case strings.HasPrefix(k, "beta:"):
			beta++
		default:
			t.Errorf("key %q belongs to neither cluster", k)
		}
	}
	if !slices.Contains(keys, "alpha:leader") || !slices.Contains(keys, "beta:leader") {
		t.Fatalf("keys %v: want each cluster's lease", keys)
	}
	t.Logf("one Redis, keys: %d alpha:*, %d beta:*", alpha, beta)
	for _, c := range []*cluster{a, b} {
		c.stopNodes()
		for _, m := range c.members() {
			for _, line := range strings.Split(m.proc.TailLog(1<<22), "\n") {
				if strings.Contains(line, `msg="block rejected"`) {
					t.Errorf("%s rejected a block (the other cluster's?): %s", m.cfg.InstanceID, line)
				}
			}
		}
		c.checkInvariants()
	}
}
