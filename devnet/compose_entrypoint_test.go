package devnet

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
)

// No Docker runs here, but docker/geth-entrypoint.sh is a plain sh script: run
// it for geth and geth-member with the environment compose gives them, the
// container paths (/data, /config) and ports moved to a temporary directory
// and free ports, and the geth built from the pinned module on PATH. Both must
// initialise from genesis.json, serve the Engine API behind jwt.hex, and peer
// through compose's NODEKEY and STATIC_PEERS; a restart must keep the chain.
func TestComposeEntrypointRunsGeth(t *testing.T) {
	SkipIfShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	p, root := loadCompose(t)
	box := newEntrypointBox(t, ctx, root)
	geth := box.start(t, ctx, p.Services["geth"])
	member := box.start(t, ctx, p.Services["geth-member"])

	// geth-member peers with geth (only it names a static peer); on
	// loopback that takes well under a second.
	peerCtx, cancelPeer := context.WithTimeout(ctx, 30*time.Second)
	defer cancelPeer()
	if err := waitFor(peerCtx, member.Process, func() error {
		if n, err := member.PeerCount(peerCtx); err != nil || n != 1 {
			return fmt.Errorf("%d peers (%v)", n, err)
		}
		return nil
	}); err != nil {
		t.Fatalf("geth-member never peered with geth: %v", err)
	}
	// Both run the chain of genesis.json, on the hash scheme.
	want, err := geth.Call(ctx, "eth_getBlockByNumber", "0x0", false)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := member.Call(ctx, "eth_getBlockByNumber", "0x0", false); err != nil || string(got) != string(want) {
		t.Fatalf("geth-member's genesis differs from geth's: %v", err)
	}
	for _, g := range []*GethNode{geth, member} {
		if log := g.TailLog(1 << 20); !strings.Contains(log, "scheme=hash") {
			t.Errorf("%s does not run on the hash state scheme; end of its log:\n%s", g.Name, lastLines(log, 20))
		}
	}
	// Prometheus' geth job scrapes the metrics the script turns on.
	for _, g := range []*GethNode{geth, member} {
		if body := httpBody(t, g.MetricsURL()); !strings.Contains(body, "\nchain_head_block ") {
			t.Errorf("%s's %s has no chain_head_block:\n%.300s", g.Name, g.MetricsURL(), body)
		}
	}
	// The Engine API answers only with jwt.hex's secret.
	if _, err := rpcCall(ctx, geth.EngineURL(), "engine_exchangeCapabilities", []string{}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("unauthenticated Engine API call: %v, want HTTP 401", err)
	}
	// A second start (the container restarted) keeps the datadir: no init.
	if err := geth.Restart(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := geth.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(geth.TailLog(1<<20), "Successfully wrote genesis state"); n != 1 {
		t.Errorf("geth initialised %d times, want once", n)
	}
}

// entrypointBox stands in for the containers: a directory with the files
// compose mounts on /config, a PATH holding the pinned geth, and the free
// port each service's 30303 is moved to (for the enode URLs that name it).
type entrypointBox struct {
	dir, config, path string
	script            string
	p2p               map[string]int
}

func newEntrypointBox(t *testing.T, ctx context.Context, root string) *entrypointBox {
	t.Helper()
	bin, err := GethBinary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(root, "docker", "geth-entrypoint.sh"))
	if err != nil {
		t.Fatal(err)
	}
	b := &entrypointBox{dir: t.TempDir(), script: string(script), p2p: map[string]int{}}
	b.config, b.path = filepath.Join(b.dir, "config"), filepath.Join(b.dir, "bin")
	for _, d := range []string{b.config, b.path} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(bin, filepath.Join(b.path, "geth")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"genesis.json", "jwt.hex"} {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(b.config, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// start runs the entrypoint for one service, with its compose environment,
// until geth answers. Services must start in dependency order: a static peer
// names a service started before.
func (b *entrypointBox) start(t *testing.T, ctx context.Context, s types.ServiceConfig) *GethNode {
	t.Helper()
	var http, auth, p2p, metrics int
	for _, port := range []*int{&http, &auth, &p2p, &metrics} {
		var err error
		if *port, err = FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	b.p2p[s.Name] = p2p
	data := filepath.Join(b.dir, s.Name, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	script := strings.NewReplacer(
		"/data", data, "/config", b.config, "0.0.0.0", "127.0.0.1",
		"8545", strconv.Itoa(http), "8551", strconv.Itoa(auth), "30303", strconv.Itoa(p2p), "6060", strconv.Itoa(metrics),
	).Replace(b.script)
	path := filepath.Join(b.dir, s.Name, "entrypoint.sh")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + b.path + string(os.PathListSeparator) + os.Getenv("PATH")}
	for k, v := range s.Environment {
		val := ""
		if v != nil {
			val = *v
		}
		for name, port := range b.p2p { // containers reach each other by service name
			val = strings.ReplaceAll(val, "@"+name+":30303", "@127.0.0.1:"+strconv.Itoa(port))
		}
		env = append(env, k+"="+val)
	}
	g := &GethNode{HTTPPort: http, AuthPort: auth, MetricsPort: metrics, Process: &Process{
		Name: s.Name, Path: "/bin/sh", Args: []string{path}, Env: env, LogPath: filepath.Join(b.dir, s.Name+".log"),
	}}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Stop(10 * time.Second) })
	if err := g.WaitReady(ctx); err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	return g
}

func httpBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
