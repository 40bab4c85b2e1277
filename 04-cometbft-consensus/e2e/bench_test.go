package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/loadgen"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/testnet"
)

// BenchmarkValidators measures four validators on loopback, each with its
// own geth, and prints a table it also writes to BENCHMARKS.md (`make
// bench`; one iteration: each scenario is a whole network run):
//
//   - block time and blocks/s, from when validator-0's geth makes each
//     block its head (FinalizeBlock's forkchoiceUpdated: the block is final);
//   - finality latency under a steady load: a transfer sent to
//     validator-1's geth → the block that carries it is final on that geth;
//   - with CometBFT's default timeouts and with the tuned ones; with one
//     validator of four down; with payloads started early (the default) or
//     built on request; with geth refreshing a payload every 100 ms or
//     every 2 s (its default).
//
// A burst of transfers is BenchmarkBurst's.
func BenchmarkValidators(b *testing.B) {
	table := &benchTable{}
	for range b.N {
		for _, sc := range scenarios() {
			b.Run(sc.name, func(b *testing.B) { benchSteady(b, table, sc) })
		}
	}
	out := table.markdown(machine())
	fmt.Println(out)
	if err := os.WriteFile(filepath.Join("..", "BENCHMARKS.md"), []byte(out), 0o644); err != nil {
		b.Fatal(err)
	}
}

// CometBFT's defaults (config.DefaultConsensusConfig), written out so that
// the table says what it ran.
var defaultTimeouts = testnet.Options{TimeoutPropose: 3 * time.Second, TimeoutProposeDelta: 500 * time.Millisecond, TimeoutPrevote: time.Second,
	TimeoutPrecommit: time.Second, TimeoutCommit: time.Second}

var tunedTimeouts = testnet.Options{TimeoutPropose: testnet.TunedTimeouts.Propose, TimeoutPrevote: testnet.TunedTimeouts.Prevote,
	TimeoutPrecommit: testnet.TunedTimeouts.Precommit, TimeoutCommit: testnet.TunedTimeouts.Commit}

type scenario struct {
	name       string
	timeouts   testnet.Options
	down       int  // validators killed before the load
	optimistic bool // --optimistic-build (the default); false: built on request
	recommit   time.Duration
}

const steadyRate = 40 // transfers per second

func scenarios() []scenario {
	fast := 100 * time.Millisecond
	return []scenario{
		{name: "tuned/4of4/recommit100ms", timeouts: tunedTimeouts, optimistic: true, recommit: fast},
		{name: "tuned/4of4/geth-default-recommit", timeouts: tunedTimeouts, optimistic: true},
		{name: "tuned/4of4/recommit100ms/on-request", timeouts: tunedTimeouts, recommit: fast},
		{name: "tuned/3of4/recommit100ms", timeouts: tunedTimeouts, down: 1, optimistic: true, recommit: fast},
		{name: "default/4of4/recommit100ms", timeouts: defaultTimeouts, optimistic: true, recommit: fast},
		{name: "default/3of4/recommit100ms", timeouts: defaultTimeouts, down: 1, optimistic: true, recommit: fast},
	}
}

func startBench(b *testing.B, sc scenario) *network {
	var gethArgs []string
	if sc.recommit > 0 {
		gethArgs = []string{"--miner.recommit", sc.recommit.String()}
	}
	nw := newNetwork(b, spec{timeouts: sc.timeouts, gethArgs: gethArgs, flags: func(int) []string {
		return []string{"--log-level", "info", fmt.Sprintf("--optimistic-build=%v", sc.optimistic)}
	}})
	nw.waitHeads(3, 90*time.Second)
	for _, v := range nw.vals[len(nw.vals)-sc.down:] {
		if err := v.proc.Kill(); err != nil {
			b.Fatal(err)
		}
	}
	nw.waitHeads(mustHead(b, nw.vals[0])+2, 60*time.Second, nw.vals[0])
	return nw
}

func benchSteady(b *testing.B, t *benchTable, sc scenario) {
	nw := startBench(b, sc)
	heads := watchHeads(b, nw.vals[0])
	gen := generator(b, loadgen.DevKeys, nw.vals[1].geth.RPCURL())
	window := 30 * time.Second
	start := time.Now()
	r, err := gen.Steady(context.Background(), steadyRate, window, 20*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	times := heads.between(start, start.Add(window))
	if len(times) < 3 || len(r.Latencies) == 0 {
		b.Fatalf("%s: %d blocks, %d transfers included in %s", sc.name, len(times), len(r.Latencies), window)
	}
	var gaps []time.Duration
	for i := 1; i < len(times); i++ {
		gaps = append(gaps, times[i].Sub(times[i-1]))
	}
	blocksPerSec := float64(len(times)-1) / times[len(times)-1].Sub(times[0]).Seconds()
	b.ReportMetric(ms(pct(r.Latencies, 0.5)), "finality-p50-ms")
	b.ReportMetric(blocksPerSec, "blocks/s")
	t.add(sc.name,
		fmt.Sprintf("%.2f blocks/s; block time mean %.0f ms, p50 %.0f ms, p99 %.0f ms", blocksPerSec, 1000/blocksPerSec, ms(pct(gaps, 0.5)), ms(pct(gaps, 0.99))),
		fmt.Sprintf("**p50 %.0f ms**, p99 %.0f ms (%d of %d transfers, %.1f tx/s)", ms(pct(r.Latencies, 0.5)), ms(pct(r.Latencies, 0.99)), r.Included, r.Sent, r.TxPerSec()),
		buildMode(nw, sc))
}

// buildMode says how the proposals' payloads were built.
func buildMode(nw *network, sc scenario) string {
	if !sc.optimistic {
		return "built on request"
	}
	var used, proposals float64
	for _, v := range nw.vals[:len(nw.vals)-sc.down] {
		used += v.metric(`gethcl_optimistic_builds_total{outcome="used"}`)
		proposals += v.metric("gethcl_proposal_build_seconds_count")
	}
	return fmt.Sprintf("started early: %.0f of %.0f proposals", used, proposals)
}

type benchTable struct {
	mu   sync.Mutex
	rows [][]string
}

func (t *benchTable) add(cells ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rows = append(t.rows, cells)
}

func (t *benchTable) markdown(machine string) string {
	var sb strings.Builder
	sb.WriteString("# Stage 4 benchmarks\n\nWritten by `make bench` (e2e/bench_test.go): four validators on loopback, each with its own geth. " +
		fmt.Sprintf("Steady load: %d transfers/s for 30 s sent to validator-1's geth; finality is send → the block is final on that geth. ", steadyRate) +
		"Timeouts: default = CometBFT's (propose 3 s, prevote 1 s, precommit 1 s, commit 1 s); tuned = this stage's testnet command's " +
		fmt.Sprintf("(propose %s, prevote %s, precommit %s, commit %s). ", testnet.TunedTimeouts.Propose, testnet.TunedTimeouts.Prevote, testnet.TunedTimeouts.Precommit, testnet.TunedTimeouts.Commit) +
		"timeout_commit (1 s in both) sets the pace: a height starts that long after the last was decided. " +
		"3of4: one validator killed before the load. recommit100ms: geth runs with --miner.recommit=100ms (how often it refreshes a payload being built; its default is 2 s). " +
		"Payloads are started early by the predicted proposers of rounds 0 and 1 (--optimistic-build, the default) unless the scenario says on-request. " +
		"A burst of 5,000 transfers, against stage 2's in the same run and with a CPU profile: BENCHMARKS-burst.md (`make bench-burst`); full blocks: BENCHMARKS-full-blocks.md. " +
		machine + "\n\n")
	sb.WriteString("| scenario | blocks | finality | payloads |\n|---|---|---|---|\n")
	for _, r := range t.rows {
		sb.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	return sb.String()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1))]
}

// headTimes records when a geth first reports each block as its head.
type headTimes struct {
	mu   sync.Mutex
	seen map[uint64]time.Time
}

func watchHeads(b *testing.B, v *validator) *headTimes {
	h := &headTimes{seen: map[uint64]time.Time{}}
	c, err := ethclient.Dial(v.geth.WSURL())
	if err != nil {
		b.Fatal(err)
	}
	heads := make(chan *types.Header, 1024)
	sub, err := c.SubscribeNewHead(context.Background(), heads)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sub.Unsubscribe(); c.Close() })
	go func() {
		for head := range heads {
			now := time.Now()
			h.mu.Lock()
			if _, ok := h.seen[head.Number.Uint64()]; !ok {
				h.seen[head.Number.Uint64()] = now
			}
			h.mu.Unlock()
		}
	}()
	return h
}

// between returns the head times within [from, to], in order.
func (h *headTimes) between(from, to time.Time) []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []time.Time
	for _, t := range h.seen {
		if !t.Before(from) && !t.After(to) {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	return fmt.Sprintf("Machine: %s, %d vCPUs, Linux %s, %s, geth v1.17.8, CometBFT v0.39.4; measured %s.",
		cpu, runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(), time.Now().UTC().Format("2006-01-02"))
}
