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

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/loadgen"
)

// BenchmarkFullBlocks measures blocks filled to the gas limit with the
// largest transactions geth's pool takes: 180 transactions of 130,000 zero
// bytes of calldata (1.32 Mgas each, four blocks of 59.4 Mgas, 5.9 MB
// each), sent at once to the producer's geth, on geth --dev --dev.period 1,
// stage 2 and stage 3 (alone and with a member), all at a block a second.
// It writes BENCHMARKS-full-blocks.md.
func BenchmarkFullBlocks(b *testing.B) {
	table := &benchTable{}
	for range b.N {
		stage2 := stage2Binary(b)
		vs := append([]variant{{"geth --dev --dev.period 1", func() system {
			n := devnet.StartT(b, devnet.Config{GethNodes: 1, GethArgs: append([]string{"--dev", "--dev.period", "1"}, benchGethArgs...)})
			return system{geth: n.Geth[0], stop: func() { settle(n) }}
		}}}, variants(b, stage2, "block-time", time.Second, time.Millisecond)...)
		results := sideBySide(vs, func(s system) loadgen.Result {
			g := generator(b, s.geth.RPCURL())
			g.Calldata = loadgen.MaxCalldata
			r, err := g.Burst(context.Background(), 180, 20, 2*time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			return r
		})
		for i, v := range vs {
			r := median(results[i], loadgen.Result.MBPerSec)
			var all []string
			for _, x := range results[i] {
				all = append(all, fmt.Sprintf("%.2f", x.MBPerSec()))
			}
			scenario := ""
			if i == 0 {
				scenario = fmt.Sprintf("180 transactions of 130,000 bytes of calldata at once, four full blocks, block time 1 s (median of %d rounds by MB/s)", rounds)
			}
			table.add(scenario, v.name, fmt.Sprintf("%.2f MB/s, %.1f Mgas/s; inclusion p50 %.0f ms, p99 %.0f ms (%d/%d included, %d blocks); rounds: %s MB/s",
				r.MBPerSec(), r.MgasPerSec(), ms(r.Percentile(50)), ms(r.Percentile(99)), r.Included, r.Sent, r.Blocks, strings.Join(all, ", ")))
			b.ReportMetric(r.MBPerSec(), strings.ReplaceAll(v.name, " ", "-")+"-MB/s")
		}
	}
	out := strings.NewReplacer("# Stage 3 benchmarks", "# Stage 3 benchmarks: full blocks", "e2e/bench_test.go", "e2e/bench_full_test.go").Replace(table.markdown(machine()))
	fmt.Println(out)
	if err := os.WriteFile(filepath.Join("..", "BENCHMARKS-full-blocks.md"), []byte(out), 0o644); err != nil {
		b.Fatal(err)
	}
}
