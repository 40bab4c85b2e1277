//go:build netfaults

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/04-cometbft-consensus/internal/loadgen"
)

// Stage 4 under network partitions (devnet fault points on every link:
// CometBFT's p2p, the geths' devp2p, each validator's Engine API). Each
// test ends with every geth holding the same chain and every block store
// the same blocks.

// linksBetween returns the fault points between the validators of a and
// those of b, both ways: CometBFT's and their geths'.
func (nw *network) linksBetween(a, b []*validator) []*devnet.Link {
	nw.t.Helper()
	in := func(vs []*validator, i int) bool {
		return slices.ContainsFunc(vs, func(v *validator) bool { return v.i == i })
	}
	var out []*devnet.Link
	for k, l := range nw.cmtLinks {
		if in(a, k[0]) && in(b, k[1]) || in(b, k[0]) && in(a, k[1]) {
			out = append(out, l)
		}
	}
	for _, v := range a {
		for _, l := range nw.net.GethLinks(v.i) {
			var x, y int
			if _, err := fmt.Sscanf(l.Name, "geth-%d-geth-%d", &x, &y); err == nil && (in(b, x) || in(b, y)) {
				out = append(out, l)
			}
		}
	}
	if len(out) == 0 {
		nw.t.Fatal("no links between the groups: start the network with spec.faults")
	}
	return out
}

// partition cuts the validators of a from those of b (CometBFT and geth
// alike) until heal.
func (nw *network) partition(a, b []*validator) {
	nw.t.Helper()
	for _, l := range nw.linksBetween(a, b) {
		if err := l.Apply(devnet.Cut()); err != nil {
			nw.t.Fatal(err)
		}
	}
}

// others returns every validator but v.
func (nw *network) others(v *validator) []*validator {
	return slices.DeleteFunc(slices.Clone(nw.vals), func(o *validator) bool { return o == v })
}

// heal removes every fault.
func (nw *network) heal() {
	nw.t.Helper()
	if err := nw.faults.HealAll(); err != nil {
		nw.t.Fatal(err)
	}
}

// steadyLoad sends transfers at rate to v's geth until the test ends or
// stop is called, and returns stop.
func steadyLoad(t *testing.T, v *validator, rate float64) (stop func()) {
	t.Helper()
	g := generator(t, loadgen.DevKeys[5:], v.geth.RPCURL())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = g.Steady(ctx, rate, time.Hour, 0)
	}()
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return stop
}

// signedSince returns how many commits of the heights in [from, to] hold
// v's signature.
func (nw *network) signedSince(v *validator, from, to int64) int {
	nw.t.Helper()
	s, ok := v.status()
	if !ok {
		nw.t.Fatalf("validator-%d: no /status", v.i)
	}
	c := nw.vals[0].cometbft(nw.t)
	n := 0
	for h := from; h <= to; h++ {
		if firstSigned(nw.t, c, s.Validator, h, h) == h {
			n++
		}
	}
	return n
}

// votesAgainThenAgree checks that v, back after a fault, signs at least 3
// of the 5 commits after it is level with the others again, and that every
// geth and block store then agree. The count starts once v has caught up:
// the heights it is still fetching are ones it cannot sign.
func (nw *network) votesAgainThenAgree(v *validator) {
	nw.t.Helper()
	var back int64
	eventually(nw.t, 60*time.Second, func() error {
		top, err := nw.vals[0].head()
		if err != nil {
			return err
		}
		mine, err := v.head()
		if err != nil {
			return err
		}
		if mine < top {
			return fmt.Errorf("validator-%d at block %d, validator-0 at %d", v.i, mine, top)
		}
		back = int64(top)
		return nil
	})
	nw.waitHeads(uint64(back)+6, 60*time.Second)
	if n := nw.signedSince(v, back+1, back+5); n < 3 {
		nw.t.Fatalf("validator-%d, back, signed %d of the next 5 commits", v.i, n)
	}
	low := nw.checkSameChain()
	nw.checkSameBlocks(int64(low), nw.vals...)
}

// heads returns every validator's geth head.
func (nw *network) heads() []uint64 {
	out := make([]uint64, len(nw.vals))
	for i, v := range nw.vals {
		out[i], _ = v.head()
	}
	return out
}

// One validator cut off from the other three (CometBFT and geth alike) for
// 30 s under load: the three go on deciding; the isolated one decides
// nothing. Healed, it catches up and votes again.
func TestFaultIsolatedValidatorCatchesUp(t *testing.T) {
	nw := newNetwork(t, spec{faults: true})
	nw.waitHeads(3, 90*time.Second)
	steadyLoad(t, nw.vals[0], 50)
	v := nw.vals[3]
	nw.partition([]*validator{v}, nw.others(v))
	cut := time.Now()
	top := mustHead(t, nw.vals[0])
	mine := mustHead(t, v)
	nw.waitHeads(top+10, 60*time.Second, nw.others(v)...)
	for time.Since(cut) < 30*time.Second {
		nw.waitHeads(mustHead(t, nw.vals[0])+1, 30*time.Second, nw.others(v)...)
	}
	if h := mustHead(t, v); h > mine+1 {
		t.Fatalf("isolated at block %d, it reached %d: it decided without the others", mine, h)
	}
	top = mustHead(t, nw.vals[0])
	t.Logf("MEASURED 30 s isolated: the three others went from %d to %d; the isolated one stayed at %d", mine, top, mustHead(t, v))
	nw.heal()
	healed := time.Now()
	nw.waitHeads(top, 90*time.Second, v)
	t.Logf("MEASURED healed: the isolated validator caught up %d blocks in %.1f s", top-mine, time.Since(healed).Seconds())
	nw.votesAgainThenAgree(v)
}

// Two against two: neither side holds more than 2/3 of the power, so no
// height is decided while split; healed, the chain resumes as one.
func TestFaultTwoTwoSplitHaltsThenResumes(t *testing.T) {
	nw := newNetwork(t, spec{faults: true})
	nw.waitHeads(3, 90*time.Second)
	steadyLoad(t, nw.vals[0], 20)
	nw.partition(nw.vals[:2], nw.vals[2:])
	atCut := slices.Max(nw.heads())
	// A height in flight when the split came may still finish (one, at
	// most): the heads settle (3 s unchanged), then stay for 10 s.
	var settled []uint64
	stable := time.Now()
	eventually(t, 20*time.Second, func() error {
		if now := nw.heads(); fmt.Sprint(now) != fmt.Sprint(settled) {
			settled, stable = now, time.Now()
		}
		if time.Since(stable) < 3*time.Second {
			return fmt.Errorf("heads %v for %s", settled, time.Since(stable).Round(time.Millisecond))
		}
		return nil
	})
	if top := slices.Max(settled); top > atCut+1 {
		t.Fatalf("split at block %d, the heads went on to %v", atCut, settled)
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for stalled := time.Now(); time.Since(stalled) < 10*time.Second; <-tick.C {
		if now := nw.heads(); fmt.Sprint(now) != fmt.Sprint(settled) {
			t.Fatalf("split two against two, the heads moved from %v to %v", settled, now)
		}
	}
	for _, v := range nw.vals {
		eventually(t, 30*time.Second, func() error {
			if code, body := v.readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "no height decided") {
				return fmt.Errorf("validator-%d /readyz %d %q while split", v.i, code, body)
			}
			return nil
		})
	}
	top := slices.Max(settled)
	t.Logf("MEASURED split 2-2: heads %v for 10 s and more", settled)
	nw.heal()
	healed := time.Now()
	nw.waitHeads(top+1, 60*time.Second)
	t.Logf("MEASURED healed: the next block on every geth %.1f s later", time.Since(healed).Seconds())
	nw.waitHeads(top+5, 60*time.Second)
	low := nw.checkSameChain()
	nw.checkSameBlocks(int64(low), nw.vals...)
}

// A validator cut from its own geth cannot check proposals: it stops
// voting for them (the other three go on) and says so on /readyz; healed,
// it catches up and votes again.
func TestFaultValidatorCutFromItsGeth(t *testing.T) {
	nw := newNetwork(t, spec{faults: true})
	nw.waitHeads(3, 90*time.Second)
	v := nw.vals[2]
	if err := v.engine.Apply(devnet.Cut()); err != nil {
		t.Fatal(err)
	}
	from := int64(slices.Max(nw.heads())) + 2 // a height its geth checked before the cut may still get its vote
	eventually(t, 30*time.Second, func() error {
		if code, body := v.readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "geth") {
			return fmt.Errorf("/readyz %d %q with its geth cut off", code, body)
		}
		return nil
	})
	nw.waitHeads(uint64(from)+10, 60*time.Second, nw.others(v)...)
	to := int64(mustHead(t, nw.vals[0]))
	if n := nw.signedSince(v, from, to); n > 0 {
		t.Fatalf("cut from its geth, it signed %d commits of heights %d-%d", n, from, to)
	}
	t.Logf("MEASURED cut from its geth: heights %d-%d decided by the other three, none signed by it", from, to)
	nw.heal()
	healed := time.Now()
	nw.waitHeads(uint64(to)+1, 60*time.Second, v)
	eventually(t, 30*time.Second, func() error {
		if code, body := v.readyz(); code != http.StatusOK {
			return fmt.Errorf("/readyz %d %q after the heal", code, body)
		}
		return nil
	})
	t.Logf("MEASURED healed: caught up and ready after %.1f s", time.Since(healed).Seconds())
	nw.votesAgainThenAgree(v)
}
