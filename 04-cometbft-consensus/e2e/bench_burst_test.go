package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/loadgen"
)

// BenchmarkBurst sends 5,000 transfers at once to validator-1's geth on
// four validators (tuned timeouts, timeout_commit 1 s, geth
// --miner.recommit=100ms) and writes BENCHMARKS-burst.md:
//
//   - tx/s from the first send to the last inclusion, and stage 2's on the
//     same machine in the same `make bench-burst` run (STAGE2_BURST_TXS,
//     which the Makefile takes from stage 2's BenchmarkBurst);
//   - every proposal made during the burst, and the empty ones made while
//     some validator's geth had held executable transactions for more than
//     a block time (txpool_status polled every 25 ms);
//   - where the two cores went: CPU seconds of every process during the
//     burst, and the top of a CPU profile of the geth the burst was sent to.
func BenchmarkBurst(b *testing.B) {
	const blockTime = time.Second // about: timeout_commit, and what a height costs
	var out string
	for range b.N {
		nw := startBench(b, scenario{name: "burst", timeouts: tunedTimeouts, optimistic: true, recommit: 100 * time.Millisecond})
		ceiling, ingestCPU := ingestOnly(b, nw)
		pools := watchPools(b, nw)
		before := appCounters(b, nw)
		cpu := startCPU(nw)
		profile := filepath.Join(b.TempDir(), "geth-1.cpu.pprof")
		if _, err := nw.vals[1].geth.Call(context.Background(), "debug_startCPUProfile", profile); err != nil {
			b.Fatal(err)
		}
		gen := generator(b, loadgen.DevKeys, nw.vals[1].geth.RPCURL())
		start := time.Now()
		r, err := gen.Burst(context.Background(), 5000, 200, 90*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		end := start.Add(r.Duration)
		if _, err := nw.vals[1].geth.Call(context.Background(), "debug_stopCPUProfile"); err != nil {
			b.Fatal(err)
		}
		usage := cpu.stop()
		pools.stop()
		counted := appCounters(b, nw).minus(before)
		if r.Included != r.Sent {
			b.Fatalf("%d of %d transfers included", r.Included, r.Sent)
		}
		var props []proposal
		for _, v := range nw.vals {
			props = append(props, proposals(b, v, start, end)...)
		}
		slices.SortFunc(props, func(x, y proposal) int { return x.at.Compare(y.at) })
		var empty, emptyWhileHeld []proposal
		for _, p := range props {
			if p.txs == 0 {
				empty = append(empty, p)
				if pools.heldSince(p.at, blockTime) {
					emptyWhileHeld = append(emptyWhileHeld, p)
				}
			}
		}
		b.ReportMetric(r.TxPerSec(), "tx/s")
		b.ReportMetric(float64(len(emptyWhileHeld)), "empty-while-held")

		var sb strings.Builder
		sb.WriteString("# Stage 4 benchmarks: a burst of transfers\n\nWritten by `make bench-burst` (e2e/bench_burst_test.go): 5,000 transfers sent at once, " +
			"in batches of 200, to validator-1's geth of four validators on loopback (tuned timeouts, timeout_commit 1 s, geth --miner.recommit=100ms). " + machine() + "\n\n")
		fmt.Fprintf(&sb, "| | |\n|---|---|\n| stage 4 | **%.0f tx/s**: 5,000 final in %.1f s (sent in %.1f s), %d blocks; final p50 %.0f ms, p99 %.0f ms |\n",
			r.TxPerSec(), r.Duration.Seconds(), r.Sending.Seconds(), r.Blocks, ms(pct(r.Latencies, 0.5)), ms(pct(r.Latencies, 0.99)))
		fmt.Fprintf(&sb, "| the same geths, every validator paused | 5,000 more sent the same way before the run, with every validator SIGSTOPped (geth takes and gossips them; no consensus, no block): accepted in %.1f s, **%.0f tx/s**, a ceiling for stage 4 on this machine |\n",
			ceiling.Sending.Seconds(), float64(ceiling.Sent)/ceiling.Sending.Seconds())
		if ref, err := strconv.ParseFloat(os.Getenv("STAGE2_BURST_TXS"), 64); err == nil && ref > 0 {
			fmt.Fprintf(&sb, "| stage 2, same run | %.0f tx/s (its BenchmarkBurst, on-demand mode, median of its rounds): stage 4 reaches **%.0f%%** |\n", ref, 100*r.TxPerSec()/ref)
		} else {
			sb.WriteString("| stage 2, same run | not measured: run `make bench-burst` from the repository root |\n")
		}
		fmt.Fprintf(&sb, "| proposals during the burst | %d, %d of them empty; **%d empty while a validator's geth had held executable transactions for more than %s** |\n\n",
			len(props), len(empty), len(emptyWhileHeld), blockTime)
		fmt.Fprintf(&sb, "Payloads prepared ahead, over the four validators: %s. Payloads empty although the pending block held transactions: %.0f; cut short by PrepareProposal's budget: %.0f.\n\n",
			counted.outcomes(), counted["gethcl_errors_total{kind=\"empty_payload\"}"], counted["gethcl_errors_total{kind=\"overdue_payload\"}"])
		sb.WriteString("Proposals, by the time the proposer made them (+ seconds after the first send; `txs` in the payload):\n\n")
		for _, p := range props {
			how := "started early"
			if !p.early {
				how = "built on request"
			}
			fmt.Fprintf(&sb, "- +%.2f s height %d, validator-%d: %d txs, %s, PrepareProposal took %s", p.at.Sub(start).Seconds(), p.height, p.validator, p.txs, how, p.elapsed)
			if p.txs == 0 && p.why != "" {
				sb.WriteString(" (" + p.why + ")")
			}
			sb.WriteString("\n")
		}
		sb.WriteString("\n## Where the two cores went\n\n" + usage.markdown() + "\n" + usage.bound(r))
		fmt.Fprintf(&sb, " Taking the transfers in alone, with every validator paused (the ceiling above), cost %.2f ms of CPU per transfer over the four geths (each checks, pools and gossips every transfer).\n\n",
			ingestCPU.perTx(ceiling.Sent).Seconds()*1000)
		top, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount=25", gethBinary(b), profile).CombinedOutput()
		if err != nil {
			b.Fatalf("go tool pprof: %v\n%s", err, top)
		}
		sb.WriteString("The geth the burst was sent to (validator-1's), `go tool pprof -top -cum` of its CPU profile over the burst:\n\n```\n" +
			pprofTop(string(top)) + "```\n")
		out = sb.String()
		nw.stop()
		keepLogs(b, nw, "burst")
	}
	fmt.Println(out)
	if err := os.WriteFile(filepath.Join("..", "BENCHMARKS-burst.md"), []byte(out), 0o644); err != nil {
		b.Fatal(err)
	}
}

// keepLogs copies every geth and validator log to $BENCH_LOGS/name, when
// BENCH_LOGS is set, before the test's temporary directories go: the
// proposals are explained by geth's "Updated payload" lines and
// CometBFT's rounds.
func keepLogs(b *testing.B, nw *network, name string) {
	if os.Getenv("BENCH_LOGS") == "" {
		return
	}
	dir := filepath.Join(os.Getenv("BENCH_LOGS"), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	var paths []string
	for _, p := range nw.net.Processes() {
		paths = append(paths, p.LogPath)
	}
	for _, v := range nw.vals {
		paths = append(paths, v.proc.LogPath)
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("logs kept in %s", dir)
}

// ingestOnly sends a burst to validator-1's geth with every validator
// paused (SIGSTOP): geth takes the transfers and gossips them to the other
// three geths, which are synced and peered as in the real run, and nothing
// else uses the CPU. How fast that goes bounds any stage 4 figure on the
// machine. The validators are then resumed and the chain includes the
// transfers before the measured run.
func ingestOnly(b *testing.B, nw *network) (loadgen.Result, cpuUsage) {
	for _, v := range nw.vals {
		if err := v.proc.Pause(); err != nil {
			b.Fatal(err)
		}
	}
	cpu := startCPU(nw)
	r, err := generator(b, loadgen.DevKeys, nw.vals[1].geth.RPCURL()).Burst(context.Background(), 5000, 200, 0)
	if err != nil {
		b.Fatal(err)
	}
	// Until the four geths hold every transfer: gossip goes on after the
	// last send.
	if err := waitPools(nw, r.Sent, time.Minute); err != nil {
		b.Logf("the CPU of taking the transfers in is measured without all of them: %v", err)
	}
	usage := cpu.stop()
	for _, v := range nw.vals {
		if err := v.proc.Resume(); err != nil {
			b.Fatal(err)
		}
	}
	eventually(b, 2*time.Minute, func() error {
		if n, err := poolSize(nw.vals[1]); err != nil || n > 0 {
			return fmt.Errorf("the paused run's transfers not all included: %d in the pool (%v)", n, err)
		}
		return nil
	})
	return r, usage
}

// waitPools waits until every validator's geth holds n transactions
// (pending or queued), polling txpool_status.
func waitPools(nw *network, n int, within time.Duration) error {
	return poll(within, 20*time.Millisecond, func() error {
		for _, v := range nw.vals {
			if got, err := poolSize(v); err != nil || got < n {
				return fmt.Errorf("validator-%d's geth holds %d of %d transactions (%v)", v.i, got, n, err)
			}
		}
		return nil
	})
}

// poolSize is the number of transactions v's geth holds, pending or queued.
func poolSize(v *validator) (int, error) {
	var st struct{ Pending, Queued hexutil.Uint64 }
	raw, err := v.geth.Call(context.Background(), "txpool_status")
	if err == nil {
		err = json.Unmarshal(raw, &st)
	}
	return int(st.Pending + st.Queued), err
}

// pprofTop keeps pprof's summary lines and its table.
func pprofTop(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") || l == "" {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n") + "\n"
}

func gethBinary(b *testing.B) string {
	p, err := devnet.GethBinary(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// proposal is a "proposing" line of a validator's log.
type proposal struct {
	at        time.Time
	validator int
	height    int64
	txs       int
	why       string // the app's warning, for an empty payload
	early     bool   // started before PrepareProposal (optimistic)
	elapsed   string // PrepareProposal's duration
}

// proposals reads the proposals validator v made between from and to.
func proposals(b *testing.B, v *validator, from, to time.Time) []proposal {
	f, err := os.Open(v.proc.LogPath)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var out []proposal
	why := map[string]string{} // execution number → why its payload was empty
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := logFields(sc.Text())
		if strings.Contains(sc.Text(), `msg="geth's payload is empty"`) {
			why[fields["number"]] = fmt.Sprintf("overdue=%s, pending block %s txs, %s after forkchoiceUpdated", fields["overdue"], fields["pending_txs"], fields["since_start"])
		}
		if fields["msg"] != "proposing" {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, fields["time"])
		if err != nil {
			b.Fatalf("validator-%d log: %v", v.i, err)
		}
		if at.Before(from) || at.After(to) {
			continue
		}
		h, err1 := strconv.ParseInt(fields["height"], 10, 64)
		n, err2 := strconv.Atoi(fields["txs"])
		if err1 != nil || err2 != nil {
			b.Fatalf("validator-%d log: %q", v.i, sc.Text())
		}
		out = append(out, proposal{at: at, validator: v.i, height: h, txs: n, why: why[fields["number"]],
			early: fields["optimistic"] == "true", elapsed: fields["elapsed"]})
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	return out
}

// logFields splits a slog text line into its key=value pairs (values
// without spaces, as the ones read here are).
func logFields(line string) map[string]string {
	m := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			m[k] = v
		}
	}
	return m
}

// poolWatch polls every geth's txpool_status.
type poolWatch struct {
	mu      sync.Mutex
	samples [][]poolSample // by validator
	cancel  context.CancelFunc
	done    sync.WaitGroup
}

type poolSample struct {
	at      time.Time
	pending uint64
}

func watchPools(b *testing.B, nw *network) *poolWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &poolWatch{samples: make([][]poolSample, len(nw.vals)), cancel: cancel}
	for i, v := range nw.vals {
		c, err := rpc.Dial(v.geth.RPCURL())
		if err != nil {
			b.Fatal(err)
		}
		w.done.Add(1)
		go func() {
			defer w.done.Done()
			defer c.Close()
			tick := time.NewTicker(25 * time.Millisecond)
			defer tick.Stop()
			for {
				var st struct{ Pending hexutil.Uint64 }
				if err := c.CallContext(ctx, &st, "txpool_status"); err == nil {
					w.mu.Lock()
					w.samples[i] = append(w.samples[i], poolSample{at: time.Now(), pending: uint64(st.Pending)})
					w.mu.Unlock()
				}
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	return w
}

func (w *poolWatch) stop() { w.cancel(); w.done.Wait() }

// heldSince reports whether some geth's every sample in [at-d, at] showed
// executable transactions (and there was one at or before at-d).
func (w *poolWatch) heldSince(at time.Time, d time.Duration) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, samples := range w.samples {
		held, covered := true, false
		for _, s := range samples {
			if s.at.After(at) {
				break
			}
			if s.at.Before(at.Add(-d)) {
				covered = s.pending > 0
				continue
			}
			if s.pending == 0 {
				held = false
			}
		}
		if held && covered {
			return true
		}
	}
	return false
}

// cpuWatch measures the CPU time every process of the network spends.
type cpuWatch struct {
	start       time.Time
	procs       []cpuProc
	self        time.Duration
	busy, total float64 // machine-wide jiffies at start
}

type cpuProc struct {
	name string
	pid  int
	used time.Duration
}

func startCPU(nw *network) *cpuWatch {
	c := &cpuWatch{start: time.Now()}
	for _, v := range nw.vals {
		c.procs = append(c.procs, cpuProc{name: fmt.Sprintf("geth-%d", v.i), pid: v.geth.Pid()}, cpuProc{name: fmt.Sprintf("validator-%d", v.i), pid: v.proc.Pid()})
	}
	for i := range c.procs {
		c.procs[i].used = procCPU(c.procs[i].pid)
	}
	c.self = procCPU(os.Getpid())
	c.busy, c.total = machineCPU()
	return c
}

// stop returns the CPU each process used since startCPU.
func (c *cpuWatch) stop() cpuUsage {
	u := cpuUsage{wall: time.Since(c.start)}
	for _, p := range c.procs {
		u.rows = append(u.rows, cpuRow{p.name, procCPU(p.pid) - p.used})
	}
	u.rows = append(u.rows, cpuRow{"this benchmark (load generator: signing, sending, watching)", procCPU(os.Getpid()) - c.self})
	busy, total := machineCPU()
	u.busyShare = (busy - c.busy) / (total - c.total)
	return u
}

type cpuUsage struct {
	wall      time.Duration
	rows      []cpuRow
	busyShare float64
}

type cpuRow struct {
	name string
	used time.Duration
}

func (u cpuUsage) markdown() string {
	var sb strings.Builder
	var sum time.Duration
	for _, r := range u.rows {
		sum += r.used
	}
	fmt.Fprintf(&sb, "Over the burst's %.1f s of wall time the machine's CPUs were **%.0f%% busy** (/proc/stat), and the processes used %.1f CPU-seconds:\n\n",
		u.wall.Seconds(), 100*u.busyShare, sum.Seconds())
	sb.WriteString("| process | CPU-seconds | share |\n|---|---|---|\n")
	rows := slices.Clone(u.rows)
	slices.SortFunc(rows, func(a, b cpuRow) int { return int(b.used - a.used) })
	for _, r := range rows {
		fmt.Fprintf(&sb, "| %s | %.2f | %.0f%% |\n", r.name, r.used.Seconds(), 100*float64(r.used)/float64(sum))
	}
	return sb.String()
}

// bound says how fast the burst could have gone with the machine's cores
// busy for it alone, at the CPU time each transfer cost in this run.
func (u cpuUsage) bound(r loadgen.Result) string {
	perTx := u.perTx(r.Sent)
	cores := runtime.NumCPU()
	most := float64(cores) * float64(time.Second) / float64(perTx)
	return fmt.Sprintf("Each transfer cost **%.2f ms of CPU** over the processes above (four geths each check its signature, pool it and execute it; "+
		"four CometBFT nodes; the load generator). At that cost the machine's %d cores carry at most **%.0f tx/s**; the burst ran at %.0f.",
		perTx.Seconds()*1000, cores, most, r.TxPerSec())
}

// perTx is the CPU time the processes used per transfer sent.
func (u cpuUsage) perTx(sent int) time.Duration {
	var sum time.Duration
	for _, r := range u.rows {
		sum += r.used
	}
	return sum / time.Duration(sent)
}

// counters are Prometheus counter values by series, summed over the
// validators.
type counters map[string]float64

// appCounters reads the app's outcome counters from every validator's
// /metrics.
func appCounters(b *testing.B, nw *network) counters {
	c := counters{}
	for _, v := range nw.vals {
		resp, err := http.Get("http://" + v.health + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "gethcl_optimistic_builds_total{") && !strings.HasPrefix(line, "gethcl_errors_total{") {
				continue
			}
			series, value, _ := strings.Cut(line, " ")
			f, _ := strconv.ParseFloat(value, 64)
			c[series] += f
		}
		resp.Body.Close()
	}
	return c
}

func (c counters) minus(before counters) counters {
	out := counters{}
	for k, v := range c {
		out[k] = v - before[k]
	}
	return out
}

// outcomes lists the optimistic builds by outcome.
func (c counters) outcomes() string {
	var parts []string
	for _, o := range []string{"used", "stale", "lost", "unclaimed"} {
		parts = append(parts, fmt.Sprintf("%s %.0f", o, c["gethcl_optimistic_builds_total{outcome=\""+o+"\"}"]))
	}
	return strings.Join(parts, ", ")
}

// procCPU is a process's user + system CPU time (/proc/PID/stat fields 14
// and 15, in clock ticks of 1/100 s on Linux).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from 3 on
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// machineCPU returns the busy and total jiffies of /proc/stat's cpu line.
func machineCPU() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 1
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}
