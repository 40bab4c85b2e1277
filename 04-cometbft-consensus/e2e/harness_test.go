package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/p2p"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	cmttypes "github.com/cometbft/cometbft/types"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/app"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/node"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/registry"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/testnet"
)

// network is n validators, each a process of this stage's binary with its
// own geth from the devnet library.
type network struct {
	t    testing.TB
	net  *devnet.Network
	vals []*validator
	// With spec.faults: every link between validators, CometBFT's p2p by
	// [dialer, listener] and the geths' devp2p (devnet.GethLinks), and
	// each validator's to its geth, goes through a fault point.
	faults   *devnet.Faults
	cmtLinks map[[2]int]*devnet.Link
}

type validator struct {
	i      int
	rpc    int // CometBFT RPC port
	home   string
	health string
	geth   *devnet.GethNode
	eth    *ethclient.Client
	proc   *devnet.Process
	engine *devnet.Link // its Engine API link, with spec.faults
}

// spec describes a test network; zero values give the tests' defaults.
type spec struct {
	validators   int
	fullNodes    int                      // nodes after the validators, outside the genesis set (testnet --full-nodes)
	faults       bool                     // every link through a fault point (network.faults)
	timeouts     testnet.Options          // only the Timeout* fields; zero keeps the tuned ones, timeout_commit testTimeoutCommit
	gethArgs     []string                 // extra flags for every geth
	gethDefaults bool                     // geths on their default storage (devnet GethDefaults)
	flags        func(i int) []string     // extra flags for validator i
	homes        func(i int, home string) // changes validator i's home before it starts
}

// testTimeoutCommit paces the tests' chains faster than the testnet
// command's 1 s, so that they take less time: heights then come faster
// than one a second, and the validators run with --allow-clock-drift.
const testTimeoutCommit = 500 * time.Millisecond

// newNetwork writes the homes, starts a geth per validator and every
// validator: four, with the testnet command's timeouts and
// testTimeoutCommit unless s says otherwise.
func newNetwork(t testing.TB, s spec) *network {
	t.Helper()
	if s.validators == 0 {
		s.validators = 4
	}
	if s.timeouts.TimeoutCommit == 0 {
		s.timeouts.TimeoutCommit = testTimeoutCommit
	}
	n := s.validators + s.fullNodes
	var faults *devnet.Faults
	if s.faults {
		faults = devnet.NewFaults()
		t.Cleanup(faults.Close)
	}
	dn := devnet.StartT(t, devnet.Config{GethNodes: n, GethArgs: s.gethArgs, GethDefaults: s.gethDefaults, Faults: faults})
	dir := t.TempDir()
	ports := make([]testnet.Ports, n)
	for i := range ports {
		ports[i] = testnet.Ports{P2P: freePort(t), RPC: freePort(t), Prometheus: freePort(t)}
	}
	o := s.timeouts
	o.Dir, o.Validators, o.FullNodes, o.Ports = dir, s.validators, s.fullNodes, func(i int) testnet.Ports { return ports[i] }
	o.Registry = registry.Address.Hex() // as the testnet command writes it
	if err := testnet.Write(o); err != nil {
		t.Fatal(err)
	}
	nw := &network{t: t, net: dn, faults: faults}
	if faults != nil {
		nw.routeCometBFT(dir, ports)
	}
	for i := range n {
		g := dn.Geth[i]
		eth, err := ethclient.Dial(g.RPCURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(eth.Close)
		v := &validator{i: i, rpc: ports[i].RPC, home: testnet.Home(dir, i), health: "127.0.0.1:" + strconv.Itoa(freePort(t)), geth: g, eth: eth}
		if s.homes != nil {
			s.homes(i, v.home)
		}
		engineURL := g.EngineURL()
		if faults != nil {
			l, err := faults.Link(fmt.Sprintf("validator-%d-engine", i), "127.0.0.1:0", strings.TrimPrefix(engineURL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			v.engine, engineURL = l, "http://"+l.Addr()
		}
		args := []string{"--cmt-home", v.home, "--eth-client-url", engineURL, "--jwt-secret", mustFindUp(t, "jwt.hex"),
			"--genesis", mustFindUp(t, "genesis.json"), "--health-addr", v.health, "--log-level", "debug"}
		if s.timeouts.TimeoutCommit < time.Second {
			args = append(args, "--allow-clock-drift")
		}
		if s.flags != nil {
			args = append(args, s.flags(i)...)
		}
		v.proc = &devnet.Process{Name: fmt.Sprintf("validator-%d", i), Path: binary(t), Args: args,
			LogPath: filepath.Join(t.TempDir(), fmt.Sprintf("validator-%d.log", i))}
		nw.vals = append(nw.vals, v)
	}
	t.Cleanup(nw.stop)
	for _, v := range nw.vals {
		nw.start(v)
	}
	return nw
}

// routeCometBFT puts a fault point on each validator's p2p link to each
// other, one per direction (the dialer's), and turns off peer exchange,
// which would find the direct addresses.
func (nw *network) routeCometBFT(dir string, ports []testnet.Ports) {
	nw.t.Helper()
	nw.cmtLinks = map[[2]int]*devnet.Link{}
	ids := make([]p2p.ID, len(ports))
	for i := range ports {
		key, err := p2p.LoadNodeKey(filepath.Join(testnet.Home(dir, i), "config", "node_key.json"))
		if err != nil {
			nw.t.Fatal(err)
		}
		ids[i] = key.ID()
	}
	for i := range ports {
		var peers []string
		for j := range ports {
			if i == j {
				continue
			}
			l, err := nw.faults.Link(fmt.Sprintf("cmt-%d-%d", i, j), "127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", ports[j].P2P))
			if err != nil {
				nw.t.Fatal(err)
			}
			nw.cmtLinks[[2]int{i, j}] = l
			peers = append(peers, fmt.Sprintf("%s@%s", ids[j], l.Addr()))
		}
		home := testnet.Home(dir, i)
		c, err := node.LoadCometConfig(home)
		if err != nil {
			nw.t.Fatal(err)
		}
		c.P2P.PersistentPeers, c.P2P.PexReactor = strings.Join(peers, ","), false
		cmtcfg.WriteConfigFile(filepath.Join(home, "config", "config.toml"), c)
	}
}

func (nw *network) start(v *validator) {
	nw.t.Helper()
	if err := v.proc.Start(); err != nil {
		nw.t.Fatal(err)
	}
}

func (nw *network) stop() {
	for _, v := range nw.vals {
		if nw.t.Failed() {
			nw.t.Logf("--- validator-%d log, CometBFT's debug lines left out:\n%s", v.i, v.appLog(60))
		}
		_ = v.proc.Stop(15 * time.Second)
	}
}

// appLog returns the last n lines of the validator's log without
// CometBFT's debug lines, which bury the app's.
func (v *validator) appLog(n int) string {
	b, err := os.ReadFile(v.proc.LogPath)
	if err != nil {
		return err.Error()
	}
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if !(strings.Contains(line, "level=DEBUG") && strings.Contains(line, "component=cometbft")) {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep[max(0, len(keep)-n):], "\n")
}

func freePort(t testing.TB) int {
	t.Helper()
	p, err := devnet.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustFindUp(t testing.TB, name string) string {
	t.Helper()
	p, err := devnet.FindUp(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// TestMain removes the binary the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// binary builds cmd/main.go once per test run.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cometbft-consensus-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "cometbft-consensus")
		out, err := exec.Command("go", "build", "-tags", "byzantine", "-o", binPath, "github.com/geth-consensus/tutorial/04-cometbft-consensus/cmd").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// status reads a validator's /status (ok false when it does not answer).
func (v *validator) status() (s node.Status, ok bool) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + v.health + "/status")
	if err != nil {
		return s, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return s, resp.StatusCode == http.StatusOK && json.Unmarshal(b, &s) == nil
}

// readyz returns the validator's /readyz status code and body.
func (v *validator) readyz() (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + v.health + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (v *validator) head() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return v.eth.BlockNumber(ctx)
}

// eventually polls cond until it returns nil, and fails the test if
// timeout passes first.
func eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := poll(timeout, 100*time.Millisecond, cond); err != nil {
		t.Fatal(err)
	}
}

// poll calls cond every interval until it returns nil, or returns its last
// error once timeout has passed.
func poll(timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", timeout, err)
		}
		time.Sleep(interval)
	}
}

// waitHeads polls until the geth of every given validator (all when none
// is given) is at n or above.
func (nw *network) waitHeads(n uint64, timeout time.Duration, vals ...*validator) {
	nw.t.Helper()
	if len(vals) == 0 {
		vals = nw.vals
	}
	eventually(nw.t, timeout, func() error {
		for _, v := range vals {
			if h, err := v.head(); err != nil || h < n {
				return fmt.Errorf("validator-%d: geth head %d (%v), want %d", v.i, h, err, n)
			}
		}
		return nil
	})
}

// checkSameChain checks that every given geth holds the same hash at every
// height up to the lowest head, with contiguous parents.
func (nw *network) checkSameChain(vals ...*validator) uint64 {
	nw.t.Helper()
	if len(vals) == 0 {
		vals = nw.vals
	}
	ctx := context.Background()
	low := ^uint64(0)
	for _, v := range vals {
		h, err := v.head()
		if err != nil {
			nw.t.Fatal(err)
		}
		low = min(low, h)
	}
	var parent common.Hash
	for n := uint64(0); n <= low; n++ {
		var want common.Hash
		for k, v := range vals {
			hdr, err := v.eth.HeaderByNumber(ctx, new(big.Int).SetUint64(n))
			if err != nil {
				nw.t.Fatalf("validator-%d block %d: %v", v.i, n, err)
			}
			if k == 0 {
				want = hdr.Hash()
				if n > 0 && hdr.ParentHash != parent {
					nw.t.Fatalf("block %d: parent %s, block %d is %s", n, hdr.ParentHash, n-1, parent)
				}
			} else if hdr.Hash() != want {
				nw.t.Fatalf("block %d: validator-%d has %s, validator-%d has %s", n, v.i, hdr.Hash(), vals[0].i, want)
			}
		}
		parent = want
	}
	return low
}

// checkSameBlocks checks that the block store of every given validator
// holds the same CometBFT block, with the same app hash, at every height
// up to n.
func (nw *network) checkSameBlocks(n int64, vals ...*validator) {
	nw.t.Helper()
	ctx := context.Background()
	clients := make([]*rpchttp.HTTP, len(vals))
	for i, v := range vals {
		clients[i] = v.cometbft(nw.t)
	}
	for h := int64(1); h <= n; h++ {
		var want *cmttypes.Header
		for i, c := range clients {
			res, err := c.Block(ctx, &h)
			if err != nil {
				nw.t.Fatalf("validator-%d block %d: %v", vals[i].i, h, err)
			}
			got := res.Block.Header
			if i == 0 {
				want = &got
				continue
			}
			if !bytes.Equal(got.Hash(), want.Hash()) || !bytes.Equal(got.AppHash, want.AppHash) {
				nw.t.Fatalf("height %d: validator-%d holds block %X (app hash %X), validator-%d %X (%X)",
					h, vals[i].i, got.Hash(), got.AppHash, vals[0].i, want.Hash(), want.AppHash)
			}
		}
	}
}

// cometbft is a client of the validator's CometBFT RPC.
func (v *validator) cometbft(t testing.TB) *rpchttp.HTTP {
	t.Helper()
	c, err := rpchttp.New(fmt.Sprintf("tcp://127.0.0.1:%d", v.rpc), "/websocket")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkCommitDoesNotWait checks that no validator's Commit waits for the
// pace: CometBFT's own timing of the app's Commit calls (its
// abci_connection metrics) averages under a tenth of timeout_commit, where
// a Commit that held the height would take most of it.
func (nw *network) checkCommitDoesNotWait(timeoutCommit time.Duration) {
	nw.t.Helper()
	for _, v := range nw.vals {
		sum := v.metricWhere("cometbft_abci_connection_method_timing_seconds_sum", `method="commit"`)
		count := v.metricWhere("cometbft_abci_connection_method_timing_seconds_count", `method="commit"`)
		if count < 5 || sum/count > timeoutCommit.Seconds()/10 {
			nw.t.Errorf("validator-%d: %v Commits took %.3f s on average: Commit waits (timeout_commit %s)", v.i, count, sum/count, timeoutCommit)
		}
	}
}

// checkProposers checks the app's prediction of the proposer of the round
// that decided each height up to n against CometBFT's blocks, and returns
// how many heights each round decided.
func (nw *network) checkProposers(n int64) map[int32]int {
	return byRound(nw.decidingRounds(n), nil)
}

// byRound counts the heights of rounds (height → deciding round) that keep
// takes (all when nil) by their round.
func byRound(rounds map[int64]int32, keep func(height int64) bool) map[int32]int {
	out := map[int32]int{}
	for h, r := range rounds {
		if keep == nil || keep(h) {
			out[r]++
		}
	}
	return out
}

// decidingRounds returns the round that decided each height up to n,
// checking the app's prediction of its proposer against CometBFT's blocks.
func (nw *network) decidingRounds(n int64) map[int64]int32 {
	nw.t.Helper()
	ctx := context.Background()
	c := nw.vals[0].cometbft(nw.t)
	sets := cometSets(ctx, c)
	rounds := map[int64]int32{}
	for h := int64(1); h <= n; h++ {
		commit, err := c.Commit(ctx, &h)
		if err != nil {
			nw.t.Fatal(err)
		}
		r := commit.Commit.Round
		rounds[h] = r
		// A prediction from the set CometBFT stored for h, as a node that
		// starts at h makes it.
		if want, got := commit.Header.ProposerAddress, app.NewProposers(sets).InRound(h, r); !bytes.Equal(want, got) {
			nw.t.Fatalf("height %d round %d: proposer %X, the app predicted %X", h, r, want, got)
		}
	}
	return rounds
}

// cometSets gives the validator sets of CometBFT's chain, with the
// proposer priorities of each height's round 0, for the app's proposer
// prediction to be checked against CometBFT's blocks. The RPC's
// /validators has each height's members and powers but not its proposer,
// which the priorities alone do not tell where the set changed; so the
// sets are rebuilt as CometBFT's state builds them: height 1's from the
// genesis, each next one from the one before with the members' changes
// applied, advanced once.
func cometSets(ctx context.Context, c *rpchttp.HTTP) app.ValidatorSets {
	var sets []*cmttypes.ValidatorSet // sets[h-1] is height h's
	members := func(h int64) (map[string]*cmttypes.Validator, error) {
		page, perPage := 1, 100
		res, err := c.Validators(ctx, &h, &page, &perPage)
		if err != nil {
			return nil, err
		}
		out := map[string]*cmttypes.Validator{}
		for _, v := range res.Validators {
			out[string(v.Address)] = v
		}
		return out, nil
	}
	return func(h int64) (*cmttypes.ValidatorSet, error) {
		if len(sets) == 0 {
			gen, err := c.Genesis(ctx)
			if err != nil {
				return nil, err
			}
			var vals []*cmttypes.Validator
			for _, v := range gen.Genesis.Validators {
				vals = append(vals, cmttypes.NewValidator(v.PubKey, v.Power))
			}
			first := cmttypes.NewValidatorSet(vals)
			sets = append(sets, first, first.CopyIncrementProposerPriority(1))
		}
		for int64(len(sets)) < h {
			next := sets[len(sets)-1].Copy()
			now, err := members(int64(len(sets)) + 1)
			if err != nil {
				return nil, err
			}
			var changes []*cmttypes.Validator
			for _, v := range now {
				if _, old := next.GetByAddress(v.Address); old == nil || old.VotingPower != v.VotingPower {
					changes = append(changes, cmttypes.NewValidator(v.PubKey, v.VotingPower))
				}
			}
			for _, v := range next.Validators {
				if now[string(v.Address)] == nil {
					changes = append(changes, cmttypes.NewValidator(v.PubKey, 0))
				}
			}
			if len(changes) > 0 {
				if err := next.UpdateWithChangeSet(changes); err != nil {
					return nil, err
				}
			}
			next.IncrementProposerPriority(1)
			sets = append(sets, next)
		}
		return sets[h-1].Copy(), nil
	}
}

// metric reads one sample from a validator's /metrics (0 when absent, -1
// when the validator does not answer).
func (v *validator) metric(name string) float64 {
	return v.metricWhere(name)
}

// metricWhere returns the value of the first series of metric name whose
// labels include every one of labels (`method="commit"`), like metric.
func (v *validator) metricWhere(name string, labels ...string) float64 {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + v.health + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		series, val, ok := strings.Cut(line, " ")
		if !ok || (len(labels) == 0 && series != name) || !strings.HasPrefix(series, name) {
			continue
		}
		if rest := series[len(name):]; len(labels) > 0 && !strings.HasPrefix(rest, "{") {
			continue
		}
		if !containsAll(series, labels) {
			continue
		}
		f, _ := strconv.ParseFloat(val, 64)
		return f
	}
	return 0
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
