//go:build netfaults

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/geth-consensus/tutorial/devnet"

	"github.com/geth-consensus/tutorial/03-member-nodes/internal/config"
)

// Run with make test-faults (-tags netfaults), apart from make test.

// SIGKILL a lone leader's geth that runs on its default storage (path
// scheme), as a user's geth would. geth v1.17 comes back at genesis, one
// of two ways, depending on whether it had moved the blocks to its freezer:
//   - it dropped them: the leader replays them from the cluster store and
//     goes on;
//   - it kept them without their state and switched to snap sync: it
//     ignores every payload. The leader must not wait silently: /status
//     and the log name the cause and the fix, and the fix (a new
//     datadir) brings the chain back.
//
// Either way nothing decided changes.
func TestFaultGethDefaultsKilled(t *testing.T) {
	// Killed about a second after its start, geth more often kept the
	// blocks (snap sync); five seconds in, it more often had moved them to
	// its freezer and dropped them. Each case takes either outcome.
	for _, blocks := range []uint64{40, 200} {
		t.Run(fmt.Sprintf("after %d blocks", blocks), func(t *testing.T) { gethDefaultsKilled(t, blocks) })
	}
}

func gethDefaultsKilled(t *testing.T, blocks uint64) {
	h := newHarnessOn(t, devnet.Config{GethNodes: 1, Redis: true, Postgres: 1, GethDefaults: true}, func(c *config.Config) {
		c.BlockMode, c.MaxIdle, c.MaxDrift = "on-demand", 10*time.Millisecond, time.Hour
	})
	h.startNode()
	h.waitHead(blocks, 60*time.Second)
	before := h.chain()
	if err := h.geth.Kill(); err != nil {
		t.Fatal(err)
	}
	h.waitUnreachable()
	if err := h.geth.Start(); err != nil {
		t.Fatal(err)
	}
	want := uint64(len(before)) + 20
	stuck := ""
	h.eventually(60*time.Second, func() error {
		if head, err := h.gethHead(); err == nil && head >= want {
			return nil
		}
		if _, reason := h.get("/readyz"); strings.Contains(reason, "snap sync") {
			stuck = reason
			return nil
		}
		return fmt.Errorf("geth neither back at block %d nor explained as in snap sync", want)
	})
	if stuck != "" {
		if !strings.Contains(stuck, "geth removedb") || !strings.Contains(stuck, "--gcmode archive --state.scheme hash") {
			t.Fatalf("/readyz names snap sync but not the fix: %s", stuck)
		}
		if _, ok := h.logs.line("production paused", "snap sync", "geth removedb"); !ok {
			t.Fatal("no log line names the snap sync and the fix")
		}
		t.Logf("MEASURED geth came back in snap sync; the leader says: %s", stuck)
		h.wipeGeth() // the fix it names
		h.waitHead(want, 60*time.Second)
	}
	var st struct {
		LastReplay *struct {
			From, To   uint64
			GethHead   uint64 `json:"geth_head"`
			Cause, Fix string
		} `json:"last_replay"`
	}
	_, body := h.get("/status")
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status: %v: %s", err, body)
	}
	r := st.LastReplay
	if r == nil || r.To < uint64(len(before)-1) || !strings.Contains(r.Cause, "--state.scheme path") ||
		!strings.Contains(r.Fix, "--gcmode archive --state.scheme hash") {
		t.Fatalf("/status names no replay of the blocks geth lost, with cause and fix: %s", body)
	}
	line, ok := h.logs.line("replaying payloads", "--state.scheme path", "--state.scheme hash")
	if !ok {
		t.Fatal("no log line names the cause and the fix")
	}
	t.Logf("MEASURED geth came back at block %d of %d; the leader replayed %d-%d: %s", r.GethHead, len(before)-1, r.From, r.To, line)
	if err := h.stopNode(); err != nil {
		t.Fatal(err)
	}
	after := h.chain()
	for n, hash := range before {
		if after[n] != hash {
			t.Fatalf("block %d changed across the crash: %s → %s", n, hash, after[n])
		}
	}
	h.checkStoreMatches(after)
}

// line returns the first logged line that holds every one of parts.
func (b *logBuffer) line(parts ...string) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
next:
	for _, l := range strings.Split(b.buf.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		return l, true
	}
	return "", false
}
