package devnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/crypto"
)

func TestNetworkLifecycle(t *testing.T) {
	n := StartT(t, Config{GethNodes: 2, Redis: true, Postgres: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if err := n.WaitPeered(ctx, 1); err != nil {
		t.Fatalf("geth nodes did not peer: %v", err)
	}
	g := n.Geth[0]
	if head, err := g.BlockNumber(ctx); err != nil || head != 0 {
		t.Fatalf("fresh node head = %d, %v; want genesis", head, err)
	}

	// SIGKILL and restart: the node comes back on the same ports and re-peers
	// through its static peer list.
	pid := g.Pid()
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	if Alive(pid) {
		t.Fatalf("pid %d still alive after Kill", pid)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitPeered(ctx, 1); err != nil {
		t.Fatalf("no re-peering after restart: %v", err)
	}

	// SIGSTOP: the node stops answering; SIGCONT: it answers again.
	if err := g.Pause(); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	if _, err := g.BlockNumber(short); err == nil {
		t.Fatal("paused geth answered")
	}
	cancelShort()
	if err := g.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := g.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	// Wipe needs a stopped node and leaves an initialised, empty datadir.
	if err := g.Wipe(ctx); err == nil {
		t.Fatal("wipe of a running node succeeded")
	}
	if err := g.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(g.DataDir, "marker")
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := g.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("wipe kept %s", marker)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	// Redis and PostgreSQL survive a SIGKILL + restart cycle too; PostgreSQL's
	// backends die with the postmaster because the whole group is signalled.
	for _, p := range []interface {
		Kill() error
		Start() error
		WaitReady(context.Context) error
	}{n.Redis, n.Postgres[0], n.Postgres[1]} {
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A graceful restart (SIGTERM, start again) keeps the node's chain and peers.
	if err := n.Geth[1].Restart(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := n.Geth[1].WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitPeered(ctx, 1); err != nil {
		t.Fatalf("no re-peering after a restart: %v", err)
	}
	if n.Postgres[0].URL() == n.Postgres[1].URL() {
		t.Fatal("two PostgreSQL servers share a URL")
	}
}

func TestStopLeavesNoProcess(t *testing.T) {
	n := StartT(t, Config{GethNodes: 1, Redis: true, Postgres: 1})
	var pids []int
	for _, p := range n.Processes() {
		pids = append(pids, p.Pid())
	}
	n.Stop()
	for i, pid := range pids {
		if err := syscall.Kill(-pid, 0); err == nil {
			t.Errorf("process group of %s (pid %d) still has members after Stop", n.Processes()[i].Name, pid)
		}
	}
}

func TestBadGenesisNamesTheProblem(t *testing.T) {
	SkipIfShort(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "genesis.json")
	if err := os.WriteFile(bad, []byte(`{"config": {`), 0o644); err != nil {
		t.Fatal(err)
	}
	jwt, err := FindUp("jwt.hex")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), Config{Dir: dir, GethNodes: 1, GenesisPath: bad, JWTPath: jwt, FreePorts: true})
	if err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("err = %v; want an error naming %s", err, bad)
	}
}

// Ports for test processes come from below the kernel's ephemeral range,
// where no outgoing connection can take them first, are free when handed
// out, and are never handed out twice.
func TestFreePortsAreBelowTheEphemeralRangeAndDistinct(t *testing.T) {
	high := ephemeralLow()
	seen := map[int]bool{}
	for range 50 {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if port < lowestFreePort || port >= high {
			t.Fatalf("port %d outside %d-%d", port, lowestFreePort, high-1)
		}
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatalf("port %d is not free: %v", port, err)
		}
		l.Close()
	}
}

// A free port that another process binds between the probe and the start
// (a test binary running in parallel, seen in CI) does not fail the
// network: the port check before the start (or the server's own "address
// already in use") sends it to other ports.
func TestStartsAgainWhenAPortIsTaken(t *testing.T) {
	SkipIfShort(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	handed := false
	freePort = func() (int, error) {
		if !handed {
			handed = true
			return taken, nil
		}
		return FreePort()
	}
	t.Cleanup(func() { freePort = FreePort })
	n := StartT(t, Config{Redis: true})
	if !handed || n.Redis.Port == taken {
		t.Fatalf("Redis on port %d (the taken one: %d; handed out: %v)", n.Redis.Port, taken, handed)
	}
}

// A Redis with a password refuses a client without it, and answers one
// that authenticates; its URL carries the password, its command line and
// log do not.
func TestRedisPassword(t *testing.T) {
	n := StartT(t, Config{Redis: true, RedisPassword: "s3cret"})
	if want := fmt.Sprintf("redis://:s3cret@127.0.0.1:%d/0", n.Redis.Port); n.Redis.URL() != want {
		t.Fatalf("URL %s, want %s", n.Redis.URL(), want)
	}
	conn, err := net.Dial("tcp", n.Redis.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	rd := bufio.NewReader(conn)
	ask := func(cmd string) string {
		t.Helper()
		if _, err := conn.Write([]byte(cmd + "\r\n")); err != nil {
			t.Fatal(err)
		}
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return line
	}
	if got := ask("PING"); !strings.HasPrefix(got, "-NOAUTH") {
		t.Fatalf("PING without the password: %q", got)
	}
	if got := ask("AUTH wrong"); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Fatalf("AUTH with a wrong password: %q", got)
	}
	if got := ask("AUTH s3cret"); got != "+OK\r\n" {
		t.Fatalf("AUTH: %q", got)
	}
	if got := ask("PING"); got != "+PONG\r\n" {
		t.Fatalf("PING after AUTH: %q", got)
	}
	if strings.Contains(strings.Join(n.Redis.Args, " "), "s3cret") || strings.Contains(n.Redis.TailLog(1<<20), "s3cret") {
		t.Fatal("the password is on Redis's command line or in its log")
	}
}

// A network that cannot be made is refused before anything starts, with every
// problem named.
func TestConfigRefusedWithReasons(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want []string
	}{
		{Config{GethNodes: -1, Postgres: -2}, []string{"no state directory", "-1 geth nodes", "-2 PostgreSQL servers"}},
		{Config{Dir: "d", GethNodes: 7}, []string{"7 geth nodes", "at most 6 fit", "free ports"}},
		{Config{Dir: "d"}, []string{"nothing to start"}},
	} {
		dir := t.TempDir()
		tc.cfg.GenesisPath, tc.cfg.JWTPath = filepath.Join(dir, "absent"), filepath.Join(dir, "absent")
		_, err := Start(context.Background(), tc.cfg)
		if err == nil {
			t.Fatalf("%+v started", tc.cfg)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %q does not say %q", tc.cfg, err, w)
			}
		}
	}
	if err := (Config{Dir: "d", GethNodes: 7, FreePorts: true}).validate(); err != nil {
		t.Errorf("7 geths on free ports refused: %v", err)
	}
	if err := (Config{Dir: "d", Redis: true}).validate(); err != nil {
		t.Errorf("Redis alone refused: %v", err)
	}
}

// A port the network would take is already held, as a system Redis or
// PostgreSQL holds 6379 or 5432: nothing starts, and the error names the
// port, the service, who probably holds it and the way out.
func TestHeldPortsAreNamed(t *testing.T) {
	SkipIfShort(t)
	hold := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l.Addr().(*net.TCPAddr).Port
	}
	saved := Defaults
	t.Cleanup(func() { Defaults = saved })
	Defaults.Redis, Defaults.Postgres = hold(), hold()
	dir := t.TempDir()
	_, err := Start(context.Background(), Config{Dir: dir, Redis: true, Postgres: 1,
		GenesisPath: mustFindUp(t, "genesis.json"), JWTPath: mustFindUp(t, "jwt.hex")})
	if err == nil {
		t.Fatal("started on held ports")
	}
	for _, want := range []string{
		fmt.Sprintf("port %d, for redis, is already in use", Defaults.Redis), "systemctl disable --now redis-server",
		fmt.Sprintf("port %d, for postgres, is already in use", Defaults.Postgres), "systemctl disable --now postgresql",
		"--free-ports",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
}

// Something else answers on a server's port (it took the port after the
// check): the devnet refuses it at once instead of driving it. A Redis
// whose pid is not the process the devnet started, a PostgreSQL on another
// data directory, a geth with another node key.
func TestAnImpostorIsRefused(t *testing.T) {
	SkipIfShort(t)
	n := StartT(t, Config{GethNodes: 1, Redis: true, Postgres: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sleeper := func() *Process { // a process of the devnet's own that is not the server
		p := &Process{Name: "impostor", Path: "/bin/sleep", Args: []string{"60"}, LogPath: filepath.Join(t.TempDir(), "sleep.log")}
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Stop(time.Second) })
		return p
	}
	otherKey, _ := crypto.GenerateKey()
	for name, wait := range map[string]func() error{
		"redis": func() error {
			return (&Redis{Port: n.Redis.Port, Password: n.Redis.Password, Process: sleeper()}).WaitReady(ctx)
		},
		"postgres": func() error {
			pg := *n.Postgres[0]
			pg.DataDir, pg.Process = t.TempDir(), sleeper()
			return pg.WaitReady(ctx)
		},
		"geth": func() error { g := *n.Geth[0]; g.Key, g.Process = otherKey, sleeper(); return g.WaitReady(ctx) },
	} {
		start := time.Now()
		err := wait()
		if !errors.Is(err, errNotOurs) || time.Since(start) > 10*time.Second {
			t.Errorf("%s: %v after %s; want errNotOurs at once", name, err, time.Since(start).Round(time.Millisecond))
		}
	}
}

func mustFindUp(t *testing.T, name string) string {
	t.Helper()
	p, err := FindUp(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
