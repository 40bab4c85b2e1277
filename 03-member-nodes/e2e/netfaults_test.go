//go:build netfaults

package e2e

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/loadgen"
)

// Stage 3 under network faults: every link of the cluster goes through a
// devnet fault point, and each test ends with the full invariant check
// (one chain on every geth and database, no gap, one producer per epoch).

// faultyCluster is a cluster whose every link goes through a fault point:
// each node's to Redis, to its PostgreSQL and to its geth's Engine API,
// each candidate's HTTP API (the URL it advertises), and the geths'
// devp2p (devnet.GethLinks).
type faultyCluster struct {
	*cluster
	faults *devnet.Faults
	links  map[string]map[string]*devnet.Link // by instance id: "redis", "postgres", "engine", "api"
}

func newFaultyCluster(t *testing.T, candidates, members int, mutate func(*config.Config)) *faultyCluster {
	t.Helper()
	f := devnet.NewFaults()
	t.Cleanup(f.Close)
	fc := &faultyCluster{faults: f, links: map[string]map[string]*devnet.Link{}}
	route := func(cfg *config.Config) {
		id := cfg.InstanceID
		fc.links[id] = map[string]*devnet.Link{}
		link := func(what, upstream string) string {
			l, err := f.Link(id+"-"+what, "127.0.0.1:0", upstream)
			if err != nil {
				t.Fatal(err)
			}
			fc.links[id][what] = l
			return l.Addr()
		}
		cfg.RedisURL = viaLink(t, cfg.RedisURL, func(host string) string { return link("redis", host) })
		cfg.PostgresURL = viaLink(t, cfg.PostgresURL, func(host string) string { return link("postgres", host) })
		cfg.EngineURL = viaLink(t, cfg.EngineURL, func(host string) string { return link("engine", host) })
		if cfg.Mode == "leader" {
			cfg.AdvertiseURL = "http://" + link("api", cfg.HealthAddr)
		}
		if mutate != nil {
			mutate(cfg)
		}
	}
	fc.cluster = startClusterOn(t, devnet.Config{Faults: f}, nil, candidates, members, route)
	return fc
}

// viaLink returns raw (a URL) with its host:port replaced by what link
// makes of it.
func viaLink(t *testing.T, raw string, link func(host string) string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = link(u.Host)
	return u.String()
}

// cut cuts the named links of node cn, both ways.
func (fc *faultyCluster) cut(cn *clusterNode, what ...string) {
	fc.t.Helper()
	for _, w := range what {
		if err := fc.links[cn.cfg.InstanceID][w].Apply(devnet.Cut()); err != nil {
			fc.t.Fatal(err)
		}
	}
}

func (fc *faultyCluster) heal() {
	fc.t.Helper()
	if err := fc.faults.HealAll(); err != nil {
		fc.t.Fatal(err)
	}
}

// backgroundLoad sends transfers at rate to cn's geth until the test ends
// or stop is called.
func backgroundLoad(t *testing.T, cn *clusterNode, rate float64) (stop func()) {
	t.Helper()
	keys, err := loadgen.ParseKeys(loadgen.DevKeys[5:])
	if err != nil {
		t.Fatal(err)
	}
	g, err := loadgen.New(context.Background(), cn.geth.RPCURL(), keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = g.Steady(ctx, rate, time.Hour, 0)
	}()
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return stop
}

// role is cn's role as its /status says it ("" when it does not answer).
func role(cn *clusterNode) string {
	s, _ := cn.status()
	return s.Role
}

// The leader cut from Redis (it keeps PostgreSQL) cannot renew its lease,
// and cut from PostgreSQL (it keeps Redis) cannot commit: either way it
// stops leading within its lease and a candidate takes over; healed, the
// old leader is a candidate that writes nothing.
func TestFaultLeaderCutFromRedis(t *testing.T)    { leaderCutFrom(t, "redis", "Redis") }
func TestFaultLeaderCutFromPostgres(t *testing.T) { leaderCutFrom(t, "postgres", "PostgreSQL") }

func leaderCutFrom(t *testing.T, link, what string) {
	c := newFaultyCluster(t, 2, 1, nil)
	old := c.waitLeader(20*time.Second, nil)
	c.waitHeads(10, 30*time.Second)
	at, cut := c.clusterHead(), time.Now()
	c.cut(old, link)
	eventually(t, old.cfg.LeaseTTL+time.Second, func() error { // within its lease, and a poll
		if r := role(old); r != "candidate" {
			return fmt.Errorf("%s is %q, cut from %s", old.cfg.InstanceID, r, what)
		}
		return nil
	})
	stepped := time.Since(cut)
	d := c.failover(old, at+1, cut, "the leader was cut from "+what)
	next := c.waitLeader(10*time.Second, old)
	t.Logf("MEASURED %s cut from %s: stopped leading after %s (lease TTL %s); %s leads, blocks again %s after the cut",
		old.cfg.InstanceID, what, stepped.Round(time.Millisecond), old.cfg.LeaseTTL, next.cfg.InstanceID, d.Round(time.Millisecond))
	c.heal()
	c.waitHeads(c.clusterHead()+10, 60*time.Second)
	if r := role(old); r != "candidate" {
		t.Errorf("%s healed: %s, want candidate", old.cfg.InstanceID, r)
	}
	c.stopNodes()
	c.checkInvariants()
}

// A member cut from everything (Redis, the candidates' APIs, its geth's
// peers) for 30 s under load falls behind; healed, it catches up within
// seconds. The cluster makes a block every 250 ms (4 a second, where the
// default is 1), which keeps the missed blocks few; with blocks on demand
// it makes about 35 a second under this load, and the member, applying
// about 110 a second, still catches up in about 10 s (README: Break it).
func TestFaultMemberCutOffCatchesUp(t *testing.T) {
	c := newFaultyCluster(t, 1, 1, func(cfg *config.Config) { cfg.BlockMode, cfg.BlockTime = "block-time", 250*time.Millisecond })
	leader := c.waitLeader(20*time.Second, nil)
	member := c.members()[0]
	c.waitHeads(5, 30*time.Second)
	backgroundLoad(t, leader, 50)
	c.cut(member, "redis")
	for _, cn := range c.candidates() {
		c.cut(cn, "api")
	}
	for _, l := range c.net.GethLinks(1) { // the member's geth is the cluster's second
		if err := l.Apply(devnet.Cut()); err != nil {
			t.Fatal(err)
		}
	}
	mine, _ := member.head()
	cut := time.Now()
	for time.Since(cut) < 30*time.Second {
		c.waitHeads(c.clusterHead()+1, 30*time.Second, leader)
	}
	if h, _ := member.head(); h > mine+1 {
		t.Fatalf("cut off at block %d, the member reached %d", mine, h)
	}
	top := c.clusterHead()
	t.Logf("MEASURED member cut off for 30 s under load: it stayed at %d, the cluster reached %d", mine, top)
	c.heal()
	healed := time.Now()
	c.waitHeads(top, 15*time.Second, member)
	t.Logf("MEASURED healed: the member caught up %d blocks in %.1f s", top-mine, time.Since(healed).Seconds())
	eventually(t, 15*time.Second, func() error {
		if lag := c.clusterHead() - mustHead(t, member); lag > 10 {
			return fmt.Errorf("member %d blocks behind", lag)
		}
		return nil
	})
	c.stopNodes()
	c.checkInvariants()
}

// 200 ms round trips (100 ms each way) between the leader and PostgreSQL,
// at the default lease TTL: blocks go on, slower, and a failover still
// happens within the lease. A candidate's store calls must answer within
// half the lease TTL (1 s); a commit takes three round trips (600 ms), a
// fence four (README: Break it).
func TestFaultLeaderPostgresLatency(t *testing.T) {
	c := newFaultyCluster(t, 2, 0, nil)
	old := c.waitLeader(20*time.Second, nil)
	c.waitHeads(10, 30*time.Second)
	rate := func(what string) float64 {
		start, from := time.Now(), c.clusterHead()
		c.waitHeads(from+20, 60*time.Second, old)
		r := float64(c.clusterHead()-from) / time.Since(start).Seconds()
		t.Logf("MEASURED %s: %.1f blocks/s", what, r)
		return r
	}
	fast := rate("leader ↔ PostgreSQL on loopback")
	if err := c.links[old.cfg.InstanceID]["postgres"].Apply(devnet.Latency(100*time.Millisecond, 0)); err != nil {
		t.Fatal(err)
	}
	slow := rate("leader ↔ PostgreSQL 200 ms round trip")
	if slow >= fast {
		t.Errorf("%.1f blocks/s with 200 ms to PostgreSQL, %.1f without: the latency is not on the leader's path", slow, fast)
	}
	at, killed := c.clusterHead(), time.Now()
	if err := old.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	d := c.failover(old, at+1, killed, "the leader was killed")
	t.Logf("MEASURED failover with 200 ms to PostgreSQL from the old leader: blocks again %s after the kill", d.Round(time.Millisecond))
	c.stopNodes()
	c.checkInvariants()
}

func mustHead(t *testing.T, cn *clusterNode) uint64 {
	t.Helper()
	h, err := cn.head()
	if err != nil {
		t.Fatalf("%s: %v", cn.cfg.InstanceID, err)
	}
	return h
}
