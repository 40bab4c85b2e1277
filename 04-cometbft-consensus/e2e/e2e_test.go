package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/metrics"
)

// Four validators, each with its own geth: heights are decided and every
// geth holds the same block at every height, final. With optimistic
// building on, the proposers use the payloads they started early. Commit
// does not wait: CometBFT's timeout_commit paces the heights.
func TestFourValidatorsFinalizeTheSameChain(t *testing.T) {
	nw := newNetwork(t, spec{flags: func(int) []string { return []string{"--optimistic-build"} }})
	nw.waitHeads(10, 90*time.Second)
	if low := nw.checkSameChain(); low < 10 {
		t.Fatalf("lowest head %d", low)
	}
	used := 0.0
	for _, v := range nw.vals {
		// geth's head moves in FinalizeBlock, the status height in Commit,
		// after the app's writes: the two agree between heights.
		eventually(t, 10*time.Second, func() error {
			s, ok := v.status()
			if !ok || !s.Ready || s.Height < 10 || s.ExecutionHead != uint64(s.Height) {
				return fmt.Errorf("validator-%d status %+v (ok %v)", v.i, s, ok)
			}
			return nil
		})
		used += v.metric(`gethcl_optimistic_builds_total{outcome="used"}`)
	}
	if used < 3 {
		t.Errorf("%v proposals used a payload started early, in 10 heights", used)
	}

	nw.checkCommitDoesNotWait(testTimeoutCommit)

	// The app's guess of each height's proposers, which decides who starts
	// building early, is CometBFT's choice.
	if rounds := nw.checkProposers(10); rounds[0] < 5 {
		t.Fatalf("only %d of 10 heights decided in round 0", rounds[0])
	}

	// A validator whose geth is down says so on /readyz while the others
	// go on, and is ready again once geth is back and caught up.
	v := nw.vals[3]
	if code, body := v.readyz(); code != http.StatusOK {
		t.Fatalf("/readyz %d %s", code, body)
	}
	if err := v.geth.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, 30*time.Second, func() error {
		if code, body := v.readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "geth") {
			return fmt.Errorf("/readyz %d %q with its geth down", code, body)
		}
		return nil
	})
	t.Logf("MEASURED geth killed: /readyz 503 after %.1f s", time.Since(start).Seconds())
	if err := v.geth.Start(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	nw.waitHeads(mustHead(t, nw.vals[0])+2, 60*time.Second)
	eventually(t, 30*time.Second, func() error {
		if code, body := v.readyz(); code != http.StatusOK {
			return fmt.Errorf("/readyz %d %q with its geth back", code, body)
		}
		return nil
	})
	t.Logf("MEASURED geth restarted: caught up and /readyz 200 after %.1f s", time.Since(start).Seconds())
	nw.checkSameChain()
}

// A transfer sent to one validator's geth reaches the proposers through
// geth's peering and is included; one validator killed, the other three
// go on; restarted, it catches up from its peers.
func TestTransactionAndOneValidatorDown(t *testing.T) {
	nw := newNetwork(t, spec{})
	nw.waitHeads(3, 90*time.Second)
	sink := common.HexToAddress("0x00000000000000000000000000000000000c0ffe")
	tx, err := devnet.SendTransfer(context.Background(), nw.vals[3].eth, 3, sink)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		_, err := nw.vals[0].eth.TransactionReceipt(context.Background(), tx.Hash())
		return err
	})

	down := nw.vals[2]
	if err := down.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	up := []*validator{nw.vals[0], nw.vals[1], nw.vals[3]}
	h, _ := nw.vals[0].head()
	start := time.Now()
	nw.waitHeads(h+10, 60*time.Second, up...)
	t.Logf("MEASURED one of four down: 10 blocks in %.1f s", time.Since(start).Seconds())
	start = time.Now()
	nw.start(down)
	h, _ = nw.vals[0].head()
	nw.waitHeads(h+3, 60*time.Second)
	t.Logf("MEASURED one of four restarted: caught up and 3 more blocks final everywhere in %.1f s", time.Since(start).Seconds())
	nw.checkSameChain()
}

// A Byzantine proposer corrupts every payload it proposes, or pads every
// envelope with 4 KiB: the others' geth find the first INVALID, the
// others' decoder refuses the second (one payload, one encoding), its
// proposals are rejected, and the chain goes on through the other
// proposers; no validator halts.
func TestByzantineProposerIsRejected(t *testing.T) {
	for _, c := range []struct{ how, reason string }{{"invalid", "invalid"}, {"pad", "malformed"}, {"params", "malformed"}} {
		t.Run(c.how, func(t *testing.T) {
			nw := newNetwork(t, spec{flags: func(i int) []string {
				if i == 0 {
					return []string{"--byzantine=" + c.how}
				}
				return nil
			}})
			start := time.Now()
			nw.waitHeads(12, 120*time.Second)
			t.Logf("MEASURED Byzantine proposer (%s): 12 blocks in %.1f s", c.how, time.Since(start).Seconds())
			nw.checkSameChain()
			if rounds := nw.checkProposers(12); rounds[1] == 0 {
				t.Errorf("no height decided in round 1 although validator-0 proposes %s payloads: %v", c.how, rounds)
			}
			eventually(t, 10*time.Second, func() error {
				for _, v := range nw.vals[1:] {
					if n := v.metric(fmt.Sprintf(`gethcl_process_proposal_total{reason=%q,verdict="reject"}`, c.reason)); n < 1 {
						return fmt.Errorf("validator-%d rejected %v %s proposals", v.i, n, c.reason)
					}
				}
				return nil
			})
			for _, v := range nw.vals {
				if !v.proc.Running() {
					t.Fatalf("validator-%d stopped", v.i)
				}
				// A bad proposal is the proposer's fault: no honest
				// validator took it for its geth being unavailable.
				if n := v.metric(`gethcl_process_proposal_total{reason="unavailable",verdict="reject"}`); v.i > 0 && n != 0 {
					t.Errorf("validator-%d rejected %v proposals as geth unavailable", v.i, n)
				}
			}
		})
	}
}

// Two of four validators killed: the other two hold half the voting power,
// less than the 2/3 CometBFT needs, and no height is decided; the two say
// so on /readyz and /status once --stall-blocks block times have passed.
// Restarted, the chain resumes and they are ready again; validator-3's
// geth was killed too, and both restarted nodes and their geths catch up
// to the same chain.
func TestTwoValidatorsDownHaltThenResume(t *testing.T) {
	nw := newNetwork(t, spec{flags: func(int) []string { return []string{"--stall-blocks", "3"} }}) // 3 s
	nw.waitHeads(5, 90*time.Second)
	down := nw.vals[2:]
	for _, v := range down {
		if err := v.proc.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	if err := nw.vals[3].geth.Kill(); err != nil {
		t.Fatal(err)
	}
	up := nw.vals[:2]
	// The height in flight when they died may still be decided; after that,
	// nothing. Watch for 3 s, five test block times: polling the heads, as
	// long as the window lasts, is the check.
	settled, _ := up[0].head()
	nw.waitHeads(settled, 10*time.Second, up...)
	settled = max(settled, mustHead(t, up[0]), mustHead(t, up[1]))
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, v := range up {
			if h := mustHead(t, v); h > settled+1 {
				t.Fatalf("validator-%d reached block %d with two of four validators down (halted at %d)", v.i, h, settled)
			}
		}
	}
	for _, v := range up {
		eventually(t, 10*time.Second, func() error {
			code, body := v.readyz()
			s, _ := v.status()
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "no height decided") || !strings.Contains(s.Reason, "no height decided") {
				return fmt.Errorf("validator-%d of a halted chain: /readyz %d %s, /status reason %q", v.i, code, body, s.Reason)
			}
			return nil
		})
	}
	if err := nw.vals[3].geth.Start(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, v := range down {
		nw.start(v)
	}
	nw.waitHeads(settled+1, 90*time.Second)
	t.Logf("MEASURED two of four down: no block for 3 s; restarted: first new block final on every geth after %.1f s", time.Since(start).Seconds())
	nw.waitHeads(settled+5, 90*time.Second)
	nw.checkSameChain()
	for _, v := range up {
		eventually(t, 10*time.Second, func() error {
			if code, body := v.readyz(); code != http.StatusOK {
				return fmt.Errorf("validator-%d after the chain resumed: /readyz %d %s", v.i, code, body)
			}
			return nil
		})
	}
}

// More than a third of the geths frozen (SIGSTOP): no height is decided
// while they are. Frozen for 5 s, their validators wait for an answer
// inside ProcessProposal (engine.CallTimeout, 8 s) and get VALID once
// resumed; frozen for 10 s, they give up and reject as unavailable (a nil
// prevote). Either way, resumed, the chain goes on within a few heights,
// on one chain.
func TestFrozenGethsStallThenResume(t *testing.T) {
	nw := newNetwork(t, spec{})
	nw.waitHeads(5, 90*time.Second)
	frozen := nw.vals[2:]
	for _, freeze := range []time.Duration{5 * time.Second, 10 * time.Second} {
		nw.freezeGeths(frozen, freeze)
		start := time.Now()
		settled := max(mustHead(t, nw.vals[0]), mustHead(t, nw.vals[1]))
		nw.waitHeads(settled+1, 60*time.Second)
		t.Logf("MEASURED two of four geths frozen for %s: first block final on every geth %.1f s after they resumed", freeze, time.Since(start).Seconds())
		nw.waitHeads(settled+3, 60*time.Second)
		nw.checkSameChain()
	}
	// A frozen validator cannot check or build with its geth: it rejects
	// the proposals it is asked about (unavailable), fails to build its own
	// (errors), or waits in FinalizeBlock when a freeze begins right after
	// a height is decided. Which of them depends on where the freeze
	// catches it; that it noticed shows in its metrics.
	counts := map[string]float64{}
	for _, v := range frozen {
		for _, r := range metrics.RejectReasons {
			counts["reject "+r] += v.metricWhere("gethcl_process_proposal_total", `reason="`+r+`"`, `verdict="reject"`)
		}
		for _, k := range []string{"build", "geth", "empty_payload", "overdue_payload"} {
			counts["error "+k] += v.metricWhere("gethcl_errors_total", `kind="`+k+`"`)
		}
		// FinalizeBlock calls longer than the largest bucket, 4.096 s.
		counts["FinalizeBlock over 4 s"] += v.metric("gethcl_finalize_block_seconds_count") - v.metricWhere("gethcl_finalize_block_seconds_bucket", `le="4.096"`)
	}
	noticed := 0.0
	for _, n := range counts {
		noticed += n
	}
	t.Logf("MEASURED what the frozen validators' metrics show: %v", counts)
	if noticed < 1 {
		t.Errorf("the validators whose geths were frozen show no rejection, error or wait: %v", counts)
	}
}

// freezeGeths SIGSTOPs the geths of vals for d, checking meanwhile that
// the others' heads move at most one block (the height in flight), then
// resumes them.
func (nw *network) freezeGeths(vals []*validator, d time.Duration) {
	t := nw.t
	t.Helper()
	for _, v := range vals {
		if err := v.geth.Pause(); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, v := range vals {
			if err := v.geth.Resume(); err != nil {
				t.Error(err)
			}
		}
	}()
	live := slices.DeleteFunc(slices.Clone(nw.vals), func(v *validator) bool { return slices.Contains(vals, v) })
	var at uint64 // the highest live head: one a height behind may catch up
	for _, v := range live {
		at = max(at, mustHead(t, v))
	}
	// Polling the live geths' heads while the freeze lasts is the check.
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, v := range live {
			if h := mustHead(t, v); h > at+1 {
				t.Fatalf("validator-%d's geth went from block %d to %d with %d of %d geths frozen", v.i, at, h, len(vals), len(nw.vals))
			}
		}
	}
}

// A validator's geth killed and its datadir wiped recovers every block
// from CometBFT's block store: while the node runs (FinalizeBlock finds
// geth lacking the parent and replays), and across a restart of the node
// (Info reports geth's height and CometBFT's handshake replays).
func TestWipedGethRecoversFromBlockStore(t *testing.T) {
	nw := newNetwork(t, spec{})
	nw.waitHeads(8, 90*time.Second)
	ctx := context.Background()
	wipe := func(v *validator) {
		t.Helper()
		for _, step := range []func() error{v.geth.Kill, func() error { return v.geth.Wipe(ctx) }, v.geth.Start} {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
	}

	lost := mustHead(t, nw.vals[1]) // what the wiped geths must get back
	running := nw.vals[1]
	wipe(running)
	restarted := nw.vals[2]
	if err := restarted.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	wipe(restarted)
	start := time.Now()
	nw.start(restarted)

	nw.waitHeads(mustHead(t, nw.vals[0]), 120*time.Second, running, restarted)
	t.Logf("MEASURED %d blocks lost by two wiped geths: both back at the head in %.1f s", lost, time.Since(start).Seconds())
	nw.waitHeads(mustHead(t, nw.vals[0])+5, 120*time.Second)
	nw.checkSameChain()
	// The restarted validator replays every lost block in the handshake,
	// before consensus starts and before anything could make its geth sync.
	if n := restarted.metric("gethcl_blocks_replayed_total"); n < float64(lost) {
		t.Fatalf("validator-%d replayed %v blocks into its wiped geth, want at least %d", restarted.i, n, lost)
	}
	// The running one got its blocks back one of two ways, both fine (the
	// chain checks above are the test): replayed from the block store when
	// a proposal needed them, or fetched by its geth from its peers on its
	// own, which geth starts after a forkchoiceUpdated to a head it lacks
	// (the validator sends one when it proposes meanwhile). Which one wins
	// is a race; internal/app tests the replay itself.
	t.Logf("MEASURED running validator: %v of %d lost blocks replayed by the CL, the rest synced by geth from its peers",
		running.metric("gethcl_blocks_replayed_total"), lost)
	for _, v := range []*validator{running, restarted} {
		if !v.proc.Running() {
			t.Fatalf("validator-%d stopped", v.i)
		}
	}
}

func mustHead(t testing.TB, v *validator) uint64 {
	t.Helper()
	h, err := v.head()
	if err != nil {
		t.Fatalf("validator-%d: %v", v.i, err)
	}
	return h
}

// A home made by `cometbft init` (CometBFT's own binary, built from the
// pinned module) runs as a one-validator chain, and its config.toml is the
// one honoured: the operator's RPC port and commit timeout take effect.
func TestCometBFTInitHome(t *testing.T) {
	dir := t.TempDir()
	cometbft := filepath.Join(dir, "cometbft")
	if out, err := exec.Command("go", "build", "-o", cometbft, "github.com/cometbft/cometbft/cmd/cometbft").CombinedOutput(); err != nil {
		t.Fatalf("build cometbft: %v\n%s", err, out)
	}
	home := filepath.Join(dir, "home")
	if out, err := exec.Command(cometbft, "init", "--home", home).CombinedOutput(); err != nil {
		t.Fatalf("cometbft init: %v\n%s", err, out)
	}
	rpc, p2p := freePort(t), freePort(t)
	path := filepath.Join(home, "config", "config.toml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	toml := string(b)
	for old, repl := range map[string]string{
		`laddr = "tcp://127.0.0.1:26657"`: fmt.Sprintf(`laddr = "tcp://127.0.0.1:%d"`, rpc),
		`laddr = "tcp://0.0.0.0:26656"`:   fmt.Sprintf(`laddr = "tcp://127.0.0.1:%d"`, p2p),
		`timeout_commit = "1s"`:           `timeout_commit = "100ms"`,
	} {
		if !strings.Contains(toml, old) {
			t.Fatalf("cometbft init's config.toml has no %s", old)
		}
		toml = strings.Replace(toml, old, repl, 1)
	}
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}

	dn := devnet.StartT(t, devnet.Config{GethNodes: 1})
	v := &validator{rpc: rpc, health: "127.0.0.1:" + strconv.Itoa(freePort(t)), geth: dn.Geth[0]}
	v.eth, err = ethclient.Dial(v.geth.RPCURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.eth.Close)
	args := []string{"--cmt-home", home, "--eth-client-url", v.geth.EngineURL(), "--jwt-secret", mustFindUp(t, "jwt.hex"),
		"--genesis", mustFindUp(t, "genesis.json"), "--health-addr", v.health}
	// A timeout_commit below 1 s makes heights faster than the execution
	// timestamps' second: refused, naming the setting, unless allowed.
	refuse, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(refuse, binary(t), args...).CombinedOutput(); err == nil || !strings.Contains(string(out), "consensus.timeout_commit 100ms") || !strings.Contains(string(out), "--allow-clock-drift") {
		t.Fatalf("a 100ms timeout_commit without --allow-clock-drift: %v\n%s", err, out)
	}
	v.proc = &devnet.Process{Name: "validator", Path: binary(t), LogPath: filepath.Join(dir, "validator.log"),
		Args: append(args, "--allow-clock-drift")}
	if err := v.proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- validator log:\n%s", v.appLog(60))
		}
		_ = v.proc.Stop(15 * time.Second)
	})
	nw := &network{t: t, vals: []*validator{v}}
	nw.waitHeads(5, 60*time.Second)
	st, err := v.cometbft(t).Status(context.Background())
	if err != nil {
		t.Fatalf("CometBFT RPC on the port config.toml names: %v", err)
	}
	if st.SyncInfo.LatestBlockHeight < 5 || !strings.HasPrefix(st.NodeInfo.Network, "test-chain-") {
		t.Fatalf("CometBFT status: height %d, chain %q", st.SyncInfo.LatestBlockHeight, st.NodeInfo.Network)
	}
	// Heights of 100 ms and a little more: each execution timestamp is at
	// least its parent's + 1 s, and the chain's clock runs ahead.
	nw.waitHeads(10, 60*time.Second)
	if drift := v.metric("gethcl_timestamp_drift_seconds"); drift < 1 {
		t.Fatalf("gethcl_timestamp_drift_seconds %v after ten heights faster than a second", drift)
	}
}
