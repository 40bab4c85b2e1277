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
)

// BenchmarkFullBlocks measures blocks filled to the gas limit with the
// largest transactions geth's pool takes: 180 transactions of 130,000 zero
// bytes of calldata (1.32 Mgas each, four blocks of 59.4 Mgas, 5.9 MB
// each), sent at once, on geth --dev --dev.period 1 and on four validators
// with the testnet command's settings (--block-time 1s, geth
// --miner.recommit=100ms), sent to validator-1's geth. One round each: a
// stage 4 round takes minutes on two vCPUs. It writes
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

		nw := startBench(b, scenario{name: "full", timeouts: tunedTimeouts, optimistic: true, recommit: 100 * time.Millisecond})
		o := burst(nw.vals[1].geth.RPCURL())
		rounds := nw.checkProposers(int64(nw.checkSameChain()))
		nw.stop()
		rows = append(rows, fmt.Sprintf("| stage 4, 4 validators, tuned timeouts | %s; heights by deciding round: %v |", cell(o), rounds))
		b.ReportMetric(d.MBPerSec(), "gethdev-MB/s")
		b.ReportMetric(o.MBPerSec(), "stage4-MB/s")
	}
	out := "# Stage 4 benchmarks: full blocks\n\nWritten by `make bench` (e2e/bench_full_test.go): 180 transactions of 130,000 bytes of calldata sent at once " +
		"(four blocks of 59.4 Mgas). " + machine() + "\n\n| system | result |\n|---|---|\n" + strings.Join(rows, "\n") + "\n"
	fmt.Println(out)
	if err := os.WriteFile(filepath.Join("..", "BENCHMARKS-full-blocks.md"), []byte(out), 0o644); err != nil {
		b.Fatal(err)
	}
}
