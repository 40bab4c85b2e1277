package devnet

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// No Docker runs here, but docker/geth-entrypoint.sh is a plain sh script: run
// it for geth and geth-member with the environment compose gives them, the
// container paths (/data, /config) and ports moved to a temporary directory
// and free ports, and the geth built from the pinned module on PATH. Both must
// initialise from genesis.json, serve the Engine API with jwt.hex, and peer
// through compose's NODEKEY and STATIC_PEERS; a restart must keep the chain.
func TestComposeEntrypointRunsGeth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	p, root := loadCompose(t)
	bin, err := GethBinary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(root, "docker", "geth-entrypoint.sh"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	pathDir := filepath.Join(tmp, "bin")
	config := filepath.Join(tmp, "config")
	for _, d := range []string{pathDir, config} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(bin, filepath.Join(pathDir, "geth")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"genesis.json", "jwt.hex"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(config, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	type container struct {
		service               string
		http, auth, p2p       int
		node                  *GethNode // for its RPC helpers; Process runs the script
		entrypoint, peersFile string
	}
	var nodes []*container
	p2pOf := map[string]int{}
	for _, service := range []string{"geth", "geth-member"} {
		c := &container{service: service}
		for _, port := range []*int{&c.http, &c.auth, &c.p2p} {
			if *port, err = FreePort(); err != nil {
				t.Fatal(err)
			}
		}
		p2pOf[service] = c.p2p
		data := filepath.Join(tmp, service, "data")
		if err := os.MkdirAll(data, 0o755); err != nil {
			t.Fatal(err)
		}
		s := strings.NewReplacer(
			"/data", data, "/config", config,
			"8545", strconv.Itoa(c.http), "8551", strconv.Itoa(c.auth), "30303", strconv.Itoa(c.p2p),
			"0.0.0.0", "127.0.0.1",
		).Replace(string(script))
		c.entrypoint = filepath.Join(tmp, service, "entrypoint.sh")
		c.peersFile = filepath.Join(data, "peers.toml")
		if err := os.WriteFile(c.entrypoint, []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, c)
	}
	for _, c := range nodes {
		env := []string{"PATH=" + pathDir + string(os.PathListSeparator) + os.Getenv("PATH")}
		for k, v := range p.Services[c.service].Environment {
			val := ""
			if v != nil {
				val = *v
			}
			// Containers reach each other by service name on port 30303.
			val = strings.ReplaceAll(val, "@geth:30303", "@127.0.0.1:"+strconv.Itoa(p2pOf["geth"]))
			env = append(env, k+"="+val)
		}
		c.node = &GethNode{HTTPPort: c.http, AuthPort: c.auth, Process: &Process{
			Name: c.service, Path: "/bin/sh", Args: []string{c.entrypoint}, Env: env,
			LogPath: filepath.Join(tmp, c.service+".log"),
		}}
		if err := c.node.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.node.Stop(10 * time.Second) })
		if err := c.node.WaitReady(ctx); err != nil {
			t.Fatalf("%s: %v", c.service, err)
		}
	}
	geth, member := nodes[0].node, nodes[1].node

	// geth-member peers with geth (only it names a static peer).
	for {
		n, err := member.PeerCount(ctx)
		if err == nil && n == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("geth-member never peered with geth: %d peers, %v\n%s", n, err, lastLines(member.TailLog(4096), 20))
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Both run the chain of genesis.json, on the hash scheme, archive.
	want, err := geth.Call(ctx, "eth_getBlockByNumber", "0x0", false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := member.Call(ctx, "eth_getBlockByNumber", "0x0", false)
	if err != nil || string(got) != string(want) {
		t.Fatalf("geth-member's genesis differs from geth's: %v", err)
	}
	for _, c := range nodes {
		if log := c.node.TailLog(1 << 20); !strings.Contains(log, "scheme=hash") {
			t.Errorf("%s does not run on the hash state scheme; end of its log:\n%s", c.service, lastLines(log, 20))
		}
	}
	// The Engine API answers only with jwt.hex's secret: an unauthenticated
	// call is refused.
	if _, err := rpcCall(ctx, nodes[0].node.EngineURL(), "engine_exchangeCapabilities", []string{}); err == nil ||
		!strings.Contains(err.Error(), "401") {
		t.Fatalf("unauthenticated Engine API call: %v, want HTTP 401", err)
	}

	// A second start (the container restarted) keeps the datadir: no init.
	if err := geth.Restart(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := geth.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if log := geth.TailLog(1 << 20); strings.Count(log, "Successfully wrote genesis state") != 1 {
		t.Errorf("geth initialised %d times, want once", strings.Count(log, "Successfully wrote genesis state"))
	}
}
