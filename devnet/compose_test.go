package devnet

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/p2p/enode"
	"gopkg.in/yaml.v3"
)

// No Docker engine runs in CI, so docker-compose.yml is checked by loading it
// with the compose library and comparing it with what the code assumes.

func loadCompose(t *testing.T, profiles ...string) (*types.Project, string) {
	t.Helper()
	return loadComposeEnv(t, types.Mapping{}, profiles...)
}

// loadComposeEnv loads docker-compose.yml as `docker compose` would with
// env set in the user's environment.
func loadComposeEnv(t *testing.T, env types.Mapping, profiles ...string) (*types.Project, string) {
	t.Helper()
	path, err := FindUp("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(path)
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: path}},
		Environment: env,
	}, func(o *loader.Options) { o.SetProjectName("geth-consensus", true); o.Profiles = profiles })
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p, root
}

func TestComposeMatchesDefaults(t *testing.T) {
	p, root := loadCompose(t)
	published := map[string]map[uint32]int{} // service → container port → host port
	for name, s := range p.Services {
		if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 {
			t.Errorf("service %s has no healthcheck", name)
		}
		published[name] = map[uint32]int{}
		for _, port := range s.Ports {
			host, _ := strconv.Atoi(port.Published)
			published[name][port.Target] = host
		}
	}
	for _, want := range []struct {
		service         string
		container, host int
	}{
		{"geth", 8545, Defaults.GethHTTP},
		{"geth", 8551, Defaults.GethAuth},
		{"geth-member", 8545, Defaults.GethHTTP + 1},
		{"geth-member", 8551, Defaults.GethAuth + 1},
		{"redis", 6379, Defaults.Redis},
		{"postgres", 5432, Defaults.Postgres},
		{"postgres-member", 5432, Defaults.Postgres + 1},
	} {
		if got := published[want.service][uint32(want.container)]; got != want.host {
			t.Errorf("%s publishes container port %d on %d, the code's default is %d", want.service, want.container, got, want.host)
		}
	}
	for _, name := range []string{"postgres", "postgres-member"} {
		env := p.Services[name].Environment
		for k, v := range map[string]string{"POSTGRES_USER": Defaults.PostgresUser, "POSTGRES_PASSWORD": Defaults.PostgresPassword, "POSTGRES_DB": Defaults.PostgresDB} {
			if env[k] == nil || *env[k] != v {
				t.Errorf("%s: %s = %v, want %q", name, k, env[k], v)
			}
		}
	}
	// Both geths mount the repository's genesis.json, jwt.hex and entrypoint.
	for _, name := range []string{"geth", "geth-member"} {
		mounts := map[string]string{}
		for _, v := range p.Services[name].Volumes {
			mounts[v.Target] = v.Source
		}
		for target, file := range map[string]string{"/config/genesis.json": "genesis.json", "/config/jwt.hex": "jwt.hex", "/config/geth-entrypoint.sh": "docker/geth-entrypoint.sh"} {
			if mounts[target] != filepath.Join(root, file) {
				t.Errorf("%s mounts %q on %s, want %s", name, mounts[target], target, file)
			}
		}
	}
}

// The geth image must be the version the geth binary is built from.
func TestComposeGethImageIsPinnedVersion(t *testing.T) {
	p, _ := loadCompose(t)
	dir, err := moduleDir()
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(GethModule) + ` (v\S+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod does not require " + GethModule)
	}
	pinned := string(m[1])
	for _, name := range []string{"geth", "geth-member"} {
		if want := "ethereum/client-go:" + pinned; p.Services[name].Image != want {
			t.Errorf("%s image %s, want %s", name, p.Services[name].Image, want)
		}
	}
}

// geth-member's static peer must be geth's node key, or they never peer.
func TestComposeMemberPeersWithGeth(t *testing.T) {
	p, _ := loadCompose(t)
	key, err := crypto.HexToECDSA(*p.Services["geth"].Environment["NODEKEY"])
	if err != nil {
		t.Fatalf("geth NODEKEY: %v", err)
	}
	peers := strings.Trim(*p.Services["geth-member"].Environment["STATIC_PEERS"], `"`)
	n, err := enode.ParseV4(strings.Replace(peers, "@geth:", "@127.0.0.1:", 1))
	if err != nil {
		t.Fatalf("geth-member STATIC_PEERS %q: %v", peers, err)
	}
	if !bytes.Equal(crypto.FromECDSAPub(n.Pubkey()), crypto.FromECDSAPub(&key.PublicKey)) || !strings.Contains(peers, "@geth:30303") {
		t.Errorf("geth-member's static peer %s is not geth (key of NODEKEY, host geth, port 30303)", peers)
	}
}

// Every localhost port a stage uses as a default must be one compose publishes.
func TestStageDefaultsArePublished(t *testing.T) {
	p, root := loadCompose(t)
	ports := map[string]bool{}
	for _, s := range p.Services {
		for _, port := range s.Ports {
			ports[port.Published] = true
		}
	}
	re := regexp.MustCompile(`localhost:(\d{4,5})`)
	files, _ := filepath.Glob(filepath.Join(root, "0*", "*.go"))
	more, _ := filepath.Glob(filepath.Join(root, "0*", "*", "*", "*.go"))
	files = append(files, more...)
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			checked++
			if !ports[m[1]] {
				t.Errorf("%s defaults to localhost:%s, which docker-compose.yml does not publish", f, m[1])
			}
		}
	}
	if checked == 0 {
		t.Fatal("found no localhost defaults in the stages: is the glob wrong?")
	}
}

// The "validators" profile runs stage 4: validator-i drives the geth whose
// Engine API is published on 8551+i (as the testnet command pairs them),
// serves /status on 8080+i and CometBFT's RPC on 26657+10i, from the homes
// the one-shot testnet service writes with peers named by service.
func TestComposeValidatorsProfile(t *testing.T) {
	p, root := loadCompose(t, "validators")
	enginePort := map[string]int{} // geth service → published Engine API port
	for name, s := range p.Services {
		for _, port := range s.Ports {
			if port.Target == 8551 {
				enginePort[name], _ = strconv.Atoi(port.Published)
			}
		}
	}
	for i := range 4 {
		name := "validator-" + strconv.Itoa(i)
		s, ok := p.Services[name]
		if !ok {
			t.Fatalf("no service %s in the validators profile", name)
		}
		env := func(k string) string {
			if v := s.Environment[k]; v != nil {
				return *v
			}
			return ""
		}
		u, err := url.Parse(env("ETH_CLIENT_URL"))
		if err != nil || u.Port() != "8551" {
			t.Fatalf("%s: ETH_CLIENT_URL %q", name, env("ETH_CLIENT_URL"))
		}
		if got := enginePort[u.Hostname()]; got != Defaults.GethAuth+i {
			t.Errorf("%s drives %s, whose Engine API is published on %d; the testnet command pairs validator %d with %d", name, u.Hostname(), got, i, Defaults.GethAuth+i)
		}
		if _, ok := s.DependsOn[u.Hostname()]; !ok {
			t.Errorf("%s does not wait for its geth %s", name, u.Hostname())
		}
		if env("CMT_HOME") != "/homes/"+name || env("HEALTH_ADDR") != ":8080" {
			t.Errorf("%s: CMT_HOME %q HEALTH_ADDR %q", name, env("CMT_HOME"), env("HEALTH_ADDR"))
		}
		published := map[uint32]string{}
		for _, port := range s.Ports {
			published[port.Target] = port.Published
		}
		if rpc := 26657 + 10*i; published[8080] != strconv.Itoa(8080+i) || published[uint32(rpc)] != strconv.Itoa(rpc) {
			t.Errorf("%s publishes %v; want 8080 on %d and CometBFT RPC %d", name, published, 8080+i, rpc)
		}
		if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 {
			t.Errorf("%s has no healthcheck", name)
		}
		if s.Build == nil || s.Build.Dockerfile != "docker/stage4.Dockerfile" {
			t.Errorf("%s is not built from docker/stage4.Dockerfile: %+v", name, s.Build)
		}
	}
	init := strings.Join(p.Services["testnet"].Entrypoint, " ")
	for _, want := range []string{"testnet --validators 4", "--output /homes", "--host-pattern validator-%d"} {
		if !strings.Contains(init, want) {
			t.Errorf("testnet service runs %q: missing %q", init, want)
		}
	}
	dockerfile, err := os.ReadFile(filepath.Join(root, "docker", "stage4.Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"COPY devnet ./devnet", "COPY 04-cometbft-consensus ./04-cometbft-consensus", "go build", "./cmd"} {
		if !strings.Contains(string(dockerfile), want) {
			t.Errorf("docker/stage4.Dockerfile lacks %q", want)
		}
	}
	key, err := crypto.HexToECDSA(*p.Services["geth"].Environment["NODEKEY"])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"geth-2", "geth-3"} {
		peers := strings.Trim(*p.Services[name].Environment["STATIC_PEERS"], `"`)
		n, err := enode.ParseV4(strings.Replace(peers, "@geth:", "@127.0.0.1:", 1))
		if err != nil || !bytes.Equal(crypto.FromECDSAPub(n.Pubkey()), crypto.FromECDSAPub(&key.PublicKey)) {
			t.Errorf("%s's static peer %s is not geth (%v)", name, peers, err)
		}
		if _, err := crypto.HexToECDSA(*p.Services[name].Environment["NODEKEY"]); err != nil {
			t.Errorf("%s NODEKEY: %v", name, err)
		}
	}
	// Without the profile, `docker compose up` starts only the shared services.
	plain, _ := loadCompose(t)
	for name := range plain.Services {
		if strings.HasPrefix(name, "validator") || name == "testnet" || name == "geth-2" || name == "geth-3" {
			t.Errorf("%s starts without --profile validators", name)
		}
	}
}

// The containers' geth runs like the devnet's: crash-safe (a `docker kill`ed
// lone geth must come back at its last block on disk, as the stages' crash tests
// assume), initialised with the same state scheme, on the ports compose
// publishes.
func TestComposeGethRunsLikeTheDevnet(t *testing.T) {
	_, root := loadCompose(t)
	b, err := os.ReadFile(filepath.Join(root, "docker", "geth-entrypoint.sh"))
	if err != nil {
		t.Fatal(err)
	}
	script := strings.Join(strings.Fields(strings.ReplaceAll(string(b), "\\\n", " ")), " ")
	for _, want := range []string{
		strings.Join(CrashSafeGethFlags[:2], " "), strings.Join(CrashSafeGethFlags[2:], " "),
		"geth init --datadir /data " + strings.Join(stateSchemeFlags, " ") + " /config/genesis.json",
		"--http.port 8545", "--ws.port 8545", "--authrpc.port 8551", "--authrpc.jwtsecret /config/jwt.hex",
		"--syncmode full",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("docker/geth-entrypoint.sh does not run geth with %q", want)
		}
	}
}

// Safe by default: every published port on 127.0.0.1 only, every image
// pinned to a version, and geth's HTTP API without admin, debug or CORS.
func TestComposeSafeDefaults(t *testing.T) {
	p, root := loadCompose(t, "validators", "single", "cluster", "monitoring")
	pinned := regexp.MustCompile(`^[a-z0-9./-]+:v?\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?$`)
	for name, s := range p.Services {
		for _, port := range s.Ports {
			if port.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes %d on %q, want 127.0.0.1", name, port.Target, port.HostIP)
			}
		}
		if s.Build == nil && !pinned.MatchString(s.Image) {
			t.Errorf("%s runs image %q: pin a version (name:X.Y.Z)", name, s.Image)
		}
	}
	b, err := os.ReadFile(filepath.Join(root, "docker", "geth-entrypoint.sh"))
	if err != nil {
		t.Fatal(err)
	}
	var commands []string // the script without its comments
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			commands = append(commands, line)
		}
	}
	script := strings.Join(commands, "\n")
	for _, bad := range []string{"admin", "debug", "corsdomain '*'", "origins '*'", "--http.vhosts '*'"} {
		if strings.Contains(script, bad) {
			t.Errorf("docker/geth-entrypoint.sh runs geth with %q by default", bad)
		}
	}
	if !strings.Contains(script, `--http.api "${GETH_HTTP_API:-eth,net,web3,txpool}"`) {
		t.Error("docker/geth-entrypoint.sh does not default the HTTP API to eth,net,web3,txpool")
	}
}

// BIND_ADDR and a variable per host port move what compose publishes, for
// users whose machine holds a default port (Anvil on 8545, a system Redis
// or PostgreSQL).
func TestComposePortsOverridable(t *testing.T) {
	env := types.Mapping{"BIND_ADDR": "0.0.0.0", "GETH_HTTP_PORT": "9545", "GETH_AUTH_PORT": "9551",
		"REDIS_PORT": "16379", "POSTGRES_PORT": "15432", "POSTGRES_MEMBER_PORT": "15433", "VALIDATOR_0_PORT": "18080"}
	p, _ := loadComposeEnv(t, env, "validators")
	for _, want := range []struct {
		service   string
		container uint32
		host      string
	}{
		{"geth", 8545, "9545"}, {"geth", 8551, "9551"}, {"redis", 6379, "16379"},
		{"postgres", 5432, "15432"}, {"postgres-member", 5432, "15433"}, {"validator-0", 8080, "18080"},
		{"geth-member", 8545, "8546"}, // not overridden: the default
	} {
		found := false
		for _, port := range p.Services[want.service].Ports {
			if port.Target == want.container {
				found = true
				if port.Published != want.host || port.HostIP != "0.0.0.0" {
					t.Errorf("%s: container port %d on %s:%s, want 0.0.0.0:%s", want.service, want.container, port.HostIP, port.Published, want.host)
				}
			}
		}
		if !found {
			t.Errorf("%s publishes no port %d", want.service, want.container)
		}
	}
}

// Each stage's image: built from the repository root with devnet and the
// stage, dependencies in a cached layer of their own, the version in the
// binary, a user of its own; and .dockerignore keeps history, chains and
// keys out of every build context. Every variable a compose service sets
// is one its binary reads (its --help names them), so a renamed flag
// cannot leave the compose file silently configuring nothing.
func TestComposeImagesMatchTheBinaries(t *testing.T) {
	SkipIfShort(t) // builds the three binaries
	p, root := loadCompose(t, "single", "cluster", "validators")
	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".git", ".devnet", "jwt.hex", "**/priv_validator_key.json", "**/node_key.json", "**/keystore"} {
		if !slices.Contains(strings.Fields(string(ignore)), want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
	stages := map[string]struct{ dir, binary string }{
		"docker/stage2.Dockerfile": {"02-single-node", "single-node"},
		"docker/stage3.Dockerfile": {"03-member-nodes", "member-nodes"},
		"docker/stage4.Dockerfile": {"04-cometbft-consensus", "cometbft-consensus"},
	}
	built := map[string]bool{}
	for name, s := range p.Services {
		if s.Build == nil {
			continue
		}
		stage, ok := stages[s.Build.Dockerfile]
		if !ok {
			t.Errorf("%s is built from %s, which no stage has", name, s.Build.Dockerfile)
			continue
		}
		if s.Build.Context != root {
			t.Errorf("%s builds with context %s, want the repository root", name, s.Build.Context)
		}
		built[s.Build.Dockerfile] = true
		vars := envVars(t, filepath.Join(root, stage.dir))
		for k := range s.Environment {
			if !vars[k] {
				t.Errorf("%s sets %s, which %s does not read", name, k, stage.binary)
			}
		}
	}
	for file, stage := range stages {
		if !built[file] {
			t.Errorf("no compose service runs %s", file)
		}
		b, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"COPY devnet ./devnet", "COPY " + stage.dir + " ./" + stage.dir, "--mount=type=cache,target=/go/pkg/mod",
			stage.dir + "/internal/version.release=${VERSION}", "-o /out/" + stage.binary + " ./cmd", "USER node", `ENTRYPOINT ["` + stage.binary + `"]`} {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s lacks %q", file, want)
			}
		}
	}
}

// envVars returns the environment variables the stage in dir reads: those
// its --help names.
var envCache = map[string]map[string]bool{}

func envVars(t *testing.T, dir string) map[string]bool {
	t.Helper()
	if vars, ok := envCache[dir]; ok {
		return vars
	}
	cmd := exec.Command("go", "run", "./cmd", "--help")
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: go run ./cmd --help: %v\n%s", dir, err, out)
	}
	vars := map[string]bool{}
	for _, m := range regexp.MustCompile(`\(env ([A-Z_]+)(?:, or CometBFT's ([A-Z_]+))?\)`).FindAllStringSubmatch(string(out), -1) {
		vars[m[1]] = true
		if m[2] != "" {
			vars[m[2]] = true
		}
	}
	if len(vars) < 5 {
		t.Fatalf("%s --help names %d environment variables:\n%s", dir, len(vars), out)
	}
	envCache[dir] = vars
	return vars
}

// The monitoring profile runs devnet/prometheus.yml, as `devnet up
// --prometheus` does, with targets that are the compose services of each
// job, every stage's alert rules and, in Grafana, every stage's dashboard
// on the datasource the dashboards name.
func TestComposeMonitoringProfile(t *testing.T) {
	p, root := loadCompose(t, "monitoring", "single", "cluster", "validators")
	prom, ok := p.Services["prometheus"]
	if !ok {
		t.Fatal("no prometheus service in the monitoring profile")
	}
	mounts := func(s types.ServiceConfig) map[string]string { // container path → repository path
		m := map[string]string{}
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind {
				rel, _ := filepath.Rel(root, v.Source)
				m[v.Target] = rel
			}
		}
		return m
	}
	pm := mounts(prom)
	if pm["/etc/prometheus/prometheus.yml"] != "devnet/prometheus.yml" {
		t.Errorf("prometheus mounts %v: want devnet/prometheus.yml", pm)
	}
	jobs, err := PrometheusJobs()
	if err != nil {
		t.Fatal(err)
	}
	stages := map[string]string{"single-node": "02-single-node", "member-nodes": "03-member-nodes", "cometbft-consensus": "04-cometbft-consensus"}
	// The targets of geth and of one stage, MONITOR (member-nodes unless
	// set): the others' nodes do not run, and would be down targets.
	for _, monitor := range []string{"", "single-node", "member-nodes", "cometbft-consensus"} {
		p, _ := loadComposeEnv(t, types.Mapping{"MONITOR": monitor}, "monitoring")
		want := map[string]string{"geth": "docker/prometheus-targets/geth.json"}
		stage := cmp.Or(monitor, "member-nodes")
		want[stage] = "docker/prometheus-targets/" + stage + ".json"
		for target, source := range mounts(p.Services["prometheus"]) {
			job, ok := strings.CutPrefix(target, "/etc/prometheus/targets/")
			if !ok {
				continue
			}
			if job = strings.TrimSuffix(job, ".json"); want[job] != source {
				t.Errorf("MONITOR=%q: prometheus mounts %s as the targets of %s", monitor, source, job)
			}
			delete(want, job)
		}
		if len(want) > 0 {
			t.Errorf("MONITOR=%q: no targets mounted for %v", monitor, want)
		}
	}
	dockerfiles := map[string]string{"single-node": "docker/stage2.Dockerfile", "member-nodes": "docker/stage3.Dockerfile", "cometbft-consensus": "docker/stage4.Dockerfile"}
	for _, job := range jobs {
		b, err := os.ReadFile(filepath.Join(root, "docker", "prometheus-targets", job+".json"))
		if err != nil {
			t.Errorf("job %s: %v", job, err)
			continue
		}
		var groups []struct{ Targets []string }
		if err := json.Unmarshal(b, &groups); err != nil {
			t.Errorf("job %s: %v", job, err)
			continue
		}
		listed := map[string]bool{}
		for _, g := range groups {
			for _, target := range g.Targets {
				name, port, _ := strings.Cut(target, ":")
				listed[name] = true
				s, ok := p.Services[name]
				health := "unset"
				if h := s.Environment["HEALTH_ADDR"]; h != nil {
					health = *h
				}
				switch {
				case !ok:
					t.Errorf("job %s scrapes %s: no such service", job, target)
				case job == "geth" && (port != "6060" || !strings.HasPrefix(s.Entrypoint[len(s.Entrypoint)-1], "/config/geth-entrypoint.sh")):
					t.Errorf("job geth scrapes %s: want port 6060 of a service that runs geth-entrypoint.sh", target)
				case job != "geth" && health != ":"+port:
					t.Errorf("job %s scrapes %s, but the service's HEALTH_ADDR is %s", job, target, health)
				}
			}
		}
		for name, s := range p.Services { // every node of the job's stage is a target
			if s.Build != nil && s.Build.Dockerfile == dockerfiles[job] && s.Environment["HEALTH_ADDR"] != nil && !listed[name] {
				t.Errorf("job %s does not scrape %s", job, name)
			}
		}
		if dir, ok := stages[job]; ok {
			if got := pm["/etc/prometheus/rules/"+job+".yml"]; got != dir+"/monitoring/alerts.yml" {
				t.Errorf("rules/%s.yml mounts %q, want %s/monitoring/alerts.yml", job, got, dir)
			}
		}
	}
	if !strings.Contains(string(PrometheusConfigFile), "  - rules/*.yml") {
		t.Error("devnet/prometheus.yml does not load rules/*.yml")
	}

	gm := mounts(p.Services["grafana"])
	for job, dir := range stages {
		path := gm["/var/lib/grafana/dashboards/"+job+".json"]
		if path != dir+"/monitoring/dashboard.json" {
			t.Errorf("grafana mounts %q as %s's dashboard", path, job)
			continue
		}
		if _, err := LoadDashboard(filepath.Join(root, path)); err != nil {
			t.Error(err)
		}
	}
	var ds struct {
		Datasources []struct{ UID, Type, URL string }
	}
	readYAML(t, filepath.Join(root, gm["/etc/grafana/provisioning/datasources/prometheus.yml"]), &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].UID != DatasourceUID || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana's datasources %+v: want one, uid %q, on http://prometheus:9090", ds.Datasources, DatasourceUID)
	}
	var dp struct {
		Providers []struct {
			Options struct{ Path string }
		}
	}
	readYAML(t, filepath.Join(root, gm["/etc/grafana/provisioning/dashboards/gethcl.yml"]), &dp)
	if len(dp.Providers) != 1 || dp.Providers[0].Options.Path != "/var/lib/grafana/dashboards" {
		t.Errorf("grafana's dashboard providers %+v: want one, on /var/lib/grafana/dashboards", dp.Providers)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
