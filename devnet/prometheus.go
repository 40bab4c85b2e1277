package devnet

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// PrometheusConfigFile is the Prometheus config every stage is monitored
// with: docker compose mounts prometheus.yml, the devnet runs this copy.
//
//go:embed prometheus.yml
var PrometheusConfigFile []byte

// PrometheusJobs are the scrape jobs of PrometheusConfigFile: "geth" and
// one per stage binary.
func PrometheusJobs() ([]string, error) {
	var c struct {
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(PrometheusConfigFile, &c); err != nil {
		return nil, fmt.Errorf("prometheus.yml: %w", err)
	}
	var jobs []string
	for _, sc := range c.ScrapeConfigs {
		jobs = append(jobs, sc.JobName)
	}
	return jobs, nil
}

// PrometheusConfig says what a devnet Prometheus scrapes.
type PrometheusConfig struct {
	// Targets lists host:port per job of PrometheusConfigFile. The "geth"
	// job defaults to every geth of the network.
	Targets map[string][]string
	// RuleFiles are alert and recording rule files (each stage's
	// monitoring/alerts.yml), checked with promtool and loaded.
	RuleFiles []string
}

// Prometheus is Debian's prometheus binary run with PrometheusConfigFile.
type Prometheus struct {
	*Process
	Port int
	// Scrapes is what it scrapes: host:port by job.
	Scrapes    map[string][]string
	configPath string
}

// URL is Prometheus' web UI and HTTP API.
func (p *Prometheus) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.Port) }

// CheckPrometheusJob fails for a job PrometheusConfigFile does not have,
// naming those it has.
func CheckPrometheusJob(job string) error {
	jobs, err := PrometheusJobs()
	if err != nil {
		return err
	}
	if !slices.Contains(jobs, job) {
		return fmt.Errorf("prometheus: no job %q in prometheus.yml (its jobs: %s)", job, strings.Join(jobs, ", "))
	}
	return nil
}

// StartPrometheus starts Prometheus (on 9090, or a free port on a free-port
// network) with the config docker compose uses, every geth of the network,
// the targets pc names and the rule files it lists, and waits until it is
// ready. It stops with the network.
func (n *Network) StartPrometheus(ctx context.Context, pc PrometheusConfig) (*Prometheus, error) {
	if n.Prometheus != nil {
		return nil, errors.New("prometheus: already started")
	}
	var geth []string
	for _, g := range n.Geth {
		geth = append(geth, g.MetricsAddr())
	}
	p, err := startPrometheus(ctx, n.cfg, geth, pc)
	if err != nil {
		return nil, err
	}
	n.Prometheus = p
	return p, n.writeState()
}

// StartPrometheusIn starts Prometheus, detached, beside the network the
// devnet CLI left running in dir, in place of the one that runs there
// (`devnet up --prometheus` on a running network), and records it in the
// state file.
func StartPrometheusIn(ctx context.Context, dir string, pc PrometheusConfig, logger *slog.Logger) (*Prometheus, error) {
	s, err := ReadState(dir)
	if err != nil {
		return nil, err
	}
	var geth []string
	for _, g := range s.Geth {
		u, err := url.Parse(g.Metrics)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("%s: no metrics address in %s (a network from before geth served metrics: restart it)", g.Name, StateFile)
		}
		geth = append(geth, u.Host)
	}
	pidPath := filepath.Join(dir, "prometheus.pid")
	if err := StopPIDFile(pidPath, 15*time.Second); err != nil {
		return nil, err
	}
	p, err := startPrometheus(ctx, Config{Dir: dir, Detach: true, FreePorts: s.FreePorts, Logger: logger}, geth, pc)
	if err != nil {
		return nil, err
	}
	s.Prometheus, s.PrometheusTargets = p.URL(), p.Scrapes
	if !slices.Contains(s.PIDFiles, pidPath) {
		s.PIDFiles = append(s.PIDFiles, pidPath)
	}
	return p, s.write(dir)
}

func startPrometheus(ctx context.Context, cfg Config, geth []string, pc PrometheusConfig) (*Prometheus, error) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		return nil, errors.New("prometheus not found in PATH: install it (Debian: apt-get install -y --no-install-recommends prometheus)")
	}
	targets := map[string][]string{"geth": geth}
	for job, addrs := range pc.Targets {
		if err := CheckPrometheusJob(job); err != nil {
			return nil, err
		}
		targets[job] = addrs
	}
	if err := CheckRules(pc.RuleFiles...); err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.Dir, "prometheus")
	if err := writePrometheusDir(dir, targets, pc.RuleFiles); err != nil {
		return nil, err
	}
	port := Defaults.Prometheus
	if cfg.FreePorts {
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	if err := portFree("prometheus", port, "probably a system Prometheus (sudo systemctl disable --now prometheus) or docker compose's", cfg.FreePorts); err != nil {
		return nil, err
	}
	p := &Prometheus{Port: port, Scrapes: targets, configPath: filepath.Join(dir, "prometheus.yml"), Process: &Process{
		Name: "prometheus", Path: bin, Detach: cfg.Detach,
		Args: []string{
			"--config.file=" + filepath.Join(dir, "prometheus.yml"),
			"--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--storage.tsdb.retention.time=2d",
			"--web.listen-address=127.0.0.1:" + strconv.Itoa(port),
		},
		LogPath: filepath.Join(cfg.Dir, "prometheus.log"),
		PIDPath: filepath.Join(cfg.Dir, "prometheus.pid"),
	}}
	if cfg.Logger != nil {
		cfg.Logger.Info("starting", "process", p.Name, "log", p.LogPath)
	}
	if err := p.Start(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		_ = p.Stop(15 * time.Second)
		return nil, err
	}
	return p, nil
}

// writePrometheusDir lays out dir as prometheus.yml expects: the config,
// targets/<job>.json for the jobs with targets (none for the others, as in
// compose), and a copy of each rule file in rules/.
func writePrometheusDir(dir string, targets map[string][]string, ruleFiles []string) error {
	for _, d := range []string{"targets", "rules"} {
		if err := os.RemoveAll(filepath.Join(dir, d)); err != nil { // an earlier run's
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), PrometheusConfigFile, 0o644); err != nil {
		return err
	}
	for job, addrs := range targets {
		if len(addrs) == 0 {
			continue
		}
		b, _ := json.Marshal([]map[string][]string{{"targets": addrs}})
		if err := os.WriteFile(filepath.Join(dir, "targets", job+".json"), b, 0o644); err != nil {
			return err
		}
	}
	for i, f := range ruleFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("%d-%s.yml", i, filepath.Base(filepath.Dir(filepath.Dir(f)))) // 0-03-member-nodes.yml
		if err := os.WriteFile(filepath.Join(dir, "rules", name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// CheckRules runs `promtool check rules` on files: Prometheus would refuse
// to load them, with less to say about why.
func CheckRules(files ...string) error {
	if len(files) == 0 {
		return nil
	}
	bin, err := exec.LookPath("promtool")
	if err != nil {
		return errors.New("promtool not found in PATH: install it (Debian: apt-get install -y --no-install-recommends prometheus)")
	}
	out, err := exec.Command(bin, append([]string{"check", "rules"}, files...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("promtool check rules: %v\n%s", err, out)
	}
	return nil
}

// WaitReady polls /-/ready, then checks that the Prometheus answering runs
// this config file: another one on the port must not be read as ours.
func (p *Prometheus) WaitReady(ctx context.Context) error {
	return waitFor(ctx, p.Process, func() error {
		client := http.Client{Timeout: time.Second}
		resp, err := client.Get(p.URL() + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("prometheus /-/ready: %s", resp.Status)
		}
		var flags map[string]string
		if err := p.api(ctx, "/api/v1/status/flags", nil, &flags); err != nil {
			return err
		}
		if flags["config.file"] != p.configPath {
			return fmt.Errorf("%w: the Prometheus on %d runs %s", errNotOurs, p.Port, flags["config.file"])
		}
		return nil
	})
}

// Sample is one series of a query's result.
type Sample struct {
	Labels map[string]string `json:"metric"`
	Value  [2]any            `json:"value"` // unix time, value as a string
}

// Query evaluates a PromQL expression now. An expression Prometheus cannot
// parse is an error naming the problem.
func (p *Prometheus) Query(ctx context.Context, expr string) ([]Sample, error) {
	var res struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.api(ctx, "/api/v1/query", url.Values{"query": {expr}}, &res); err != nil {
		return nil, err
	}
	if res.ResultType != "vector" {
		return nil, fmt.Errorf("%s: a %s, not an instant vector", expr, res.ResultType)
	}
	var samples []Sample
	return samples, json.Unmarshal(res.Result, &samples)
}

// Rule is one loaded rule and how its last evaluation went.
type Rule struct {
	Group     string
	Name      string `json:"name"`
	Query     string `json:"query"`
	Type      string `json:"type"`   // "alerting" or "recording"
	Health    string `json:"health"` // "ok", "err" or "unknown" (not evaluated yet)
	LastError string `json:"lastError"`
	State     string `json:"state"` // alerts: "inactive", "pending" or "firing"
}

// Rules lists the loaded rules.
func (p *Prometheus) Rules(ctx context.Context) ([]Rule, error) {
	var res struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []Rule `json:"rules"`
		} `json:"groups"`
	}
	if err := p.api(ctx, "/api/v1/rules", nil, &res); err != nil {
		return nil, err
	}
	var rules []Rule
	for _, g := range res.Groups {
		for _, r := range g.Rules {
			r.Group = g.Name
			rules = append(rules, r)
		}
	}
	return rules, nil
}

// Target is one scrape target and its last scrape.
type Target struct {
	Job       string
	Instance  string
	Health    string // "up", "down" or "unknown"
	LastError string
}

// Targets lists the active scrape targets, sorted by job and instance.
func (p *Prometheus) Targets(ctx context.Context) ([]Target, error) {
	var res struct {
		ActiveTargets []struct {
			Labels    map[string]string `json:"labels"`
			Health    string            `json:"health"`
			LastError string            `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := p.api(ctx, "/api/v1/targets", nil, &res); err != nil {
		return nil, err
	}
	var ts []Target
	for _, t := range res.ActiveTargets {
		ts = append(ts, Target{Job: t.Labels["job"], Instance: t.Labels["instance"], Health: t.Health, LastError: t.LastError})
	}
	sort.Slice(ts, func(i, j int) bool {
		return ts[i].Job < ts[j].Job || ts[i].Job == ts[j].Job && ts[i].Instance < ts[j].Instance
	})
	return ts, nil
}

// api calls Prometheus' HTTP API and decodes the data of its answer.
func (p *Prometheus) api(ctx context.Context, path string, q url.Values, data any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("prometheus %s: %s: %.200s", path, resp.Status, body)
	}
	if env.Status != "success" {
		return fmt.Errorf("prometheus %s %s: %s", path, q.Get("query"), env.Error)
	}
	return json.Unmarshal(env.Data, data)
}
