// Package testnet writes the CometBFT homes of a local validator network:
// one key pair and node key per validator, one shared genesis with every
// validator at equal power (GenesisPower) and the validator registry in its
// app_state, each node's persistent peers set to all the
// others, distinct loopback ports, and tuned consensus timeouts.
package testnet

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/types"
	"github.com/ethereum/go-ethereum/common"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/envelope"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/node"
)

// Ports of one validator.
type Ports struct {
	P2P, RPC, Prometheus int
}

// Options describe the network.
type Options struct {
	Dir        string // homes go to Dir/validator-<i>, i from 0
	Validators int
	// FullNodes are homes after the validators' (validator-<Validators>
	// and up), with keys but not in the genesis set: nodes that follow the
	// chain and can be made validators later (`validator add`).
	FullNodes int
	ChainID   string
	// Ports returns validator i's ports. BasePorts(26656) is the default.
	Ports func(i int) Ports
	// HostPattern names validator i for its peers: "validator-%d" in
	// docker-compose, where every node then listens on all interfaces.
	// Empty: 127.0.0.1, and every node listens on loopback only.
	HostPattern string
	// Registry is the validator registry the genesis names in its
	// app_state (empty: none, the genesis set for good).
	Registry string
	// Timeouts; zero values keep TunedTimeouts'.
	TimeoutPropose, TimeoutProposeDelta, TimeoutPrevote, TimeoutPrecommit, TimeoutCommit time.Duration
}

// BasePorts numbers validator i's ports from base: p2p base+10i, RPC
// base+10i+1, Prometheus base+10i+4 (26656, 26657, 26660 for validator 0,
// CometBFT's defaults).
func BasePorts(base int) func(int) Ports {
	return func(i int) Ports { return Ports{P2P: base + 10*i, RPC: base + 10*i + 1, Prometheus: base + 10*i + 4} }
}

// TunedTimeouts are the loopback timeouts BENCHMARKS.md measures: a dead
// proposer costs 400 ms of propose timeout instead of CometBFT's default
// 3 s, plus the precommit timeout CometBFT waits even on a unanimous nil
// (50 ms: votes cross loopback in a few), and CometBFT's commit pause,
// 1 s, which paces the chain: a height starts that long after the last was
// decided, so blocks come a little more than a second apart (a validator
// refuses less, unless --allow-clock-drift: execution timestamps would run
// ahead of the wall clock).
//
// A full block (6-8 MB) does not reach the others within 400 ms: the
// proposer fetches it from geth as 17 MB of JSON, and CometBFT gossips it in
// 64 KiB parts over encrypted links. Each round after the first gets
// ProposeDelta (2 s) more than the one before, where CometBFT gives 500 ms:
// the proposer of round 1, which started and fetched its payload while
// round 0 ran, has 2.4 s to bring a full block to the others, and a dead
// round-0 proposer still costs 400 ms. (What timeout_propose full blocks
// need in round 0: BENCHMARKS-design.md.)
var TunedTimeouts = struct{ Propose, ProposeDelta, Prevote, Precommit, Commit time.Duration }{
	400 * time.Millisecond, 2 * time.Second, 200 * time.Millisecond, 50 * time.Millisecond, time.Second,
}

// WANTimeouts are the testnet command's --wan preset, for validators in
// several regions (tens to a couple of hundred milliseconds apart, one way):
// a proposal and each round of votes then cross the network in that time,
// plus jitter, where TunedTimeouts count on loopback's fraction of a
// millisecond. BENCHMARKS-wan.md measures both at 50 and 150 ms.
var WANTimeouts = Options{TimeoutPropose: 1500 * time.Millisecond, TimeoutProposeDelta: time.Second,
	TimeoutPrevote: 500 * time.Millisecond, TimeoutPrecommit: 500 * time.Millisecond, TimeoutCommit: time.Second}

// MaxValidators is the validator count the homes' block.max_bytes leaves
// room for (envelope.BlockMaxBytes): the commit of 100 validators is 11 KB.
const MaxValidators = 100

// LoopbackRate is the p2p send and receive rate of the homes, per peer: a
// full block (envelope.MaxSize) crosses a link in about 80 ms. CometBFT's
// default, 5 MB/s, suits a WAN; at that rate a full proposal takes 1.7 s to
// reach a peer, longer than the tuned timeout_propose.
const LoopbackRate = 100 << 20

// GossipSleep is the homes' consensus.peer_gossip_sleep_duration: how long
// a validator's routine for one peer sleeps when it has nothing to send
// that peer. CometBFT's default, 100 ms, can delay the start of a
// proposal's gossip, and every relay of it, by that much.
const GossipSleep = 10 * time.Millisecond

// PacketPayload is the homes' p2p max_packet_msg_payload_size: a block part
// (64 KiB) in one packet. CometBFT's default, 1 KiB, cuts each part in 64
// packets, too slow for a proposal of a megabyte (BENCHMARKS-design.md).
const PacketPayload = int(types.BlockPartSizeBytes)

// GenesisPower is each genesis validator's voting power. Powers of 1
// would freeze a small set: at most a third of the power may change at
// one height (the app refuses more), so one validator of power 1, or two,
// could never add another. With 100 each, a validator of 100 joins four
// (100 of 400), and a single validator can grow the set by 33 at a time.
const GenesisPower = 100

// Home returns validator i's home under dir.
func Home(dir string, i int) string { return filepath.Join(dir, fmt.Sprintf("validator-%d", i)) }

// Write creates the homes. It refuses to overwrite an existing home.
func Write(o Options) error {
	if o.Validators < 1 {
		return fmt.Errorf("--validators %d: at least 1", o.Validators)
	}
	if o.FullNodes < 0 {
		return fmt.Errorf("--full-nodes %d: must not be negative", o.FullNodes)
	}
	if o.HostPattern != "" && (strings.Count(o.HostPattern, "%d") != 1 || strings.Count(o.HostPattern, "%") != 1) {
		return fmt.Errorf("--host-pattern %q: want one %%d for the validator's index, as in validator-%%d", o.HostPattern)
	}
	if o.ChainID == "" {
		o.ChainID = "geth-consensus"
	}
	if o.Ports == nil {
		o.Ports = BasePorts(26656)
	}
	nodes := make([]validatorHome, o.Validators+o.FullNodes)
	params := types.DefaultConsensusParams()
	params.Block.MaxBytes = envelope.BlockMaxBytes(MaxValidators, params.Evidence.MaxBytes)
	gen := &types.GenesisDoc{ChainID: o.ChainID, GenesisTime: time.Now().UTC().Round(time.Second), InitialHeight: 1,
		ConsensusParams: params}
	if o.Registry != "" {
		if !common.IsHexAddress(o.Registry) {
			return fmt.Errorf("--registry %q: not a 20-byte hex address", o.Registry)
		}
		st, err := json.Marshal(node.AppState{ValidatorRegistry: common.HexToAddress(o.Registry).Hex()})
		if err != nil {
			return err
		}
		gen.AppState = st
	}
	for i := range nodes {
		n, v, err := newHome(Home(o.Dir, i), i)
		if err != nil {
			return err
		}
		nodes[i] = n
		if i < o.Validators {
			gen.Validators = append(gen.Validators, v)
		}
	}
	host, listen := func(int) string { return "127.0.0.1" }, "127.0.0.1"
	if o.HostPattern != "" {
		host, listen = func(i int) string { return fmt.Sprintf(o.HostPattern, i) }, "0.0.0.0"
	}
	for i, n := range nodes {
		var peers []string
		for j, m := range nodes {
			if j != i {
				peers = append(peers, fmt.Sprintf("%s@%s:%d", m.id, host(j), o.Ports(j).P2P))
			}
		}
		c := n.cfg
		configure(c, o, i, listen, peers)
		if err := c.ValidateBasic(); err != nil {
			return fmt.Errorf("validator %d: %w", i, err)
		}
		cmtcfg.WriteConfigFile(filepath.Join(c.RootDir, "config", "config.toml"), c)
		if err := gen.SaveAs(c.GenesisFile()); err != nil {
			return err
		}
	}
	return nil
}

// validatorHome is a validator's home being written.
type validatorHome struct {
	cfg *cmtcfg.Config
	id  p2p.ID
	pv  *privval.FilePV
}

// newHome creates validator i's home with fresh node and validator keys,
// and returns it with the validator's genesis entry.
func newHome(home string, i int) (validatorHome, types.GenesisValidator, error) {
	if _, err := os.Stat(filepath.Join(home, "config", "config.toml")); err == nil {
		return validatorHome{}, types.GenesisValidator{}, fmt.Errorf("%s already holds a CometBFT home: remove it first", home)
	}
	cfg := cmtcfg.DefaultConfig()
	cfg.SetRoot(home)
	for _, d := range []string{filepath.Join(home, "config"), filepath.Join(home, "data")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return validatorHome{}, types.GenesisValidator{}, err
		}
	}
	pv := privval.GenFilePV(cfg.PrivValidatorKeyFile(), cfg.PrivValidatorStateFile())
	pv.Save()
	key, err := p2p.LoadOrGenNodeKey(cfg.NodeKeyFile())
	if err != nil {
		return validatorHome{}, types.GenesisValidator{}, err
	}
	pub, err := pv.GetPubKey()
	if err != nil {
		return validatorHome{}, types.GenesisValidator{}, err
	}
	v := types.GenesisValidator{Address: pub.Address(), PubKey: pub, Power: GenesisPower, Name: fmt.Sprintf("validator-%d", i)}
	return validatorHome{cfg: cfg, id: key.ID(), pv: pv}, v, nil
}

// configure sets validator i's config.toml: its ports on listen, its peers,
// the p2p limits a full block needs, and the consensus timeouts.
func configure(c *cmtcfg.Config, o Options, i int, listen string, peers []string) {
	pick := func(v, def time.Duration) time.Duration {
		if v > 0 {
			return v
		}
		return def
	}
	ports := o.Ports(i)
	c.Moniker = fmt.Sprintf("validator-%d", i)
	c.P2P.ListenAddress = fmt.Sprintf("tcp://%s:%d", listen, ports.P2P)
	c.P2P.PersistentPeers = strings.Join(peers, ",")
	c.P2P.AddrBookStrict = false // loopback and private addresses
	c.P2P.AllowDuplicateIP = true
	c.P2P.SendRate, c.P2P.RecvRate, c.P2P.MaxPacketMsgPayloadSize = LoopbackRate, LoopbackRate, PacketPayload
	c.RPC.ListenAddress = fmt.Sprintf("tcp://%s:%d", listen, ports.RPC)
	c.Instrumentation.Prometheus = true
	c.Instrumentation.PrometheusListenAddr = fmt.Sprintf("%s:%d", listen, ports.Prometheus)
	c.Consensus.TimeoutPropose = pick(o.TimeoutPropose, TunedTimeouts.Propose)
	c.Consensus.TimeoutProposeDelta = pick(o.TimeoutProposeDelta, TunedTimeouts.ProposeDelta)
	c.Consensus.TimeoutPrevote = pick(o.TimeoutPrevote, TunedTimeouts.Prevote)
	c.Consensus.TimeoutPrecommit = pick(o.TimeoutPrecommit, TunedTimeouts.Precommit)
	c.Consensus.TimeoutCommit = pick(o.TimeoutCommit, TunedTimeouts.Commit)
	c.Consensus.PeerGossipSleepDuration = GossipSleep
}
