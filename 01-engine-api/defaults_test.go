//go:build netfaults

package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/geth-consensus/tutorial/devnet"
)

// Run with make test-faults (-tags netfaults), apart from make test.

// A geth on its default storage (path scheme), as a user's geth would run,
// SIGKILLed while the program builds on it: the program stops at once,
// naming geth as unreachable, rather than hang. geth comes back at its last
// state on disk, genesis here: this stage keeps no copy of its blocks
// (stage 2's store replays them), so a new run starts from there. Killed
// within a minute of its start, geth also kept the lost blocks' headers
// and switched to snap sync: it takes the new run's block 1, then answers
// SYNCING for good, and the run stops naming the cause and the fix.
// Later, geth has dropped the blocks whole and the new run goes on.
func TestFaultGethDefaultsKilled(t *testing.T) {
	h := newHarnessOn(t, devnet.StartT(t, devnet.Config{GethNodes: 1, GethDefaults: true}))
	h.build(30)
	cfg := h.cfg
	cfg.Blocks, cfg.Interval, cfg.BuildWait = 0, 10*time.Millisecond, 10*time.Millisecond
	done := make(chan error, 1)
	go func() { done <- run(context.Background(), cfg, io.Discard) }()
	eventually(t, 30*time.Second, func() bool { return h.head().Number.Uint64() >= 40 })
	if err := h.geth.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), h.geth.EngineURL()) {
			t.Fatalf("err = %v; want ErrUnreachable naming %s", err, h.geth.EngineURL())
		}
	case <-time.After(3 * cfg.Timeout):
		t.Fatalf("still running %s after geth was killed", 3*cfg.Timeout)
	}
	if err := h.geth.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.geth.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	back := h.head().Number.Uint64()
	cfg = h.cfg
	cfg.Blocks = 3
	err := run(context.Background(), cfg, io.Discard)
	got := h.head().Number.Uint64()
	switch {
	case err == nil && got == back+3:
		t.Logf("MEASURED geth came back at block %d of at least 40 and a new run made 3 blocks on it", back)
	case errors.Is(err, ErrSyncing) && containsAll(err.Error(), "snap sync", "geth removedb", "--state.scheme hash"):
		t.Logf("MEASURED geth came back at block %d of at least 40 in snap sync; a new run made %d blocks, then: %v", back, got-back, err)
	default:
		t.Fatalf("a new run on the restarted geth (back at block %d, now %d): %v; want 3 blocks, or SYNCING explained", back, got, err)
	}
}

// eventually polls cond every 20 ms until it holds, failing the test after
// timeout.
func eventually(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
