package devnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/p2p/enode"
)

// Defaults are the ports docker-compose.yml publishes; the devnet CLI uses
// them so that every command in the READMEs works against either.
var Defaults = struct {
	GethHTTP, GethAuth, GethP2P, GethMetrics, Redis, Postgres, Prometheus int
	PostgresUser, PostgresPassword, PostgresDB                            string
}{
	GethHTTP: 8545, GethAuth: 8551, GethP2P: 30303, GethMetrics: 6060, // node i adds i to each
	Redis:        6379,
	Prometheus:   9090,
	Postgres:     5432, // 5433 for the member's database
	PostgresUser: "postgres", PostgresPassword: "postgres", PostgresDB: "consensus",
}

// Config describes a network: Dir, GenesisPath and JWTPath, and what to
// start in it.
type Config struct {
	Dir       string // state directory: datadirs, logs, pid files, network.json
	GethNodes int    // number of geth nodes, peered with each other (0: none, e.g. Redis only)
	Redis     bool   // start a Redis server
	// RedisPassword makes that server require a password (requirepass);
	// clients then connect with Redis.URL().
	RedisPassword string
	Postgres      int // number of PostgreSQL servers (the cluster's, then the member's)
	GenesisPath   string
	JWTPath       string
	FreePorts     bool     // pick free loopback ports instead of Defaults (tests)
	Detach        bool     // let processes outlive this program (the CLI's `up`)
	GethArgs      []string // extra flags for every geth
	// GethDefaults runs geth with its default state storage instead of
	// CrashSafeGethFlags: faster per block, but a SIGKILLed lone geth may
	// come back unable to import (see CrashSafeGethFlags). Benchmarks only.
	GethDefaults bool
	// Faults, when set, routes the geths' peering through fault points:
	// geth i dials geth j through the link "geth-i-geth-j" (GethLinks).
	Faults *Faults
	Logger *slog.Logger
}

// Network is a running set of processes.
type Network struct {
	cfg      Config
	Geth     []*GethNode
	Redis    *Redis
	Postgres []*Postgres
	// Prometheus, once StartPrometheus started it.
	Prometheus *Prometheus
}

// Start initialises whatever is missing under cfg.Dir, starts every process
// and waits until each answers. On error it stops what it started.
func Start(ctx context.Context, cfg Config) (*Network, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for attempt := 1; ; attempt++ {
		n, err := build(ctx, cfg)
		if err != nil {
			return nil, err
		}
		err = n.startAll(ctx)
		if err == nil {
			return n, n.writeState()
		}
		n.Stop()
		// A free port is probed, then bound by the process a moment later:
		// another test binary running in parallel can take it in between.
		// build picks new ones (never the same port twice).
		if !cfg.FreePorts || attempt == startAttempts || !portTaken(err) {
			return nil, err
		}
		cfg.Logger.Warn("a port was taken before its process bound it: starting again on other ports", "err", err)
	}
}

// startAttempts bounds the restarts on new free ports.
const startAttempts = 3

// portTaken reports whether a process failed to start because its port
// was in use (geth, Redis and PostgreSQL all log "address already in use").
func portTaken(err error) bool {
	return strings.Contains(strings.ToLower(err.Error()), "address already in use")
}

// maxDefaultGeth is how many geths fit on docker-compose's ports: node i
// listens on RPC 8545+i and Engine API 8551+i, so a seventh would take node 0's
// Engine API port for its RPC.
const maxDefaultGeth = 6

// validate names every setting that cannot make a network.
func (cfg Config) validate() error {
	var errs []error
	if cfg.Dir == "" {
		errs = append(errs, errors.New("no state directory"))
	}
	if cfg.GethNodes < 0 {
		errs = append(errs, fmt.Errorf("%d geth nodes: must be 0 or more", cfg.GethNodes))
	}
	if cfg.Postgres < 0 {
		errs = append(errs, fmt.Errorf("%d PostgreSQL servers: must be 0 or more", cfg.Postgres))
	}
	if !cfg.FreePorts && cfg.GethNodes > maxDefaultGeth {
		errs = append(errs, fmt.Errorf("%d geth nodes: on docker-compose's ports node i takes RPC %d+i and Engine API %d+i, so at most %d fit; use free ports for more",
			cfg.GethNodes, Defaults.GethHTTP, Defaults.GethAuth, maxDefaultGeth))
	}
	if errs == nil && cfg.GethNodes == 0 && !cfg.Redis && cfg.Postgres == 0 {
		errs = append(errs, errors.New("nothing to start: no geth, no Redis, no PostgreSQL"))
	}
	return errors.Join(errs...)
}

func build(ctx context.Context, cfg Config) (*Network, error) {
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	for _, f := range []struct{ flag, path string }{{"genesis", cfg.GenesisPath}, {"jwt secret", cfg.JWTPath}} {
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("%s file: %w", f.flag, err)
		}
	}
	chainID, err := genesisChainID(cfg.GenesisPath)
	if err != nil {
		return nil, err
	}
	ports, err := allocatePorts(cfg)
	if err != nil {
		return nil, err
	}
	n := &Network{cfg: cfg}
	if cfg.GethNodes > 0 {
		bin, err := GethBinary(ctx)
		if err != nil {
			return nil, err
		}
		for i := range cfg.GethNodes {
			g, err := newGeth(cfg, i, bin, chainID, ports)
			if err != nil {
				return nil, err
			}
			n.Geth = append(n.Geth, g)
		}
		for i, g := range n.Geth {
			for j, o := range n.Geth {
				if o == g {
					continue
				}
				peer := o.Enode()
				if cfg.Faults != nil {
					name := fmt.Sprintf("geth-%d-geth-%d", i, j)
					cfg.Faults.Remove(name) // from an attempt on other ports
					l, err := cfg.Faults.Link(name, "127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", o.P2PPort))
					if err != nil {
						return nil, err
					}
					peer = enode.NewV4(&o.Key.PublicKey, net.IPv4(127, 0, 0, 1), l.Port(), 0).URLv4()
				}
				g.peers = append(g.peers, peer)
			}
			if err := g.initialize(ctx); err != nil {
				return nil, err
			}
			g.Args = gethArgs(g, cfg.JWTPath, cfg.GethArgs)
		}
	}
	if cfg.Redis {
		if n.Redis, err = newRedis(cfg.Dir, ports.redis, cfg.RedisPassword, cfg.Detach); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Postgres {
		name := "postgres"
		if i > 0 {
			name = fmt.Sprintf("postgres-%d", i)
		}
		pg, err := newPostgres(cfg.Dir, name, ports.postgres[i], cfg.Detach)
		if err != nil {
			return nil, err
		}
		if err := pg.initialize(ctx); err != nil {
			return nil, err
		}
		n.Postgres = append(n.Postgres, pg)
	}
	return n, nil
}

func newGeth(cfg Config, i int, bin string, chainID uint64, ports portPlan) (*GethNode, error) {
	name := fmt.Sprintf("geth-%d", i)
	dataDir := filepath.Join(cfg.Dir, name)
	key, err := crypto.LoadECDSA(filepath.Join(dataDir, "geth", "nodekey"))
	if err != nil {
		if key, err = crypto.GenerateKey(); err != nil {
			return nil, err
		}
	}
	return &GethNode{
		Process: &Process{
			Name: name, Path: bin, Detach: cfg.Detach,
			LogPath: filepath.Join(cfg.Dir, name+".log"),
			PIDPath: filepath.Join(cfg.Dir, name+".pid"),
		},
		DataDir: dataDir, HTTPPort: ports.http[i], AuthPort: ports.auth[i], P2PPort: ports.p2p[i], MetricsPort: ports.metrics[i],
		Key: key, bin: bin, genesis: cfg.GenesisPath, chainID: chainID,
		DevMode: slices.Contains(cfg.GethArgs, "--dev"), gethDefaults: cfg.GethDefaults,
	}, nil
}

func (n *Network) startAll(ctx context.Context) error {
	if err := n.checkPortsFree(); err != nil {
		return err
	}
	for _, p := range n.Processes() {
		n.cfg.Logger.Info("starting", "process", p.Name, "log", p.LogPath)
		if err := p.Start(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, g := range n.Geth {
		if err := g.WaitReady(ctx); err != nil {
			return err
		}
	}
	if n.Redis != nil {
		if err := n.Redis.WaitReady(ctx); err != nil {
			return err
		}
	}
	for _, pg := range n.Postgres {
		if err := pg.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Processes lists every process of the network.
func (n *Network) Processes() []*Process {
	var ps []*Process
	for _, g := range n.Geth {
		ps = append(ps, g.Process)
	}
	if n.Redis != nil {
		ps = append(ps, n.Redis.Process)
	}
	for _, pg := range n.Postgres {
		ps = append(ps, pg.Process)
	}
	if n.Prometheus != nil {
		ps = append(ps, n.Prometheus.Process)
	}
	return ps
}

// Stop stops every process gracefully (SIGTERM, then SIGKILL after 15 s) and
// keeps the data.
func (n *Network) Stop() {
	for _, p := range n.Processes() {
		_ = p.Stop(15 * time.Second)
	}
}

// GethLinks returns the fault points of geth i's peering, both ways (with
// Config.Faults): cut them all and it is cut off from the other geths.
func (n *Network) GethLinks(i int) []*Link {
	if n.cfg.Faults == nil {
		return nil
	}
	var out []*Link
	for _, l := range n.cfg.Faults.Links() {
		var a, b int
		if _, err := fmt.Sscanf(l.Name, "geth-%d-geth-%d", &a, &b); err == nil && (a == i || b == i) {
			out = append(out, l)
		}
	}
	return out
}

// WaitPeered polls until every geth has at least min peers.
func (n *Network) WaitPeered(ctx context.Context, min int) error {
	for _, g := range n.Geth {
		if err := waitFor(ctx, g.Process, func() error {
			c, err := g.PeerCount(ctx)
			if err == nil && c < min {
				err = fmt.Errorf("%d peers, want %d", c, min)
			}
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// State is what network.json records for `devnet status` and `devnet down`.
type State struct {
	Geth []struct {
		Name, RPC, WS, Engine, Metrics, Enode, PIDFile string
	}
	Redis    string   `json:",omitempty"` // host:port
	RedisURL string   `json:",omitempty"` // redis://[:password@]host:port/0
	Postgres []string `json:",omitempty"`
	// Prometheus is its URL, when one runs, and PrometheusTargets what it
	// scrapes: host:port by job.
	Prometheus        string              `json:",omitempty"`
	PrometheusTargets map[string][]string `json:",omitempty"`
	// Faults is the URL of toxiproxy's API when `up --faults` runs the
	// fault points, and FaultLinks those points.
	Faults     string     `json:",omitempty"`
	FaultLinks []LinkSpec `json:",omitempty"`
	GethArgs   []string   `json:",omitempty"` // the extra flags every geth runs with
	FreePorts  bool       `json:",omitempty"` // on free ports, not docker compose's
	PIDFiles   []string
}

// Covers reports whether the network s records runs everything cfg asks
// for: at least as many geths and PostgreSQL servers, Redis (with the
// password) if asked, and geths with the same extra flags.
func (s *State) Covers(cfg Config) bool {
	return len(s.Geth) >= cfg.GethNodes && len(s.Postgres) >= cfg.Postgres &&
		(!cfg.Redis || s.Redis != "" && s.redisPassword() == cfg.RedisPassword) && slices.Equal(s.GethArgs, cfg.GethArgs)
}

func (s *State) redisPassword() string {
	u, err := url.Parse(s.RedisURL)
	if err != nil || u.User == nil {
		return ""
	}
	p, _ := u.User.Password()
	return p
}

// StateFile is the name of the state file inside Config.Dir.
const StateFile = "network.json"

func (n *Network) writeState() error {
	var s State
	for _, g := range n.Geth {
		s.Geth = append(s.Geth, struct{ Name, RPC, WS, Engine, Metrics, Enode, PIDFile string }{
			g.Name, g.RPCURL(), g.WSURL(), g.EngineURL(), g.MetricsURL(), g.Enode(), g.PIDPath})
	}
	if n.Redis != nil {
		s.Redis, s.RedisURL = n.Redis.Addr(), n.Redis.URL()
	}
	for _, pg := range n.Postgres {
		s.Postgres = append(s.Postgres, pg.URL())
	}
	if p := n.Prometheus; p != nil {
		s.Prometheus, s.PrometheusTargets = p.URL(), p.Scrapes
	}
	s.GethArgs, s.FreePorts = n.cfg.GethArgs, n.cfg.FreePorts
	for _, p := range n.Processes() {
		s.PIDFiles = append(s.PIDFiles, p.PIDPath)
	}
	return s.write(n.cfg.Dir)
}

func (s *State) write(dir string) error {
	b, _ := json.MarshalIndent(s, "", "  ")
	return os.WriteFile(filepath.Join(dir, StateFile), b, 0o600) // it may hold the Redis password
}

// ReadState reads dir/network.json.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no network in %s (run `devnet up` first)", dir)
	}
	if err != nil {
		return nil, err
	}
	var s State
	return &s, json.Unmarshal(b, &s)
}

// StopDir stops the detached processes recorded in dir (the CLI's `down`).
func StopDir(dir string) error {
	pids, _ := filepath.Glob(filepath.Join(dir, "*.pid"))
	var errs []error
	for _, p := range pids {
		errs = append(errs, StopPIDFile(p, 15*time.Second))
	}
	return errors.Join(errs...)
}

type portPlan struct {
	http, auth, p2p, metrics, postgres []int
	redis                              int
}

func allocatePorts(cfg Config) (portPlan, error) {
	var pp portPlan
	next := func(def int) (int, error) {
		if !cfg.FreePorts {
			return def, nil
		}
		return freePort() // never the same port twice
	}
	for i := range cfg.GethNodes {
		for _, f := range []struct {
			dst  *[]int
			base int
		}{{&pp.http, Defaults.GethHTTP}, {&pp.auth, Defaults.GethAuth}, {&pp.p2p, Defaults.GethP2P}, {&pp.metrics, Defaults.GethMetrics}} {
			port, err := next(f.base + i)
			if err != nil {
				return pp, err
			}
			*f.dst = append(*f.dst, port)
		}
	}
	var err error
	if pp.redis, err = next(Defaults.Redis); err != nil {
		return pp, err
	}
	for i := range cfg.Postgres {
		port, err := next(Defaults.Postgres + i)
		if err != nil {
			return pp, err
		}
		pp.postgres = append(pp.postgres, port)
	}
	return pp, nil
}

// FreePort returns a loopback TCP port nobody listens on, for a process
// about to be started. It is picked at random below the kernel's ephemeral
// range: a port the kernel hands out for :0 comes from the range that
// outgoing connections take their local ports from, and one of them can
// take it before the process binds it ("address already in use", seen in
// CI). A port is never handed out twice by one test binary.
func FreePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	high := ephemeralLow()
	for range 200 {
		port := lowestFreePort + rand.IntN(high-lowestFreePort)
		if portsGiven[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue // taken
		}
		l.Close()
		portsGiven[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("no free loopback port in %d-%d after 200 tries", lowestFreePort, high-1)
}

// freePort is FreePort; tests replace it to hand out a taken port.
var freePort = FreePort

// lowestFreePort keeps FreePort above the well-known and the devnet's
// default ports (8545-8552, 6379, 5432).
const lowestFreePort = 15000

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// ephemeralLow is the first port of the kernel's ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range; Linux's default 32768).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low <= lowestFreePort+1000 {
		return 32768
	}
	return low
}
