package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/builder"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
	stage "github.com/geth-consensus/tutorial/03-member-nodes/internal/engine"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/loadgen"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/node"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/notify"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/signer"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/state"
)

// newCosignedCluster runs 2 of 3: two candidates and a member, each
// holding one of the three co-signer keys (candidate i: DevKeys[i+1], the
// member: DevKeys[3]).
func newCosignedCluster(t *testing.T) *cluster {
	t.Helper()
	cosigners := []common.Address{devKeyAddress(t, 1), devKeyAddress(t, 2), devKeyAddress(t, 3)}
	var list []string
	for _, a := range cosigners {
		list = append(list, a.Hex())
	}
	c := newCluster(t, 2, 1, func(cfg *config.Config) {
		cfg.Cosigners, cfg.Threshold, cfg.CosignTimeout = list, 2, time.Second
		if cfg.Mode == "member" {
			cfg.SignerKey = devnet.DevKeys[3]
		}
	})
	q, err := signer.NewQuorum(cosigners, 2)
	if err != nil {
		t.Fatal(err)
	}
	c.quorum = q
	return c
}

// 2 of 3 under load: with one co-signer SIGKILLed blocks keep coming; with
// two down the leader makes none and says why on /readyz; with one back
// they resume. Every stored block carries two valid co-signatures of
// distinct listed keys (checkInvariants), and every geth has one chain.
func TestCosignedBlocksTwoOfThree(t *testing.T) {
	c := newCosignedCluster(t)
	leader := c.waitLeader(20*time.Second, nil)
	c.waitHeads(5, 30*time.Second)
	standby, member := c.candidates()[0], c.members()[0]
	if standby == leader {
		standby = c.candidates()[1]
	}
	load := make(chan error, 1)
	go func() { _, err := sendSteady(leader, 50, 20*time.Second); load <- err }()

	// Every co-signer signs: the member too, from its own store.
	const signed = `gethcl_cosignatures_total{outcome="signed"}`
	eventually(t, 10*time.Second, func() error {
		for _, cn := range []*clusterNode{standby, member} {
			if n := cn.metric(signed); n < 1 {
				return fmt.Errorf("%s co-signed %v blocks", cn.cfg.InstanceID, n)
			}
		}
		return nil
	})
	// One co-signer down: the leader and the standby still make two.
	if err := member.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	at := c.clusterHead()
	c.waitHeads(at+20, 30*time.Second, leader, standby)
	if err := <-load; err != nil {
		t.Fatal(err)
	}

	// Two down: one signature of two needed, no block.
	if err := standby.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() error {
		code, body := leader.get("/readyz")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "co-signatures") {
			return fmt.Errorf("/readyz %d %s", code, body)
		}
		return nil
	})
	// Three more blocks that found no quorum, and none of them final.
	const failed = `gethcl_errors_total{kind="quorum"}`
	stalled, before := c.clusterHead(), leader.metric(failed)
	eventually(t, 20*time.Second, func() error {
		if n := leader.metric(failed); n < before+3 {
			return fmt.Errorf("%v blocks without a quorum, want %v", n, before+3)
		}
		return nil
	})
	if h := c.clusterHead(); h != stalled {
		t.Fatalf("cluster head moved from %d to %d with one co-signer of three up", stalled, h)
	}
	code, body := leader.get("/readyz")
	t.Logf("one co-signer of three up: /readyz %d %s", code, body)

	// One back: two of three again. The block after the stall comes in a
	// later epoch: the leader gave up its lease rather than wait.
	stalledAt, err := c.store.Block(context.Background(), stalled)
	if err != nil {
		t.Fatal(err)
	}
	c.start(standby)
	c.waitHeads(stalled+10, 60*time.Second, standby)
	if next, err := c.store.Block(context.Background(), stalled+1); err != nil || next.Epoch <= stalledAt.Epoch {
		t.Fatalf("block %d after the stall: %+v, %v; want an epoch above %d", stalled+1, next, err, stalledAt.Epoch)
	}
	c.start(member)
	c.waitHeads(c.clusterHead()+5, 60*time.Second)
	c.stopNodes()
	c.checkInvariants()
}

// A member of a 2-of-3 cluster takes a block, from the leader's API or a
// notice, only with co-signatures of two distinct listed keys over that
// very block. One valid and one of an unlisted key, one key twice, one
// alone, two over another epoch's digest, and none at all (the leader's
// signature alone) are each refused with the reason counted; two valid
// ones pass that check, and geth then finds the forged payload invalid.
func TestForgedCosignaturesAreRejected(t *testing.T) {
	c := newCosignedCluster(t)
	member := c.members()[0]
	c.waitLeader(20*time.Second, nil)
	c.waitHeads(5, 30*time.Second)
	for _, cn := range c.candidates() { // the lease released: nothing moves the member but the forger
		if err := cn.proc.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	head := c.clusterHead()
	c.waitHeads(head, 10*time.Second, member)
	f := newForger(t, c, head)
	k1, err := signer.LoadKey(devnet.DevKeys[1])
	if err != nil {
		t.Fatal(err)
	}
	k2, err := signer.LoadKey(devnet.DevKeys[2])
	if err != nil {
		t.Fatal(err)
	}
	cosigned := func(epochOffset uint64, keys ...*signer.Signer) state.BlockJSON {
		b := f.block(f.tip.Hash, f.allowed, false)
		cs := signer.Cosign{ChainID: big.NewInt(1337), Number: uint64(b.Number), Hash: b.Hash, ParentHash: b.ParentHash, Epoch: uint64(b.Epoch) + epochOffset}
		for _, k := range keys {
			sig, err := k.Cosign(cs)
			if err != nil {
				t.Fatal(err)
			}
			b.Cosignatures = append(b.Cosignatures, sig)
		}
		return b
	}
	rdb := redisClient(t, c.net.Redis)
	const rejected = `gethcl_verification_failures_total{reason="cosignatures"}`
	for _, tc := range []struct {
		name   string
		block  state.BlockJSON
		metric string
	}{
		{"unlisted", cosigned(0, k1, f.stranger), rejected},
		{"one key twice", cosigned(0, k1, k1), rejected},
		{"one", cosigned(0, k2), rejected},
		{"another epoch", cosigned(1, k1, k2), rejected},
		{"none", cosigned(0), rejected},
		{"two valid", cosigned(0, k1, k2), `gethcl_verification_failures_total{reason="invalid"}`},
	} {
		for _, via := range []string{"api", "notice"} {
			t.Run(tc.name+"/"+via, func(t *testing.T) { offerRejected(t, rdb, member, head, via, tc.block, tc.metric) })
		}
	}
	for _, cn := range c.candidates() {
		c.start(cn)
	}
	c.waitHeads(head+10, 30*time.Second)
	c.stopNodes()
	c.checkInvariants()
}

// A co-signer restarted mid-height does not sign a second block at that
// height in the epoch it signed one: its store remembers. With 3 of 3 and
// the third key never running, the leader's block 1 never gets final, and
// the member co-signs it; the leader stops, the member is SIGKILLed and
// restarted, and is then proposed another valid block 1 (built on another
// geth, signed by an allowed leader) in that epoch: it executes it and
// refuses to sign. The same block in a later epoch it signs.
func TestRestartedCosignerDoesNotSignTwice(t *testing.T) {
	cosigners := []string{devKeyAddress(t, 1).Hex(), devKeyAddress(t, 2).Hex(), devKeyAddress(t, 3).Hex()}
	c := newCluster(t, 1, 1, func(cfg *config.Config) {
		cfg.Cosigners, cfg.Threshold, cfg.CosignTimeout = cosigners, 3, time.Second
		if cfg.Mode == "member" {
			cfg.SignerKey = devnet.DevKeys[2]
		}
	})
	leader, member := c.candidates()[0], c.members()[0]
	const signed, refused = `gethcl_cosignatures_total{outcome="signed"}`, `gethcl_cosignatures_total{outcome="refused"}`
	eventually(t, 30*time.Second, func() error {
		if n := member.metric(signed); n < 1 {
			return fmt.Errorf("the member co-signed %v blocks", n)
		}
		return nil
	})
	if err := leader.proc.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if h := c.clusterHead(); h != 0 {
		t.Fatalf("cluster head %d with two co-signers of the three needed", h)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, member.cfg.PostgresURL)
	if err != nil {
		t.Fatal(err)
	}
	var epoch int64
	var hash []byte
	err = conn.QueryRow(ctx, "SELECT epoch, hash FROM cosigned WHERE signer = $1 AND number = 1 ORDER BY epoch DESC LIMIT 1",
		devKeyAddress(t, 2).Bytes()).Scan(&epoch, &hash)
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}

	if err := member.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	c.start(member)
	eventually(t, 30*time.Second, func() error { // up; with no leader to sync from, not ready
		if _, ok := member.status(); !ok {
			return fmt.Errorf("%s does not answer", member.cfg.InstanceID)
		}
		return nil
	})

	other := otherBlockOne(t, leader.geth, uint64(epoch))
	if other.Hash == common.BytesToHash(hash) {
		t.Fatal("the other block 1 is the one signed")
	}
	rdb := redisClient(t, c.net.Redis)
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs, err := notify.Subscribe[notify.Cosignature](subCtx, rdb, notify.CosignChannel("consensus"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Offered until the member answers: its subscription to notices may
	// not be up yet when it first answers HTTP.
	before := member.metric(refused)
	repeatOffer(t, rdb, other, 10*time.Second, func() bool { return member.metric(refused) > before })
	// The same block in a later epoch: signed, and its signature is the
	// first one the member sends.
	later := otherBlockOneIn(t, other, uint64(epoch)+1)
	var got notify.Cosignature
	repeatOffer(t, rdb, later, 10*time.Second, func() bool {
		select {
		case got = <-sigs:
			return true
		default:
			return false
		}
	})
	if got.Hash != later.Hash || got.Epoch != uint64(epoch)+1 {
		t.Fatalf("the member signed block %d %s in epoch %d; want only the later epoch's", got.Number, got.Hash, got.Epoch)
	}
}

// repeatOffer publishes b as a proposal every 200 ms until done or timeout.
func repeatOffer(t *testing.T, rdb *redis.Client, b state.BlockJSON, timeout time.Duration, done func() bool) {
	t.Helper()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for !done() {
		offer(t, rdb, "proposal", b)
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("proposal %s in epoch %d: no answer within %s", b.Hash, b.Epoch, timeout)
		}
	}
}

// otherBlockOne builds a valid block 1 on g (whose head is genesis), as a
// proposal of leader-1 in epoch.
func otherBlockOne(t *testing.T, g *devnet.GethNode, epoch uint64) state.BlockJSON {
	t.Helper()
	ctx := context.Background()
	secret, err := stage.LoadJWTSecret(mustFindUp(t, "jwt.hex"))
	if err != nil {
		t.Fatal(err)
	}
	genesis, err := node.LoadGenesis(mustFindUp(t, "genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	client, err := stage.Dial(ctx, stage.Options{URL: g.EngineURL(), Secret: secret, Chain: genesis.Config})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	gen := genesis.ToBlock()
	p, err := builder.New(client, common.HexToAddress("0x5150"), time.Now).Build(ctx, builder.Parent{Hash: gen.Hash(), Timestamp: gen.Time()}, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	d := p.ExecutionPayload
	b := state.NewBlockJSON(&state.Block{Number: 1, Hash: d.BlockHash, ParentHash: d.ParentHash, Timestamp: d.Timestamp, Payload: p})
	return otherBlockOneIn(t, b, epoch)
}

// otherBlockOneIn is b proposed by leader-1 in epoch.
func otherBlockOneIn(t *testing.T, b state.BlockJSON, epoch uint64) state.BlockJSON {
	t.Helper()
	key, err := signer.LoadKey(devnet.DevKeys[1])
	if err != nil {
		t.Fatal(err)
	}
	b.Leader, b.Run, b.Epoch = "leader-1", "test-run", hexutil.Uint64(epoch)
	sig, err := key.Sign(signer.Header{ChainID: big.NewInt(1337), Number: uint64(b.Number), Hash: b.Hash, ParentHash: b.ParentHash,
		Epoch: epoch, Leader: b.Leader, Run: b.Run, Proposal: true})
	if err != nil {
		t.Fatal(err)
	}
	b.Signature = sig
	return b
}

// Blocks too big for a Redis notice reach the co-signers through the
// leader's GET /proposals: 2 of 3 under a burst of 60 transactions of the
// most calldata the load generator sends (130 kB each, about 1 MB a
// block at on-demand pace), every one included, and some block's proposal
// over notify.MaxInline.
func TestCosignedBigBlocks(t *testing.T) {
	c := newCosignedCluster(t)
	leader := c.waitLeader(20*time.Second, nil)
	c.waitHeads(3, 30*time.Second)
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
	r, err := g.Burst(context.Background(), 60, 10, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if r.Included != r.Sent {
		t.Fatalf("%d of %d big transactions included", r.Included, r.Sent)
	}
	c.waitHeads(c.clusterHead(), 30*time.Second)
	c.stopNodes()
	c.checkInvariants()
	_, longest := c.gethChains()
	head, blocks := checkStore(t, c.net.Postgres[0].URL(), longest)
	biggest := 0
	for _, b := range blocks {
		body, err := json.Marshal(state.NewBlockJSON(b))
		if err != nil {
			t.Fatal(err)
		}
		biggest = max(biggest, len(body))
	}
	if biggest <= notify.MaxInline {
		t.Fatalf("the biggest of %d blocks is %d bytes as JSON, not over the %d a notice carries", head.Number, biggest, notify.MaxInline)
	}
	t.Logf("%d big transactions in %d blocks, the biggest %d kB as JSON", r.Sent, r.Blocks, biggest/1000)
}
