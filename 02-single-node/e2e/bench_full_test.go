package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geth-consensus/tutorial/02-single-node/internal/config"
	"github.com/geth-consensus/tutorial/02-single-node/internal/loadgen"
)

// fullRounds: a full-block round is 180 transactions of 130 KB, about 20 s
// for both producers.
const fullRounds = 3

// BenchmarkFullBlocks measures blocks filled to the gas limit with the
// largest transactions geth's pool takes: 180 transactions of 130,000 zero
// bytes of calldata (1.32 Mgas each, four blocks of 59.4 Mgas, 5.9 MB
// each), sent at once, side by side with geth --dev --dev.period 1 on the
// same load, both at a block a second. It writes BENCHMARKS-full-blocks.md.
func BenchmarkFullBlocks(b *testing.B) {
	table := &benchTable{}
	mbps := func(r loadgen.Result) float64 { return r.MBPerSec() }
	cell := func(r loadgen.Result) string {
		return fmt.Sprintf("%.2f MB/s, %.1f Mgas/s; inclusion p50 %.0f ms, p99 %.0f ms (%d/%d included, %d blocks)",
			r.MBPerSec(), r.MgasPerSec(), ms(r.Percentile(50)), ms(r.Percentile(99)), r.Included, r.Sent, r.Blocks)
	}
	all := func(rs []loadgen.Result) string {
		var s []string
		for _, r := range rs {
			s = append(s, fmt.Sprintf("%.2f", r.MBPerSec()))
		}
		return "; rounds: " + strings.Join(s, ", ") + " MB/s"
	}
	for range b.N {
		dev, ours := sideBySide(b, fullRounds, time.Second, func(c *config.Config) { c.BlockTime = time.Second },
			func(g *loadgen.Generator) loadgen.Result {
				g.Calldata = loadgen.MaxCalldata
				r, err := g.Burst(context.Background(), 180, 20, 2*time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				return r
			})
		d, o := median(dev, mbps), median(ours, mbps)
		table.add(fmt.Sprintf("180 transactions of 130,000 bytes of calldata at once, four full blocks (median of %d rounds by MB/s)", fullRounds),
			"geth --dev --dev.period 1", cell(d)+all(dev))
		table.add("", "stage 2, block time 1 s", cell(o)+all(ours))
		b.ReportMetric(mbps(d), "gethdev-MB/s")
		b.ReportMetric(mbps(o), "stage2-MB/s")
	}
	out := strings.NewReplacer("# Stage 2 benchmarks", "# Stage 2 benchmarks: full blocks", "e2e/bench_test.go", "e2e/bench_full_test.go").Replace(table.markdown(machine()))
	fmt.Println(out)
	if err := os.WriteFile(filepath.Join("..", "BENCHMARKS-full-blocks.md"), []byte(out), 0o644); err != nil {
		b.Fatal(err)
	}
}
