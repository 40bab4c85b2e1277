//go:build netfaults

package e2e

import (
	"context"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// Run with make test-faults (-tags netfaults), apart from make test.

// A lone validator's geth on its default storage (path scheme), as a
// user's geth would run, SIGKILLed. geth v1.17 comes back at genesis, one
// of two ways, depending on whether it had moved the blocks to its freezer:
//   - it dropped them: the app replays them from CometBFT's block store;
//   - it kept them without their state and switched to snap sync: it
//     ignores every payload. The app must not wait silently: /readyz
//     and the log name the cause and the fix, and the fix (a new
//     datadir) brings the chain back.
//
// Either way the chain goes on and nothing decided changes.
func TestFaultGethDefaultsKilled(t *testing.T) {
	nw := newNetwork(t, spec{validators: 1, gethDefaults: true})
	v := nw.vals[0]
	nw.waitHeads(20, 60*time.Second)
	ctx := context.Background()
	lost := nw.checkSameChain()
	before := make([]common.Hash, lost+1)
	for n := range before {
		hdr, err := v.eth.HeaderByNumber(ctx, big.NewInt(int64(n)))
		if err != nil {
			t.Fatal(err)
		}
		before[n] = hdr.Hash()
	}
	if err := v.geth.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := v.geth.Start(); err != nil {
		t.Fatal(err)
	}
	stuck := ""
	eventually(t, 60*time.Second, func() error {
		if head, err := v.head(); err == nil && head >= lost+5 {
			return nil
		}
		if _, reason := v.readyz(); strings.Contains(reason, "snap sync") {
			stuck = reason
			return nil
		}
		return fmt.Errorf("geth neither back at block %d nor explained as in snap sync", lost+5)
	})
	if stuck != "" {
		if !containsAll(stuck, []string{"geth removedb", "--gcmode archive --state.scheme hash"}) {
			t.Fatalf("/readyz names snap sync but not the fix: %s", stuck)
		}
		t.Logf("MEASURED geth came back in snap sync; the app says: %s", stuck)
		for _, step := range []func() error{v.geth.Kill, func() error { return v.geth.Wipe(ctx) }, v.geth.Start} { // the fix it names
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
	}
	nw.waitHeads(lost+5, 60*time.Second)
	s, ok := v.status()
	r := s.LastReplay
	if !ok || r == nil || r.To < lost || !strings.Contains(r.Cause, "--state.scheme path") ||
		!strings.Contains(r.Fix, "--gcmode archive --state.scheme hash") {
		t.Fatalf("/status names no replay of the blocks geth lost, with cause and fix: %+v", s)
	}
	var line string
	for l := range strings.SplitSeq(v.appLog(1000), "\n") {
		if containsAll(l, []string{"geth lost blocks", "--state.scheme path", "--state.scheme hash"}) {
			line = l
		}
	}
	if line == "" {
		t.Fatal("no log line names the cause and the fix")
	}
	t.Logf("MEASURED geth came back at block %d of %d; the app replayed %d-%d: %s", r.GethHead, lost, r.From, r.To, line)
	nw.checkSameChain()
	for n, want := range before {
		hdr, err := v.eth.HeaderByNumber(ctx, big.NewInt(int64(n)))
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Hash() != want {
			t.Fatalf("block %d changed across the crash: %s → %s", n, want, hdr.Hash())
		}
	}
	nw.checkSameBlocks(int64(lost))
}
