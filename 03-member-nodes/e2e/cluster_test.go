package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	beacon "github.com/ethereum/go-ethereum/beacon/engine"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/election"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/loadgen"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/node"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/notify"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/signer"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

// cluster is leader candidates and members, each node a CL process with its
// own geth; candidates share the cluster PostgreSQL (Postgres[0]), each
// member has its own (Postgres[1+i]); one Redis.
type cluster struct {
	t     testing.TB
	net   *devnet.Network
	store *state.Manager // the cluster store, read by the tests
	nodes []*clusterNode
	// quorum, when the cluster runs k of n: checkInvariants verifies every
	// stored block's co-signatures against it.
	quorum *signer.Quorum
}

type clusterNode struct {
	cfg  config.Config
	geth *devnet.GethNode
	eth  *ethclient.Client
	proc *devnet.Process
}

// newCluster starts the processes below the CLs and starts every CL. Each
// candidate signs with its own dev key (candidate i: DevKeys[i+1]).
func newCluster(t testing.TB, candidates, members int, mutate func(*config.Config)) *cluster {
	t.Helper()
	return newClusterWith(t, nil, candidates, members, mutate)
}

// newClusterWith is newCluster with extra flags for every geth.
func newClusterWith(t testing.TB, gethArgs []string, candidates, members int, mutate func(*config.Config)) *cluster {
	t.Helper()
	return startCluster(t, gethArgs, nil, candidates, members, mutate)
}

// startCluster is newClusterWith with prepare (nil: none) run once the
// network is up and before any node starts.
func startCluster(t testing.TB, gethArgs []string, prepare func(*devnet.Network), candidates, members int, mutate func(*config.Config)) *cluster {
	t.Helper()
	return startClusterOn(t, devnet.Config{GethArgs: gethArgs}, prepare, candidates, members, mutate)
}

// startClusterOn is startCluster on a network configured as netCfg says
// (its geths, Redis and PostgreSQL servers are the cluster's).
func startClusterOn(t testing.TB, netCfg devnet.Config, prepare func(*devnet.Network), candidates, members int, mutate func(*config.Config)) *cluster {
	t.Helper()
	netCfg.GethNodes, netCfg.Redis, netCfg.RedisPassword, netCfg.Postgres = candidates+members, true, redisPassword, 1+members
	n := devnet.StartT(t, netCfg)
	if prepare != nil {
		prepare(n)
	}
	var leaders []string
	for i := range candidates {
		leaders = append(leaders, devKeyAddress(t, i+1).Hex())
	}
	c := &cluster{t: t, net: n, store: openStore(t, n.Postgres[0].URL())}
	for i := range candidates + members {
		cfg := config.Default()
		g := n.Geth[i]
		cfg.EngineURL = g.EngineURL()
		cfg.JWTSecret = mustFindUp(t, "jwt.hex")
		cfg.GenesisPath = mustFindUp(t, "genesis.json")
		cfg.RedisURL = n.Redis.URL()
		cfg.Leaders = leaders
		port, err := devnet.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		cfg.HealthAddr = "127.0.0.1:" + strconv.Itoa(port)
		cfg.LogLevel = "debug"
		// Fast blocks: one whenever a transaction is pending, else every 50 ms.
		cfg.BlockMode, cfg.MaxIdle, cfg.MaxDrift = "on-demand", 50*time.Millisecond, time.Hour
		if i < candidates {
			cfg.Mode, cfg.InstanceID = "leader", fmt.Sprintf("leader-%d", i+1)
			cfg.SignerKey = devnet.DevKeys[i+1]
			cfg.PostgresURL = n.Postgres[0].URL()
		} else {
			cfg.Mode, cfg.InstanceID = "member", fmt.Sprintf("member-%d", i-candidates+1)
			cfg.PostgresURL = n.Postgres[1+i-candidates].URL()
		}
		if mutate != nil {
			mutate(&cfg)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		eth, err := ethclient.Dial(g.RPCURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(eth.Close)
		c.nodes = append(c.nodes, &clusterNode{cfg: cfg, geth: g, eth: eth, proc: nodeProcess(t, cfg)})
	}
	t.Cleanup(c.stop)
	for _, cn := range c.nodes {
		c.start(cn)
	}
	return c
}

func devKeyAddress(t testing.TB, i int) common.Address {
	key, err := crypto.HexToECDSA(devnet.DevKeys[i])
	if err != nil {
		t.Fatal(err)
	}
	return crypto.PubkeyToAddress(key.PublicKey)
}

func (c *cluster) start(cn *clusterNode) {
	c.t.Helper()
	if err := cn.proc.Start(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) stop() {
	for _, cn := range c.nodes {
		if c.t.Failed() {
			c.t.Logf("--- %s log:\n%s", cn.cfg.InstanceID, cn.proc.TailLog(5000))
		}
		_ = cn.proc.Resume() // a paused process cannot handle SIGTERM
		_ = cn.proc.Stop(10 * time.Second)
	}
}

// stopNodes stops every CL gracefully (SIGTERM), before the final checks.
func (c *cluster) stopNodes() {
	c.t.Helper()
	for _, cn := range c.nodes {
		if err := cn.proc.Stop(10 * time.Second); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *cluster) candidates() []*clusterNode {
	var out []*clusterNode
	for _, cn := range c.nodes {
		if cn.cfg.Mode == "leader" {
			out = append(out, cn)
		}
	}
	return out
}

func (c *cluster) members() []*clusterNode {
	var out []*clusterNode
	for _, cn := range c.nodes {
		if cn.cfg.Mode == "member" {
			out = append(out, cn)
		}
	}
	return out
}

// status reads a node's /status; ok is false while the node does not answer.
func (cn *clusterNode) status() (s node.Status, ok bool) {
	code, body := cn.get("/status")
	return s, code == http.StatusOK && json.Unmarshal([]byte(body), &s) == nil
}

// get fetches a path of the node's HTTP API.
func (cn *clusterNode) get(path string) (int, string) { return httpGet(cn.cfg.HealthAddr, path) }

func (cn *clusterNode) head() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return cn.eth.BlockNumber(ctx)
}

// leaders returns the nodes whose /status says they lead.
func (c *cluster) leaders() []*clusterNode {
	var out []*clusterNode
	for _, cn := range c.candidates() {
		if s, ok := cn.status(); ok && s.Role == "leader" {
			out = append(out, cn)
		}
	}
	return out
}

// waitLeader polls until exactly one node other than not leads, and
// returns it.
func (c *cluster) waitLeader(timeout time.Duration, not *clusterNode) *clusterNode {
	c.t.Helper()
	var leader *clusterNode
	eventually(c.t, timeout, func() error {
		ls := c.leaders()
		if len(ls) != 1 || ls[0] == not {
			return fmt.Errorf("%d leaders", len(ls))
		}
		leader = ls[0]
		return nil
	})
	return leader
}

// waitHeads polls until the geth of every given node is at n or above.
func (c *cluster) waitHeads(n uint64, timeout time.Duration, nodes ...*clusterNode) {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.nodes
	}
	eventually(c.t, timeout, func() error {
		for _, cn := range nodes {
			if h, err := cn.head(); err != nil || h < n {
				return fmt.Errorf("%s: geth head %d (%v), want %d", cn.cfg.InstanceID, h, err, n)
			}
		}
		return nil
	})
}

// clusterHead is the head of the cluster store.
func (c *cluster) clusterHead() uint64 {
	c.t.Helper()
	h, err := c.store.Head(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	return h.Number
}

// gethChains returns the chain of each node's geth, in node order, and
// the longest of them. A stopped node's geth may lag the others by the
// blocks it had not applied yet.
func (c *cluster) gethChains() (chains [][]common.Hash, longest []common.Hash) {
	c.t.Helper()
	chains = make([][]common.Hash, len(c.nodes))
	for i, cn := range c.nodes {
		chains[i] = chainOf(c.t, cn.eth)
		if len(chains[i]) > len(longest) {
			longest = chains[i]
		}
	}
	return chains, longest
}

// checkInvariants checks DESIGN.md's invariants across every geth and every
// database: one hash per height everywhere, contiguous parent links, every
// store on the chain with every block it claims, nothing finalized anywhere
// beyond the cluster store, and one producer per fencing epoch.
func (c *cluster) checkInvariants() (epochs int) {
	c.t.Helper()
	chains, longest := c.gethChains()
	for i, ch := range chains {
		for n, h := range ch {
			if longest[n] != h {
				c.t.Fatalf("fork at block %d: %s has %s, another geth %s", n, c.nodes[i].cfg.InstanceID, h, longest[n])
			}
		}
	}
	clusterHead, blocks := checkStore(c.t, c.net.Postgres[0].URL(), longest)
	if uint64(len(longest)-1) > clusterHead.Number {
		c.t.Fatalf("a geth finalized block %d, the cluster store ends at %d", len(longest)-1, clusterHead.Number)
	}
	claims := claimsIn(c.t, c.store)
	for _, m := range c.members() {
		checkStore(c.t, m.cfg.PostgresURL, longest)
		for epoch, mc := range claimsIn(c.t, openStore(c.t, m.cfg.PostgresURL)) {
			if cc, ok := claims[epoch]; !ok || cc != mc {
				c.t.Fatalf("%s's store has %s, the cluster store %+v", m.cfg.InstanceID, mc, cc)
			}
		}
	}
	if c.quorum != nil {
		genesis, err := node.LoadGenesis(mustFindUp(c.t, "genesis.json"))
		if err != nil {
			c.t.Fatal(err)
		}
		var leaders []common.Address
		for _, a := range c.nodes[0].cfg.Leaders {
			leaders = append(leaders, common.HexToAddress(a))
		}
		v, err := signer.NewVerifier(leaders)
		if err != nil {
			c.t.Fatal(err)
		}
		for _, b := range blocks { // the leader's signature and k co-signatures
			h := signer.Header{ChainID: genesis.Config.ChainID, Number: b.Number, Hash: b.Hash, ParentHash: b.ParentHash, Epoch: b.Epoch,
				Leader: b.LeaderID, Run: b.Run}
			if _, err := v.Verify(h, b.Signature); err != nil {
				c.t.Fatalf("block %d: %v", b.Number, err)
			}
			cs := signer.Cosign{ChainID: genesis.Config.ChainID, Number: b.Number, Hash: b.Hash, ParentHash: b.ParentHash, Epoch: b.Epoch}
			if _, err := c.quorum.Check(cs, b.Cosignatures); err != nil {
				c.t.Fatalf("block %d: %v", b.Number, err)
			}
		}
	}
	// One producer per epoch: the process that claimed it in the cluster
	// store (instance id and run), whatever the lease in Redis said.
	produced := map[uint64]bool{}
	var lastEpoch uint64
	for _, b := range blocks {
		if cl, ok := claims[b.Epoch]; !ok || cl != b.Claim() {
			c.t.Fatalf("block %d by %s; the store's claim on its epoch: %+v", b.Number, b.Claim(), cl)
		}
		if b.Epoch < lastEpoch {
			c.t.Fatalf("block %d of epoch %d after a block of epoch %d", b.Number, b.Epoch, lastEpoch)
		}
		produced[b.Epoch], lastEpoch = true, b.Epoch
	}
	c.t.Logf("invariants hold: %d blocks, %d epochs, %d geths, %d databases", clusterHead.Number, len(produced), len(c.nodes), 1+len(c.members()))
	return len(produced)
}

// claimsIn returns a store's epoch claims by epoch.
func claimsIn(t testing.TB, s *state.Manager) map[uint64]state.Claim {
	t.Helper()
	list, err := s.Claims(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[uint64]state.Claim, len(list))
	for _, cl := range list {
		out[cl.Epoch] = cl
	}
	return out
}

// Two candidates and a member: one leader; the member follows, applies and
// stores every block; a transaction sent to the member's geth is included.
func TestLeaderAndMemberFollow(t *testing.T) {
	c := newCluster(t, 2, 1, nil)
	leader := c.waitLeader(20*time.Second, nil)
	member := c.members()[0]
	c.waitHeads(20, 30*time.Second)
	tx, err := devnet.SendTransfer(context.Background(), member.eth, 3, sink)
	if err != nil {
		t.Fatal(err)
	}
	var included uint64
	eventually(t, 15*time.Second, func() error {
		r, err := leader.eth.TransactionReceipt(context.Background(), tx.Hash())
		if err == nil {
			included = r.BlockNumber.Uint64()
		}
		return err
	})
	c.waitHeads(included+2, 15*time.Second)
	if ls := c.leaders(); len(ls) != 1 {
		t.Fatalf("%d leaders", len(ls))
	}
	s, _ := member.status()
	if s.Role != "member" || s.Leader != leader.cfg.InstanceID || s.Epoch == 0 {
		t.Fatalf("member status %+v; want role member following %s", s, leader.cfg.InstanceID)
	}
	// The leader proposes each block before committing it; the member
	// executes it meanwhile, and applies it with a forkchoiceUpdated alone.
	if used := member.metric(`gethcl_preexecuted_total{outcome="used"}`); used < 10 {
		t.Errorf("%v blocks executed ahead and used, of %d", used, included+2)
	}
	c.stopNodes()
	// The member logs one info line per block it applies, as the leader
	// does per block it makes.
	log, err := os.ReadFile(member.proc.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := uint64(strings.Count(string(log), "level=INFO msg=applied")); n < included {
		t.Errorf("the member logged %d blocks applied at info, of at least %d", n, included)
	}
	c.checkInvariants()
}

// SIGKILL the leader: the other candidate takes over within the lease TTL
// plus a renew interval and a second, the chain goes on without a gap or a
// fork, and the killed node, restarted, follows.
func TestFailoverOnLeaderKill(t *testing.T) {
	c := newCluster(t, 2, 1, nil)
	old := c.waitLeader(20*time.Second, nil)
	c.waitHeads(10, 30*time.Second)
	if err := old.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	next := c.waitLeader(10*time.Second, old)
	headAtKill := c.clusterHead()
	eventually(t, 10*time.Second, func() error {
		if h := c.clusterHead(); h <= headAtKill {
			return fmt.Errorf("cluster head %d", h)
		}
		return nil
	})
	t.Logf("MEASURED failover: %s leads, first new block %s after the SIGKILL", next.cfg.InstanceID, time.Since(killed).Round(time.Millisecond))
	// The lease runs out at most a TTL after the last renewal, the other
	// candidate tries every LeaseRenew, then fences, replays and builds:
	// the README's bound.
	if d, bound := time.Since(killed), old.cfg.LeaseTTL+old.cfg.LeaseRenew+time.Second; d > bound {
		t.Errorf("no new block %s after the leader died, over the lease TTL + renew interval + 1 s (%s)", d, bound)
	}
	c.start(old)
	target := c.clusterHead() + 10
	c.waitHeads(target, 30*time.Second)
	if s, _ := old.status(); s.Role != "candidate" {
		t.Fatalf("restarted old leader is %q, want candidate", s.Role)
	}
	c.stopNodes()
	c.checkInvariants()
}

// The lease follows the leader's health: its geth SIGKILLed and not
// restarted, the leader cannot produce, releases its lease after half the
// TTL, and the other candidate produces within the TTL and a second. It
// takes no lease while its geth is down; restarted, its geth catches up.
func TestLeaderWithoutGethStandsDown(t *testing.T) {
	c := newCluster(t, 2, 1, nil)
	old := c.waitLeader(20*time.Second, nil)
	c.waitHeads(10, 30*time.Second)
	at := c.clusterHead()
	if err := old.geth.Kill(); err != nil {
		t.Fatal(err)
	}
	d := c.failover(old, at, time.Now(), "the leader's geth was killed")
	t.Logf("MEASURED %s's geth killed: the next block committed %s later", old.cfg.InstanceID, d.Round(time.Millisecond))
	next := c.waitLeader(10*time.Second, old)
	holdsFor(t, 2*time.Second, func() error {
		if s, ok := old.status(); ok && s.Role != "candidate" {
			return fmt.Errorf("%s, its geth down, is %s", old.cfg.InstanceID, s.Role)
		}
		return nil
	})
	if err := old.geth.Start(); err != nil {
		t.Fatal(err)
	}
	c.waitHeads(c.clusterHead()+5, 60*time.Second)
	if s, _ := next.status(); s.Role != "leader" {
		t.Errorf("%s after the old leader's geth came back: %s", next.cfg.InstanceID, s.Role)
	}
	c.stopNodes()
	c.checkInvariants()
}

// The leader's geth wiped (killed, its datadir re-initialised, started
// empty): the chain goes on within the lease TTL and a second, whether
// the leader replays the store into its geth and leads on or stands down
// for the other candidate; no fork, and the wiped geth ends on the chain.
func TestLeaderGethWiped(t *testing.T) {
	c := newCluster(t, 2, 1, nil)
	old := c.waitLeader(20*time.Second, nil)
	c.waitHeads(30, 30*time.Second)
	at := c.clusterHead()
	if err := old.geth.Kill(); err != nil {
		t.Fatal(err)
	}
	wiped := time.Now()
	if err := old.geth.Wipe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := old.geth.Start(); err != nil {
		t.Fatal(err)
	}
	d := c.failover(old, at, wiped, "the leader's geth was wiped")
	leader := c.waitLeader(10*time.Second, nil)
	t.Logf("MEASURED %s's geth wiped at block %d: the next block committed %s later, by %s", old.cfg.InstanceID, at, d.Round(time.Millisecond), leader.cfg.InstanceID)
	c.waitHeads(c.clusterHead()+5, 60*time.Second)
	c.stopNodes()
	c.checkInvariants()
}

// The leader cut off from the cluster store (its database role refused
// login and its sessions ended, Redis still reachable): it cannot produce,
// releases its lease after half the TTL, and the other candidate produces
// within the TTL and a second. Let back in, it follows.
func TestLeaderCutFromTheStore(t *testing.T) {
	role := func(id string) string { return strings.ReplaceAll(id, "-", "_") } // leader-1: leader_1
	admin := func(n *devnet.Network, sql string) {
		t.Helper()
		conn, err := pgx.Connect(context.Background(), n.Postgres[0].URL())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var net *devnet.Network
	c := startCluster(t, nil, func(n *devnet.Network) {
		net = n
		for _, id := range []string{"leader-1", "leader-2"} { // a role per candidate, to cut one alone
			admin(n, fmt.Sprintf("CREATE ROLE %s LOGIN SUPERUSER PASSWORD 'cut'", role(id)))
		}
	}, 2, 1, func(cfg *config.Config) {
		if cfg.Mode == "leader" {
			cfg.PostgresURL = strings.Replace(cfg.PostgresURL, "postgres:postgres@", role(cfg.InstanceID)+":cut@", 1)
		}
	})
	old := c.waitLeader(20*time.Second, nil)
	c.waitHeads(10, 30*time.Second)
	at := c.clusterHead()
	r := role(old.cfg.InstanceID)
	admin(net, "ALTER ROLE "+r+" NOLOGIN")
	admin(net, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '"+r+"'")
	d := c.failover(old, at+1, time.Now(), "the leader was cut from the store") // its commit in flight may still land
	next := c.waitLeader(10*time.Second, old)
	t.Logf("MEASURED %s cut from the cluster store: %s leads, blocks again %s later", old.cfg.InstanceID, next.cfg.InstanceID, d.Round(time.Millisecond))
	admin(net, "ALTER ROLE "+r+" LOGIN")
	c.waitHeads(c.clusterHead()+5, 60*time.Second)
	if s, _ := old.status(); s.Role != "candidate" {
		t.Errorf("%s let back in: %s, want candidate", old.cfg.InstanceID, s.Role)
	}
	c.stopNodes()
	c.checkInvariants()
}

// SIGSTOP the leader for longer than its lease, then SIGCONT: another
// candidate has taken over, and the old leader commits nothing more (its
// local deadline has passed, and the store fences its epoch out); it steps
// down and follows.
func TestPausedLeaderStepsDown(t *testing.T) {
	c := newCluster(t, 2, 1, nil)
	old := c.waitLeader(20*time.Second, nil)
	c.waitHeads(10, 30*time.Second)
	last, err := c.store.Block(context.Background(), c.clusterHead())
	if err != nil {
		t.Fatal(err)
	}
	oldEpoch := last.Epoch // the paused leader's
	if err := old.proc.Pause(); err != nil {
		t.Fatal(err)
	}
	next := c.waitLeader(old.cfg.LeaseTTL+10*time.Second, old)
	c.waitHeads(c.clusterHead()+10, 30*time.Second, next)
	if err := old.proc.Resume(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if st, ok := old.status(); !ok || st.Role != "candidate" || st.Leader != next.cfg.InstanceID {
			return fmt.Errorf("old leader after SIGCONT: %+v", st)
		}
		return nil
	})
	c.waitHeads(c.clusterHead()+10, 30*time.Second)
	c.stopNodes()
	c.checkInvariants()
	// Nothing from the old epoch after the new one began.
	blocks, err := c.store.BlocksAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	seenNew := false
	for _, b := range blocks {
		seenNew = seenNew || b.Epoch > oldEpoch
		if seenNew && b.LeaderID == old.cfg.InstanceID {
			t.Fatalf("block %d by the paused leader (epoch %d) after the new leader took over", b.Number, b.Epoch)
		}
	}
}

// A leader frozen inside its commit, holding the fencing row's lock (the
// SIGSTOP it sends itself there when the test's trigger file exists, from
// the hook a -tags faults build has: internal/state/fault_on.go), cannot
// stall failover: PostgreSQL ends its idle transaction after half the
// lease TTL, which frees the lock, and the other candidate fences and
// commits that height within the TTL and a second. Twice, each time the
// leader of the moment; once resumed, the frozen one commits nothing and
// follows.
func TestLeaderFrozenInItsCommit(t *testing.T) {
	trigger := filepath.Join(t.TempDir(), "freeze")
	t.Setenv("STAGE3_FAULT_STOP_IN_COMMIT", trigger) // every process inherits it; only a leader's own blocks count
	c := newCluster(t, 2, 1, nil)
	c.waitHeads(10, 30*time.Second)
	for range 2 {
		if err := os.WriteFile(trigger, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		var old *clusterNode
		eventually(t, 30*time.Second, func() error {
			for _, cn := range c.nodes[:2] {
				if stopped(cn.proc.Pid()) {
					old = cn
					return nil
				}
			}
			return errors.New("no leader frozen in its commit yet")
		})
		at := c.clusterHead()
		d := c.failover(old, at, time.Now(), "the leader froze holding the fencing row")
		t.Logf("MEASURED %s frozen in the commit of block %d: the next block committed by the other candidate %s later", old.cfg.InstanceID, at+1, d.Round(time.Millisecond))
		if err := old.proc.Resume(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, func() error {
			if st, ok := old.status(); !ok || st.Role != "candidate" {
				return fmt.Errorf("%s after SIGCONT: %+v (answered %v)", old.cfg.InstanceID, st, ok)
			}
			return nil
		})
	}
	c.waitHeads(c.clusterHead()+5, 30*time.Second)
	c.stopNodes()
	c.checkInvariants()
}

// stopped reports whether process pid is stopped (SIGSTOP): state T in
// /proc/<pid>/stat.
func stopped(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndex(string(b), ") ") // after the command name, which may hold anything
	return i >= 0 && strings.HasPrefix(string(b)[i+2:], "T")
}

// failover waits until the cluster store holds a block above at, after a
// fault (what) done to leader old at since, and fails the test if that
// took longer than old's lease TTL and a second. It returns how long.
func (c *cluster) failover(old *clusterNode, at uint64, since time.Time, what string) time.Duration {
	c.t.Helper()
	eventually(c.t, 30*time.Second, func() error {
		if h := c.clusterHead(); h <= at {
			return fmt.Errorf("cluster head %d since %s", h, what)
		}
		return nil
	})
	d := time.Since(since)
	if d > old.cfg.LeaseTTL+time.Second {
		c.t.Errorf("no block for %s after %s, over %s's lease TTL (%s) + 1 s", d, what, old.cfg.InstanceID, old.cfg.LeaseTTL)
	}
	return d
}

// heads returns every node's geth head (0 for a geth that does not answer).
func (c *cluster) heads() []uint64 {
	out := make([]uint64, len(c.nodes))
	for i, cn := range c.nodes {
		out[i], _ = cn.head()
	}
	return out
}

// holdsFor checks cond continuously for d: an invariant over a window, not a
// wait for an event.
func holdsFor(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err := cond(); err != nil {
			t.Fatal(err)
		}
	}
}

// settle waits until no geth head moves for a while, and returns the heads.
func (c *cluster) settle(timeout time.Duration) []uint64 {
	c.t.Helper()
	var last []uint64
	stableSince := time.Now()
	eventually(c.t, timeout, func() error {
		h := c.heads()
		if fmt.Sprint(h) != fmt.Sprint(last) {
			last, stableSince = h, time.Now()
		}
		if time.Since(stableSince) < time.Second {
			return fmt.Errorf("heads still moving: %v", h)
		}
		return nil
	})
	return last
}

// Redis killed: the leader cannot renew, stops producing before its lease
// could have expired, and nobody produces; Redis restarted (empty): a leader
// is elected with a higher epoch than any stored, members find it, and
// production resumes.
func TestRedisKilled(t *testing.T) {
	c := newCluster(t, 2, 1, nil)
	c.waitLeader(20*time.Second, nil)
	c.waitHeads(10, 30*time.Second)
	if err := c.net.Redis.Kill(); err != nil {
		t.Fatal(err)
	}
	c.settle(c.nodes[0].cfg.LeaseTTL + 10*time.Second)
	// Without notices, a standby candidate learns the last blocks from the
	// cluster store at its next poll (a member, which finds the leader
	// through Redis, stays where it is): followers may still move up to the
	// stored head, but no geth may go past it, and the store must not grow.
	stored := c.clusterHead()
	c.waitHeads(stored, 10*time.Second, c.candidates()...)
	// Readiness says why: the candidates cannot take part in the election.
	eventually(t, 10*time.Second, func() error {
		for _, cn := range c.candidates() {
			if code, body := cn.get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "election") {
				return fmt.Errorf("%s /readyz: %d %s", cn.cfg.InstanceID, code, body)
			}
		}
		return nil
	})
	holdsFor(t, 2*time.Second, func() error {
		if h := c.clusterHead(); h != stored {
			return fmt.Errorf("blocks made without Redis: the cluster store went from %d to %d", stored, h)
		}
		if h := c.heads(); slicesMax(h) > stored {
			return fmt.Errorf("blocks made without Redis: heads %v, the store at %d", h, stored)
		}
		if ls := c.leaders(); len(ls) != 0 {
			return fmt.Errorf("%s claims to lead without Redis", ls[0].cfg.InstanceID)
		}
		return nil
	})
	if err := c.net.Redis.Start(); err != nil {
		t.Fatal(err)
	}
	c.waitLeader(20*time.Second, nil)
	c.waitHeads(c.clusterHead()+10, 30*time.Second)
	c.stopNodes()
	c.checkInvariants()
}

// The cluster PostgreSQL killed: no block is finalized anywhere while it is
// down (every geth head stops, and every geth block is in the store once it
// is back), then production resumes by itself.
func TestClusterPostgresKilled(t *testing.T) {
	c := newCluster(t, 2, 1, nil)
	c.waitLeader(20*time.Second, nil)
	c.waitHeads(10, 30*time.Second)
	pg := c.net.Postgres[0]
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	frozen := c.settle(10 * time.Second)
	holdsFor(t, 2*time.Second, func() error {
		if h := c.heads(); fmt.Sprint(h) != fmt.Sprint(frozen) {
			return fmt.Errorf("blocks finalized without the cluster store: heads %v, were %v", h, frozen)
		}
		return nil
	})
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	if err := pg.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.waitHeads(slicesMax(frozen)+10, 30*time.Second)
	c.stopNodes()
	c.checkInvariants()
}

func slicesMax(s []uint64) uint64 {
	m := uint64(0)
	for _, v := range s {
		m = max(m, v)
	}
	return m
}

// A member down for 100+ blocks catches up; then its geth is wiped and it
// resyncs from its own store and the cluster.
func TestMemberCatchesUp(t *testing.T) {
	c := newCluster(t, 1, 1, nil)
	member := c.members()[0]
	c.waitHeads(5, 30*time.Second)
	if err := member.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	behind, _ := member.head()
	c.waitHeads(behind+120, 60*time.Second, c.candidates()[0])
	c.start(member)
	c.waitHeads(c.clusterHead(), 60*time.Second, member)
	t.Logf("member caught up %d blocks", c.clusterHead()-behind)

	ctx := context.Background()
	for _, step := range []func() error{member.geth.Kill, func() error { return member.geth.Wipe(ctx) }, member.geth.Start,
		func() error { return member.geth.WaitReady(ctx) }} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	c.waitHeads(c.clusterHead()+10, 60*time.Second, member)
	c.stopNodes()
	c.checkInvariants()
}

// metric reads one sample from a node's /metrics (0 when absent, -1 when
// the node does not answer).
func (cn *clusterNode) metric(name string) float64 { return metricAt(cn.cfg.HealthAddr, name) }

// Tampered blocks offered to a member: an unlisted signer, a wrong parent,
// and a block signed by an allowed key whose payload geth finds invalid;
// each served by a node posing as the leader (the lease and directory entry
// point at a test server), then carried inside a block notice; and
// proposals, which are verified before geth sees them, executed ahead at
// most and never made a head, and whose signature never passes for a
// committed block's. Each is rejected with its reason counted, and nothing
// is applied; once the real leader is back the member follows it again.
func TestTamperedBlocksAreRejected(t *testing.T) {
	c := newCluster(t, 1, 1, nil)
	leader, member := c.candidates()[0], c.members()[0]
	c.waitHeads(5, 30*time.Second)
	if err := leader.proc.Stop(10 * time.Second); err != nil { // releases the lease
		t.Fatal(err)
	}
	head := c.clusterHead()
	c.waitHeads(head, 10*time.Second, member)
	f := newForger(t, c, head)
	rdb := redisClient(t, c.net.Redis)
	failures := func(reason string) string {
		return fmt.Sprintf(`gethcl_verification_failures_total{reason=%q}`, reason)
	}
	for _, tc := range []struct {
		name, via, metric string
		block             state.BlockJSON
	}{
		{"signature/api", "api", failures("signature"), f.block(f.tip.Hash, f.stranger, false)},
		{"signature/notice", "notice", failures("signature"), f.block(f.tip.Hash, f.stranger, false)},
		{"parent/api", "api", failures("parent"), f.block(common.HexToHash("0xbad"), f.allowed, false)},
		{"parent/notice", "notice", failures("parent"), f.block(common.HexToHash("0xbad"), f.allowed, false)},
		{"invalid/api", "api", failures("invalid"), f.block(f.tip.Hash, f.allowed, false)},
		{"invalid/notice", "notice", failures("invalid"), f.block(f.tip.Hash, f.allowed, false)},
		{"proposed/stranger", "proposal", `gethcl_preexecuted_total{outcome="rejected"}`, f.block(f.tip.Hash, f.stranger, true)},
		{"proposed/invalid", "proposal", `gethcl_preexecuted_total{outcome="failed"}`, f.block(f.tip.Hash, f.allowed, true)},
		{"proposal-signature-as-committed", "notice", failures("signature"), f.block(f.tip.Hash, f.allowed, true)},
		{"other-transactions/notice", "notice", failures("payload"), f.block(f.tip.Hash, f.allowed, false, func(d *beacon.ExecutableData) {
			d.Transactions = append(slices.Clone(d.Transactions), []byte{0x02, 0xc0})
		})},
		{"other-transactions/api", "api", failures("payload"), f.block(f.tip.Hash, f.allowed, false, func(d *beacon.ExecutableData) {
			d.Transactions = append(slices.Clone(d.Transactions), []byte{0x02, 0xc1, 0x80})
		})},
	} {
		t.Run(tc.name, func(t *testing.T) { offerRejected(t, rdb, member, head, tc.via, tc.block, tc.metric) })
	}
	checkStore(t, member.cfg.PostgresURL, chainOf(t, member.eth))
	c.start(leader)
	c.waitHeads(head+10, 30*time.Second)
	// A forged notice for the member's next block every 20 ms while the
	// leader runs: each is refused, and the member fetches the real block
	// from the leader's API at once, so it keeps up; a refused notice does
	// not even pause it (no error, no backoff).
	from, _ := member.head()
	paused := member.metric(`gethcl_errors_total{kind="unavailable"}`)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		h, _ := member.head()
		fg := newForger(t, c, h)
		offer(t, rdb, "notice", fg.block(fg.tip.Hash, fg.allowed, false, func(d *beacon.ExecutableData) {
			d.Transactions = append(slices.Clone(d.Transactions), []byte{0x02, 0xc0})
		}))
	}
	if to, _ := member.head(); to < from+10 {
		t.Errorf("the member went from block %d to %d in 3 s of forged notices (the leader makes one every 50 ms)", from, to)
	}
	if n := member.metric(`gethcl_errors_total{kind="unavailable"}`); n > paused {
		t.Errorf("forged notices paused the member %v times", n-paused)
	}
	c.stopNodes()
	c.checkInvariants()
}

// forger makes blocks at head+1 whose payload is consistent with their
// header, signed by a key of the allowlist or by a stranger's.
type forger struct {
	t                 *testing.T
	head              uint64
	tip               *state.Block
	allowed, stranger *signer.Signer
}

func newForger(t *testing.T, c *cluster, head uint64) *forger {
	tip, err := c.store.Block(context.Background(), head)
	if err != nil {
		t.Fatal(err)
	}
	allowed, err := signer.LoadKey(devnet.DevKeys[1])
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := signer.LoadKey(devnet.DevKeys[9])
	if err != nil {
		t.Fatal(err)
	}
	return &forger{t: t, head: head, tip: tip, allowed: allowed, stranger: stranger}
}

// block returns block head+1 on parent, signed by key, in the proposal
// domain when proposal is set: correctly hashed, and invalid (the tip's
// state root and transactions on another parent). alter, when set, changes
// the payload after it was hashed and signed.
func (f *forger) block(parent common.Hash, key *signer.Signer, proposal bool, alter ...func(*beacon.ExecutableData)) state.BlockJSON {
	p := *f.tip.Payload
	data := *p.ExecutionPayload
	data.Number, data.ParentHash, data.Timestamp = f.head+1, parent, f.tip.Timestamp+1
	p.ExecutionPayload = &data
	requests := make([][]byte, len(p.Requests))
	for i, r := range p.Requests {
		requests[i] = r
	}
	blk, err := beacon.ExecutableDataToBlockNoHash(data, p.VersionedHashes, &p.BeaconRoot, requests)
	if err != nil {
		f.t.Fatal(err)
	}
	data.BlockHash = blk.Hash()
	b := &state.Block{Number: f.head + 1, Hash: data.BlockHash, ParentHash: parent, Timestamp: data.Timestamp,
		Payload: &p, LeaderID: "evil", Epoch: f.tip.Epoch + 1}
	sig, err := key.Sign(signer.Header{ChainID: big.NewInt(1337), Number: b.Number, Hash: b.Hash, ParentHash: b.ParentHash,
		Epoch: b.Epoch, Leader: b.LeaderID, Proposal: proposal})
	if err != nil {
		f.t.Fatal(err)
	}
	b.Signature = sig
	for _, a := range alter {
		a(&data)
	}
	return state.NewBlockJSON(b)
}

// offerRejected offers b to member (see offer) and waits until metric, a
// rejection counter, counts it; the member's geth must stay at head.
func offerRejected(t *testing.T, rdb *redis.Client, member *clusterNode, head uint64, via string, b state.BlockJSON, metric string) {
	t.Helper()
	before := member.metric(metric)
	undo := offer(t, rdb, via, b)
	defer undo()
	eventually(t, 10*time.Second, func() error {
		if v := member.metric(metric); v <= before {
			return fmt.Errorf("%s = %v", metric, v)
		}
		return nil
	})
	if h, _ := member.head(); h != head {
		t.Fatalf("member geth moved to %d on a tampered block", h)
	}
}

// offer hands b to the member: "api" serves it from a test server that the
// lease and the node directory name as the leader's; "notice" carries it in
// a block notice, "proposal" in a proposed-block notice. undo takes the
// false leader's lease back.
func offer(t *testing.T, rdb *redis.Client, via string, b state.BlockJSON) (undo func()) {
	t.Helper()
	ctx := context.Background()
	if via == "api" {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode([]state.BlockJSON{b})
		}))
		// The lease as holder|epoch|run (package election), then the directory entry.
		if err := rdb.Set(ctx, "consensus:leader", fmt.Sprintf("evil|%d|evil-run", b.Epoch), time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if err := election.Announce(ctx, rdb, "consensus", "evil", "evil-run", srv.URL, time.Minute); err != nil {
			t.Fatal(err)
		}
		return func() {
			if err := rdb.Del(ctx, "consensus:leader").Err(); err != nil {
				t.Error(err)
			}
			srv.Close()
		}
	}
	body, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	n := notify.Notice{Number: uint64(b.Number), Hash: b.Hash, Epoch: uint64(b.Epoch), Leader: "evil", Block: body, Proposed: via == "proposal"}
	if _, err := notify.Publish(ctx, rdb, notify.Channel("consensus"), n); err != nil {
		t.Fatal(err)
	}
	return func() {}
}

// Chaos: for a bounded time, random SIGKILLs and restarts, SIGSTOPs and
// SIGCONTs of candidates, members and Redis. Then every fault is cleared,
// the cluster must make progress again, and the invariants must hold across
// every geth and every database. The seed is logged; CHAOS_SEED replays one.
func TestChaos(t *testing.T) {
	c := newCluster(t, 3, 2, nil)
	c.waitLeader(20*time.Second, nil)
	c.waitHeads(5, 30*time.Second)
	seed := time.Now().UnixNano()
	if s, err := strconv.ParseInt(os.Getenv("CHAOS_SEED"), 10, 64); err == nil {
		seed = s
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("chaos seed %d", seed)

	type target struct {
		name     string
		proc     *devnet.Process
		paused   bool
		killOnly bool // Redis and PostgreSQL: SIGKILL and restart, not SIGSTOP
	}
	var targets []*target
	for _, cn := range c.nodes {
		targets = append(targets, &target{name: cn.cfg.InstanceID, proc: cn.proc},
			&target{name: cn.cfg.InstanceID + "'s geth", proc: cn.geth.Process})
	}
	targets = append(targets, &target{name: "redis", proc: c.net.Redis.Process, killOnly: true})
	for i, pg := range c.net.Postgres {
		targets = append(targets, &target{name: fmt.Sprintf("postgres-%d", i), proc: pg.Process, killOnly: true})
	}
	duration := 25 * time.Second
	faults := 0
	first := c.waitLeader(20*time.Second, nil).cfg.InstanceID // the first fault kills the leader: one failover at least
	for end := time.Now().Add(duration); time.Now().Before(end); {
		tg := targets[rng.IntN(len(targets))]
		if faults == 0 {
			tg = targets[slices.IndexFunc(targets, func(tg *target) bool { return tg.name == first })]
		}
		var err error
		switch {
		case tg.paused:
			err, tg.paused = tg.proc.Resume(), false
		case !tg.proc.Running():
			err = tg.proc.Start()
		case rng.IntN(3) == 0 && !tg.killOnly:
			err, tg.paused = tg.proc.Pause(), true
		default:
			err = tg.proc.Kill()
		}
		if err != nil {
			t.Fatalf("%s: %v", tg.name, err)
		}
		faults++
		// Let the cluster react for a random while, shorter and longer than
		// a lease, checking what can be checked with faults still active.
		for wait := time.Now().Add(time.Duration(200+rng.IntN(2800)) * time.Millisecond); time.Now().Before(wait); time.Sleep(100 * time.Millisecond) {
			c.checkWhileFaulty()
		}
	}
	for _, tg := range targets {
		if tg.paused {
			if err := tg.proc.Resume(); err != nil {
				t.Fatal(err)
			}
		}
		if !tg.proc.Running() {
			if err := tg.proc.Start(); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d faults in %s; every process running again", faults, duration)
	c.waitLeader(30*time.Second, nil)
	c.waitHeads(c.clusterHead()+10, 60*time.Second)
	c.stopNodes()
	if epochs := c.checkInvariants(); epochs < 2 {
		t.Errorf("%d faults and no failover: every block is from one epoch", faults)
	}
}

// checkWhileFaulty checks what holds with processes down or frozen: every
// geth that answers has at its head the block the cluster store holds at
// that height, if the store answers: no geth ahead of the store, no fork.
func (c *cluster) checkWhileFaulty() {
	c.t.Helper()
	for _, cn := range c.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		h, err := cn.eth.HeaderByNumber(ctx, nil)
		if err != nil {
			cancel()
			continue // down or frozen
		}
		stored, err := c.store.HashAt(ctx, h.Number.Uint64())
		cancel()
		switch {
		case errors.Is(err, state.ErrNoPayload):
			c.t.Fatalf("%s's geth finalized block %d, which the cluster store does not hold", cn.cfg.InstanceID, h.Number)
		case err != nil:
			return // the store is down or frozen
		case stored != h.Hash():
			c.t.Fatalf("fork at block %d: %s's geth has %s, the cluster store %s", h.Number, cn.cfg.InstanceID, h.Hash(), stored)
		}
	}
}

// The largest transactions geth's pool takes (130,000 bytes of calldata,
// 1.32 Mgas each) fill four consecutive blocks to the gas limit (about 6 MB
// each, too big for a Redis notice): the leader includes every one, both
// members fetch and apply the blocks, every database stores them, and the
// chain keeps its block time afterwards. Then a burst of blob transactions
// fills blocks to the blob schedule's maximum, and the members take those
// too.
func TestFullBlocksReachEveryMember(t *testing.T) {
	c := newCluster(t, 1, 2, func(cfg *config.Config) { cfg.BlockMode, cfg.BlockTime = "block-time", time.Second })
	leader := c.waitLeader(20*time.Second, nil)
	c.waitHeads(2, 30*time.Second)
	keys, err := loadgen.ParseKeys(loadgen.DevKeys[5:])
	if err != nil {
		t.Fatal(err)
	}
	g, err := loadgen.New(context.Background(), leader.geth.RPCURL(), keys)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.Calldata = loadgen.MaxCalldata
	const perBlock = 45 // 60 Mgas / 1.321 Mgas
	r, err := g.Burst(context.Background(), 4*perBlock, 20, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.Pending() != 0 {
		t.Fatalf("%d of %d large transactions never included", r.Pending(), r.Sent)
	}
	t.Logf("%d large transactions included in %d blocks, %.1f MB/s, p50 %s p99 %s", r.Included, r.Blocks, r.MBPerSec(), r.Percentile(50), r.Percentile(99))
	c.waitHeads(c.clusterHead(), 30*time.Second, c.members()...) // fetched: no notice carries 6 MB
	head := c.clusterHead()
	begin := time.Now()
	c.waitHeads(head+5, 20*time.Second, leader)
	if d := time.Since(begin); d < 3*time.Second || d > 8*time.Second {
		t.Errorf("5 blocks after the large ones took %s at --block-time 1s", d)
	}

	g.Calldata, g.Blobs = 0, 3
	blobs, err := g.Burst(context.Background(), 12, 3, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if blobs.Pending() != 0 {
		t.Fatalf("%d of %d blob transactions never included", blobs.Pending(), blobs.Sent)
	}
	c.waitHeads(c.clusterHead(), 30*time.Second, c.members()...)
	for _, m := range c.members() {
		full, most := 0, 0
		for n, size := range blockSizes(t, m.eth, chainOf(t, m.eth)) {
			if size.gasUsed*100 >= size.gasLimit*95 {
				full++
			}
			if size.blobs > 9 {
				t.Errorf("%s: block %d carries %d blobs, the schedule's maximum is 9", m.cfg.InstanceID, n, size.blobs)
			}
			most = max(most, size.blobs)
		}
		if full < 3 || most != 9 {
			t.Errorf("%s's geth holds %d blocks filled to 95%% of the gas limit (want 3 or more) and at most %d blobs in one (want 9)", m.cfg.InstanceID, full, most)
		}
	}
	c.stopNodes()
	c.checkInvariants()
}
