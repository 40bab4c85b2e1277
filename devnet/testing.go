package devnet

import (
	"context"
	"os"
	"testing"
	"time"
)

// StartT starts a network for a test on free ports under t.TempDir(), with
// the repository's genesis.json and jwt.hex unless cfg names others, and stops
// it when the test ends. When the test failed, the end of every process log
// goes to the test output.
//
// Tests that start real processes are integration tests: `go test -short`
// (make test-unit) skips them; make test, which CI runs, never does.
func StartT(t testing.TB, cfg Config) *Network {
	t.Helper()
	SkipIfShort(t)
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.FreePorts = true
	for _, f := range []struct {
		dst  *string
		name string
	}{{&cfg.GenesisPath, "genesis.json"}, {&cfg.JWTPath, "jwt.hex"}} {
		if *f.dst != "" {
			continue
		}
		p, err := FindUp(f.name)
		if err != nil {
			t.Fatalf("devnet: %v", err)
		}
		*f.dst = p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // covers a first geth build
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("devnet: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("DEVNET_LOGS") != "" {
			for _, p := range n.Processes() {
				t.Logf("--- end of %s log (%s):\n%s", p.Name, p.LogPath, lastLines(p.TailLog(8192), 40))
			}
		}
		n.Stop()
	})
	return n
}

// SkipIfShort skips an integration test (one that starts geth, Redis,
// PostgreSQL, CometBFT or a built binary) under `go test -short`.
func SkipIfShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test (starts real processes): run by make test, skipped by make test-unit")
	}
}
