package e2e

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
	"github.com/geth-consensus/tutorial/03-member-nodes/internal/loadgen"
)

// BenchmarkMemberNodes measures stage 3 and prints a table it also writes to
// BENCHMARKS.md (`make bench`; one iteration: each scenario is a whole
// system run):
//
//   - member sync lag under a steady load: when the member's geth makes a
//     block its head minus when the leader's did;
//   - member catch-up: how fast a restarted member applies the blocks it
//     missed, while the leader goes on;
//   - failover: SIGKILL of the leader → the next block in the cluster store;
//   - the leader's per-block overhead and a burst's tx/s, side by side with
//     stage 2 on the same geth binary and genesis. Stage 2 is built from
//     ../02-single-node; a copy of this stage on its own has none, and those
//     rows say so;
//   - the per-block cost of 2-of-3 co-signing over the single signer.
func BenchmarkMemberNodes(b *testing.B) {
	table := &benchTable{}
	for range b.N {
		benchSyncLag(b, table)
		benchCatchUp(b, table)
		benchFailover(b, table)
		stage2 := stage2Binary(b)
		benchBlockOverhead(b, table, stage2)
		benchBurst(b, table, stage2)
		benchCosign(b, table)
	}
	out := table.markdown(machine())
	fmt.Println(out)
	if err := os.WriteFile(filepath.Join("..", "BENCHMARKS.md"), []byte(out), 0o644); err != nil {
		b.Fatal(err)
	}
}

// benchGethArgs are geth flags every system here runs with. geth's log index
// (filtermaps, on by default since v1.16) is rebuilt on every new head; at
// the block rates of these scenarios it takes more than half of geth's CPU
// and makes every figure noisy (stage 2's README has the measurements).
var benchGethArgs = []string{"--history.logs.disable"}

type benchTable struct{ rows [][]string }

func (t *benchTable) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *benchTable) markdown(machine string) string {
	var sb strings.Builder
	sb.WriteString("# Stage 3 benchmarks\n\nWritten by `make bench` (e2e/bench_test.go). " + machine + "\n\n")
	sb.WriteString("A standby candidate's memory over a 10-minute soak at 200 tx/s, and its first blocks once promoted: [BENCHMARKS-soak.md](BENCHMARKS-soak.md) (`make bench-soak`).\n\n")
	sb.WriteString("| scenario | system | result |\n|---|---|---|\n")
	for _, r := range t.rows {
		sb.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	return sb.String()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1))]
}

// headTimes records when each watched geth first reports each block as its
// head, through a newHeads subscription: the moment its RPC users see it.
type headTimes struct {
	mu   sync.Mutex
	seen []map[common.Hash]time.Time
}

func watchHeads(b *testing.B, gethes ...*devnet.GethNode) *headTimes {
	h := &headTimes{seen: make([]map[common.Hash]time.Time, len(gethes))}
	for i, g := range gethes {
		h.seen[i] = map[common.Hash]time.Time{}
		c, err := ethclient.Dial(g.WSURL())
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
				if _, ok := h.seen[i][head.Hash()]; !ok {
					h.seen[i][head.Hash()] = now
				}
				h.mu.Unlock()
			}
		}()
	}
	return h
}

// lags returns, for every block the last geth saw, how long after the
// earliest of the others it did.
func (h *headTimes) lags() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	last := len(h.seen) - 1
	var out []time.Duration
	for hash, t1 := range h.seen[last] {
		var first time.Time
		for _, m := range h.seen[:last] {
			if t0, ok := m[hash]; ok && (first.IsZero() || t0.Before(first)) {
				first = t0
			}
		}
		if !first.IsZero() {
			out = append(out, t1.Sub(first))
		}
	}
	return out
}

// benchSyncLag, at a 250 ms block time: one candidate and a member with
// empty blocks (the CL's path and geth's import alone), then two
// candidates and a member under a steady 200 tx/s sent to the member's geth
// (they reach the leader through geth's peering).
func benchSyncLag(b *testing.B, t *benchTable) {
	for _, v := range []struct {
		candidates int
		rate       float64 // tx/s; 0: no load
	}{{1, 0}, {2, 200}} {
		c := newClusterWith(b, benchGethArgs, v.candidates, 1, func(cfg *config.Config) {
			cfg.BlockMode, cfg.BlockTime, cfg.MaxDrift, cfg.LogLevel = "block-time", 250*time.Millisecond, time.Hour, "warn"
		})
		c.waitLeader(20*time.Second, nil)
		member := c.members()[0]
		var gethes []*devnet.GethNode
		for _, cn := range c.candidates() {
			gethes = append(gethes, cn.geth)
		}
		heads := watchHeads(b, append(gethes, member.geth)...)
		load := "no transactions"
		if v.rate > 0 {
			r, err := generator(b, member.geth.RPCURL()).Steady(context.Background(), v.rate, 15*time.Second, 30*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			load = fmt.Sprintf("%.0f tx/s sent to the member's geth (%d/%d included, inclusion p50 %.0f ms)", v.rate, r.Included, r.Sent, ms(r.Percentile(50)))
		} else {
			time.Sleep(15 * time.Second) // the measurement window
		}
		c.waitHeads(c.clusterHead(), 30*time.Second, member)
		lags := heads.lags()
		c.stop()
		settle(c.net)
		if len(lags) < 20 {
			b.Fatalf("the member's geth reported %d blocks the candidates' had", len(lags))
		}
		scenario := ""
		if v.rate == 0 {
			scenario = "member sync lag: when the member's geth makes a block its head, after the leader's geth did (newHeads on both); 250 ms block time, 15 s"
		}
		t.add(scenario, fmt.Sprintf("%d candidate(s) + 1 member, %s", v.candidates, load),
			fmt.Sprintf("p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d blocks", ms(pct(lags, 0.5)), ms(pct(lags, 0.99)), ms(pct(lags, 1)), len(lags)))
		b.ReportMetric(ms(pct(lags, 0.5)), fmt.Sprintf("sync-lag-p50-ms-%.0ftx/s", v.rate))
		b.ReportMetric(ms(pct(lags, 0.99)), fmt.Sprintf("sync-lag-p99-ms-%.0ftx/s", v.rate))
	}
}

// benchCatchUp: a member SIGKILLed while the leader makes catchUpBlocks
// empty blocks 25 ms apart, then started again, `rounds` times: the blocks
// it missed over the time from its start to its geth holding them all. The
// leader goes on meanwhile, on the same two cores.
func benchCatchUp(b *testing.B, t *benchTable) {
	const catchUpBlocks = 600
	var rates []float64
	for range rounds {
		c := newClusterWith(b, benchGethArgs, 1, 1, func(cfg *config.Config) {
			cfg.BlockMode, cfg.BlockTime, cfg.BuildWait, cfg.MaxDrift, cfg.LogLevel = "block-time", 25*time.Millisecond, 0, 24*time.Hour, "warn"
		})
		leader := c.waitLeader(30*time.Second, nil)
		member := c.members()[0]
		c.waitHeads(5, 30*time.Second)
		if err := member.proc.Kill(); err != nil {
			b.Fatal(err)
		}
		from, err := member.head()
		if err != nil {
			b.Fatal(err)
		}
		c.waitHeads(from+catchUpBlocks, 2*time.Minute, leader)
		target := c.clusterHead()
		start := time.Now()
		c.start(member)
		c.waitHeads(target, 2*time.Minute, member)
		rates = append(rates, float64(target-from)/time.Since(start).Seconds())
		c.stop()
		settle(c.net)
	}
	rate := median(rates, func(r float64) float64 { return r })
	t.add(fmt.Sprintf("member catch-up: a member SIGKILLed for %d empty blocks (25 ms block time), then started; from its start to its geth at the head it missed, median of %d rounds", catchUpBlocks, rounds),
		"1 candidate + 1 member, the leader going on", fmt.Sprintf("%.0f blocks/s; rounds: %s blocks/s", rate, joinRates(rates)))
	b.ReportMetric(rate, "catch-up-blocks/s")
}

// joinRates formats rates for a table cell.
func joinRates(rates []float64) string {
	s := make([]string, len(rates))
	for i, r := range rates {
		s[i] = strconv.FormatFloat(r, 'f', 0, 64)
	}
	return strings.Join(s, ", ")
}

// benchFailover: SIGKILL of the leader, `rounds` times, at a 250 ms block
// time; the time to the next block in the cluster store.
func benchFailover(b *testing.B, t *benchTable) {
	const rounds = 5
	c := newClusterWith(b, benchGethArgs, 2, 1, func(cfg *config.Config) {
		cfg.BlockMode, cfg.BlockTime, cfg.LogLevel = "block-time", 250*time.Millisecond, "warn"
	})
	var failovers []time.Duration
	c.waitHeads(1, 60*time.Second) // the cluster store holds genesis once a block is made
	for range rounds {
		leader := c.waitLeader(20*time.Second, nil)
		c.waitHeads(c.clusterHead()+10, 60*time.Second)
		before := c.clusterHead()
		if err := leader.proc.Kill(); err != nil {
			b.Fatal(err)
		}
		killed := time.Now()
		eventually(b, 20*time.Second, func() error {
			if h := c.clusterHead(); h <= before+1 { // +1: a commit in flight at the kill
				return fmt.Errorf("cluster head %d", h)
			}
			return nil
		})
		failovers = append(failovers, time.Since(killed))
		c.start(leader)
	}
	cfg := c.nodes[0].cfg
	c.stop()
	settle(c.net)
	var all []string
	for _, f := range failovers {
		all = append(all, fmt.Sprintf("%.2f", f.Seconds()))
	}
	t.add(fmt.Sprintf("failover: SIGKILL of the leader → the next block in the cluster store, %d rounds", rounds),
		fmt.Sprintf("2 candidates + 1 member, lease TTL %s, renew %s", cfg.LeaseTTL, cfg.LeaseRenew),
		fmt.Sprintf("p50 %.2f s, max %.2f s; rounds: %s s", pct(failovers, 0.5).Seconds(), pct(failovers, 1).Seconds(), strings.Join(all, ", ")))
	b.ReportMetric(float64(pct(failovers, 0.5).Milliseconds()), "failover-p50-ms")
	b.ReportMetric(float64(pct(failovers, 1).Milliseconds()), "failover-max-ms")
}

// rounds of the side-by-side scenarios; each system's median round is
// reported, so one noisy run on a shared machine decides nothing.
const rounds = 3

// system is a running block producer: the geth transactions go to and the
// processes to stop afterwards.
type system struct {
	geth   *devnet.GethNode
	health string // a stage 3 leader's --health-addr ("" for stage 2)
	stop   func()
}

// stage2Binary builds stage 2 from the monorepo ("" when this stage was
// copied out on its own).
func stage2Binary(b testing.TB) string {
	dir, err := devnet.FindUp("02-single-node")
	if err != nil {
		b.Logf("stage 2 not found (%v): the side-by-side rows are left out", err)
		return ""
	}
	bin := filepath.Join(b.TempDir(), "single-node")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build stage 2: %v\n%s", err, out)
	}
	return bin
}

// runStage2 starts one geth and stage 2's binary on it with extra flags.
func runStage2(b *testing.B, bin string, flags ...string) system {
	n := devnet.StartT(b, devnet.Config{GethNodes: 1, GethArgs: benchGethArgs})
	port, err := devnet.FreePort()
	if err != nil {
		b.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p := &devnet.Process{Name: "single-node", Path: bin, LogPath: filepath.Join(b.TempDir(), "single-node.log"),
		Args: append([]string{"--instance-id", "node-1", "--eth-client-url", n.Geth[0].EngineURL(),
			"--jwt-secret", mustFindUp(b, "jwt.hex"), "--genesis", mustFindUp(b, "genesis.json"),
			"--data-dir", b.TempDir(), "--health-addr", addr, "--log-level", "warn"}, flags...)}
	if err := p.Start(); err != nil {
		b.Fatal(err)
	}
	eventually(b, 30*time.Second, func() error {
		if code, body := httpGet(addr, "/readyz"); code != 200 {
			return fmt.Errorf("stage 2 not ready: %d %s", code, body)
		}
		return nil
	})
	return system{geth: n.Geth[0], stop: func() { _ = p.Stop(10 * time.Second); settle(n) }}
}

// runStage3 starts one leader candidate and members followers.
func runStage3(b *testing.B, members int, mutate func(*config.Config)) system {
	c := newClusterWith(b, benchGethArgs, 1, members, func(cfg *config.Config) { cfg.LogLevel = "warn"; mutate(cfg) })
	leader := c.waitLeader(30*time.Second, nil)
	return system{geth: leader.geth, health: leader.cfg.HealthAddr, stop: func() { c.stop(); settle(c.net) }}
}

// settle stops a network and flushes the page cache, so that one
// scenario's write-back does not slow the next one down.
func settle(n *devnet.Network) {
	n.Stop()
	syscall.Sync()
}

// variant is one system under a side-by-side scenario.
type variant struct {
	name  string
	start func() system
}

// variants are stage 2 and stage 3 with none and with one member, all
// configured alike by the same block-mode settings.
func variants(b *testing.B, stage2 string, mode string, blockTime, buildWait time.Duration) []variant {
	vs := []variant{}
	if stage2 != "" {
		vs = append(vs, variant{"stage 2", func() system {
			return runStage2(b, stage2, "--block-mode", mode, "--block-time", blockTime.String(), "--build-wait", buildWait.String(),
				"--max-idle", "1s", "--max-drift", "24h")
		}})
	}
	mutate := func(cfg *config.Config) {
		cfg.BlockMode, cfg.BlockTime, cfg.BuildWait, cfg.MaxIdle, cfg.MaxDrift = mode, blockTime, buildWait, time.Second, 24*time.Hour
	}
	return append(vs,
		variant{"stage 3 leader alone", func() system { return runStage3(b, 0, mutate) }},
		variant{"stage 3 leader + 1 member", func() system { return runStage3(b, 1, mutate) }})
}

// sideBySide runs scenario on every variant, `rounds` times, rotating which
// goes first, and returns each variant's results in order.
func sideBySide[R any](vs []variant, scenario func(system) R) [][]R {
	out := make([][]R, len(vs))
	for round := range rounds {
		for k := range vs {
			i := (k + round) % len(vs)
			s := vs[i].start()
			out[i] = append(out[i], scenario(s))
			s.stop()
		}
	}
	return out
}

func median[R any](rs []R, key func(R) float64) R {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b R) int { return cmp.Compare(key(a), key(b)) })
	return s[len(s)/2]
}

// benchBlockOverhead: empty blocks back to back (block time 1 µs, build
// wait 0) for 5 s; the time per block, against stage 2's.
func benchBlockOverhead(b *testing.B, t *benchTable, stage2 string) {
	vs := variants(b, stage2, "block-time", time.Microsecond, 0)
	rates := sideBySide(vs, func(s system) float64 { return blocksPerSecond(b, s, 5*time.Second) })
	base := 0.0
	for i, v := range vs {
		rate := median(rates[i], func(r float64) float64 { return r })
		cell := fmt.Sprintf("%.0f blocks/s, %.2f ms per block", rate, 1000/rate)
		if v.name == "stage 2" {
			base = 1000 / rate
		} else if base > 0 {
			cell += fmt.Sprintf(" (+%.2f ms over stage 2)", 1000/rate-base)
		}
		scenario := ""
		if i == 0 {
			scenario = fmt.Sprintf("per-block cost: empty blocks back to back (block time 1 µs, build wait 0) for 5 s, median of %d rounds", rounds)
		}
		t.add(scenario, v.name, cell)
		b.ReportMetric(1000/rate, strings.ReplaceAll(v.name, " ", "-")+"-ms/block")
	}
	if stage2 == "" {
		t.add("", "stage 2", "not measured: ../02-single-node not found (this stage was copied out alone)")
	}
}

// blocksPerSecond counts the blocks s's geth gets over window.
func blocksPerSecond(b *testing.B, s system, window time.Duration) float64 {
	eth, err := ethclient.Dial(s.geth.RPCURL())
	if err != nil {
		b.Fatal(err)
	}
	defer eth.Close()
	start, err := eth.BlockNumber(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	begin := time.Now()
	time.Sleep(window) // the measurement window
	end, err := eth.BlockNumber(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return float64(end-start) / time.Since(begin).Seconds()
}

// benchCosign: the per-block cost of 2-of-3 co-signing over the single
// signer, on one cluster shape (two candidates and a member, each on its
// own geth; with co-signing each holds one of the three keys): empty
// blocks back to back for 5 s, and 1 s blocks, where the figure is the
// leader's block duration (forkchoiceUpdated with attributes to the block
// final in its geth), which with co-signing includes the wait for a second
// signature.
func benchCosign(b *testing.B, t *benchTable) {
	cosigners := []string{devKeyAddress(b, 1).Hex(), devKeyAddress(b, 2).Hex(), devKeyAddress(b, 3).Hex()}
	vs := func(blockTime, buildWait time.Duration) []variant {
		run := func(k int) system {
			c := newClusterWith(b, benchGethArgs, 2, 1, func(cfg *config.Config) {
				cfg.LogLevel = "warn"
				cfg.BlockMode, cfg.BlockTime, cfg.BuildWait, cfg.MaxIdle, cfg.MaxDrift = "block-time", blockTime, buildWait, time.Second, 24*time.Hour
				if k > 1 {
					cfg.Cosigners, cfg.Threshold = cosigners, k
					if cfg.Mode == "member" {
						cfg.SignerKey = devnet.DevKeys[3]
					}
				}
			})
			leader := c.waitLeader(30*time.Second, nil)
			return system{geth: leader.geth, health: leader.cfg.HealthAddr, stop: func() { c.stop(); settle(c.net) }}
		}
		return []variant{
			{"single signer (2 candidates + 1 member)", func() system { return run(1) }},
			{"2 of 3 co-signers (the same nodes)", func() system { return run(2) }},
		}
	}
	backToBack := vs(time.Microsecond, 0)
	rates := sideBySide(backToBack, func(s system) float64 { return blocksPerSecond(b, s, 5*time.Second) })
	base := 0.0
	for i, v := range backToBack {
		rate := median(rates[i], func(r float64) float64 { return r })
		cell := fmt.Sprintf("%.0f blocks/s, %.2f ms per block", rate, 1000/rate)
		if i == 0 {
			base = 1000 / rate
		} else {
			cell += fmt.Sprintf(" (+%.2f ms)", 1000/rate-base)
		}
		scenario := ""
		if i == 0 {
			scenario = fmt.Sprintf("co-signing, empty blocks back to back (block time 1 µs, build wait 0) for 5 s, median of %d rounds", rounds)
		}
		t.add(scenario, v.name, cell)
		b.ReportMetric(1000/rate, "cosign-k"+strconv.Itoa(i+1)+"-ms/block")
	}
	paced := vs(time.Second, config.Default().BuildWait)
	durations := sideBySide(paced, func(s system) float64 {
		const blocks = 10
		sum, count := metricAt(s.health, "gethcl_block_duration_seconds_sum"), metricAt(s.health, "gethcl_block_duration_seconds_count")
		eventually(b, (blocks+5)*time.Second, func() error {
			if n := metricAt(s.health, "gethcl_block_duration_seconds_count"); n < count+blocks {
				return fmt.Errorf("%v blocks, want %v", n-count, blocks)
			}
			return nil
		})
		return 1000 * (metricAt(s.health, "gethcl_block_duration_seconds_sum") - sum) / (metricAt(s.health, "gethcl_block_duration_seconds_count") - count)
	})
	for i, v := range paced {
		d := median(durations[i], func(d float64) float64 { return d })
		cell := fmt.Sprintf("%.2f ms per block", d)
		if i == 0 {
			base = d
		} else {
			cell += fmt.Sprintf(" (+%.2f ms)", d-base)
		}
		scenario := ""
		if i == 0 {
			scenario = fmt.Sprintf("co-signing at 1 s blocks: the leader's mean block duration over 10 blocks, median of %d rounds", rounds)
		}
		t.add(scenario, v.name, cell)
	}
}

// benchBurst: 5,000 transfers in batches of 200 to the producer's geth,
// on-demand blocks.
func benchBurst(b *testing.B, t *benchTable, stage2 string) {
	vs := variants(b, stage2, "on-demand", time.Second, time.Millisecond)
	results := sideBySide(vs, func(s system) loadgen.Result {
		r, err := generator(b, s.geth.RPCURL()).Burst(context.Background(), 5000, 200, 60*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		return r
	})
	for i, v := range vs {
		r := median(results[i], loadgen.Result.TxPerSec)
		var all []string
		for _, x := range results[i] {
			all = append(all, fmt.Sprintf("%.0f", x.TxPerSec()))
		}
		scenario := ""
		if i == 0 {
			scenario = fmt.Sprintf("burst of 5,000 transfers in batches of 200, on-demand blocks (median of %d rounds by tx/s)", rounds)
		}
		t.add(scenario, v.name, fmt.Sprintf("%.0f tx/s, %.1f Mgas/s; inclusion p50 %.0f ms, p99 %.0f ms (%d/%d included, %d blocks); rounds: %s tx/s",
			r.TxPerSec(), r.MgasPerSec(), ms(r.Percentile(50)), ms(r.Percentile(99)), r.Included, r.Sent, r.Blocks, strings.Join(all, ", ")))
		b.ReportMetric(r.TxPerSec(), strings.ReplaceAll(v.name, " ", "-")+"-burst-tx/s")
	}
	if stage2 == "" {
		t.add("", "stage 2", "not measured: ../02-single-node not found (this stage was copied out alone)")
	}
}

func generator(b *testing.B, rpcURL string) *loadgen.Generator {
	keys, err := loadgen.ParseKeys(loadgen.DevKeys)
	if err != nil {
		b.Fatal(err)
	}
	g, err := loadgen.New(context.Background(), rpcURL, keys)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(g.Close)
	return g
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
	return fmt.Sprintf("Machine: %s, %d vCPUs, Linux %s, %s, %s; measured %s.",
		cpu, runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(), "geth v1.17.8 (hash-scheme archive, as the devnet runs it; log index off)",
		time.Now().UTC().Format("2006-01-02"))
}
