package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/p2p/enode"

	"github.com/geth-consensus/tutorial/devnet"
)

// The CLI's detached life cycle, as `make run` uses it: up leaves the
// processes running after the command exits, status sees them, down stops
// every one of them.
func TestUpStatusDown(t *testing.T) {
	bin, dir, genesis, jwt := cliFixture(t)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append(args, "--dir", dir)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() { _, _ = run("down") })

	if out, err := run("up", "--geth", "2", "--redis", "--postgres", "1", "--free-ports", "--genesis", genesis, "--jwt-secret", jwt); err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	out, err := run("status")
	if err != nil || strings.Count(out, "head #0") != 2 || !strings.Contains(out, "redis") || !strings.Contains(out, "postgres-0") {
		t.Fatalf("status after up: %v\n%s", err, out)
	}
	state, err := devnet.ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range state.PIDFiles {
		pid, err := devnet.ReadPIDFile(f)
		if err != nil || pid == 0 || !devnet.Alive(pid) {
			t.Fatalf("%s: pid %d not alive after up (%v)", f, pid, err)
		}
		pids = append(pids, pid)
	}
	// up again: a no-op while the running network covers the request; a
	// restart as asked when it does not (more geths, other geth flags).
	if out, err := run("up", "--geth", "1", "--free-ports", "--genesis", genesis, "--jwt-secret", jwt); err != nil || !strings.Contains(out, "already up") {
		t.Fatalf("up for less than runs: %v\n%s", err, out)
	}
	out, err = run("up", "--geth", "3", "--geth-arg=--miner.recommit=100ms", "--free-ports", "--genesis", genesis, "--jwt-secret", jwt)
	if err != nil || !strings.Contains(out, "restarting the running network") || strings.Count(out, "head #0") != 3 {
		t.Fatalf("up for more than runs: %v\n%s", err, out)
	}
	for _, pid := range pids {
		if devnet.Alive(pid) {
			t.Errorf("pid %d of the first network alive after the restart", pid)
		}
	}
	if state, err = devnet.ReadState(dir); err != nil || len(state.Geth) != 3 || len(state.GethArgs) != 1 || state.Redis != "" {
		t.Fatalf("state after the restart: %+v, %v", state, err)
	}
	pids = pids[:0]
	for _, f := range state.PIDFiles {
		pid, err := devnet.ReadPIDFile(f)
		if err != nil || pid == 0 || !devnet.Alive(pid) {
			t.Fatalf("%s: pid %d not alive after the restart (%v)", f, pid, err)
		}
		pids = append(pids, pid)
	}
	if out, err := run("up", "--geth", "3", "--geth-arg=--miner.recommit=100ms", "--free-ports", "--genesis", genesis, "--jwt-secret", jwt); err != nil || !strings.Contains(out, "already up") {
		t.Fatalf("up for what runs: %v\n%s", err, out)
	}

	// send waits for --wait-block: nothing makes blocks here, so nothing is
	// sent before the deadline; without it a transfer goes out at once.
	rpcURL := state.Geth[1].RPC
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	waited, _ := exec.CommandContext(ctx, bin, "send", "--rpc-url", rpcURL, "--count", "1", "--wait-block", "1").CombinedOutput()
	if ctx.Err() == nil || strings.Contains(string(waited), "sent ") {
		t.Fatalf("send --wait-block 1 on a chain at genesis did not wait (ctx %v):\n%s", ctx.Err(), waited)
	}
	if out, err := exec.Command(bin, "send", "--rpc-url", rpcURL, "--count", "1").CombinedOutput(); err != nil || !strings.Contains(string(out), "sent ") {
		t.Fatalf("send: %v\n%s", err, out)
	}

	if out, err := run("down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	for _, pid := range pids {
		if devnet.Alive(pid) {
			t.Errorf("pid %d alive after down", pid)
		}
	}
	if out, err := run("status"); err == nil {
		t.Errorf("status after down succeeded:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "geth-0")); err != nil {
		t.Errorf("down without --wipe removed the chain: %v", err)
	}
}

// Every flag falls back to its environment variable, a flag on the command
// line wins, and a malformed value names the variable. (The refusals come
// from devnet.Config's checks, before anything starts.)
func TestFlagsFallBackToEnvironment(t *testing.T) {
	run := func(args ...string) error {
		cmd := rootCmd()
		cmd.SetArgs(args)
		return cmd.Execute()
	}
	t.Setenv("DEVNET_DIR", t.TempDir())
	t.Setenv("DEVNET_GETH", "7")
	if err := run("up"); err == nil || !strings.Contains(err.Error(), "7 geth nodes") {
		t.Errorf("DEVNET_GETH=7: %v, want the 7 nodes refused", err)
	}
	if err := run("up", "--geth", "8"); err == nil || !strings.Contains(err.Error(), "8 geth nodes") {
		t.Errorf("--geth 8 with DEVNET_GETH=7: %v, want the flag's 8 refused", err)
	}
	t.Setenv("DEVNET_GETH", "two")
	t.Setenv("DEVNET_POSTGRES", "-1")
	err := run("up")
	if err == nil || !strings.Contains(err.Error(), `DEVNET_GETH="two"`) {
		t.Errorf("DEVNET_GETH=two: %v, want the variable named", err)
	}
	t.Setenv("DEVNET_GETH", "0")
	if err := run("up"); err == nil || !strings.Contains(err.Error(), "-1 PostgreSQL servers") {
		t.Errorf("DEVNET_POSTGRES=-1: %v", err)
	}
	t.Setenv("ETH_RPC_URL", "http://127.0.0.1:1")
	if err := run("send", "--count", "1"); err == nil || !strings.Contains(err.Error(), "http://127.0.0.1:1") {
		t.Errorf("send with ETH_RPC_URL=http://127.0.0.1:1: %v", err)
	}
	t.Setenv("DEVNET_SEND_WAIT_BLOCK", "3")
	if err := run("send", "--count", "1"); err == nil || !strings.Contains(err.Error(), "waiting for block 3") {
		t.Errorf("send with DEVNET_SEND_WAIT_BLOCK=3 to an unreachable node: %v, want the wait named", err)
	}
	t.Setenv("DEVNET_SEND_KEY", "12")
	if err := run("send"); err == nil || !strings.Contains(err.Error(), "--key 12") {
		t.Errorf("DEVNET_SEND_KEY=12: %v", err)
	}
}

// --version names the build, as every binary of the tutorial does.
func TestVersionFlag(t *testing.T) {
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.HasPrefix(s, cmd.Name()+" version ") || !strings.Contains(s, runtime.Version()) {
		t.Fatalf("--version printed %q", s)
	}
}

// watch shows each node's /status in one table, whatever stage serves it,
// and a node that does not answer as down with the error.
func TestWatchTable(t *testing.T) {
	serve := func(body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/status" {
				http.NotFound(w, r)
				return
			}
			io.WriteString(w, body)
		}))
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	leader := serve(`{"id":"leader-1","role":"leader","leader":"leader-1","epoch":3,"lag":0,"head":120,"ready":true}`)
	member := serve(`{"id":"member-1","role":"member","leader":"leader-1","lag":4,"head":116,"ready":false,"reason":"cannot sync: leader leader-1 unreachable"}`)
	validator := serve(`{"height":57,"execution_head":57,"validator":"A1B2C3D4E5F60718293A4B5C6D7E8F9012345678","peers":3,"ready":true}`)
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"watch", "--frames", "2", "--every", "50ms", "--nodes", strings.Join([]string{leader, member, validator, "127.0.0.1:1"}, ",")})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	frames := strings.Split(out.String(), "\033[H\033[2J")
	if len(frames) != 2 {
		t.Fatalf("%d frames, want 2:\n%s", len(frames), out.String())
	}
	lines := strings.Split(strings.TrimSpace(frames[1]), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[1], "NODE") {
		t.Fatalf("frame:\n%s", frames[1])
	}
	for i, want := range [][]string{
		{leader, "leader-1", "leader", "120", "0", "yes"},
		{member, "member-1", "member", "leader-1", "116", "4", "no", "cannot sync: leader leader-1 unreachable"},
		{validator, "A1B2C3D4E5F60718", "validator", "57", "yes"},
		{"127.0.0.1:1", "down", "connection refused"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[2+i], w) {
				t.Errorf("line %q lacks %q", lines[2+i], w)
			}
		}
	}
}

// up --prometheus starts Debian's Prometheus with devnet/prometheus.yml: it
// scrapes every geth and the named nodes, loads the rule files, shows in
// status and stops with down; asked for another job on a running network,
// it replaces Prometheus alone. A job the config lacks, rule files that
// match nothing and a rule promtool refuses are errors that name them,
// before anything starts.
func TestUpPrometheus(t *testing.T) {
	bin, dir, genesis, jwt := cliFixture(t)
	rules := filepath.Join(t.TempDir(), "stage", "monitoring", "alerts.yml")
	if err := os.MkdirAll(filepath.Dir(rules), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		if err := os.WriteFile(rules, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append(args, "--dir", dir, "--free-ports", "--genesis", genesis, "--jwt-secret", jwt)...).CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() { _ = exec.Command(bin, "down", "--dir", dir).Run() })

	write("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up{job=\"geth\" == 0\n")
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--prometheus", "stage9"}, []string{`no job "stage9" in prometheus.yml (its jobs: geth, single-node, member-nodes, cometbft-consensus)`}},
		{[]string{"--prometheus", "single-node", "--prometheus-rules", filepath.Join(dir, "none-*.yml")}, []string{"matches no file"}},
		{[]string{"--prometheus", "single-node", "--prometheus-rules", rules}, []string{"promtool check rules", "unexpected"}},
	} {
		out, err := run(append([]string{"up"}, c.args...)...)
		if err == nil || !containsAll(out, c.want) {
			t.Errorf("up %q: %v, want an error with %q:\n%s", c.args, err, c.want, out)
		}
		if _, err := devnet.ReadState(dir); err == nil {
			t.Fatalf("up %q started a network", c.args)
		}
	}

	write("groups:\n  - name: g\n    rules:\n      - alert: GethDown\n        expr: up{job=\"geth\"} == 0\n")
	out, err := run("up", "--prometheus", "single-node", "--prometheus-nodes", "127.0.0.1:1", "--prometheus-rules", rules)
	if err != nil || !strings.Contains(out, "prometheus http://127.0.0.1:") || !strings.Contains(out, "single-node 127.0.0.1:1") {
		t.Fatalf("up --prometheus: %v\n%s", err, out)
	}
	state, err := devnet.ReadState(dir)
	if err != nil || state.Prometheus == "" {
		t.Fatalf("state: %+v, %v", state, err)
	}
	get := func(path string) string {
		resp, err := http.Get(state.Prometheus + path)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	query := func(expr string) string { return get("/api/v1/query?query=" + url.QueryEscape(expr)) }
	tick, deadline := time.NewTicker(200*time.Millisecond), time.After(30*time.Second)
	defer tick.Stop()
	for { // geth scraped (up 1), the unreachable node too (up 0), the rule evaluated
		geth, node, rules := query(`up{job="geth"}`), query(`up{job="single-node"}`), get("/api/v1/rules")
		if strings.Contains(geth, `"1"]`) && strings.Contains(node, `"0"]`) && strings.Contains(node, "127.0.0.1:1") &&
			containsAll(rules, []string{`"name":"GethDown"`, `"health":"ok"`, `"state":"inactive"`}) {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("not scraped and evaluated in 30 s:\n%s\n%s\n%s", geth, node, rules)
		}
	}
	pid := func(name string) int {
		pid, err := devnet.ReadPIDFile(filepath.Join(dir, name+".pid"))
		if err != nil || !devnet.Alive(pid) {
			t.Fatalf("%s pid %d: %v", name, pid, err)
		}
		return pid
	}
	gethPid, promPid := pid("geth-0"), pid("prometheus")

	// Another job: Prometheus alone restarts, on the nodes make's targets use.
	out, err = run("up", "--prometheus", "member-nodes", "--prometheus-rules", rules)
	if err != nil || !strings.Contains(out, "starting Prometheus for member-nodes beside the running network") ||
		!strings.Contains(out, "member-nodes 127.0.0.1:8080,127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083") {
		t.Fatalf("up --prometheus member-nodes: %v\n%s", err, out)
	}
	if pid("geth-0") != gethPid || devnet.Alive(promPid) {
		t.Errorf("geth pid %d (was %d), the first Prometheus (%d) alive %v: want geth untouched and Prometheus replaced",
			pid("geth-0"), gethPid, promPid, devnet.Alive(promPid))
	}
	if out, err := run("up", "--prometheus", "member-nodes", "--prometheus-rules", rules); err != nil || !strings.Contains(out, "already up") {
		t.Errorf("up for what runs: %v\n%s", err, out)
	}
	promPid = pid("prometheus")
	if out, err := exec.Command(bin, "down", "--dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if devnet.Alive(promPid) {
		t.Error("prometheus alive after down")
	}
}

// cliFixture builds the CLI and names a state directory, genesis.json and
// jwt.hex, for the tests that run it as a user would.
func cliFixture(t *testing.T) (bin, dir, genesis, jwt string) {
	t.Helper()
	devnet.SkipIfShort(t)
	bin = filepath.Join(t.TempDir(), "devnet")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	genesis, _ = devnet.FindUp("genesis.json")
	jwt, _ = devnet.FindUp("jwt.hex")
	return bin, filepath.Join(t.TempDir(), "state"), genesis, jwt
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// up --faults puts fault points in front of the network; fault cuts,
// slows and heals them, status shows them, down stops their process; and
// every mistake is named.
func TestUpFaults(t *testing.T) {
	bin, dir, genesis, jwt := cliFixture(t)
	run := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append(args, "--dir", dir)...).CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() { _, _ = run("down") })
	if out, err := run("fault", "cut", "redis"); err == nil || !strings.Contains(out, "run `devnet up` first") {
		t.Fatalf("fault without a network: %v\n%s", err, out)
	}
	if out, err := run("up", "--geth", "2", "--redis", "--faults", "--free-ports", "--genesis", genesis, "--jwt-secret", jwt); err != nil ||
		!containsAll(out, []string{"geth-0-engine", "geth-0-rpc", "geth-0-geth-1", "geth-1-geth-0", "redis ", "(toxiproxy API)"}) {
		t.Fatalf("up --faults: %v\n%s", err, out)
	}
	state, err := devnet.ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkPeeringThroughLinks(t, state)
	var rpc, redis string
	for _, l := range state.FaultLinks {
		switch l.Name {
		case "geth-0-rpc":
			rpc = "http://" + l.Listen
		case "redis":
			redis = l.Listen
		}
	}
	blockNumber := func(timeout time.Duration) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, rpc, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `"result":"0x`) {
			return 0, fmt.Errorf("answer %s", b)
		}
		return time.Since(start), nil
	}
	if _, err := blockNumber(5 * time.Second); err != nil {
		t.Fatalf("geth's RPC through its link: %v", err)
	}
	if out, err := run("fault", "latency", "geth-0-rpc", "150ms", "--jitter", "10ms"); err != nil || !strings.Contains(out, "latency 150ms ± 10ms, both ways") {
		t.Fatalf("fault latency: %v\n%s", err, out)
	}
	if took, err := blockNumber(5 * time.Second); err != nil || took < 280*time.Millisecond {
		t.Fatalf("with 150 ms each way: %s (%v)", took, err)
	}
	if out, err := run("fault", "cut", "redis", "--one-way", "downstream"); err != nil || !strings.Contains(out, "cut, downstream only") {
		t.Fatalf("fault cut: %v\n%s", err, out)
	}
	c, err := net.Dial("tcp", redis)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Redis through a cut link answered: %v", err)
	}
	if out, err := run("status"); err != nil || !containsAll(out, []string{"latency_upstream", "latency_downstream", "cut_downstream"}) {
		t.Fatalf("status with faults: %v\n%s", err, out)
	}
	for _, bad := range [][]string{
		{"fault", "cut", "nope"},
		{"fault", "latency", "geth-0-rpc", "soon"},
		{"fault", "loss", "redis", "2"},
		{"fault", "cut", "redis", "--one-way", "sideways"},
	} {
		if out, err := run(bad...); err == nil {
			t.Errorf("%v accepted:\n%s", bad, out)
		}
	}
	extra, err := devnet.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run("fault", "add", "extra", fmt.Sprintf("127.0.0.1:%d", extra), state.Redis); err != nil {
		t.Fatalf("fault add: %v\n%s", err, out)
	}
	links := len(state.FaultLinks) + 1 // 2 per geth, 2 between them, Redis; and extra
	if out, err := run("fault", "heal"); err != nil || strings.Count(out, "healed") != links {
		t.Fatalf("fault heal: %v\n%s", err, out)
	}
	// Healed: what the cut held arrives, and the latency is gone.
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 16)); err != nil || n == 0 {
		t.Fatalf("Redis after the heal: %v", err)
	}
	if out, err := run("fault", "list"); err != nil || strings.Count(out, "  ok") != links {
		t.Fatalf("fault list after heal: %v\n%s", err, out)
	}
	pid, _ := devnet.ReadPIDFile(filepath.Join(dir, "faults.pid"))
	if out, err := run("down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if pid == 0 || devnet.Alive(pid) {
		t.Fatalf("the faults process (pid %d) outlives down", pid)
	}
}

// checkPeeringThroughLinks checks that the two geths of s peer through
// their links geth-0-geth-1 and geth-1-geth-0 (up waited for it): the geth
// that dialled sees a link's port as its peer's; neither sees the other's
// own p2p port there (a direct connection).
func checkPeeringThroughLinks(t *testing.T, s *devnet.State) {
	t.Helper()
	linkPorts := map[string]bool{}
	for _, l := range s.FaultLinks {
		if strings.Contains(l.Name, "-geth-") {
			_, port, _ := net.SplitHostPort(l.Listen)
			linkPorts[port] = true
		}
	}
	p2pPort := func(i int) string {
		n, err := enode.ParseV4(s.Geth[i].Enode)
		if err != nil {
			t.Fatal(err)
		}
		return strconv.Itoa(n.TCP())
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		viaLink, direct, peers := false, "", 0
		for i, g := range s.Geth {
			var got []struct {
				Network struct{ RemoteAddress string }
			}
			if err := rpcCall(g.RPC, "admin_peers", &got); err != nil {
				t.Fatal(err)
			}
			peers += len(got)
			for _, p := range got {
				_, port, _ := net.SplitHostPort(p.Network.RemoteAddress)
				viaLink = viaLink || linkPorts[port]
				if port == p2pPort(1-i) {
					direct = fmt.Sprintf("geth-%d peers with geth-%d directly, on its p2p port %s", i, 1-i, port)
				}
			}
		}
		if direct != "" {
			t.Fatal(direct)
		}
		if viaLink && peers == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the geths do not peer through their links (peers %d, links %v)", peers, linkPorts)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// rpcCall makes one JSON-RPC call over HTTP.
func rpcCall(url, method string, result any) error {
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":%q,"params":[]}`, method)
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Result json.RawMessage
		Error  *struct{ Message string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	if r.Error != nil {
		return fmt.Errorf("%s: %s", method, r.Error.Message)
	}
	return json.Unmarshal(r.Result, result)
}
