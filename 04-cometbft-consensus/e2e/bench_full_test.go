package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/loadgen"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/testnet"
)

// fullBlockPropose is the least timeout_propose that decided every full
// block of this benchmark in round 0 on a 2-vCPU machine running the four
// validators, their geths and the load (1.5 s did not; README: Full blocks).
const fullBlockPropose = 2200 * time.Millisecond

// BenchmarkFullBlocks measures blocks filled to the gas limit with the
// largest transactions geth's pool takes: 180 transactions of 130,000 zero
// bytes of calldata (1.32 Mgas each, four blocks of 59.4 Mgas, 5.9 MB
// each), sent at once, on geth --dev --dev.period 1 and on four validators
// with the testnet command's settings (timeout_commit 1 s, geth
// --miner.recommit=100ms), sent to validator-1's geth, once with the
// testnet's timeout_propose and once with fullBlockPropose. One round
// each: a stage 4 round takes minutes on two vCPUs. It writes
// BENCHMARKS-full-blocks.md.
func BenchmarkFullBlocks(b *testing.B) {
	var rows []string
	burst := func(rpcURL string) loadgen.Result {
		g := generator(b, loadgen.DevKeys, rpcURL)
		g.Calldata = loadgen.MaxCalldata
		r, err := g.Burst(context.Background(), 180, 20, 5*time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	cell := func(r loadgen.Result) string {
		return fmt.Sprintf("%.2f MB/s, %.1f Mgas/s; final p50 %.1f s, p99 %.1f s (%d/%d, %d blocks)", r.MBPerSec(), r.MgasPerSec(),
			pct(r.Latencies, 0.5).Seconds(), pct(r.Latencies, 0.99).Seconds(), r.Included, r.Sent, r.Blocks)
	}
	for range b.N {
		dev := devnet.StartT(b, devnet.Config{GethNodes: 1, GethArgs: []string{"--dev", "--dev.period", "1"}})
		d := burst(dev.Geth[0].RPCURL())
		dev.Stop()
		rows = append(rows, "| geth --dev --dev.period 1 | "+cell(d)+" |")

		b.ReportMetric(d.MBPerSec(), "gethdev-MB/s")
		for _, c := range []struct {
			name, metric string
			propose      time.Duration
		}{
			{"tuned timeouts (timeout_propose 400 ms)", "stage4-MB/s", testnet.TunedTimeouts.Propose},
			{"timeout_propose 2.2 s", "stage4-propose2.2s-MB/s", fullBlockPropose},
		} {
			to := tunedTimeouts
			to.TimeoutPropose = c.propose
			nw := startBench(b, scenario{name: "full", timeouts: to, optimistic: true, recommit: 100 * time.Millisecond})
			o := burst(nw.vals[1].geth.RPCURL())
			rounds, full := nw.decidingRounds(int64(nw.checkSameChain())), fullBlocks(b, nw.vals[0])
			nw.stop()
			keepLogs(b, nw, fmt.Sprintf("full-propose-%s", c.propose))
			rows = append(rows, fmt.Sprintf("| stage 4, 4 validators, %s | %s; heights by deciding round: %v, the full blocks': %v |",
				c.name, cell(o), byRound(rounds, nil), byRound(rounds, func(h int64) bool { return full[h] })))
			b.ReportMetric(o.MBPerSec(), c.metric)
		}
	}
	out := "# Stage 4 benchmarks: full blocks\n\nWritten by `make bench` (e2e/bench_full_test.go): 180 transactions of 130,000 bytes of calldata sent at once " +
		"(four blocks of 59.4 Mgas). " + machine() + "\n\n| system | result |\n|---|---|\n" + strings.Join(rows, "\n") + "\n"
	fmt.Println(out)
	if err := os.WriteFile(filepath.Join("..", "BENCHMARKS-full-blocks.md"), []byte(out), 0o644); err != nil {
		b.Fatal(err)
	}
}
