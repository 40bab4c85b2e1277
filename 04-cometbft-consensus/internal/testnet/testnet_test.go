package testnet

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/types"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/envelope"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/node"
)

func TestWriteHomes(t *testing.T) {
	dir := t.TempDir()
	if err := Write(Options{Dir: dir, Validators: 4, Ports: BasePorts(30000), HostPattern: "validator-%d"}); err != nil {
		t.Fatal(err)
	}
	var genesis []byte
	ids := map[p2p.ID]int{}
	for i := range 4 {
		c, err := node.LoadCometConfig(Home(dir, i))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("tcp://0.0.0.0:%d", 30000+10*i); c.P2P.ListenAddress != want {
			t.Errorf("validator %d listens on %s, want %s", i, c.P2P.ListenAddress, want)
		}
		if c.Consensus.TimeoutPropose != TunedTimeouts.Propose || c.Consensus.TimeoutProposeDelta != TunedTimeouts.ProposeDelta ||
			c.Consensus.TimeoutCommit != TunedTimeouts.Commit || !c.Instrumentation.Prometheus {
			t.Errorf("validator %d: timeouts %s+%s/round, %s, prometheus %v", i, c.Consensus.TimeoutPropose, c.Consensus.TimeoutProposeDelta,
				c.Consensus.TimeoutCommit, c.Instrumentation.Prometheus)
		}
		// Loopback gossip for full blocks: 100 MiB/s, a block part per packet, polled every 10 ms.
		if c.P2P.SendRate != LoopbackRate || c.P2P.RecvRate != LoopbackRate || c.P2P.MaxPacketMsgPayloadSize != PacketPayload ||
			c.Consensus.PeerGossipSleepDuration != GossipSleep {
			t.Errorf("validator %d: p2p rates %d/%d, packets of %d, gossip sleep %s", i, c.P2P.SendRate, c.P2P.RecvRate,
				c.P2P.MaxPacketMsgPayloadSize, c.Consensus.PeerGossipSleepDuration)
		}
		peers := strings.Split(c.P2P.PersistentPeers, ",")
		if len(peers) != 3 {
			t.Fatalf("validator %d peers %v", i, peers)
		}
		for j := range 4 {
			if has := strings.Contains(c.P2P.PersistentPeers, fmt.Sprintf("@validator-%d:%d", j, 30000+10*j)); has == (j == i) {
				t.Errorf("validator %d: persistent peers %s (validator %d listed: %v)", i, c.P2P.PersistentPeers, j, has)
			}
		}
		key, err := p2p.LoadNodeKey(c.NodeKeyFile())
		if err != nil {
			t.Fatal(err)
		}
		ids[key.ID()] = i
		g, err := os.ReadFile(c.GenesisFile())
		if err != nil {
			t.Fatal(err)
		}
		if genesis == nil {
			genesis = g
		} else if !bytes.Equal(g, genesis) {
			t.Errorf("validator %d has another genesis", i)
		}
	}
	if len(ids) != 4 {
		t.Errorf("node keys are not distinct: %v", ids)
	}
	doc, err := types.GenesisDocFromJSON(genesis)
	if err != nil {
		t.Fatal(err)
	}
	if len(doc.Validators) != 4 || doc.InitialHeight != 1 {
		t.Errorf("genesis: %d validators, initial height %d", len(doc.Validators), doc.InitialHeight)
	}
	p := doc.ConsensusParams
	if want := envelope.BlockMaxBytes(MaxValidators, p.Evidence.MaxBytes); p.Block.MaxBytes != want {
		t.Errorf("genesis block.max_bytes %d, want %d: room for the largest envelope", p.Block.MaxBytes, want)
	}

	if err := Write(Options{Dir: dir, Validators: 4}); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Errorf("overwriting homes: %v", err)
	}
	if err := Write(Options{Dir: filepath.Join(dir, "x"), Validators: 2, HostPattern: "validator"}); err == nil || !strings.Contains(err.Error(), "--host-pattern") {
		t.Errorf("host pattern without %%d: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); !os.IsNotExist(err) {
		t.Errorf("a refused host pattern left files behind: %v", err)
	}
}

// Full nodes get homes with keys, peered with every node, sharing the
// genesis, without being in its set; and envelope.MaxValidators gives the
// homes' block.max_bytes its MaxValidators back.
func TestWriteFullNodes(t *testing.T) {
	dir := t.TempDir()
	reg := "0x0000000000000000000000000000000000001000"
	if err := Write(Options{Dir: dir, Validators: 2, FullNodes: 1, Ports: BasePorts(31000), Registry: reg}); err != nil {
		t.Fatal(err)
	}
	c, err := node.LoadCometConfig(Home(dir, 2))
	if err != nil {
		t.Fatal(err)
	}
	if peers := strings.Split(c.P2P.PersistentPeers, ","); len(peers) != 2 {
		t.Fatalf("the full node's peers: %v", peers)
	}
	doc, err := types.GenesisDocFromFile(c.GenesisFile())
	if err != nil {
		t.Fatal(err)
	}
	pv, err := os.ReadFile(c.PrivValidatorKeyFile())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc.AppState), reg) {
		t.Fatalf("the genesis' app_state %s does not name the registry", doc.AppState)
	}
	if len(doc.Validators) != 2 {
		t.Fatalf("genesis holds %d validators, want the 2 validators only", len(doc.Validators))
	}
	for _, v := range doc.Validators {
		if strings.Contains(string(pv), v.PubKey.Address().String()) {
			t.Fatal("the full node's key is in the genesis set")
		}
	}
	p := doc.ConsensusParams
	if got := envelope.MaxValidators(p.Block.MaxBytes, p.Evidence.MaxBytes); got != MaxValidators {
		t.Fatalf("envelope.MaxValidators of the homes' block.max_bytes = %d, want %d", got, MaxValidators)
	}
	if err := Write(Options{Dir: t.TempDir(), Validators: 1, FullNodes: -1}); err == nil || !strings.Contains(err.Error(), "--full-nodes") {
		t.Fatalf("negative --full-nodes: %v", err)
	}
	if err := Write(Options{Dir: t.TempDir(), Validators: 1, Registry: "0x12"}); err == nil || !strings.Contains(err.Error(), "--registry") {
		t.Fatalf("a bad --registry: %v", err)
	}
}
