package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
)

// BenchmarkStandbySoak runs a leader and a standby candidate under 200
// transfers a second for STAGE3_SOAK (10m by default), sampling the
// standby's memory and the transaction hashes it tracks every 30 s; then
// kills the leader under the same load and compares the promoted
// standby's first blocks with the old leader's steady state. It writes
// BENCHMARKS-soak.md (`make bench-soak`).
func BenchmarkStandbySoak(b *testing.B) {
	soak := 10 * time.Minute
	if v := os.Getenv("STAGE3_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("STAGE3_SOAK=%q: %v", v, err)
		}
		soak = d
	}
	const rate = 200
	for range b.N {
		c := newClusterWith(b, benchGethArgs, 2, 0, func(cfg *config.Config) { cfg.BlockMode, cfg.BlockTime = "block-time", time.Second })
		leader := c.waitLeader(20*time.Second, nil)
		standby := c.candidates()[0]
		if standby == leader {
			standby = c.candidates()[1]
		}
		c.waitHeads(3, 30*time.Second)

		var sb strings.Builder
		fmt.Fprintf(&sb, "# Stage 3: a standby candidate under a %s soak\n\nWritten by `make bench-soak` (e2e/bench_soak_test.go). %s\n\n", soak, machine())
		fmt.Fprintf(&sb, "A leader and a standby candidate, `--block-time 1s`, %d transfers a second sent to the leader's geth. Every 30 s, the standby's:\n\n", rate)
		sb.WriteString("| elapsed | transfers sent | RSS (MB) | Go heap in use (MB) | tracked hashes |\n|---|---|---|---|---|\n")
		done := make(chan error, 1)
		go func() {
			_, err := sendSteady(leader, rate, soak)
			done <- err
		}()
		start := time.Now()
		sample := func() {
			el := time.Since(start).Round(time.Second)
			fmt.Fprintf(&sb, "| %s | %d | %.1f | %.1f | %.0f |\n", el, int(min(el, soak).Seconds()*rate),
				standby.metric("process_resident_memory_bytes")/1e6, standby.metric("go_memstats_heap_inuse_bytes")/1e6, standby.metric("gethcl_tracked_transactions"))
		}
		tick := time.NewTicker(30 * time.Second)
		sample()
	soaking:
		for {
			select {
			case err := <-done:
				if err != nil {
					b.Fatal(err)
				}
				break soaking
			case <-tick.C:
				sample()
			}
		}
		tick.Stop()
		sample()

		// Promotion under load: the leader SIGKILLed ten blocks into a
		// minute of the same stream.
		// Sent to the standby's geth: the old leader's stops with its CL.
		promoted := make(chan error, 1)
		go func() {
			_, err := sendSteady(standby, rate, time.Minute)
			promoted <- err
		}()
		c.waitHeads(c.clusterHead()+10, 30*time.Second, leader) // ten blocks into the stream
		if err := leader.proc.Kill(); err != nil {
			b.Fatal(err)
		}
		at := c.clusterHead()
		took := c.failover(leader, at, time.Now(), "the leader's SIGKILL")
		if err := <-promoted; err != nil {
			b.Fatal(err)
		}
		c.stopNodes()
		c.checkInvariants()

		before := blockTimes(b, leader, 0)
		after := blockTimes(b, standby, 10)
		steady := before[max(0, len(before)-100):]
		fmt.Fprintf(&sb, "\nPromotion: the leader SIGKILLed under the same load; the standby made the next block %s later.\n\n", took.Round(time.Millisecond))
		sb.WriteString("| blocks | count | transactions / block (mean) | produce time p50 | p90 | max |\n|---|---|---|---|---|---|\n")
		for _, row := range []struct {
			name string
			bs   []blockTime
		}{{"old leader, its last 100 (steady state)", steady}, {"promoted standby, its first 10", after}} {
			fmt.Fprintf(&sb, "| %s | %d | %.0f | %s | %s | %s |\n", row.name, len(row.bs), meanTxs(row.bs),
				pctOf(row.bs, 0.5), pctOf(row.bs, 0.9), pctOf(row.bs, 1))
		}
		sb.WriteString("\nProduce time: the `elapsed` of each `msg=block` log line (build, execute, commit, finalize).\n")
		sb.WriteString("The tracked hashes are those included in the last 10-20 s, kept to recognise late announcements: about 2,000-4,000 at 200 tx/s, whatever the soak's length.\n")
		fmt.Println(sb.String())
		if err := os.WriteFile(filepath.Join("..", "BENCHMARKS-soak.md"), []byte(sb.String()), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

type blockTime struct {
	txs     int
	elapsed time.Duration
}

var blockLine = regexp.MustCompile(`msg=block .* txs=(\d+) .*elapsed=(\S+)`)

// blockTimes reads the blocks cn made from its log: the first `first`
// (0: all), in order.
func blockTimes(b *testing.B, cn *clusterNode, first int) []blockTime {
	log, err := os.ReadFile(cn.proc.LogPath)
	if err != nil {
		b.Fatal(err)
	}
	var out []blockTime
	for _, m := range blockLine.FindAllStringSubmatch(string(log), -1) {
		var bt blockTime
		fmt.Sscan(m[1], &bt.txs)
		bt.elapsed, _ = time.ParseDuration(m[2])
		out = append(out, bt)
		if first > 0 && len(out) == first {
			break
		}
	}
	if len(out) == 0 {
		b.Fatalf("%s logged no block", cn.cfg.InstanceID)
	}
	return out
}

func meanTxs(bs []blockTime) float64 {
	n := 0
	for _, b := range bs {
		n += b.txs
	}
	return float64(n) / float64(len(bs))
}

func pctOf(bs []blockTime, p float64) time.Duration {
	d := make([]time.Duration, len(bs))
	for i, b := range bs {
		d[i] = b.elapsed
	}
	return pct(d, p).Round(100 * time.Microsecond)
}
