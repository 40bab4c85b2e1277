package e2e

import (
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
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

	// One back: two of three again.
	c.start(standby)
	c.waitHeads(stalled+10, 60*time.Second, standby)
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
