package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/loadgen"
	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/testnet"
)

// BenchmarkWAN measures four validators whose every link to each other
// (CometBFT's p2p and the geths' devp2p, both through devnet fault points)
// has a one-way latency, as between regions: block time, finality and the
// rounds heights take, with the testnet's loopback-tuned timeouts and with
// its --wan preset. It writes BENCHMARKS-wan.md (`make bench`).
func BenchmarkWAN(b *testing.B) {
	type wan struct {
		name            string
		latency, jitter time.Duration
		timeouts        testnet.Options
	}
	loopback := tunedTimeouts
	cases := []wan{
		{"loopback, tuned", 0, 0, loopback},
		{"50 ± 10 ms, tuned", 50 * time.Millisecond, 10 * time.Millisecond, loopback},
		{"50 ± 10 ms, --wan", 50 * time.Millisecond, 10 * time.Millisecond, testnet.WANTimeouts},
		{"150 ± 15 ms, tuned", 150 * time.Millisecond, 15 * time.Millisecond, loopback},
		{"150 ± 15 ms, --wan", 150 * time.Millisecond, 15 * time.Millisecond, testnet.WANTimeouts},
	}
	var rows []string
	for range b.N {
		for _, c := range cases {
			b.Run(strings.NewReplacer(" ", "", "±", "pm", ",", "/").Replace(c.name), func(b *testing.B) {
				nw := newNetwork(b, spec{timeouts: c.timeouts, faults: true, gethArgs: []string{"--miner.recommit", "100ms"},
					flags: func(int) []string { return []string{"--log-level", "info"} }})
				nw.waitHeads(3, 120*time.Second)
				if c.latency > 0 {
					for _, l := range nw.faults.Links() {
						if strings.HasPrefix(l.Name, "cmt-") || strings.HasPrefix(l.Name, "geth-") {
							if err := l.Apply(devnet.Latency(c.latency, c.jitter)); err != nil {
								b.Fatal(err)
							}
						}
					}
				}
				from := int64(mustHead(b, nw.vals[0]))
				nw.waitHeads(uint64(from)+2, 60*time.Second)
				heads := watchHeads(b, nw.vals[0])
				gen := generator(b, loadgen.DevKeys, nw.vals[1].geth.RPCURL())
				window := 30 * time.Second
				start := time.Now()
				r, err := gen.Steady(context.Background(), steadyRate, window, 60*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				times := heads.between(start, start.Add(window))
				if len(times) < 3 || len(r.Latencies) == 0 {
					b.Fatalf("%s: %d blocks, %d transfers included in %s", c.name, len(times), len(r.Latencies), window)
				}
				var gaps []time.Duration
				for i := 1; i < len(times); i++ {
					gaps = append(gaps, times[i].Sub(times[i-1]))
				}
				to := int64(nw.checkSameChain())
				rounds := nw.decidingRounds(to)
				late := roundsText(byRound(rounds, func(h int64) bool { return h > from }))
				blocksPerSec := float64(len(times)-1) / times[len(times)-1].Sub(times[0]).Seconds()
				b.ReportMetric(ms(pct(r.Latencies, 0.5)), "finality-p50-ms")
				b.ReportMetric(blocksPerSec, "blocks/s")
				o := c.timeouts
				rows = append(rows, fmt.Sprintf("| %s | propose %s (+%s a round), prevote %s, precommit %s, commit %s | %.2f blocks/s; block time p50 %.0f ms, p99 %.0f ms | **p50 %.0f ms**, p99 %.0f ms (%d of %d) | %s |",
					c.name, o.TimeoutPropose, propDelta(o), o.TimeoutPrevote, o.TimeoutPrecommit, o.TimeoutCommit,
					blocksPerSec, ms(pct(gaps, 0.5)), ms(pct(gaps, 0.99)), ms(pct(r.Latencies, 0.5)), ms(pct(r.Latencies, 0.99)), r.Included, r.Sent, late))
			})
		}
	}
	out := "# Stage 4 across regions\n\nWritten by `make bench` (e2e/bench_wan_test.go): four validators, each with its own geth, every link between two of them " +
		"(CometBFT's p2p, the geths' devp2p) through a devnet fault point adding the one-way latency given, each way, with jitter. " +
		fmt.Sprintf("Steady load: %d transfers/s for 30 s sent to validator-1's geth; finality is send → the block is final on that geth; ", steadyRate) +
		"rounds: how many heights each round decided (0: the first proposal). tuned = the testnet command's default timeouts, tuned on loopback; " +
		"--wan = its preset for validators in several regions (`testnet --wan`). " + machine() + "\n\n" +
		"| latency (one way) | timeouts | blocks | finality | heights by deciding round |\n|---|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n"
	fmt.Println(out)
	if err := os.WriteFile(filepath.Join("..", "BENCHMARKS-wan.md"), []byte(out), 0o644); err != nil {
		b.Fatal(err)
	}
}

// roundsText lists how many heights each round decided: "round 0: 21, round 1: 1".
func roundsText(byRound map[int32]int) string {
	rounds := slices.Sorted(maps.Keys(byRound))
	parts := make([]string, len(rounds))
	for i, r := range rounds {
		parts[i] = fmt.Sprintf("round %d: %d", r, byRound[r])
	}
	return strings.Join(parts, ", ")
}

// propDelta is the timeout_propose_delta a scenario ran with.
func propDelta(o testnet.Options) time.Duration {
	if o.TimeoutProposeDelta > 0 {
		return o.TimeoutProposeDelta
	}
	return testnet.TunedTimeouts.ProposeDelta
}
